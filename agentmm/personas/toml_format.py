"""agentmm's native persona files: TOML a person writes and edits by hand.

TOML rather than card JSON because people edit these: multi-line strings without escapes,
comments, and a lorebook as ``[[lorebook.entries]]`` tables. Field names are the ``Persona``
model's own. Unknown fields are an error (a typo like ``greting`` should not pass silently).

One convenience differs from cards: an entry that lists ``secondary_keys`` uses them
(``selective`` defaults to true there), since a person who writes them means them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from agentmm.personas._fields import check_nesting, describe_validation_errors
from agentmm.personas.errors import PersonaFormatError
from agentmm.personas.model import LoreEntry, Persona

_NOT_IN_TOML = ("source", "card", "image", "notes")


def loads(text: str, *, where: str = "persona.toml", source: str = "") -> Persona:
    """TOML text -> Persona; PersonaFormatError naming the file and field on any problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PersonaFormatError(f"{where}: not valid TOML ({exc})") from None
    except RecursionError:  # tomllib recurses once per level of [[[...]]] or {a = {a = ...}}
        raise PersonaFormatError(f"{where}: arrays or tables nested too deeply") from None
    check_nesting(data, where, PersonaFormatError)  # as for cards: deep data overflows copying later
    problems = _pop_card_only_fields(data)
    try:
        persona = Persona(**data, source=source)
    except ValidationError as exc:
        raise PersonaFormatError.listing(where, problems + describe_validation_errors(exc)) from None
    except TypeError as exc:  # e.g. a non-string key from a nested table
        raise PersonaFormatError.listing(where, [*problems, str(exc)]) from None
    if problems:
        raise PersonaFormatError.listing(where, problems)
    return persona


def _pop_card_only_fields(data: dict[str, Any]) -> list[str]:
    """Take out the fields a card carries but a TOML file may not, one problem each, so the
    model's own checks still run and every problem is reported at once. An entry that lists
    ``secondary_keys`` is made ``selective`` on the way (see the module docstring)."""
    problems = [f"unknown field '{key}'" for key in _NOT_IN_TOML if key in data]
    for key in _NOT_IN_TOML:
        data.pop(key, None)
    book = data.get("lorebook")
    if not isinstance(book, dict):
        return problems
    if "raw" in book:
        del book["raw"]
        problems.append("unknown field 'lorebook.raw'")
    entries = book.get("entries")
    for i, entry in enumerate(entries if isinstance(entries, list) else []):  # else the model says what is wrong
        if not isinstance(entry, dict):
            continue
        if "raw" in entry:
            del entry["raw"]
            problems.append(f"unknown field 'lorebook.entries.{i}.raw'")
        if entry.get("secondary_keys") and "selective" not in entry:
            entry["selective"] = True
    return problems


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value if v is not None]
    return value


def to_dict(persona: Persona) -> dict[str, Any]:
    """The persona as the dict a TOML file holds: set fields only, no card or image."""
    out: dict[str, Any] = {"name": persona.name}
    out.update(persona.model_dump(exclude={"name", "lorebook", *_NOT_IN_TOML}, exclude_defaults=True))
    book = persona.lorebook
    if book.entries or book.model_dump(exclude={"raw", "entries"}, exclude_defaults=True):
        dumped = book.model_dump(exclude={"raw", "entries"}, exclude_defaults=True)
        entries = []
        for entry in book.entries:
            e = {"keys": entry.keys, "content": entry.content}
            e.update(entry.model_dump(exclude={"raw", "keys", "content"}, exclude_defaults=True))
            if entry.secondary_keys and not entry.selective:
                e["selective"] = False
            entries.append(e)
        dumped["entries"] = entries
        out["lorebook"] = dumped
    return _drop_none(out)


def dumps(persona: Persona) -> str:
    """Persona -> TOML text. Lossy for cards: their raw card and image do not go in."""
    import tomli_w  # imported here: only exporting needs it

    data = to_dict(persona)
    # Multi-line strings read best, but a TOML reader turns their "\r\n" into "\n": text
    # holding a carriage return is written with escapes instead, so it comes back exactly.
    return tomli_w.dumps(data, multiline_strings=not _has_carriage_return(data))


def not_kept(persona: Persona) -> list[str]:
    """What of its card a persona's TOML file would not hold, one name each ("" in none):
    card fields agentmm does not model (``group_only_greetings``, V3 ``assets``, ``source``,
    dates), other apps' ``extensions`` (SillyTavern's ``depth_prompt``...), and lore entries'
    fields beyond the model's (their ``depth``, ``role``...). Found by exporting the card from
    the persona and from its TOML round trip and naming what differs, so it says what a
    person would lose by editing the TOML instead of the card. Empty for a native persona,
    unless lore entries from a card or world-info file were added to it (their own fields)."""
    if persona.card is None and not any(entry.raw for entry in persona.lorebook.entries):
        return []
    from agentmm.personas.cards import card_from_persona, detect_spec

    spec = "v3" if persona.card is None or detect_spec(persona.card) == "v3" else "v2"
    before = card_from_persona(persona, spec)["data"]
    after = card_from_persona(loads(dumps(persona)), spec)["data"]
    lost: list[str] = []

    def note(name: str) -> None:
        if name not in lost:
            lost.append(name)

    for key, value in before.items():
        if key == "extensions" and isinstance(value, dict):
            kept = after.get("extensions") if isinstance(after.get("extensions"), dict) else {}
            for ext, ext_value in value.items():
                if _filled(ext_value) and kept.get(ext) != ext_value:
                    note(f"extensions.{ext}")
        elif key == "character_book" and isinstance(value, dict):
            _book_lost(value, after.get("character_book"), note)
        elif _filled(value) and after.get(key) != value:
            note(key)
    return lost


def _book_lost(before: dict[str, Any], after: Any, note: Callable[[str], None]) -> None:
    after = after if isinstance(after, dict) else {}
    for key, value in before.items():
        if key != "entries" and _filled(value) and after.get(key) != value:
            note(f"character_book.{key}")
    old = before.get("entries") if isinstance(before.get("entries"), list) else []
    new = after.get("entries") if isinstance(after.get("entries"), list) else []
    for i, entry in enumerate(old):
        if not isinstance(entry, dict):
            continue
        kept = new[i] if i < len(new) and isinstance(new[i], dict) else {}
        for key, value in entry.items():
            if key == "extensions" and isinstance(value, dict):
                kept_ext = kept.get("extensions") if isinstance(kept.get("extensions"), dict) else {}
                for ext, ext_value in value.items():
                    if _filled(ext_value) and kept_ext.get(ext) != ext_value and not _entry_field(ext):
                        note(f"lore entries' {ext}")
            elif _filled(value) and kept.get(key) != value and not _entry_field(key):
                note(f"lore entries' {key}")


def _entry_field(key: str) -> bool:
    """Whether a lore entry's card key (``constant``, ``useProbability``, SillyTavern's
    ``extensions.position``...) is one of ``LoreEntry``'s fields, which the TOML file holds
    whenever it is not the default: the exported card may write it elsewhere or leave a default
    out, but nothing of it is lost. A world-info import copies such keys into the entry's
    ``extensions`` as well as its fields; ``depth`` and ``role`` have no field and are lost."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    return snake != "raw" and snake in LoreEntry.model_fields


def _filled(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _has_carriage_return(value: Any) -> bool:
    if isinstance(value, str):
        return "\r" in value
    if isinstance(value, dict):
        return any(_has_carriage_return(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_carriage_return(v) for v in value)
    return False


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def template(name: str) -> str:
    """A commented persona file to fill in (what ``agentmm personas new NAME`` writes)."""
    return _TEMPLATE.replace("@NAME@", _quote(name))


_TEMPLATE = '''# An agentmm persona. Edit the text, then chat with: agentmm chat --persona <this file's name>
# Macros work in every text field: {{char}} (this persona), {{user}} (the person chatting),
# {{random:a,b,c}} (a pick that stays the same for the whole conversation).

name = @NAME@

# Who {{char}} is: looks, background, manner. The model reads this every turn.
description = """
{{char}} is ...
"""

# A few words on temperament, e.g. "warm, wry, patient, secretly anxious".
personality = ""

# Where and when the conversation happens, and how {{user}} fits in.
scenario = ""

# The first greeting opens a new chat; the others are alternates (pick with --greeting N).
greetings = [
    """*{{char}} looks up.* Oh, hello, {{user}}.""",
    """*{{char}} doesn't notice {{user}} at first.*""",
]

# How {{char}} talks. Each <START> begins one example exchange.
example_dialogue = """
<START>
{{user}}: Who are you?
{{char}}: ...
"""

# Leave empty to use agentmm's default system prompt; {{original}} inserts it into yours.
system_prompt = ""

# Short instructions placed after the chat history, e.g. "Keep replies under 120 words."
post_history_instructions = ""

tags = []
creator = ""
character_version = "1.0"

# Tools this persona may call (names from `agentmm tools list`); empty means none.
allowed_tools = []

# Optional: a model for this persona (a path, a shipped model or a hub id).
# model = "..."

# Optional sampling overrides.
# [sampling]
# temperature = 0.8
# top_p = 0.95

# Lore that enters the prompt only when its keys come up in the last scan_depth messages.
[lorebook]
scan_depth = 4
token_budget = 512
recursive_scanning = false

[[lorebook.entries]]
name = "example"
keys = ["example key", "another key"]
# secondary_keys = ["..."]       # then the entry also needs one of these (selective_logic)
# selective_logic = "and_any"    # and_any | and_all | not_any | not_all
# constant = false               # true: always in the prompt
# case_sensitive = false
# priority = 0                   # breaks ties in the token budget (higher kept first)
# insertion_order = 100          # lower comes first in the prompt; the token budget keeps higher first
# probability = 100              # percent chance it goes in when its keys match, rolled each turn
# delay = 0                      # cannot fire until the chat has this many messages
# sticky = 0                     # once fired, stays in for this many more messages, keys or not
# cooldown = 0                   # once fired (or its sticky period over), cannot fire for this many messages
content = """
What {{char}} knows about the example key.
"""
'''
