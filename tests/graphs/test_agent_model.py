"""``Agent(model=...)``: a chat model instance, or the model setting (a path, a shipped name or a
hub id), or a typed one-line error at construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from agentmm import Agent
from agentmm.errors import AgentmmError, NotAChatModelError, SettingsError
from agentmm.settings import Settings, load_settings


@pytest.mark.e2e
@pytest.mark.parametrize("as_type", [str, Path], ids=["str", "Path"])
def test_a_path_is_the_model_setting_and_runs_a_turn(as_type: type, shipped_model: Path) -> None:
    agent = Agent(model=as_type(shipped_model), max_tokens=6, seed=3)
    try:
        assert agent.settings == load_settings(model=str(shipped_model), max_tokens=6, seed=3)
        assert agent.settings.sources["model"] == "flag"
        result = agent.chat("Say hi.")
        model = agent.model
    finally:
        agent.close()
    assert type(model).__name__ == "ChatLlamaCpp"
    assert Path(model.model_path).resolve() == shipped_model.resolve()  # type: ignore[attr-defined]
    assert 0 < result.usage.completion_tokens <= 6
    assert result.trace["path"][-1] == "generate"


@pytest.mark.parametrize("spec", ["smollm2", "someone/some-repo/model-q4.gguf", "~/models/x.gguf"])
def test_a_name_or_hub_id_is_the_setting_too(spec: str, settings: Settings) -> None:
    assert Agent(model=spec).settings.model == spec == load_settings(model=spec).model
    given = Agent(settings, model=spec, n_ctx=1024)
    assert given.settings.model == spec and given.settings.n_ctx == 1024
    assert given.settings.seed == settings.seed == 7  # the rest of the given settings kept
    assert given.settings.sources["model"] == "argument"
    assert settings.model == "smollm2"  # the caller's settings are not changed


def test_a_model_instance_is_used_as_it_is(settings: Settings) -> None:
    model = FakeListChatModel(responses=["fine"])
    agent = Agent(settings, model=model)
    assert agent.model is model and agent.settings.model == settings.model
    assert agent.chat("hi").reply == "fine"


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (5, "not int 5"),
        ({"model": "smollm2"}, "not dict {'model': 'smollm2'}"),
        (FakeListChatModel, "the class FakeListChatModel, not a chat model: pass an instance, FakeListChatModel(...)"),
        (dict, "the class dict, not a chat model"),
        (b"smollm2.gguf", "not bytes b'smollm2.gguf'"),
        (["a\nlong", "list"] * 40, "not list ['a\\nlong', 'list', "),
    ],
)
def test_anything_else_is_a_typed_one_line_error_at_construction(given: Any, said: str, settings: Settings) -> None:
    for make in (lambda: Agent(model=given), lambda: Agent(settings, model=given)):
        with pytest.raises(NotAChatModelError) as caught:
            make()
        message = str(caught.value)
        assert said in message and "\n" not in message and len(message) < 200
        assert isinstance(caught.value, AgentmmError) and isinstance(caught.value, TypeError)


def test_a_bad_setting_given_with_settings_is_checked_as_a_flag_is(settings: Settings) -> None:
    with pytest.raises(SettingsError, match=r"^bad setting model ''"):
        Agent(settings, model="")
    with pytest.raises(SettingsError, match=r"^bad setting n_ctx 5"):
        Agent(settings, n_ctx=5)
    with pytest.raises(SettingsError, match=r"^unknown setting 'colour'"):
        Agent(settings, colour="red")


def test_tools_are_given_as_tools_or_as_names(settings: Settings) -> None:
    from agentmm.tools.builtin import roll_dice

    model = FakeListChatModel(responses=["fine"])
    assert [t.name for t in Agent(settings, model=model, tools=["roll_dice", "calculate"]).tools] == [
        "roll_dice", "calculate"]  # fmt: skip
    assert Agent(settings, model=model, tools=["roll_dice"]).settings.tools == ["roll_dice"]
    assert [t.name for t in Agent(settings, model=model, tools=[roll_dice]).tools] == ["roll_dice"]
    with pytest.raises(SettingsError, match="tools takes LangChain tools"):
        Agent(settings, model=model, tools=[roll_dice, "calculate"])  # type: ignore[list-item]
