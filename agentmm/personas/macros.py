"""SillyTavern-style macros in persona text: ``{{char}}``, ``{{user}}``, ``{{random:a,b}}``...

Macro names are case-insensitive, as in SillyTavern. Macros nest, innermost first, so
``{{random:{{user}},{{char}}}}`` picks between the two names (SillyTavern gets the same
result by filling names before it runs ``{{random}}``). What a macro expands to (a user
name with braces in it, a random pick) is never expanded again.

Stability matters more here than in SillyTavern: the persona is the head of the prompt and
llama.cpp only reuses the KV cache for an unchanged prefix. So ``{{random}}`` / ``{{pick}}``
/ ``{{roll}}`` draw from a generator seeded by the ``seed`` argument (pass the thread id:
same thread, same picks and dice, every turn), and ``{{date}}`` / ``{{time}}`` read ``now``,
which the caller should fix per thread (e.g. its start time) rather than leave to the clock.
For the same reason ``{{time_UTC+2}}`` reads that same ``now``, and ``{{idle_duration}}`` is
what SillyTavern says when no message came before: "just now".

The card's own fields (``{{description}}``, ``{{personality}}``, ``{{scenario}}``,
``{{mesExamples}}``, ``{{charVersion}}``, the user's ``{{persona}}``...) come in ``fields``;
their text is filled once (its ``{{char}}`` and ``{{user}}``, not another card field), as
SillyTavern's ``getCharacterCardFields`` does.

Unknown macros are left as they are, so text for other tools survives; ``unsupported``
names the SillyTavern ones that need its chat state (variables, the last message...), so a
linter can say they will reach the model as written.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

# "{{" that is not the first of "{{{" (so "{{{user}}}" keeps its outer braces), "}}", or a
# legacy tag; nesting is tracked by `_fill`.
_TOKEN = re.compile(r"\{\{(?!\{)|\}\}|<(BOT|USER|CHAR|CHARIFNOTGROUP|GROUP)>", re.IGNORECASE)
# SillyTavern's /{{random\s?::?([^}]+)}}/ and /{{roll[ : ]([^}]+)}}/ (macros.js), applied to
# a macro's body once its inner macros are filled; bodies may then hold any character.
_RANDOM = re.compile(r"(random|pick)\s?::?(.+)", re.IGNORECASE | re.DOTALL)
_ROLL = re.compile(r"roll[ :](.+)", re.IGNORECASE | re.DOTALL)
# droll's formula, which SillyTavern rolls with: [count]d<sides>[+-modifier].
_DICE = re.compile(r"([1-9]\d*)?d([1-9]\d*)([+-]\d+)?", re.IGNORECASE | re.ASCII)
_MAX_DICE = 1000  # a formula is prompt text: "{{roll:999999999d6}}" must not hang the turn
# SillyTavern's /(?:\r?\n)*{{trim}}(?:\r?\n)*/gi, applied before any other macro: {{trim}}
# takes the line breaks around it with it.
_TRIM = re.compile(r"(?:\r?\n)*\{\{trim\}\}(?:\r?\n)*", re.IGNORECASE)
# SillyTavern's /{{time_UTC([-+]\d+)}}/ on a macro's (trimmed, lower-cased) name.
_TIME_UTC = re.compile(r"time_utc([-+]\d+)", re.ASCII)
IDLE_DURATION = "just now"
# SillyTavern macros that read or change its chat state (variables, messages, swipes, the input
# box): agentmm has no equivalent, so they reach the model as written.
UNSUPPORTED = (
    "setvar", "getvar", "addvar", "incvar", "decvar", "setglobalvar", "getglobalvar", "addglobalvar",
    "incglobalvar", "decglobalvar", "lastmessage", "lastmessageid", "lastusermessage", "lastcharmessage",
    "firstincludedmessageid", "lastswipeid", "currentswipeid", "input", "maxprompt", "timediff",
    "datetimeformat", "banned",
)  # fmt: skip
_UNSUPPORTED_NAME = re.compile(r"\{\{\s*([a-z_]+)", re.IGNORECASE)


def _date(now: datetime) -> str:
    return f"{now:%B} {now.day}, {now.year}"


def _time(now: datetime) -> str:
    hour = now.hour % 12 or 12
    return f"{hour}:{now:%M} {'AM' if now.hour < 12 else 'PM'}"


_CLOCK: dict[str, Callable[[datetime], str]] = {
    "date": _date,
    "time": _time,
    "weekday": lambda now: f"{now:%A}",
    "isodate": lambda now: now.date().isoformat(),
    "isotime": lambda now: f"{now:%H:%M}",
}


def _utc_time(now: datetime, offset: str) -> str:
    """``{{time_UTC+2}}``: ``now`` (naive: local time) in UTC shifted by the offset, which is
    hours, or minutes from 16 up (moment's ``utcOffset``)."""
    amount = int(offset)
    shift = timedelta(hours=amount) if abs(amount) < 16 else timedelta(minutes=amount)
    return _time(now.astimezone(UTC) + shift)


def unsupported(text: str) -> list[str]:
    """The SillyTavern macros in ``text`` that agentmm leaves as written (``UNSUPPORTED``),
    each named once, in the order they first appear, as the text spells them."""
    found: dict[str, str] = {}
    for m in _UNSUPPORTED_NAME.finditer(text):
        name = m.group(1)
        if name.lower() in UNSUPPORTED and name.lower() not in found:
            found[name.lower()] = name
    return list(found.values())


def _choices(items: str) -> list[str]:
    """SillyTavern's list split: on ``::`` when the list holds one (items kept as written),
    else on commas, each item trimmed and ``\\,`` kept as a comma."""
    if "::" in items:
        return items.split("::")
    parts = re.split(r"(?<!\\),", items)
    return [part.replace("\\,", ",").strip() for part in parts]


def _roll(formula: str, rng: random.Random) -> str:
    """The total of a dice formula as SillyTavern's ``{{roll}}`` gives it: a bare number
    ``n`` is ``1dn``; an invalid (or, here, oversized) formula gives ""."""
    formula = formula.strip()
    if formula.isascii() and formula.isdigit():
        formula = f"1d{formula}"
    m = _DICE.fullmatch(formula)
    if m is None:
        return ""
    count = int(m.group(1) or 1)
    if count > _MAX_DICE:
        return ""
    sides = int(m.group(2))
    total = sum(rng.randint(1, sides) for _ in range(count)) + int(m.group(3) or 0)
    return str(total)


def _fill(text: str, evaluate: Callable[[str], str], legacy: Callable[[str], str]) -> str:
    """``text`` with each ``{{...}}`` replaced by ``evaluate(body)``, inner macros first.

    An inner macro's value becomes plain text in the outer body: it is read as the outer
    macro's argument but never scanned for macros again. An unclosed ``{{`` stays as is.
    """
    frames: list[list[str]] = [[]]
    pos = 0
    for m in _TOKEN.finditer(text):
        frames[-1].append(text[pos : m.start()])
        pos = m.end()
        token = m.group(0)
        if token == "{{":
            frames.append([])
        elif token == "}}":
            if len(frames) == 1:
                frames[-1].append(token)
            else:
                body = "".join(frames.pop())
                frames[-1].append(evaluate(body))
        else:
            frames[-1].append(legacy(m.group(1)))
    frames[-1].append(text[pos:])
    while len(frames) > 1:
        unclosed = "".join(frames.pop())
        frames[-1].append("{{" + unclosed)
    return "".join(frames[0])


def expand(
    text: str,
    *,
    char: str,
    user: str,
    original: str | None = None,
    seed: int | str = 0,
    now: datetime | None = None,
    fields: Mapping[str, str] | None = None,
) -> str:
    """``text`` with its macros filled in.

    ``original`` is what ``{{original}}`` stands for in a card's own system prompt: the
    default system prompt it extends (SillyTavern substitutes it once; later ones are
    dropped). ``seed`` makes ``{{random}}`` / ``{{pick}}`` / ``{{roll}}`` repeatable. ``now``
    feeds the date and time macros (default: the current time, which changes the prompt
    every minute). ``fields`` maps lower-case macro names to card text (see
    ``agentmm.personas.prompt.card_fields``), filled here without ``fields``.
    """
    if "{{" not in text and "<" not in text:
        return text
    text = _TRIM.sub("", text)
    state = {"count": 0, "original_used": False}
    clock = now

    def when() -> datetime:
        nonlocal clock
        if clock is None:
            clock = datetime.now()
        return clock

    def rng(body: str) -> random.Random:
        state["count"] += 1
        return random.Random(f"{seed}\x00{state['count']}\x00{body}")

    def legacy(tag: str) -> str:
        return user if tag.lower() == "user" else char

    def evaluate(body: str) -> str:
        stripped = body.strip()
        name = stripped.partition(":")[0].strip().lower()
        if stripped.startswith("//") or name in ("noop", "trim"):
            return ""
        if name in ("char", "charifnotgroup", "group"):
            return char
        if name == "user":
            return user
        if name == "newline":
            return "\n"
        if name in _CLOCK:
            return _CLOCK[name](when())
        utc = _TIME_UTC.fullmatch(stripped.lower())
        if utc is not None:
            return _utc_time(when(), utc.group(1))
        if name == "idle_duration" and name == stripped.lower():
            return IDLE_DURATION
        if fields is not None and stripped.lower() in fields:
            value = fields[stripped.lower()]
            return expand(value, char=char, user=user, seed=seed, now=when()).strip()
        if name == "original":
            if state["original_used"]:
                return ""
            state["original_used"] = True
            return expand(original or "", char=char, user=user, seed=seed, now=when())
        picked = _RANDOM.fullmatch(stripped)
        if picked is not None:
            return rng(body).choice(_choices(picked.group(2)))
        if name in ("random", "pick"):  # no list at all: nothing to pick from
            return ""
        rolled = _ROLL.fullmatch(stripped)
        if rolled is not None:
            return _roll(rolled.group(1), rng(body))
        return "{{" + body + "}}"

    return _fill(text, evaluate, legacy)
