"""What a played card sends the model, against SillyTavern: the main and post-history prompts
behind ``{{original}}``, the card-field macros, the Character's Note."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.graphs.chat import build_graph
from agentmm.personas import PersonaRegistry
from agentmm.settings import Settings
from agentmm.state import TurnContext
from tests.graphs.test_persona_graph import WORDS, Recording


def card(name: str, **data: Any) -> str:
    fields = {"name": name, "description": f"{name} is a sailor.", "first_mes": "", **data}
    return json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": fields})


def played(tmp_path: Path, cards: dict[str, str], settings: Settings, *turns: str) -> tuple[list[BaseMessage], dict]:
    """The messages the model got on the last turn, and the last state."""
    folder = tmp_path / "personas"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in cards.items():
        (folder / f"{name}.json").write_text(text)
    registry = PersonaRegistry(folder, entry_points=False)
    model = Recording(responses=["Aye."] * 5, seen=[])
    graph = build_graph(settings, model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state: dict = {}
    for text in turns or ("hi",):
        state = graph.invoke({"input": text}, {"configurable": {"thread_id": "t"}},
                             context=TurnContext(user_name="Ada", persona=next(iter(cards))))  # fmt: skip
    return model.seen[-1], state


def test_the_system_prompt_setting_is_the_main_prompt_of_a_card_without_one(tmp_path: Path) -> None:
    settings = Settings(system_prompt="Narrate {{char}} for {{user}}.")
    seen, _ = played(tmp_path, {"wren": card("Wren")}, settings)
    assert seen[0].content.startswith("Narrate Wren for Ada.\n\nWren is a sailor.")
    seen, _ = played(tmp_path, {"kit": card("Kit", system_prompt="{{original}} Stay salty.")}, settings)
    assert seen[0].content.startswith("Narrate Kit for Ada. Stay salty.")


def test_the_default_companion_prompt_is_not_a_character_s_main_prompt(tmp_path: Path) -> None:
    seen, _ = played(tmp_path, {"wren": card("Wren")}, Settings())
    assert seen[0].content.startswith("You are Wren. Write Wren's next reply")


def test_original_in_post_history_instructions_brings_back_the_persona_reminder(tmp_path: Path) -> None:
    wren = card("Wren", post_history_instructions="{{original}} Then be brief, {{char}}.")
    seen, _ = played(tmp_path, {"wren": wren}, Settings(persona_reminder="[Stay in character.]"))
    assert seen[-1].content.endswith("hi\n\n[Stay in character.] Then be brief, Wren.")
    seen, _ = played(tmp_path / "2", {"wren": wren}, Settings())
    assert seen[-1].content.endswith("hi\n\nThen be brief, Wren.")


def test_the_character_s_note_follows_the_post_history_instructions_as_its_own_part(tmp_path: Path) -> None:
    note = {"prompt": "{{char}} is tired of {{user}}.", "depth": 4, "role": "system"}
    wren = card("Wren", post_history_instructions="Be brief.", extensions={"depth_prompt": note})
    seen, state = played(tmp_path, {"wren": wren}, Settings(), "hi", "and again")
    assert seen[-1].content.endswith("and again\n\nBe brief.\n\nWren is tired of Ada.")
    assert "tired" not in seen[0].content  # the head stays as it was: the note rides in the tail
    parts = [p["part"] for p in state["trace"]["prompt_parts"]]
    assert parts[-3:] == ["message", "post_history", "character_note"]
    assert "tired" not in state["messages"][-2].content  # not stored with the message either
    seen, state = played(tmp_path / "2", {"wren": card("Wren", extensions={"depth_prompt": note})}, Settings())
    assert seen[-1].content.endswith("hi\n\nWren is tired of Ada.")
    assert [p["part"] for p in state["trace"]["prompt_parts"]][-2:] == ["message", "character_note"]
