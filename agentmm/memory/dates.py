"""Dates a memory speaks of, made explicit: "yesterday" in a message of 24 July 2023 is 23 July 2023.

A recalled memory reaches the prompt with the day it was said; what it says happened
"yesterday" or "last week" is relative to that day, which a small model does not work out (it
answers with the day the memory was said). So the relative expressions of a memory's text are
resolved against its date and shown beside it (``format_recalled``), in the words dates are
asked and answered in ("23 July 2023", "the week before 27 July 2023").
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

_NUMBERS = {"one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
            "a couple of": 2, "a few": 3}  # fmt: skip
DAYS_AGO = re.compile(r"\b(\d+|one|two|three|four|five|six|seven|a couple of|a few|a|an)\s+days?\s+ago\b", re.I)
WEEKS_AGO = re.compile(r"\b(\d+|one|two|three|four|a couple of|a few|a|an)\s+weeks?\s+ago\b", re.I)
SIMPLE = re.compile(
    r"\b(yesterday|today|tonight|this morning|this afternoon|this evening|tomorrow|last night|last week|"
    r"last weekend|last month|last year|next week|next month)\b",
    re.I,
)


def day(value: date) -> str:
    """A day as it is asked and answered: "23 July 2023"."""
    return f"{value.day} {value:%B %Y}"


def resolved(text: str, when: datetime | date | str | None) -> list[tuple[str, str]]:
    """Each relative time expression in ``text`` with what it means on ``when`` (the day it was
    said), in order of appearance; none when the day is unknown."""
    said = as_date(when)
    if said is None or not date.min + timedelta(days=400) < said < date.max - timedelta(days=400):
        return []  # at the ends of the calendar "last year" has no meaning to give
    found: list[tuple[int, str, str]] = []
    for match in SIMPLE.finditer(text):
        meaning = _simple(match.group(1).lower(), said)
        if meaning:
            found.append((match.start(), match.group(0), meaning))
    for match in (*DAYS_AGO.finditer(text), *WEEKS_AGO.finditer(text)):
        weeks = match.re is WEEKS_AGO
        try:
            then = said - timedelta(**{"weeks" if weeks else "days": count_of(match.group(1))})
        except OverflowError:  # "99999999 days ago"
            continue
        found.append((match.start(), match.group(0), f"about {day(then)}" if weeks else day(then)))
    seen: set[str] = set()
    out = []
    for _, phrase, meaning in sorted(found):
        if phrase.lower() not in seen:
            seen.add(phrase.lower())
            out.append((phrase, meaning))
    return out


def annotate(text: str, when: datetime | date | str | None) -> str:
    """``text`` with its resolved expressions after it: "… yesterday [yesterday: 23 July 2023]"."""
    notes = resolved(text, when)
    if not notes:
        return text
    return f"{text} [" + "; ".join(f"{phrase}: {meaning}" for phrase, meaning in notes) + "]"


def _simple(phrase: str, said: date) -> str:
    one_day = timedelta(days=1)
    meanings = {
        "yesterday": day(said - one_day), "last night": day(said - one_day), "today": day(said),
        "tonight": day(said), "this morning": day(said), "this afternoon": day(said), "this evening": day(said),
        "tomorrow": day(said + one_day), "last week": f"the week before {day(said)}",
        "last weekend": f"the weekend before {day(said)}", "last month": f"the month before {said:%B %Y}",
        "last year": str(said.year - 1), "next week": f"the week after {day(said)}",
        "next month": f"the month after {said:%B %Y}",
    }  # fmt: skip
    return meanings.get(phrase, "")


def count_of(word: str) -> int:
    word = word.lower()
    return int(word) if word.isdigit() else _NUMBERS.get(word, 1)


def as_date(when: datetime | date | str | None) -> date | None:
    if isinstance(when, datetime):
        return when.date()
    if isinstance(when, date):
        return when
    if not when:
        return None
    try:
        return datetime.fromisoformat(str(when)).date()
    except ValueError:
        return None
