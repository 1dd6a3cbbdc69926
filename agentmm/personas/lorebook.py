"""Lorebook activation: which entries fire for the latest messages, and why.

Semantics follow SillyTavern's world info (public/scripts/world-info.js, ``checkWorldInfo``
and ``WorldInfoBuffer.matchKeys``) where the card specs leave gaps: each key is macro-filled
(``transform``) and trimmed before it is matched, as SillyTavern does with
``substituteParams(key).trim()``; keys match as case-insensitive substrings unless an entry
says ``case_sensitive`` / ``match_whole_words`` (a one-word key then needs a non-word
character, in JavaScript's ASCII sense, or the text's end on each side; a key of several words
stays a substring); only a ``/pattern/flags`` key is a regular expression, whose own flags
alone decide its case (``parseRegexFromString`` overrides the entry's settings; a key that does
not parse as one is plain text, and ``use_regex`` is not read, see ``_key_spec``); JavaScript
syntax with a clean Python spelling is translated (``js_pattern``), and a regex key Python
still cannot compile is skipped with a logged warning (``personas validate`` names it); the
V3 decorators ``@@activate`` / ``@@dont_activate`` at the start of an entry's content decide
before ``constant`` and the keys, and no decorator line goes into the text (``decorators``); the
secondary-key filter (``selective``) combines with AND ANY (default), AND ALL, NOT ANY or NOT
ALL; fired entries' contents are scanned again when the book is ``recursive_scanning``, for at
most ``max_recursion_depth`` rounds (an entry with ``delay_until_recursion`` fires only in one
of those, on the chat and the lore); the token budget is filled highest ``insertion_order``
first (SillyTavern's ``order``) and stops at the first entry that does not fit, like
SillyTavern, whose test is ``>=``: an entry that would bring the total to the budget exactly
does not fit either; an entry with a ``probability`` under 100 is rolled for as it would be inserted
(SillyTavern's ``verifyProbability``: it goes in when a roll of 0..100 is at most its
percent), and one that loses takes no budget and is not rolled for again that turn; an entry
with a ``delay`` (a SillyTavern timed effect) cannot fire while the chat holds fewer messages
than it says (``chat_length``, SillyTavern's ``chat.length``), constant or not; with the
thread's ``timed`` effects (``timed_effects``), a sticky entry fires without its keys and
without a roll, first of its pass into the budget, and one cooling down (and not sticky) cannot
fire, as SillyTavern orders those checks.

Speed: this runs every turn over up to the whole chat window, so the book is compiled once
(cached on its match-relevant fields) into trie-shaped regexes, one per first character,
that find every literal key, overlaps included, in one fast pass over a message; and each
message's matches are cached by its text. A chat window is append-only, so after the first
turn only the new messages are scanned.
"""

from __future__ import annotations

import logging
import random
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from agentmm.personas.decorators import Decorated, parse_decorators
from agentmm.personas.model import Lorebook, LoreEntry
from agentmm.personas.timed_effects import TimedEffects

_log = logging.getLogger(__name__)
DEFAULT_SCAN_DEPTH = 2
_TRIE_MAX_KEY = 64  # longer literal keys are checked with `in`: keeps the regex shallow
_MESSAGE_CACHE = 4096  # messages per book, and at most this many characters in all:
_MESSAGE_CACHE_CHARS = 4_000_000
_BOOK_CACHE = 16
# SillyTavern's parseRegexFromString (utils.js): /pattern/flags with JavaScript's flags, and
# no unescaped "/" inside the pattern. Of the flags, g, u and y change nothing here.
_REGEX_KEY = re.compile(r"/(.+?)/([gimsuy]*)", re.DOTALL)
_UNESCAPED_SLASH = re.compile(r"(?:^|[^\\])/")
_WHITESPACE = re.compile(r"\s")


@dataclass(frozen=True, slots=True)
class ActivatedEntry:
    """An entry that fired: the text to insert, what it costs, and why it fired."""

    entry: LoreEntry
    content: str
    tokens: int
    reason: Literal["constant", "key", "decorator", "sticky"]
    key: str | None = None
    """The primary key that matched (None for constant entries)."""
    secondary_key: str | None = None
    """The secondary key that satisfied the filter (AND ANY / AND ALL), when one did."""
    step: int = 0
    """0: matched in the chat; n: matched in entries fired at recursion round n."""
    seen_in_chat: bool = False
    """In a recursion round, its key was in the chat, not the lore (a ``delay_until_recursion`` entry)."""
    roll: float | None = None
    """The roll (0..100) of an entry with a ``probability`` under 100; None for the others."""
    held: str = ""
    """Why it would have fired but was held back by a timed effect (``activate``'s ``held``)."""
    timed: str = ""
    """Its sticky timer (reason "sticky"), or the timers its firing started, in words."""

    @property
    def why(self) -> str:
        """One line for traces and ``/why``."""
        if self.reason == "constant":
            return f"constant{self.odds}{self.timers}"
        if self.reason == "decorator":
            return f"@@activate{self.odds}{self.timers}"
        if self.reason == "sticky":
            return f"sticky ({self.timed})"
        where = "chat" if self.step == 0 else f"{'chat' if self.seen_in_chat else 'lore'} (recursion {self.step})"
        extra = f" + {self.secondary_key!r}" if self.secondary_key else ""
        return f"key {self.key!r}{extra} in {where}{self.odds}{self.timers}"

    @property
    def timers(self) -> str:
        """``", sticky until the chat has 7 messages"`` for an entry whose firing started timers."""
        return f", {self.timed}" if self.timed else ""

    @property
    def odds(self) -> str:
        """``", 30% chance (rolled 12.5)"`` for an entry rolled for, else empty."""
        return "" if self.roll is None else f", {self.entry.probability}% chance (rolled {self.roll:.1f})"

    @property
    def lost_roll(self) -> bool:
        return self.roll is not None and self.roll > self.entry.probability

    def as_trace(self) -> dict[str, object]:
        """Plain data for the turn's trace and checkpoint (no model objects)."""
        return {
            "entry": self.entry.label,
            "why": self.why,
            "tokens": self.tokens,
            "position": self.entry.position,
            "insertion_order": self.entry.insertion_order,
            "priority": self.entry.priority,
            "content": self.content,
        }


# -- compiling a book ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _KeySpec:
    text: str
    case_sensitive: bool
    whole_word: bool
    regex: bool


@dataclass
class _Compiled:
    keys: list[_KeySpec]
    primary: list[list[tuple[int, str]]]
    """Per entry: (key id, the key as the entry spells it) for each usable key."""
    secondary: list[list[tuple[int, str]]]
    by_key: dict[int, list[int]]
    tries: list[tuple[list[tuple[str, re.Pattern[str]]], dict[str, tuple[int, ...]], bool]]
    """Per case mode: (first char, pattern for the rest) groups, and key text -> ids of the
    keys it contains as a prefix (itself included; the regex reports the longest key at a
    position, so the shorter ones starting there come from this table)."""
    long_keys: list[tuple[int, str, bool]]
    regexes: list[tuple[int, re.Pattern[str]]]
    boundaries: dict[int, re.Pattern[str]]
    max_entry_depth: int
    cache: OrderedDict[str, frozenset[int]] = field(default_factory=OrderedDict)
    cache_chars: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def scan(self, text: str) -> frozenset[int]:
        """Ids of the keys present in ``text`` (cached: chat windows repeat every turn)."""
        with self.lock:
            hit = self.cache.get(text)
            if hit is not None:
                self.cache.move_to_end(text)
                return hit
        found: set[int] = set()
        lower = text.lower()
        for groups, prefixes, case_sensitive in self.tries:
            haystack = text if case_sensitive else lower
            for first, pattern in groups:
                if first in haystack:
                    for rest in set(pattern.findall(haystack)):
                        found.update(prefixes[first + rest])
        for key_id, needle, case_sensitive in self.long_keys:
            if needle in (text if case_sensitive else lower):
                found.add(key_id)
        for key_id, rx in self.regexes:
            if rx.search(text):
                found.add(key_id)
        for key_id in [k for k in found if k in self.boundaries]:
            haystack = text if self.keys[key_id].case_sensitive else lower
            if not self.boundaries[key_id].search(haystack):
                found.discard(key_id)
        result = frozenset(found)
        with self.lock:
            if text not in self.cache:
                self.cache[text] = result
                self.cache_chars += len(text)
            while self.cache and (len(self.cache) > _MESSAGE_CACHE or self.cache_chars > _MESSAGE_CACHE_CHARS):
                old, _ = self.cache.popitem(last=False)
                self.cache_chars -= len(old)
        return result


def _trie_pattern(words: Iterable[str]) -> str:
    """A regex matching the longest of ``words`` at a position, shaped as a trie so the
    regex engine tries one branch per next character instead of every word in turn."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        branches = [re.escape(ch) + build(sub) for ch, sub in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return build(root)


def _first_char_patterns(words: Iterable[str]) -> list[tuple[str, re.Pattern[str]]]:
    """One pattern per first character: ``c(?=(rest-trie))``. A literal first character
    lets the regex engine skip ahead with a fast search instead of trying the trie at every
    position, and consuming only that character keeps overlapping matches ("tav" inside
    "tavern", "vern" after it) visible."""
    rests: dict[str, list[str]] = {}
    for word in words:
        rests.setdefault(word[0], []).append(word[1:])
    out = []
    for first, tails in sorted(rests.items()):
        body = _trie_pattern(t for t in tails if t)
        if body and "" in tails:
            body = f"(?:{body})?"
        out.append((first, re.compile(re.escape(first) + "(?=(" + body + "))")))
    return out


def _slash_form(key: str) -> tuple[str, str] | None:
    """(pattern, flags) when ``key`` is a ``/pattern/flags`` key as SillyTavern's
    ``parseRegexFromString`` (public/scripts/utils.js) reads one, else None (then it is plain
    text). The form alone decides: whether Python can run the pattern is another question."""
    m = _REGEX_KEY.fullmatch(key)
    if m is None or _UNESCAPED_SLASH.search(m.group(1)):
        return None
    return m.group(1), m.group(2)


def _slash_regex(key: str) -> re.Pattern[str] | None:
    """``key`` as SillyTavern reads a ``/pattern/flags`` key, in Python's terms; None when it
    is not one or Python cannot compile it (``regex_key_error`` says why)."""
    form = _slash_form(key)
    if form is None:
        return None
    try:
        return _compile_js(*form)
    except (re.error, RecursionError, OverflowError, ValueError):
        return None


def regex_key_error(key: str) -> str | None:
    """Why a ``/pattern/flags`` key cannot be used here (JavaScript-only syntax such as
    ``\\p{Lu}``, or a pattern that is not valid at all); None for a usable regex key or a key
    that is plain text."""
    form = _slash_form(key)
    if form is None:
        return None
    try:
        _compile_js(*form)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _compile_js(source: str, flags_text: str) -> re.Pattern[str]:
    """A JavaScript pattern and flags compiled as Python ``re``; of the flags, g, u and y
    change nothing for a yes/no search."""
    flags = re.IGNORECASE if "i" in flags_text else 0
    flags |= re.DOTALL if "s" in flags_text else 0
    flags |= re.MULTILINE if "m" in flags_text else 0
    return re.compile(js_pattern(source), flags)


_JS_EMPTY_CLASSES = {"[]": "(?!)", "[^]": r"[\s\S]"}


def js_pattern(source: str) -> str:
    """The JavaScript regex syntax that has a clean Python spelling, rewritten: named groups
    ``(?<name>`` -> ``(?P<name>``, backreferences ``\\k<name>`` -> ``(?P=name)``, the
    any-character class ``[^]`` -> ``[\\s\\S]`` and the never-matching ``[]`` -> ``(?!)``. Escapes
    and character classes are copied as they are; what still does not compile is reported
    by ``regex_key_error``."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            named = re.match(r"\\k<([A-Za-z_]\w*)>", source[i:])
            if named:
                out.append(f"(?P={named.group(1)})")
                i += named.end()
                continue
            out.append(source[i : i + 2])
            i += 2
            continue
        if ch == "[":
            empty = next((k for k in _JS_EMPTY_CLASSES if source.startswith(k, i)), None)
            if empty is not None:
                out.append(_JS_EMPTY_CLASSES[empty])
                i += len(empty)
                continue
            j = i + 1
            while j < n and source[j] != "]":
                j += 2 if source[j] == "\\" else 1
            out.append(source[i : j + 1])
            i = j + 1
            continue
        if source.startswith("(?<", i) and not source.startswith(("(?<=", "(?<!"), i):
            out.append("(?P<")
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _key_spec(key: str, entry: LoreEntry) -> _KeySpec | None:
    """How one (already filled and trimmed) key is matched; None for an empty key.

    As SillyTavern's ``matchKeys`` (public/scripts/world-info.js): a key is a regular
    expression only in ``/pattern/flags`` form. ``use_regex`` is not read: SillyTavern writes
    ``"use_regex": true`` on every entry it embeds in a card ("ST keys are always regex" in
    src/endpoints/characters.js ``convertWorldInfoToCharacterBook``) while its own reader
    ignores the field, so obeying it would make ``C++`` or ``Dr. Who?`` patterns. The field is
    kept on the entry for a lossless export."""
    if not key:
        return None
    if _slash_form(key) is not None:
        return _KeySpec(key, True, False, True)  # case_sensitive unused: the flags decide
    text = key if entry.case_sensitive else key.lower()
    # matchKeys: a key of several words (whitespace inside) is a plain substring even with
    # "match whole words" on; only a one-word key gets the word boundaries.
    whole_word = entry.match_whole_words and not _WHITESPACE.search(text)
    return _KeySpec(text, entry.case_sensitive, whole_word, False)


def _compile_regex(spec: _KeySpec) -> re.Pattern[str] | None:
    """A ``/pattern/flags`` key's pattern; None when Python cannot run it (the activation
    skips it and ``personas validate`` names it)."""
    return _slash_regex(spec.text)


def _word_boundary(text: str) -> re.Pattern[str]:
    """SillyTavern's whole-word test, ``(?:^|\\W)(key)(?:$|\\W)``, with JavaScript's \\W: ASCII
    only (no ``u`` flag), so any other character, CJK or accented, is a boundary (``星野``
    is a word in "私は星野です")."""
    return re.compile(f"(?<![A-Za-z0-9_]){re.escape(text)}(?![A-Za-z0-9_])")


_FilledKeys = tuple[tuple[tuple[str, str], ...], ...]
"""Per entry: (the key as the entry spells it, the key as matched) pairs."""


def _filled(keys: Iterable[Sequence[str]], transform: Callable[[str], str] | None) -> _FilledKeys:
    """Each entry's keys macro-filled and trimmed, as SillyTavern matches them."""
    return tuple(tuple((raw, (transform(raw) if transform else raw).strip()) for raw in ks) for ks in keys)


def _compile(book: Lorebook, primary_keys: _FilledKeys, secondary_keys: _FilledKeys) -> _Compiled:
    ids: dict[_KeySpec, int] = {}
    keys: list[_KeySpec] = []

    def key_ids(entry: LoreEntry, pairs: tuple[tuple[str, str], ...]) -> list[tuple[int, str]]:
        out = []
        for raw, key in pairs:
            spec = _key_spec(key, entry)
            if spec is None:
                continue
            if spec not in ids:
                ids[spec] = len(keys)
                keys.append(spec)
            out.append((ids[spec], raw))
        return out

    primary = [key_ids(e, p) for e, p in zip(book.entries, primary_keys, strict=True)]
    secondary = [key_ids(e, s) for e, s in zip(book.entries, secondary_keys, strict=True)]
    by_key: dict[int, list[int]] = {}
    for i, (p, s) in enumerate(zip(primary, secondary, strict=True)):
        for k in {k for k, _ in (*p, *s)}:
            by_key.setdefault(k, []).append(i)

    tries = []
    long_keys: list[tuple[int, str, bool]] = []
    regexes: list[tuple[int, re.Pattern[str]]] = []
    boundaries: dict[int, re.Pattern[str]] = {}
    for case_sensitive in (False, True):
        lookup: dict[str, list[int]] = {}
        for i, spec in enumerate(keys):
            if spec.regex or spec.case_sensitive != case_sensitive:
                continue
            if len(spec.text) > _TRIE_MAX_KEY:
                long_keys.append((i, spec.text, case_sensitive))
            else:
                lookup.setdefault(spec.text, []).append(i)
        if lookup:
            lengths = sorted({len(t) for t in lookup})
            prefixes = {t: tuple(i for n in lengths if n <= len(t) for i in lookup.get(t[:n], ())) for t in lookup}
            tries.append((_first_char_patterns(lookup), prefixes, case_sensitive))
    broken: set[int] = set()
    for i, spec in enumerate(keys):
        if spec.regex:
            rx = _compile_regex(spec)
            if rx is not None:
                regexes.append((i, rx))
            else:
                broken.add(i)
        elif spec.whole_word:
            boundaries[i] = _word_boundary(spec.text)
    # Said once per compiled book (it is cached), not every turn; `personas validate` says it too.
    for index, pairs in enumerate((*primary, *secondary)):
        for k, raw in pairs:
            if k in broken:
                label = book.entries[index % len(book.entries)].label or f"#{index % len(book.entries)}"
                _log.warning("lorebook entry %r: key %s skipped: %s", label, raw, regex_key_error(keys[k].text))
    depths = [e.scan_depth for e in book.entries if e.scan_depth is not None]
    return _Compiled(
        keys=keys,
        primary=primary,
        secondary=secondary,
        by_key=by_key,
        tries=tries,
        long_keys=long_keys,
        regexes=regexes,
        boundaries=boundaries,
        max_entry_depth=max(depths, default=0),
    )


_books: OrderedDict[tuple, _Compiled] = OrderedDict()
_books_lock = threading.Lock()  # graph nodes may run in worker threads


def compiled(book: Lorebook, transform: Callable[[str], str] | None = None) -> _Compiled:
    """The compiled matcher for ``book`` with its keys filled by ``transform``, cached on
    the fields that affect matching, filled keys included (a Lorebook is a mutable model,
    so identity alone would serve stale matchers; a key like ``{{user}}`` matches another
    text in another thread)."""
    primary = _filled((e.keys for e in book.entries), transform)
    secondary = _filled((e.secondary_keys for e in book.entries), transform)
    fp = tuple(
        (p, s, e.case_sensitive, e.match_whole_words, e.use_regex, e.scan_depth)
        for e, p, s in zip(book.entries, primary, secondary, strict=True)
    )
    with _books_lock:
        hit = _books.get(fp)
        if hit is not None:
            _books.move_to_end(fp)
            return hit
    fresh = _compile(book, primary, secondary)
    with _books_lock:
        hit = _books.setdefault(fp, fresh)
        if len(_books) > _BOOK_CACHE:
            _books.popitem(last=False)
    return hit


# -- activation ----------------------------------------------------------------------------


def _passes_filter(
    entry: LoreEntry, secondary: list[tuple[int, str]], seen: Callable[[int], bool]
) -> tuple[bool, str | None]:
    """SillyTavern's secondary-key logic; returns (passes, the secondary key to cite)."""
    if not entry.selective or not secondary:
        return True, None
    hits = [text for k, text in secondary if seen(k)]
    logic = entry.selective_logic
    if logic == "and_any":
        return bool(hits), hits[0] if hits else None
    if logic == "and_all":
        ok = len(hits) == len(secondary)
        return ok, hits[-1] if ok else None
    if logic == "not_any":
        return not hits, None
    return len(hits) < len(secondary), None  # not_all


_Why = tuple[Literal["constant", "key", "decorator", "sticky"], str | None, str | None, bool]


def _evaluate(
    entry: LoreEntry,
    index: int,
    c: _Compiled,
    distance: dict[int, int],
    from_lore: dict[int, int],
    depth: int,
    decorated: Decorated | None = None,
    sticky: bool = False,
) -> _Why | None:
    """Whether one entry fires given the keys seen so far: (reason, key, secondary key, whether
    the key was in the chat).
    SillyTavern's checkWorldInfo checks the decorators before ``constant`` and the keys."""
    if decorated is not None and "@@activate" in decorated.decorators:
        return "decorator", None, None, False
    if decorated is not None and "@@dont_activate" in decorated.decorators:
        return None
    if entry.constant:
        return "constant", None, None, False
    if sticky:
        return "sticky", None, None, False
    window = entry.scan_depth if entry.scan_depth is not None else depth

    def seen(k: int) -> bool:
        d = distance.get(k)
        return (d is not None and d < window) or k in from_lore

    hit = next(((k, text) for k, text in c.primary[index] if seen(k)), None)
    if hit is None:
        return None
    key_id, key = hit
    ok, secondary = _passes_filter(entry, c.secondary[index], seen)
    if not ok:
        return None
    return "key", key, secondary, distance.get(key_id, window) < window


def activate(
    book: Lorebook,
    messages: Sequence[str],
    count_tokens: Callable[[str], int],
    *,
    scan_depth: int | None = None,
    token_budget: int | None = None,
    transform: Callable[[str], str] | None = None,
    chance: random.Random | None = None,
    missed: list[ActivatedEntry] | None = None,
    dropped: list[ActivatedEntry] | None = None,
    chat_length: int | None = None,
    held: list[ActivatedEntry] | None = None,
    timed: TimedEffects | None = None,
) -> list[ActivatedEntry]:
    """The entries of ``book`` that fire for the last messages, in the order the token budget
    is filled (highest ``insertion_order`` first, see ``_fill_order``), fitted to it.

    ``messages`` is the chat, oldest first; the last ``scan_depth`` of them are scanned
    (argument, else the book's, else 2; an entry's own ``scan_depth`` overrides it).
    ``token_budget`` overrides the book's (None or <= 0: unlimited). ``transform`` (macro
    expansion) is applied, as SillyTavern's ``substituteParams`` is, to every key before it is
    matched (so ``{{user}}`` / ``{{char}}`` keys name the people of this chat) and to each fired
    entry's content before it is counted, scanned for recursion and returned.
    ``chance`` rolls for entries with a ``probability`` under 100 (default: a fresh
    ``random.Random``); the entries that lose their roll are appended to ``missed``, if given,
    and those the token budget left out (the first that did not fit and the rest of its pass)
    to ``dropped``, so a trace can say why they are not in.
    ``chat_length`` is how many messages the whole chat holds, this turn's included (default:
    ``len(messages)``), which an entry's ``delay`` is measured against; an entry a timed effect
    holds back although it would have fired is appended to ``held`` (its ``held`` says why).
    ``timed`` is the thread's sticky and cooldown timers as this turn finds them
    (``TimedEffects.check``); the entries that fire are recorded in it (``record``), and each
    one's ``timed`` says the timers it started.
    """
    if not book.entries:
        return []
    c = compiled(book, transform)
    depth = scan_depth if scan_depth is not None else book.scan_depth
    depth = DEFAULT_SCAN_DEPTH if depth is None else depth
    budget = token_budget if token_budget is not None else book.token_budget
    horizon = max(depth, c.max_entry_depth)
    length = len(messages) if chat_length is None else chat_length
    # SillyTavern's checkDelayEffect: "delay" holds an entry while chat.length < delay.
    timed_out = {i: f"delayed until the chat has {e.delay} messages (it has {length})"
                 for i, e in enumerate(book.entries) if e.delay and length < e.delay}  # fmt: skip
    sticky = timed.sticky if timed is not None else {}
    # SillyTavern: "suppressed by cooldown" unless the entry is sticky too.
    for i, effect in (timed.cooldown if timed is not None else {}).items():
        if i not in sticky:
            timed_out.setdefault(i, f"cooling down until the chat has {effect['end']} messages (it has {length})")

    # Distance from the end of the chat at which each key was last seen (0: last message).
    distance: dict[int, int] = {}
    for d, message in enumerate(reversed(messages[-horizon:] if horizon else [])):
        for k in c.scan(message):
            distance.setdefault(k, d)
    from_lore: dict[int, int] = {}  # key id -> recursion round whose lore contained it

    fired: dict[int, ActivatedEntry] = {}
    lost: set[int] = set()
    dice = chance or random.Random()
    delayed: set[int] = set()  # matched on the chat, may fire in a recursion pass (chat + lore)
    told: set[int] = set()  # entries already put in ``held``

    def fire(i: int, entry: LoreEntry, why: _Why) -> ActivatedEntry:
        text = decorated[i].text if i in decorated else entry.content  # no "@@" line in the prompt
        content = transform(text) if transform else text
        reason, key, secondary, in_chat = why
        return ActivatedEntry(entry, content, count_tokens(content), reason, key, secondary, step, in_chat)

    used = 0
    step = 0
    # Only a content starting with "@@" has decorators: the others cost one prefix check.
    decorated = {i: parse_decorators(e.content) for i, e in enumerate(book.entries) if e.content.startswith("@@")}
    candidates: set[int] = {
        *(i for i, e in enumerate(book.entries) if e.constant),
        *(i for i, d in decorated.items() if "@@activate" in d.decorators),
        *(i for k in distance for i in c.by_key.get(k, ())),
        *sticky,
    }
    while True:
        new: list[tuple[int, ActivatedEntry]] = []
        for i in sorted(candidates):
            entry = book.entries[i]
            if i in fired or i in lost or not entry.enabled or (step > 0 and entry.exclude_recursion):
                continue
            if i in timed_out:  # SillyTavern checks timed effects first: nothing else frees it
                if held is not None and i not in told and (why := _evaluate(entry, i, c, distance, from_lore,
                                                                             depth, decorated.get(i))):  # fmt: skip
                    told.add(i)
                    held.append(replace(fire(i, entry, why), held=timed_out[i]))
                continue
            if step == 0 and entry.delay_until_recursion and i not in sticky:
                delayed.add(i)  # SillyTavern: "suppressed by delay until recursion"
                continue
            why = _evaluate(entry, i, c, distance, from_lore, depth, decorated.get(i), i in sticky)
            if why is not None:
                hit = fire(i, entry, why)
                new.append((i, replace(hit, timed=_sticky_words(sticky[i])) if why[0] == "sticky" else hit))
        # SillyTavern lets a pass's sticky entries into the budget first, then by order.
        new.sort(key=lambda pair: (pair[0] not in sticky, *_fill_order(pair[1].entry, pair[0])))
        accepted: list[ActivatedEntry] = []
        overflow = False
        for n, (i, hit) in enumerate(new):
            if hit.entry.chance is not None and i not in sticky:  # a sticky entry is not rolled again
                hit = replace(hit, roll=dice.random() * 100)
                if hit.lost_roll:
                    lost.add(i)
                    if missed is not None:
                        missed.append(hit)
                    continue
            # SillyTavern: ``textToScanTokens + newContent >= budget`` stops the pass, so an
            # entry that would fill the budget exactly is left out too.
            if budget is not None and budget > 0 and used + hit.tokens >= budget:
                overflow = True
                if dropped is not None:  # this one and the rest of the pass: SillyTavern stops here
                    dropped.extend([hit, *(later for _, later in new[n + 1 :])])
                break
            used += hit.tokens
            fired[i] = hit
            accepted.append(hit)
        if overflow or not accepted or not book.recursive_scanning:
            break
        if step >= book.max_recursion_depth:
            break
        step += 1
        fresh: set[int] = set()
        for hit in accepted:
            if hit.entry.prevent_recursion:
                continue
            for k in c.scan(hit.content):
                if k not in from_lore:
                    from_lore[k] = step
                    fresh.add(k)
        candidates = {i for k in fresh for i in c.by_key.get(k, ())}
        if any(not hit.entry.prevent_recursion for hit in accepted):  # then SillyTavern scans again
            candidates |= delayed - fired.keys()
        if not candidates:
            break
    if timed is not None:
        started = timed.record((i, hit.entry) for i, hit in fired.items())
        fired = {i: replace(hit, timed=started[i]) if i in started else hit for i, hit in fired.items()}
    return [a for _, a in sorted(fired.items(), key=lambda pair: _fill_order(pair[1].entry, pair[0]))]


def _sticky_words(effect: dict[str, object]) -> str:
    """A running sticky timer, for ``why``: when it began and when it ends, in chat messages."""
    return f"since message {effect['start']}, until the chat has {effect['end']} messages"


def _fill_order(entry: LoreEntry, index: int) -> tuple[int, int, int]:
    """The order the token budget is filled in: highest ``insertion_order`` first, as
    SillyTavern's ``sortFn`` (``b.order - a.order``, public/scripts/world-info.js) sorts the
    entries it activates; ``priority``, which SillyTavern never reads, only breaks ties; then
    the book's own order."""
    return -entry.insertion_order, -entry.priority, index
