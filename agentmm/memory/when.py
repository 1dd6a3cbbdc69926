"""Recall by date: the days a question asks about, the days each memory speaks of, and an index
that finds the memories whose days meet the question's.

"What did I tell you yesterday?" or "Where did Ada go on 23 July 2023?" share few words with
the memory that answers them ("I went to the jazz festival yesterday", said on 24 July), so
neither dense search nor BM25 ranks it. The question's time expression gives a span of days
(:func:`question_span`); each memory speaks of the day it was said and of the days its own
relative expressions meant then (:func:`memory_spans`, the same expressions
``agentmm.memory.dates`` resolves for the prompt); hybrid recall then adds, as a third ranking,
the memories whose spans meet the question's (``DateIndex``).
"""

from __future__ import annotations

import bisect
import calendar
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any, Generic, TypeVar

from agentmm.memory.dates import DAYS_AGO, SIMPLE, WEEKS_AGO, as_date, count_of

Span = tuple[date, date]
R = TypeVar("R")

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTH = r"(january|february|march|april|may|june|july|august|september|october|november|december|" \
         r"jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\.?"  # fmt: skip
_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?(?:\s+of)?\s+{_MONTH}(?:,?\s+(\d{{4}}))?\b", re.I)
_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b", re.I)
_MONTH_YEAR = re.compile(rf"\b(?:in\s+|during\s+)?{_MONTH}(?:\s+of)?(?:,?\s+(\d{{4}}))?\b", re.I)
_ISO_DAY = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b")
_YEAR = re.compile(r"\b(?:in|during|of)\s+(\d{4})\b", re.I)
# "may" is also a verb: a bare month name counts only after "in"/"during" or before a year.
_BARE_MONTH_OK = re.compile(rf"\b(?:in|during)\s+{_MONTH}|{_MONTH}(?:\s+of)?,?\s+\d{{4}}", re.I)
_ASKS = re.compile(
    r"\?|^\W*(?:what|when|where|who|whom|which|how|why|did|do|does|was|were|have|has|had|is|are|can|could|"
    r"remind me|tell me|remember)\b",
    re.I,
)
# The longest a memory's span runs (a month); the index looks this far back from a question's start.
_LONGEST_SPAN = 31


def question_span(question: str, now: date | datetime | None) -> Span | None:
    """The days ``question`` asks about, or ``None`` when it is no question or names no time;
    relative expressions ("yesterday", "last week") count back from ``now``, and a day or
    month given without a year is its latest one not after ``now``. Only questions: "I went
    running this morning" asks for nothing from this morning."""
    if not _ASKS.search(question):
        return None
    today = as_date(now)
    for finder in (_explicit_day, _month, _year):
        try:
            span = finder(question, today)
        except (ValueError, OverflowError):  # "in 0000": no such year
            span = None
        if span is not None:
            return span
    if today is None:
        return None
    spans = relative_spans(question, today)
    return spans[0] if spans else None


def memory_spans(value: Mapping[str, Any]) -> list[Span]:
    """The days a stored memory speaks of: the day it was said, and what each relative
    expression in it meant then."""
    said = as_date(value.get("when"))
    if said is None:
        return []
    text = str(value.get("content", value.get("text", "")))
    spans = [(said, said), *relative_spans(text, said)]
    return [(a, b) for a, b in spans if (b - a).days <= _LONGEST_SPAN]  # "last year" says no day


def relative_spans(text: str, said: date) -> list[Span]:
    """What the relative time expressions of ``text`` meant on the day ``said``, in order."""
    found: list[tuple[int, Span]] = []
    for match in (*SIMPLE.finditer(text), *DAYS_AGO.finditer(text), *WEEKS_AGO.finditer(text)):
        try:
            span = _span_of(match, said)
        except OverflowError:  # a day before 1 January 1 or after 9999
            continue
        if span is not None:
            found.append((match.start(), span))
    return [span for _, span in sorted(found)]


def _span_of(match: re.Match[str], said: date) -> Span | None:
    if match.re is SIMPLE:
        return _simple_span(match.group(1).lower(), said)
    if match.re is DAYS_AGO:
        then = said - timedelta(days=count_of(match.group(1)))
        return then, then
    then = said - timedelta(weeks=count_of(match.group(1)))
    return then - timedelta(days=3), then + timedelta(days=3)


def _simple_span(phrase: str, said: date) -> Span | None:
    one = timedelta(days=1)
    monday = said - timedelta(days=said.weekday())
    if phrase in ("yesterday", "last night"):
        return said - one, said - one
    if phrase in ("today", "tonight", "this morning", "this afternoon", "this evening"):
        return said, said
    if phrase == "tomorrow":
        return said + one, said + one
    if phrase == "last week":
        return monday - timedelta(days=7), monday - one
    if phrase == "next week":
        return monday + timedelta(days=7), monday + timedelta(days=13)
    if phrase == "last weekend":
        saturday = monday - timedelta(days=2)
        return saturday, saturday + one
    if phrase == "last month":
        end = said.replace(day=1) - one
        return end.replace(day=1), end
    if phrase == "next month":
        start = (said.replace(day=28) + timedelta(days=4)).replace(day=1)
        return start, _month_end(start.year, start.month)
    if phrase == "last year":
        return date(said.year - 1, 1, 1), date(said.year - 1, 12, 31)
    return None


def _explicit_day(text: str, today: date | None) -> Span | None:
    if match := _ISO_DAY.search(text):
        return _day(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    for pattern, day_group, month_group in ((_DAY_MONTH, 1, 2), (_MONTH_DAY, 2, 1)):
        if match := pattern.search(text):
            month = _MONTHS[match.group(month_group).lower().rstrip(".")]
            year = int(match.group(3)) if match.group(3) else _latest_year(month, today)
            span = _day(year, month, int(match.group(day_group))) if year else None
            if span is not None:
                return span
    return None


def _month(text: str, today: date | None) -> Span | None:
    if not _BARE_MONTH_OK.search(text):
        return None
    for match in _MONTH_YEAR.finditer(text):
        month = _MONTHS[match.group(1).lower().rstrip(".")]
        year = int(match.group(2)) if match.group(2) else _latest_year(month, today)
        if year:
            return date(year, month, 1), _month_end(year, month)
    return None


def _year(text: str, today: date | None) -> Span | None:
    if match := _YEAR.search(text):
        year = int(match.group(1))
        return date(year, 1, 1), date(year, 12, 31)
    return None


def _latest_year(month: int, today: date | None) -> int | None:
    if today is None:
        return None
    return today.year if month <= today.month else today.year - 1


def _day(year: int, month: int, day: int) -> Span | None:
    try:
        value = date(year, month, day)
    except ValueError:
        return None
    return value, value


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


class DateIndex(Generic[R]):
    """Memories by the days they speak of, kept sorted by each span's first day so the
    memories meeting a span are found by bisection, and updated in place as memories change."""

    def __init__(self) -> None:
        self._starts: list[tuple[int, int, int, R]] = []  # (first day, last day, order, ref)
        self._spans: dict[R, list[tuple[int, int, int, R]]] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._spans)

    def add(self, ref: R, spans: Iterable[Span]) -> None:
        self.remove(ref)
        rows = self._rows(ref, spans)
        for row in rows:
            bisect.insort(self._starts, row, key=_position)
        if rows:
            self._spans[ref] = rows

    def add_many(self, spans_by_ref: Iterable[tuple[R, Iterable[Span]]]) -> None:
        """Index many new refs at once: one sort instead of an insertion each (a scope's first
        index, 100k memories)."""
        for ref, spans in spans_by_ref:
            self.remove(ref)
            if rows := self._rows(ref, spans):
                self._spans[ref] = rows
                self._starts.extend(rows)
        self._starts.sort(key=_position)

    def _rows(self, ref: R, spans: Iterable[Span]) -> list[tuple[int, int, int, R]]:
        rows = []
        for first, last in spans:
            self._order += 1
            rows.append((first.toordinal(), last.toordinal(), self._order, ref))
        return rows

    def remove(self, ref: R) -> None:
        for row in self._spans.pop(ref, []):
            i = bisect.bisect_left(self._starts, _position(row), key=_position)
            if i < len(self._starts) and self._starts[i] is row:
                del self._starts[i]

    def meeting(self, span: Span) -> list[R]:
        """Refs with a span that meets ``span``, each once, the most recently added first."""
        first, last = span[0].toordinal(), span[1].toordinal()
        lo = bisect.bisect_left(self._starts, first - _LONGEST_SPAN, key=lambda r: r[0])
        hi = bisect.bisect_right(self._starts, last, key=lambda r: r[0])
        found: dict[R, int] = {}
        for start, end, order, ref in self._starts[lo:hi]:
            if end >= first and start <= last:
                found[ref] = max(found.get(ref, 0), order)
        return sorted(found, key=lambda ref: -found[ref])


def _position(row: tuple[int, int, int, Any]) -> tuple[int, int]:
    """Where a span row sorts: by its first day, then by when it was added (unique)."""
    return row[0], row[2]
