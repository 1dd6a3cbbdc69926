"""The persona's prompt parts: order, macros, stability."""

from __future__ import annotations

from datetime import datetime

import pytest

from agentmm.personas import (
    Lorebook,
    LoreEntry,
    Persona,
    PersonaError,
    activate,
    greeting,
    lore_text,
    persona_parts,
    post_history,
)
from agentmm.personas.prompt import PART_ORDER, PERSONA_INTRODUCTION

P = Persona(
    name="Ilse",
    description="{{char}} navigates. Mood: {{random:calm,tense}}.",
    personality="dry",
    scenario="{{user}} boards.",
    greetings=["Hi {{user}} ", "Alt {{char}}"],
    example_dialogue="<START>\n{{user}}: hi\n{{char}}: yo\n<START>\n{{user}}: bye\n{{char}}: later",
    system_prompt="{{original}} Never break the fourth wall.",
    post_history_instructions="Be brief, {{char}}.",
)


def test_parts_in_order_with_macros():
    parts = persona_parts(P, "Sam", default_system_prompt="You are {{char}}.", seed="t1")
    assert list(parts) == list(PART_ORDER)
    assert parts["system_prompt"] == "You are Ilse. Never break the fourth wall."
    assert parts["personality"] == "Ilse's personality: dry"
    assert parts["scenario"] == "Scenario: Sam boards."
    assert "Sam: hi\nIlse: yo\n\nSam: bye" in parts["example_dialogue"]
    assert "<START>" not in parts["example_dialogue"]


def test_parts_are_stable_and_skip_empty():
    a = persona_parts(P, "Sam", seed="t1", now=datetime(2024, 1, 1))
    assert a == persona_parts(P, "Sam", seed="t1", now=datetime(2024, 1, 1))
    bare = persona_parts(Persona(name="Bare"), "Sam")
    assert list(bare) == ["system_prompt"] and "Bare" in bare["system_prompt"]


def test_the_introduction_is_the_first_example_even_for_a_card_without_any():
    parts = persona_parts(P, "Sam", introduction=PERSONA_INTRODUCTION)
    examples = "Sam: Who are you?\nIlse: I'm Ilse.\n\nSam: hi\nIlse: yo\n\nSam: bye\nIlse: later"
    assert parts["example_dialogue"].endswith(examples)
    bare = persona_parts(Persona(name="Bare"), "Sam", introduction=PERSONA_INTRODUCTION)
    assert list(bare) == ["system_prompt", "example_dialogue"]
    heading = "Examples of how Bare talks (not part of this chat):"
    assert bare["example_dialogue"] == f"{heading}\nSam: Who are you?\nBare: I'm Bare."


def test_greetings_and_post_history():
    assert greeting(P, 0, "Sam") == "Hi Sam"
    assert greeting(P, 1, "Sam") == "Alt Ilse"
    assert greeting(Persona(name="x")) == ""
    with pytest.raises(PersonaError, match="out of range"):
        greeting(P, 5)
    with pytest.raises(PersonaError, match=r"^x has no greetings; greeting 1 cannot open the thread$"):
        greeting(Persona(name="x"), 1)
    assert post_history(P, "Sam") == "Be brief, Ilse."


def test_lore_text_in_insertion_order():
    book = Lorebook(
        entries=[
            LoreEntry(keys=["a"], content="second {{char}}", insertion_order=20, priority=9),
            LoreEntry(keys=["a"], content="first", insertion_order=10),
        ]
    )
    acts = activate(book, ["a"], lambda t: 1)
    assert lore_text(acts, P, "Sam") == "first\n\nsecond Ilse"


def test_card_field_macros_in_every_part():
    """SillyTavern's {{description}}, {{personality}}, {{scenario}}, {{mesExamples}},
    {{charVersion}} and {{persona}} (the user's description: none in agentmm)."""
    card = Persona(
        name="Kit",
        description="{{char}} sails with {{user}}.",
        personality="salty",
        scenario="A {{random:ship,boat}}.",
        example_dialogue="<START>\n{{user}}: hi",
        character_version="2.1",
        system_prompt="{{description}}|{{personality}}|{{scenario}}|{{persona}}|{{charVersion}}|{{char_version}}",
        post_history_instructions="Remember: {{mesExamples}}",
        greetings=["v{{charVersion}}: {{personality}}"],
    )
    parts = persona_parts(card, "Sam", seed="t1")
    scenario = parts["scenario"].removeprefix("Scenario: ")
    assert parts["system_prompt"] == f"Kit sails with Sam.|salty|{scenario}||2.1|2.1"
    assert post_history(card, "Sam") == "Remember: <START>\nSam: hi"
    assert greeting(card, 0, "Sam") == "v2.1: salty"
