"""What the model is shown of each tool: the schemas the turn graph binds, as a real model's
``bind_tools`` receives them (the scripted model keeps them and refuses a malformed one)."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool, tool

from agentmm import Agent
from agentmm.settings import Settings
from tests.graphs.scripted_model import MalformedToolSchema, ScriptedToolModel, call, check_tool_schema

BUILT_INS = ["caption_image", "transcribe_audio", "search_images", "roll_dice", "current_datetime", "calculate",
             "search_memory", "save_memory"]  # fmt: skip


def bound_schemas(settings: Settings, tools: list[Any] | None = None) -> list[dict[str, Any]]:
    """The function schemas of the tools the graph binds for one turn."""
    model = ScriptedToolModel(script=[AIMessage("Hello.")])
    with Agent(settings, model=model, tools=tools) as agent:
        assert agent.chat("hi").reply == "Hello."
    (schemas,) = model.schemas
    return [s["function"] for s in schemas]


def test_every_built_in_tool_is_shown_with_a_described_schema(settings: Settings) -> None:
    functions = bound_schemas(settings.updated(tools=BUILT_INS))
    assert [f["name"] for f in functions] == BUILT_INS
    for function in functions:
        # The docstring's Args section belongs in the arguments, not pasted into the description.
        assert "Args:" not in function["description"] and "\n" not in function["description"], function
        arguments = function["parameters"]["properties"]
        assert arguments, function["name"]
        for name, argument in arguments.items():
            assert argument.get("description", "").strip(), f"{function['name']}({name}) has no description"
            assert argument.get("type") in ("string", "integer", "number", "boolean"), (function["name"], name)


def test_the_dice_schema_is_what_the_tool_reads(settings: Settings) -> None:
    from agentmm.tools.builtin import DICE_PATTERN

    (dice,) = bound_schemas(settings.updated(tools=["roll_dice"]))
    assert dice["parameters"] == {
        "type": "object",
        "properties": {"notation": {"type": "string", "description": "the dice", "pattern": DICE_PATTERN}},
        "required": ["notation"],
    }


@tool(parse_docstring=True)
def open_door(door: str, force: bool = False) -> str:
    """Open a door of the ship.

    Args:
        door: which door, by its name.
        force: break it open if it is locked.
    """
    return f"{door} is open"


def test_a_tool_of_ones_own_reaches_the_model_as_written(settings: Settings) -> None:
    (function,) = bound_schemas(settings, [open_door])
    assert function == {
        "name": "open_door",
        "description": "Open a door of the ship.",
        "parameters": {
            "type": "object",
            "properties": {
                "door": {"type": "string", "description": "which door, by its name."},
                "force": {"type": "boolean", "description": "break it open if it is locked.", "default": False},
            },
            "required": ["door"],
        },
    }


def _broken(schema: dict[str, Any], description: str = "Does something.") -> StructuredTool:
    return StructuredTool.from_function(lambda **kw: "done", name="broken", description=description,
                                        args_schema=schema)  # fmt: skip


@pytest.mark.parametrize(
    ("broken", "said"),
    [
        (_broken({"type": "object", "properties": {"x": {"type": "strnig"}}}), "not a JSON Schema"),
        (_broken({"type": "object", "properties": {"x": {"type": "string"}}, "required": ["y"]}), "['y']"),
        (_broken({"type": "array", "items": {"type": "string"}}), "must be an object schema"),
        (_broken({"type": "object", "properties": {}}, description=" "), "no description"),
    ],
)
def test_a_broken_schema_fails_the_turn_that_binds_it(broken: StructuredTool, said: str, settings: Settings) -> None:
    model = ScriptedToolModel(script=[call("broken", x="1"), AIMessage("Done.")])
    with Agent(settings, model=model, tools=[broken]) as agent, pytest.raises(MalformedToolSchema, match=said):
        agent.chat("do it")
    assert model.schemas == []


def test_the_check_takes_a_well_formed_function() -> None:
    def function(name: str) -> dict[str, Any]:
        parameters = {"type": "object", "properties": {}}
        return {"type": "function", "function": {"name": name, "description": "F.", "parameters": parameters}}

    check_tool_schema(function("f_1-x"))
    with pytest.raises(MalformedToolSchema, match="valid name"):
        check_tool_schema(function("two words"))


def test_injected_parameters_are_not_shown_to_the_model(settings: Settings) -> None:
    # The memory tools take ``runtime: ToolRuntime`` (LangGraph fills it in): the model sees only
    # what it writes, in the bound schema and in the tools section a constrained prompt lists.
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agentmm.tool_calling import tools_section
    from agentmm.tools.memory_tools import save_memory, search_memory

    functions = bound_schemas(settings.updated(tools=["search_memory", "save_memory"]))
    assert [list(f["parameters"]["properties"]) for f in functions] == [["query"], ["fact"]]
    assert all(f["parameters"]["required"] == list(f["parameters"]["properties"]) for f in functions)
    section = tools_section([convert_to_openai_tool(t) for t in (search_memory, save_memory)])
    assert "search_memory" in section and "runtime" not in section and "ToolRuntime" not in section
