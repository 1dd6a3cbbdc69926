"""Native TOML personas: template, round trip, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmm.personas import Persona, PersonaFormatError, template
from agentmm.personas.toml_format import dumps, loads


def test_template_parses_and_is_commented():
    text = template('Captain "Q" \\ Test')
    assert text.count("#") > 20
    p = loads(text)
    assert p.name == 'Captain "Q" \\ Test'
    assert len(p.greetings) == 2 and p.lorebook.entries[0].keys == ["example key", "another key"]


def test_round_trip():
    p = Persona(
        name="Round",
        description='Multi\nline "quoted" text',
        greetings=["hi", "hello"],
        allowed_tools=["dice"],
        model="m.gguf",
        sampling={"temperature": 0.7, "stop": ["\n\n"]},
        lorebook={
            "scan_depth": 3,
            "recursive_scanning": True,
            "entries": [
                {"keys": ["a"], "secondary_keys": ["b"], "selective": False, "content": "c"},
                {"keys": ["d"], "secondary_keys": ["e"], "selective_logic": "and_all", "content": "f", "priority": 3},
            ],
        },
    )
    text = dumps(p)
    back = loads(text)
    assert back == p
    assert "raw" not in text and "card" not in text


def test_secondary_keys_imply_selective():
    p = loads('name = "x"\n[[lorebook.entries]]\nkeys = ["a"]\nsecondary_keys = ["b"]\ncontent = "c"\n')
    assert p.lorebook.entries[0].selective is True


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('name = "x"\ngreting = "hi"\n', "unknown field 'greting'"),
        ('name = "x"\ngreetings = "hi"\n', "greetings"),
        ("description = 'no name'\n", "missing field 'name'"),
        ('name = ""\n', "name"),
        ('name = "x"\n[lorebook]\nentries = [{keys = "a", content = 1}]\n', "lorebook.entries.0"),
        ('name = "x"\n[lorebook]\nscan_depth = -1\n', "scan_depth"),
        ('name = "x"\n[[lorebook.entries]]\nkeys = ["a"]\nprobability = 150\n', "lorebook.entries.0.probability"),
        ('name = "x\n', "not valid TOML"),
        ('name = "x"\ncard = {}\n', "unknown field 'card'"),
        ('name = "x"\nnotes = ["read from chara"]\n', "unknown field 'notes'"),
    ],
)
def test_errors(text, fragment):
    with pytest.raises(PersonaFormatError) as info:
        loads(text, where="p.toml")
    assert fragment in str(info.value) and str(info.value).startswith("p.toml: ")
    assert "\n" not in str(info.value)


@settings(max_examples=80, deadline=None)
@given(
    text=st.text(max_size=40),
    name=st.text(min_size=1, max_size=10).filter(str.strip),
    tags=st.lists(st.text(max_size=8), max_size=3),
)
def test_round_trip_any_text(text, name, tags):
    p = Persona(
        name=name,
        description=text,
        greetings=[text, "x"],
        tags=tags,
        lorebook={"entries": [{"keys": [text or "k"], "content": text}]},
    )
    assert loads(dumps(p)) == p


def test_carriage_returns_survive_the_round_trip():
    p = Persona(name="Crlf", description="line one\r\nline two", greetings=["\r\n", "x"])
    assert loads(dumps(p)) == p


def test_not_kept_names_the_card_data_a_toml_file_cannot_hold():
    from agentmm.personas import persona_from_card
    from agentmm.personas.toml_format import not_kept

    card = {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": "Kit", "description": "d", "first_mes": "hi", "tags": [], "creator": "", "character_version": "",
            "group_only_greetings": ["all of you"], "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main"}],
            "source": ["https://example.org/kit"], "creation_date": 1700000000, "modification_date": 0,
            "extensions": {"depth_prompt": {"prompt": "n", "depth": 4, "role": "system"}, "fav": False, "other": {}},
            "character_book": {"entries": [
                {"keys": ["a"], "content": "A", "enabled": True, "insertion_order": 1, "use_regex": False,
                 "extensions": {"depth": 2, "role": 1}},
            ]},
        },
    }  # fmt: skip
    lost = not_kept(persona_from_card(card))
    assert lost == [
        "group_only_greetings", "assets", "source", "creation_date", "modification_date",
        "extensions.depth_prompt", "extensions.fav",
        "lore entries' depth", "lore entries' role",
    ]  # fmt: skip
    assert not_kept(loads(dumps(persona_from_card(card)))) == []  # a native persona has nothing more


def test_not_kept_names_no_entry_field_a_world_info_import_copied_into_extensions(tmp_path):
    """A world's entries keep SillyTavern's keys in ``extensions`` as well as in their own
    fields: not_kept named position, constant, selective, probability, useProbability, delay,
    which the TOML file holds (or which are the defaults), beside the really lost depth and role."""
    import json

    from agentmm.personas.toml_format import not_kept
    from agentmm.personas.worldinfo import load_world_info, with_world_info

    world = tmp_path / "world.json"
    world.write_text(json.dumps({"entries": {
        "0": {"uid": 0, "key": ["smuggler"], "keysecondary": [], "content": "Brandy.", "constant": False,
              "selective": False, "order": 100, "position": 0, "disable": False, "depth": 4, "role": None,
              "probability": 100, "useProbability": True},
        "1": {"uid": 1, "key": ["mermaid"], "content": "A mermaid.", "constant": True, "selective": False,
              "order": 100, "position": 1, "disable": False, "depth": 2, "role": 1, "probability": 40,
              "useProbability": True, "sticky": 2, "cooldown": 3, "delay": 1},
    }}))  # fmt: skip
    persona = with_world_info(Persona(name="Wren"), [load_world_info(world)])
    assert not_kept(persona) == ["lore entries' depth", "lore entries' role"]
    kept = loads(dumps(persona)).lorebook.entries[1]
    assert (kept.constant, kept.probability, kept.delay, kept.sticky, kept.position) == (True, 40, 1, 2, "after_char")
