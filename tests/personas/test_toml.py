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
