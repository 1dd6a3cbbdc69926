"""Macro expansion: names, legacy tags, date/time, seeded random, {{original}}."""

from __future__ import annotations

from datetime import datetime

from agentmm.personas import expand

NOW = datetime(2024, 3, 5, 14, 7)


def ex(text: str, **kw) -> str:
    return expand(text, char="Ilse", user="Sam", now=NOW, **kw)


def test_names_case_insensitive_and_legacy():
    assert ex("{{char}} meets {{USER}}; {{Char}} and <BOT>/<user>/<Char>") == ("Ilse meets Sam; Ilse and Ilse/Sam/Ilse")


def test_date_time():
    assert ex("{{date}} at {{time}}, {{weekday}} {{isodate}} {{isotime}}") == (
        "March 5, 2024 at 2:07 PM, Tuesday 2024-03-05 14:07"
    )


def test_random_is_seeded_and_stable():
    text = "{{random:red,green,blue,gold}} {{random::a, b::c, d}} {{pick:x,y,z}}"
    first = ex(text, seed="thread-1")
    assert first == ex(text, seed="thread-1")  # same thread, same prompt head
    picks = {ex(text, seed=f"thread-{i}") for i in range(30)}
    assert len(picks) > 1
    assert first.split(" ")[0] in {"red", "green", "blue", "gold"}
    assert {ex("{{random::a, b::c, d}}", seed=i) for i in range(30)} == {"a, b", "c, d"}


def test_random_escaped_comma_and_empty():
    assert ex(r"{{random:one\, two}}") == "one, two"
    assert ex("{{random}}") == ""


def test_original_once_and_expanded():
    out = ex("{{original}} Also: be {{char}}. {{original}}", original="Play {{char}} for {{user}}.")
    assert out == "Play Ilse for Sam. Also: be Ilse. "


def test_single_pass_and_unknown_kept():
    assert expand("{{user}}", char="x", user="{{char}}") == "{{char}}"
    assert ex("{{unknown_macro}} {{// a comment}}{{noop}}x{{newline}}y") == "{{unknown_macro}} x\ny"
    assert ex("no macros here") == "no macros here"
