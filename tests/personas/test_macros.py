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


def test_nested_macros_fill_inner_first_and_never_twice():
    assert {ex("{{random:{{user}},{{char}}}}", seed=i) for i in range(30)} == {"Sam", "Ilse"}
    assert {expand("{{random:{{user}},x}}", char="c", user="{{char}}", seed=i) for i in range(30)} == {"{{char}}", "x"}
    assert ex("{{{user}}} {{unknown:{{char}}}} {{user") == "{Sam} {{unknown:Ilse}} {{user"


def test_random_follows_sillytavern_pattern():
    """SillyTavern's /{{random\\s?::?([^}]+)}}/: one space may come before the colon."""
    assert {ex("{{random : a,b}}", seed=i) for i in range(30)} == {"a", "b"}
    assert {ex("{{pick:a::b,c}}", seed=i) for i in range(30)} == {"a", "b,c"}


def test_comment_with_braces_is_removed():
    assert ex("x{{// a {comment} }}y{{// {{user}} }}z") == "xyz"


def test_roll_is_seeded_dice():
    rolls = {int(ex(f"{{{{roll:{f}}}}}", seed=i)) for i in range(200) for f in ("d6", "1d6", "6", " 6")}
    assert rolls == {1, 2, 3, 4, 5, 6}
    assert {int(ex("{{roll:2d6+1}}", seed=i)) for i in range(300)} == set(range(3, 14))
    assert {int(ex("{{roll 1d4-1}}", seed=i)) for i in range(100)} == {0, 1, 2, 3}
    assert ex("{{roll:d6}} {{roll:d6}}", seed="t") == ex("{{roll:d6}} {{roll:d6}}", seed="t")


def test_invalid_rolls_are_empty_like_sillytavern():
    assert ex("[{{roll:d0}}][{{roll:banana}}][{{roll:0}}][{{roll:1001d6}}]") == "[][][][]"
    assert ex("{{roll}}") == "{{roll}}"  # not SillyTavern's pattern: left for other tools


def test_trim_takes_the_line_breaks_around_it():
    """SillyTavern's /(?:\\r?\\n)*{{trim}}(?:\\r?\\n)*/: the macro and every line break next to it go."""
    assert ex("a\n\n{{trim}}\n\nb") == "ab"
    assert ex("a\r\n{{TRIM}}\r\n\r\nb {{trim}} c") == "ab  c"


def test_time_utc_and_idle_duration_read_the_thread_s_fixed_time():
    from datetime import UTC

    aware = datetime(2024, 3, 5, 14, 7, tzinfo=UTC)
    text = "{{time_UTC+2}} / {{time_utc-5}} / {{time_UTC+90}} / {{idle_duration}}"
    assert expand(text, char="c", user="u", now=aware) == "4:07 PM / 9:07 AM / 3:37 PM / just now"


def test_card_fields_are_filled_once_with_their_own_macros():
    fields = {"description": "{{char}} sails. {{description}}", "persona": "", "charversion": "1.2"}
    out = ex("[{{description}}] [{{persona}}] v{{charVersion}} {{scenario}}", fields=fields)
    assert out == "[Ilse sails. {{description}}] [] v1.2 {{scenario}}"


def test_unsupported_sillytavern_macros_are_named_once_each():
    from agentmm.personas.macros import unsupported

    text = "{{setvar::mood::calm}} {{getvar::mood}} {{ lastMessage }} {{getvar::x}} {{char}} {{unknown}}"
    assert unsupported(text) == ["setvar", "getvar", "lastMessage"]
    assert unsupported("{{char}} {{random:a,b}}") == []
