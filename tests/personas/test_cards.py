"""Card JSON V1/V2/V3: reading, lossless round trips, conversions, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmm.personas import (
    CardJSONError,
    CardSpecError,
    CardTooLargeError,
    Limits,
    LoreEntry,
    Persona,
    card_from_persona,
    export,
    import_file,
    load_card_json,
    persona_from_card,
)
from agentmm.personas.cards import dumps_card


def same(a: Persona, b: Persona) -> bool:
    return a.model_dump(exclude={"source"}) == b.model_dump(exclude={"source"})


def meaning(p: Persona) -> dict:
    """What a persona says, without where it came from or the raw card it carries."""
    return p.model_dump(
        exclude={
            "card": True,
            "source": True,
            "image": True,
            "lorebook": {"raw": True, "entries": {"__all__": {"raw"}}},
        }
    )


def test_v2_fields(v2_card):
    p = persona_from_card(v2_card)
    assert p.name == "Testa Rossa"
    assert p.greetings == ["Hello {{user}}!", "Alt one", "Alt two"]
    assert p.example_dialogue.startswith("<START>")
    assert p.character_version == "3"
    assert p.allowed_tools == ["dice"] and p.model == "tiny.gguf"
    assert p.sampling == {"temperature": 0.7}
    book = p.lorebook
    assert (book.name, book.scan_depth, book.token_budget) == ("Lab book", 3, 500)
    assert [e.name for e in book.entries] == ["entry 0", "entry 1", "entry 2"]
    assert book.entries[2].selective_logic == "and_all"
    assert book.entries[0].position == "after_char"


@pytest.mark.parametrize("spec", ["v2", "v3"])
def test_json_round_trip_is_exact(tmp_path: Path, v2_card, v3_card, spec):
    card = v2_card if spec == "v2" else v3_card
    src = tmp_path / "in.json"
    src.write_text(json.dumps(card), encoding="utf-8")
    first = import_file(src)
    out = export(first, f"card-{spec}", tmp_path / "out.json")
    assert json.loads(out.read_text("utf-8")) == card  # the exported card is the original
    second = import_file(out)
    assert same(first, second)
    assert second.card == card


def test_v3_nickname_and_extras_kept(v3_card):
    p = persona_from_card(v3_card)
    assert p.nickname == "Testy" and p.display_name == "Testy"
    assert card_from_persona(p, "v3") == v3_card


def test_edit_writes_only_changed_fields(v2_card):
    p = persona_from_card(v2_card)
    p.description = "New description"
    p.greetings = ["First", "Second"]
    p.allowed_tools = []
    p.lorebook.entries[1].content = "changed"
    p.lorebook.entries.append(LoreEntry(keys=["new"], content="fresh", selective_logic="not_any"))
    card = card_from_persona(p, "v2")
    data = card["data"]
    assert data["description"] == card["description"] == "New description"  # root mirror follows
    assert data["first_mes"] == "First" and data["alternate_greetings"] == ["Second"]
    assert "tools" not in data["extensions"]["agentmm"]
    assert data["extensions"]["world"] == "Lab World"
    entries = data["character_book"]["entries"]
    assert entries[1]["content"] == "changed"
    assert entries[1]["unknown_entry_field"] == {"nested": [1, 2.5, None, "x"]}
    assert entries[3]["extensions"] == {"selectiveLogic": 2}
    assert {"keys", "content", "enabled", "insertion_order"} <= set(entries[3])
    again = persona_from_card(card)
    assert again.lorebook.entries[3].selective_logic == "not_any"
    assert again.description == "New description"


def test_v2_to_v3_conversion(v2_card):
    p = persona_from_card(v2_card)
    v3 = card_from_persona(p, "v3")
    assert v3["spec"] == "chara_card_v3" and v3["spec_version"] == "3.0"
    assert v3["data"]["group_only_greetings"] == []
    assert all(e["use_regex"] is False for e in v3["data"]["character_book"]["entries"])
    assert v3["data"]["extensions"]["depth_prompt"] == v2_card["data"]["extensions"]["depth_prompt"]
    back = persona_from_card(v3)
    assert meaning(back) == meaning(p)


def test_v1_legacy(v1_card):
    p = persona_from_card(v1_card)
    assert p.greetings == ["Get off my lawn, {{user}}."]
    v2 = card_from_persona(p, "v2")
    assert v2["spec"] == "chara_card_v2"
    assert v2["avatar"] == "old.png"  # legacy root fields stay
    for field in (
        "name",
        "description",
        "personality",
        "scenario",
        "first_mes",
        "mes_example",
        "creator_notes",
        "system_prompt",
        "post_history_instructions",
        "alternate_greetings",
        "tags",
        "creator",
        "character_version",
        "extensions",
    ):
        assert field in v2["data"], field
    assert meaning(persona_from_card(v2)) == meaning(p)


def test_native_persona_to_card_mapping():
    p = Persona(
        name="Native",
        description="d",
        greetings=["g0", "g1", "g2"],
        allowed_tools=["search"],
        model="m.gguf",
        sampling={"temperature": 0.5, "top_p": 0.9},
        lorebook={"scan_depth": 5, "entries": [{"keys": ["k"], "content": "c", "constant": True}]},
    )
    card = card_from_persona(p, "v2")
    data = card["data"]
    assert data["first_mes"] == "g0" and data["alternate_greetings"] == ["g1", "g2"]
    assert data["extensions"]["agentmm"] == {
        "tools": ["search"],
        "model": "m.gguf",
        "sampling": {"temperature": 0.5, "top_p": 0.9},
    }
    assert data["character_book"]["scan_depth"] == 5
    assert data["character_book"]["entries"][0]["constant"] is True
    back = persona_from_card(card)
    assert meaning(back) == meaning(p)
    assert card_from_persona(back, "v2") == card


def test_lenient_about_wild_cards():
    card = {
        "spec": "chara_card_v2",
        "data": {
            "name": "Loose",
            "description": None,
            "tags": "a, b",
            "alternate_greetings": None,
            "character_book": {"entries": [{"keys": "x,y", "content": "c", "insertion_order": 2.0}]},
        },
    }
    p = persona_from_card(card)
    assert p.description == "" and p.tags == ["a", "b"]
    assert p.lorebook.entries[0].keys == ["x", "y"]
    assert card_from_persona(p, "v2") == card


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        (b"{not json", CardJSONError, "not valid JSON"),
        (b"[1, 2]", CardSpecError, "expected a JSON object"),
        (b'{"spec": "chara_card_v9", "data": {}}', CardSpecError, "unsupported card spec"),
        (b'{"spec": "chara_card_v2", "data": "x"}', CardSpecError, "no 'data' object"),
        (b'{"spec": "chara_card_v2", "data": {"name": ""}}', CardSpecError, "no character name"),
        (b'{"hello": 1}', CardSpecError, "not a character card"),
        (b'{"entries": {}}', CardSpecError, "lorebook"),
        (b'{"spec": "chara_card_v2", "data": {"name": "x", "tags": {}}}', CardSpecError, "tags"),
        (b'{"name": "x", "description": NaN}', CardJSONError, "NaN"),
        (b"\xff\xfe{}", Exception, ""),
    ],
)
def test_bad_card_json(text, error, fragment):
    with pytest.raises(error) as info:
        load_card_json(text, where="c.json")
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_deeply_nested_json_is_refused():
    deep = '{"name": "x", "description": "d", "x": ' + "[" * 100 + "]" * 100 + "}"
    with pytest.raises(CardSpecError, match="nested"):
        load_card_json(deep)
    with pytest.raises(CardJSONError):
        load_card_json('{"a":' + "[" * 100000 + "]" * 100000 + "}")


def test_size_cap(tmp_path: Path):
    big = {"spec": "chara_card_v2", "data": {"name": "Big", "description": "x" * (50 * 1024 * 1024)}}
    path = tmp_path / "big.json"
    path.write_text(dumps_card(big, indent=None), encoding="utf-8")
    with pytest.raises(CardTooLargeError, match="over the 20 MB limit"):
        import_file(path)
    small = Limits(max_card_bytes=1000)
    with pytest.raises(CardTooLargeError):
        load_card_json(json.dumps({"name": "x", "description": "y" * 2000}), limits=small)


def test_pygmalion_format_reads_as_sillytavern_reads_it(tmp_path: Path):
    old = {"char_name": "Mira", "char_persona": "Keeps the light.", "char_greeting": "*waves* Evening, {{user}}.",
           "world_scenario": "A stormy cape.", "example_dialogue": "{{user}}: Hi\n{{char}}: Evening.",
           "creator_notes": "Creator's notes go here.", "extra": {"kept": True}}  # fmt: skip
    path = tmp_path / "mira.json"
    path.write_text(json.dumps(old))
    p = import_file(path)
    assert (p.name, p.description, p.personality, p.scenario) == ("Mira", "Keeps the light.", "", "A stormy cape.")
    assert p.greetings == ["*waves* Evening, {{user}}."] and p.example_dialogue == "{{user}}: Hi\n{{char}}: Evening."
    assert p.creator_notes == ""  # the Pygmalion editor's placeholder, dropped as SillyTavern does
    card = card_from_persona(p)
    assert card["spec"] == "chara_card_v2" and card["data"]["name"] == "Mira" and card["extra"] == {"kept": True}
    assert "char_name" not in card
    assert meaning(persona_from_card(card)) == meaning(p)
    named = load_card_json(json.dumps({"name": "Mira", "char_name": "Mira", "char_persona": "Keeps the light."}))
    assert (named.name, named.description) == ("Mira", "Keeps the light.")  # a name beside them: still Pygmalion
    partial = load_card_json(json.dumps({"char_name": "Odd", "char_persona": None}))
    assert (partial.name, partial.description, partial.greetings) == ("Odd", "", [])
    with pytest.raises(CardSpecError, match="no character name"):
        load_card_json(json.dumps({"char_name": ""}))


def test_every_bad_field_of_a_card_is_listed_not_only_the_first():
    card = {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": "Bad", "description": ["not", "text"], "personality": {"x": 1}, "tags": [1, {}, {}],
                     "character_book": {"entries": [{"keys": "a", "content": "c", "enabled": "maybe",
                                                     "insertion_order": "x"}, 7]}}}  # fmt: skip
    with pytest.raises(CardSpecError) as info:
        persona_from_card(card)
    assert info.value.problems == [
        "card: field 'description' must be text, got a list",
        "card: field 'personality' must be text, got an object",
        "card: field 'tags' must be a list of text, got an object",
        "card character_book entry 0: field 'insertion_order' must be a number, got text",
        "card character_book: entry 1 is not an object",
    ]
    assert str(info.value) == "card: field 'description' must be text, got a list (and 4 more)"
    with pytest.raises(CardSpecError) as info:
        persona_from_card({"spec": "chara_card_v2", "data": {"name": "", "character_book": 3}})
    assert info.value.problems == ["card: the card has no character name",
                                   "card: field 'character_book' must be an object, got a number"]  # fmt: skip


def test_null_greetings_are_no_greetings_and_the_card_exports_unchanged():
    """A null first_mes became an empty greeting 0 (the chat opened with nothing)."""
    from agentmm.personas import card_from_persona, persona_from_card

    for data, greetings in [
        ({"first_mes": None, "alternate_greetings": [None, "Ahoy.", None]}, ["Ahoy."]),
        ({"alternate_greetings": ["Ahoy.", "Hm?"]}, ["Ahoy.", "Hm?"]),
        ({"first_mes": "", "alternate_greetings": ["Ahoy."]}, ["", "Ahoy."]),  # an empty one keeps its place
        ({"first_mes": None, "alternate_greetings": []}, []),
        ({"first_mes": "Hi.", "alternate_greetings": [None]}, ["Hi."]),
    ]:
        card = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Kit", **data}}
        persona = persona_from_card(card)
        assert persona.greetings == greetings
        assert card_from_persona(persona) == card
