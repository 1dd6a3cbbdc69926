"""SillyTavern-style macros in persona text: ``{{char}}``, ``{{user}}``, ``{{random:a,b}}``...

Macro names are case-insensitive, as in SillyTavern. Expansion is a single pass, so what a
macro expands to (a user name with braces in it, a random pick) is never expanded again.

Stability matters more here than in SillyTavern: the persona is the head of the prompt and
llama.cpp only reuses the KV cache for an unchanged prefix. So ``{{random}}`` / ``{{pick}}``
draw from a generator seeded by the ``seed`` argument (pass the thread id: same thread, same
picks, every turn), and ``{{date}}`` / ``{{time}}`` read ``now``, which the caller should fix
per thread (e.g. its start time) rather than leave to the clock.

Unknown macros are left as they are, so text for other tools survives.
"""

from __future__ import annotations

import random
import re
from datetime import datetime

_MACRO = re.compile(r"\{\{([^{}]*)\}\}|<(BOT|USER|CHAR)>", re.IGNORECASE)
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def _date(now: datetime) -> str:
    return f"{now:%B} {now.day}, {now.year}"


def _time(now: datetime) -> str:
    hour = now.hour % 12 or 12
    return f"{hour}:{now:%M} {'AM' if now.hour < 12 else 'PM'}"


def _choices(args: str) -> list[str]:
    """``:a,b,c`` (commas, ``\\,`` escapes one) or ``::a::b`` (items may hold commas)."""
    if args.startswith("::"):
        return args[2:].split("::")
    items = _UNESCAPED_COMMA.split(args[1:]) if args.startswith(":") else []
    return [item.replace("\\,", ",").strip() for item in items]


def expand(
    text: str,
    *,
    char: str,
    user: str,
    original: str | None = None,
    seed: int | str = 0,
    now: datetime | None = None,
) -> str:
    """``text`` with its macros filled in.

    ``original`` is what ``{{original}}`` stands for in a card's own system prompt: the
    default system prompt it extends (SillyTavern substitutes it once; later ones are
    dropped). ``seed`` makes ``{{random}}`` / ``{{pick}}`` repeatable. ``now`` feeds the date
    and time macros (default: the current time, which changes the prompt every minute).
    """
    if "{{" not in text and "<" not in text:
        return text
    state = {"count": 0, "original_used": False}
    clock = now

    def when() -> datetime:
        nonlocal clock
        if clock is None:
            clock = datetime.now()
        return clock

    def replace(match: re.Match[str]) -> str:
        legacy = match.group(2)
        if legacy is not None:
            return user if legacy.lower() == "user" else char
        body = match.group(1)
        name, _, _ = body.strip().partition(":")
        name = name.strip().lower()
        if name in ("char", "charifnotgroup", "group"):
            return char
        if name == "user":
            return user
        if name == "original":
            if state["original_used"]:
                return ""
            state["original_used"] = True
            return expand(original or "", char=char, user=user, seed=seed, now=when())
        if name in ("random", "pick"):
            items = _choices(body.strip()[len(name) :])
            state["count"] += 1
            if not items:
                return ""
            rng = random.Random(f"{seed}\x00{state['count']}\x00{body}")
            return rng.choice(items)
        if name == "date":
            return _date(when())
        if name == "time":
            return _time(when())
        if name == "weekday":
            return f"{when():%A}"
        if name == "isodate":
            return when().date().isoformat()
        if name == "isotime":
            return f"{when():%H:%M}"
        if name == "newline":
            return "\n"
        if name in ("noop", "trim") or body.lstrip().startswith("//"):
            return ""
        return match.group(0)

    return _MACRO.sub(replace, text)
