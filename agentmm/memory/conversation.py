"""Long-term memory of conversations: what a turn writes, and what a turn recalls.

Every message is one memory, scoped to (user, persona) so what a user told one character
is not known to another (a shared scope exists for what should be). The indexed text carries
the date and the speaker ("[2026-11-27] Mira: my sister is called Ana"), so questions about
when something was said find it, and the turn before it as context, so a short answer ("yes,
twice") is found by what it answered.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from langgraph.store.base import BaseStore, Item, PutOp

from agentmm.errors import InvalidTextError
from agentmm.memory.dates import annotate, day
from agentmm.memory.rerank import DEPTH, token_embedder
from agentmm.memory.rerank import rerank as rerank_hits
from agentmm.memory.retrieval import (
    LEXICAL,
    WHEN,
    WITHOUT_DATES,
    HybridHit,
    RecallCache,
    hybrid_search,
    recall_cache,
)

ROOT = "memories"
SHARED = "_shared"
NO_PERSONA = "_assistant"
# More than a turn ever writes (an observation, the message and the reply, times a few retries
# under personas switched between them; an hour's voice note is ~200 pieces: Remember).
_TURN_ROWS = 1000


_ESCAPES = {".": "%2E", "\x00": "%00"}
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_ESCAPED = re.compile("|".join(_ESCAPES.values()))


def label(name: str) -> str:
    """A user id or persona name as a namespace label: LangGraph refuses ``.`` (and NUL) in a
    label ("Dr. Who", "john.doe" crashed every turn), so those become ``%2E`` (``%00``). Every
    name that was a valid label stays its own label, so memories written before keep their
    scope, and ``label(unlabel(x)) == x`` for every label, however it was written (an import
    brings raw labels). The price: "Dr. Who" and a persona literally named "Dr%2E Who" share
    a scope."""
    if "." not in name and "\x00" not in name:
        return name
    return "".join(_ESCAPES.get(char, char) for char in name)


def unlabel(label_: str) -> str:
    """A label as the name people know: ``%2E`` read back as ``.``."""
    return _ESCAPED.sub(lambda m: _UNESCAPES[m.group()], label_)


def scope(user: str, persona: str | None = None, *, shared: bool = False) -> tuple[str, str, str]:
    """The namespace of one user's memories with one persona (or the shared one). A persona
    named as one of those (``_shared``, ``_assistant``) gets ``%5Fshared``: its own scope,
    shown by that name ("ada/%5Fshared"), which reads back to itself."""
    if shared:
        return (ROOT, label(user), SHARED)
    if not persona:
        return (ROOT, label(user), NO_PERSONA)
    return (ROOT, label(user), "%5F" + persona[1:] if persona in (SHARED, NO_PERSONA) else label(persona))


def user_prefix(user: str) -> tuple[str, str]:
    """The namespace prefix of every scope of one user."""
    return (ROOT, label(user))


def recall_scopes(user: str, persona: str | None, *, shared_memory: bool = False) -> list[tuple[str, ...]]:
    """Where a turn with ``persona`` recalls from: its own scope first (where the turn is
    written), then the shared one (notes added with ``--shared``: known to every persona); with
    ``shared_memory``, every scope of the user instead (what they told any persona)."""
    own = scope(user, persona)
    return [own, user_prefix(user) if shared_memory else scope(user, shared=True)]


def scope_text(namespace: Sequence[str]) -> str:
    """A namespace as people read it, "user/persona", names unescaped."""
    return "/".join(unlabel(part) for part in namespace[1:])


def memory_text(speaker: str, text: str, when: datetime | str, previous: str | None = None) -> str:
    """What is embedded and indexed for one message: date, speaker, words, what it answered."""
    date = f"{when:%d %B %Y}" if isinstance(when, datetime) else when
    line = f"[{date}] {speaker}: {text}"
    return f"{line}\n(in reply to: {previous})" if previous else line


@dataclass(frozen=True)
class Recalled:
    key: str
    text: str
    score: float
    similarity: float | None
    found_by: tuple[str, ...]
    namespace: tuple[str, ...]
    value: dict[str, Any]
    # The share of the query's content words the memory holds (agentmm.memory.overlap).
    overlap: float | None = None

    def as_trace(self) -> dict[str, Any]:
        return {
            "id": self.key,
            "text": self.text,
            "score": round(self.score, 5),
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "found_by": list(self.found_by),
            "scope": scope_text(self.namespace),
            "speaker": self.value.get("speaker"),
            "thread": self.value.get("thread"),
            "when": self.value.get("when"),
            "overlap": None if self.overlap is None else round(self.overlap, 4),
        }


def recall(
    store: BaseStore,
    namespaces: Sequence[tuple[str, ...]],
    query: str,
    *,
    k: int = 5,
    min_similarity: float = 0.25,
    skip: Any = None,
    cache: RecallCache | None = None,
    rounds: int = 1,
    now: datetime | None = None,
    by_date: bool = True,
    rerank: bool = False,
) -> list[Recalled]:
    """The best ``k`` memories for ``query`` across ``namespaces``, dense and BM25 fused (and
    by date, when the query names a time: ``now`` is when it is asked).

    A memory found by BM25 or by date is kept; one found only by dense search must reach
    ``min_similarity``. ``skip(value) -> bool`` drops memories the prompt already holds.
    ``cache`` keeps the scopes' corpora between calls over a store that cannot keep its own
    (``agentmm.memory.retrieval.recall_cache``). ``rounds=2`` adds the multi-hop second round
    (``agentmm.memory.multihop``); ``by_date=False`` leaves recall by date out; ``rerank``
    reorders the best candidates by late interaction (``agentmm.memory.rerank``).

    The namespaces are searched as one scope (one search, one fusion over their union), so hits
    compare by relevance: fused one namespace at a time, each namespace's best hit had the same
    score whatever its similarity, and ties decided the order.
    """
    InvalidTextError.check(query, "the search")
    found: list[Recalled] = []
    if not namespaces:
        return found
    prefix, within = _union(namespaces)
    hits = search_scope(store, prefix, query, k=k * 2, rounds=rounds, now=now, by_date=by_date,
                        rerank=rerank, cache=cache, within=within)  # fmt: skip
    for hit in hits:
        value = dict(hit.value)
        if not {LEXICAL, WHEN} & hit.ranks.keys() and (hit.dense_score or 0.0) < min_similarity:
            continue
        if skip is not None and skip(value):
            continue
        found.append(
            Recalled(
                key=hit.key,
                text=str(value.get("content", value.get("text", ""))),
                score=float(hit.score or 0),
                similarity=hit.dense_score,
                found_by=hit.found_by,
                namespace=hit.namespace,
                value=value,
                overlap=hit.overlap,
            )
        )
    return found[:k]


def _union(namespaces: Sequence[tuple[str, ...]]) -> tuple[tuple[str, ...], list[tuple[str, ...]] | None]:
    """The prefix to search and the namespaces under it to keep (``None``: all of it)."""
    spaces = [tuple(ns) for ns in namespaces]
    prefix = spaces[0]
    for ns in spaces[1:]:
        same = 0
        while same < min(len(prefix), len(ns)) and prefix[same] == ns[same]:
            same += 1
        prefix = prefix[:same]
    return prefix, None if prefix in spaces else spaces


def search_scope(
    store: BaseStore,
    namespace: tuple[str, ...],
    query: str,
    *,
    k: int,
    rounds: int = 1,
    now: datetime | None = None,
    by_date: bool = True,
    rerank: bool = False,
    cache: RecallCache | None = None,
    candidates: int = 50,
    within: Sequence[tuple[str, ...]] | None = None,
) -> list[HybridHit]:
    """The best ``k`` hits in one scope, as a turn searches it: hybrid search (and its second
    round with ``rounds=2``), by date unless ``by_date`` is off, the best ``DEPTH`` reordered by
    late interaction with ``rerank`` (where the store's embedder gives token vectors);
    ``within``: only those namespaces under ``namespace``, as one scope."""
    search = hybrid_search
    if rounds >= 2:
        from agentmm.memory.multihop import two_round_search as search
    embedder = token_embedder(store) if rerank else None
    hits = search(store, namespace, query, k=max(k, DEPTH) if embedder else k, candidates=candidates, cache=cache,
                  now=now, weights=None if by_date else WITHOUT_DATES, within=within)  # fmt: skip
    if embedder is not None:
        hits = rerank_hits(hits, query, embedder, recall_cache(store, cache))
    return hits[:k]


# The recalled-memory block's header, its first words.
HEADER_START = "[Things you remember from"


def format_recalled(recalled: Sequence[dict[str, Any]], user_name: str) -> str:
    """The recalled memories (``Recalled.as_trace()`` dicts) as one block placed with the turn:
    each with the day it was said ("24 July 2023") and what its "yesterday", "last week", ...
    meant then (``agentmm.memory.dates``)."""
    if not recalled:
        return ""
    lines = [f"- ({_said_on(r.get('when'))}) {r.get('speaker') or ''}: {annotate(str(r['text']), r.get('when'))}"
             for r in recalled]  # fmt: skip
    return f"{HEADER_START} earlier conversations with {user_name}:]\n" + "\n".join(lines)


# A line of that block ("- (7 December 2026) User: ...") and its header, as a reply that copies
# the block's form writes them: the day as ``dates.day`` writes it, a speaker, a colon. A list
# of the character's own ("- (3 coins) Stew: lamb") is not one. The header is known by its
# first words (``HEADER_START``): the 135M model once wrote those alone as its whole reply.
_DAY = r"\d{1,2} (?:January|February|March|April|May|June|July|August|September|October|November|December) \d{4}"
_LINE_START = rf"- \({_DAY}\) [^:\n]{{1,60}}:"
_MEMORY_LINE = re.compile(rf"^{_LINE_START}", re.MULTILINE)
_COPIED_LINE = re.compile(rf"^[ \t]*(?:{_LINE_START}|{re.escape(HEADER_START)}).*\n?", re.MULTILINE)
MAX_MEMORY_STOPS = 16


def memory_line_stops(blocks: Iterable[str]) -> list[str]:
    """Stop strings for a reply whose prompt holds recalled-memory ``blocks``: the block's
    header (its first words) and the start of each of its lines, day and speaker ("- (7
    December 2026) User:"; a character's own dated list, "- (7 December 2026) market day", is
    no copy), newest block first, at most ``MAX_MEMORY_STOPS`` of them.

    Each comes twice: on a new line ("\\n- (7 December 2026) User:"), so a reply cut there
    does not end in a line break, and bare, as a reply that begins with a copy writes it, with
    no new line before it (such a reply, only "[Things you remember from", reached the user).
    Each is specific enough that no reply of the character's own holds it, and a model's stop
    strings are held back while they may still match (llama.cpp, llama-server), so the user
    never sees the copy: the reply ends where it starts, at once for a reply that begins so.
    The new-line forms come first: llama-cpp-python cuts at the first listed stop it finds."""
    starts: dict[str, None] = {}
    for block in blocks:
        if HEADER_START in block:
            starts.setdefault(HEADER_START)
        for found in _MEMORY_LINE.finditer(block):
            starts.setdefault(found.group(0))
    kept = list(starts)[:MAX_MEMORY_STOPS]
    return [*(f"\n{start}" for start in kept), *kept]


def without_copied_memories(reply: str) -> str:
    """``reply`` without lines written in the recalled-memory block's form: a small model in a
    long thread copies the form and writes the user's lines ("- (7 December 2026) User: What
    are you talking about?", 19 of 31 replies in one 40-turn session); remembered, they came
    back later as things the user had said. A line starting as the header does is dropped too,
    the header's first words alone included."""
    return _COPIED_LINE.sub("", reply).strip()


def _said_on(when: Any) -> str:
    """The day a memory was said, in words; what was stored when it is not a date."""
    try:
        return day(datetime.fromisoformat(str(when)).date())
    except ValueError:
        return str(when or "")


def remember_turn(
    store: BaseStore,
    namespace: tuple[str, ...],
    *,
    thread_id: str,
    turn: int,
    exchange: Sequence[tuple[str, str, str]],
    when: datetime,
    replace: bool = False,
) -> list[dict[str, Any]]:
    """Store one turn's messages, ``exchange`` being (role, speaker, text) in order.

    Keys are ``thread:turn:role`` (``thread:turn:role:N`` for a role's Nth text, a long one
    stored in pieces), and each value records its ``thread`` and ``turn``. With
    ``replace`` (a retry of the turn) what the turn wrote before and this write does not
    overwrite (the old reply when the new one was stopped, rows in the scope of a persona
    switched since) is deleted in the same batch. The messages go in one batch: one embedding
    call and one write for the whole turn.
    """
    written = []
    ops: list[PutOp] = []
    previous: str | None = None
    seen: dict[str, int] = {}
    for role, speaker, text in exchange:
        if not text.strip():
            continue
        # A role's second and later pieces (a long message stored in parts) are role:2, role:3...
        seen[role] = seen.get(role, 0) + 1
        key = f"{thread_id}:{turn}:{role}" + (f":{seen[role]}" if seen[role] > 1 else "")
        value = {
            "text": memory_text(speaker, text, when, previous),
            "content": text,
            "speaker": speaker,
            "role": role,
            "thread": thread_id,
            "turn": turn,
            "when": when.isoformat(timespec="seconds"),
        }
        ops.append(PutOp(namespace, key, value))
        written.append({"id": key, "speaker": speaker, "scope": scope_text(namespace)})
        previous = f"{speaker}: {text}"[:300]
    if replace:
        kept = {(op.namespace, op.key) for op in ops}
        ops += [PutOp(item.namespace, item.key, None) for item in turn_memories(store, thread_id, turn)
                if (item.namespace, item.key) not in kept]  # fmt: skip
    if ops:
        store.batch(ops)
    return written


def turn_memories(store: BaseStore, thread_id: str, turn: int) -> list[Item]:
    """What ``remember_turn`` wrote for turn ``turn`` of ``thread_id``, in every user's and
    persona's scope (found by the ``thread`` and ``turn`` it records, not by its key)."""
    return store.search((ROOT,), filter={"thread": thread_id, "turn": turn}, limit=_TURN_ROWS)


def forget_turn(store: BaseStore, thread_id: str, turn: int) -> list[str]:
    """Delete what turn ``turn`` of ``thread_id`` wrote to long-term memory, in one batch, so
    an undone exchange is not recalled later; the keys deleted."""
    items = turn_memories(store, thread_id, turn)
    if items:
        store.batch([PutOp(item.namespace, item.key, None) for item in items])
    return [item.key for item in items]
