"""What an owner does with their memories: list, search, add, forget, export, import, stats.

Works on any LangGraph ``BaseStore``. Export is JSON Lines, one memory per line with its
namespace, key, value and timestamps, so export -> import -> export is byte-identical (the
embeddings are recomputed on import from the indexed text).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, GetOp, Item, PutOp

from agentmm.errors import SEE_MEMORIES, InvalidTextError
from agentmm.fileio import atomic_write
from agentmm.memory.conversation import ROOT, memory_text, scope, scope_text, user_prefix
from agentmm.memory.errors import MemoryStoreError
from agentmm.memory.pieces import memory_pieces
from agentmm.tokens import approximate_tokens

EXPORT_FORMAT = "agentmm-memory/1"
PAGE = 1000
# The longest note ``add_memory`` takes. Stored in pieces recall can place, a 1 MB note was 6,364
# memories (each embedded on the way in, each a line of ``memory list``), far past what a turn's
# 200-token block ever shows of it; 100,000 characters is some 40 pages, 600 to 1,000 pieces.
MAX_NOTE_CHARS = 100_000
# A memory's pieces are looked up this many ids at a time (ID:2, ID:3, ...), until a batch holds none.
PIECE_PAGE = 100


class MemoryNotFoundError(MemoryStoreError):
    """No memory has that id in the scopes searched."""


class NoteTooLongError(MemoryStoreError):
    """A note over ``MAX_NOTE_CHARS``: memory is for what a turn may recall, not a document store."""


class ExportFileError(MemoryStoreError):
    """An import file is not an agentmm memory export."""


def user_scopes(store: BaseStore, user: str, persona: str | None) -> list[tuple[str, ...]]:
    """The namespaces to look in: one persona's, or every scope of the user."""
    if persona is not None:
        return [scope(user, persona)]
    return store.list_namespaces(prefix=user_prefix(user), max_depth=3, limit=10_000)


def iter_items(store: BaseStore, namespace: tuple[str, ...]) -> Iterator[Item]:
    offset = 0
    while True:
        page = store.search(namespace, limit=PAGE, offset=offset)
        yield from page
        if len(page) < PAGE:
            return
        offset += PAGE


def item_dict(item: Item) -> dict[str, Any]:
    return {
        "id": item.key,
        "scope": scope_text(item.namespace),
        "namespace": list(item.namespace),
        "value": item.value,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }


def list_memories(store: BaseStore, user: str, persona: str | None, limit: int = 50) -> list[dict[str, Any]]:
    items = [item for ns in user_scopes(store, user, persona) for item in iter_items(store, ns)]
    items.sort(key=lambda i: i.updated_at, reverse=True)
    return [item_dict(i) for i in items[:limit]]


def add_memory(
    store: BaseStore,
    user: str,
    persona: str | None,
    text: str,
    *,
    shared: bool = False,
    speaker: str | None = None,
    max_tokens: int | None = None,
    count: Callable[[str], int] = approximate_tokens,
) -> dict[str, Any]:
    """A memory the owner writes by hand; ``speaker``: the name it is said by, as the chat
    calls the user (``user_name``; default: the user id). Recalled, it reads "[date] User: ..."
    as the user's own messages do, not "local: ...".

    With ``max_tokens`` (recall's cap, ``memory_max_tokens``) a text over half of it is stored
    in pieces of a quarter of it, as a chat turn's message is (``memory_pieces``; ``count``
    counts tokens): keys ``note:ID``, ``note:ID:2``, ... Whole, a 100,000-character note was
    one memory no recall could place. The first piece's memory comes back, with ``pieces``:
    the ids of every memory written. A text over ``MAX_NOTE_CHARS`` is refused
    (``NoteTooLongError``), before anything is written."""
    if shared and persona is not None:  # one scope or the other: the persona was dropped unsaid
        raise MemoryStoreError(
            "a memory is one persona's or shared with every persona: give persona or shared, not both"
        )
    if not text.strip():
        raise MemoryStoreError("nothing to remember: the text is empty")
    if len(text) > MAX_NOTE_CHARS:
        raise NoteTooLongError(f"the note is {len(text):,} characters, over the {MAX_NOTE_CHARS:,} a memory may "
                               "hold: add the parts worth recalling, one at a time")  # fmt: skip
    InvalidTextError.check(text, "the memory")
    namespace = scope(user, persona, shared=shared)
    when = datetime.now(UTC)
    key = f"note:{uuid.uuid4().hex[:12]}"
    said_by = speaker or user
    pieces = memory_pieces(text, count, max_tokens)
    keys = [key if number == 1 else f"{key}:{number}" for number in range(1, len(pieces) + 1)]
    store.batch([PutOp(namespace, piece_key, {"text": memory_text(said_by, piece, when), "content": piece,
                                              "speaker": said_by, "role": "note",
                                              "when": when.isoformat(timespec="seconds")})
                 for piece_key, piece in zip(keys, pieces, strict=True)])  # fmt: skip
    item = store.get(namespace, key)
    assert item is not None
    return {**item_dict(item), "pieces": keys}


def remembered_line(row: dict[str, Any], max_tokens: int) -> str:
    """What ``memory add`` and the chat's ``/remember`` say of ``add_memory``'s ``row``: its id,
    and when it was stored in pieces, how many and why (one line for both, so they agree)."""
    if len(row["pieces"]) == 1:
        return f"remembered {row['id']}"
    return f"remembered {row['id']}{_in_pieces(row)}: too long to recall whole (memory_max_tokens {max_tokens})"


def forget(store: BaseStore, user: str, persona: str | None, memory_id: str) -> dict[str, Any]:
    """Delete the memory ``memory_id`` and the pieces stored after it (``ID:2``, ``ID:3``, ...: a
    long note or message, ``add_memory``, ``remember_turn``); one piece's id (``note:ID:5``) names
    that piece alone. ``memory add`` names a note by its first piece, so forgetting that id
    forgot one piece of 35 and the rest were still recalled. Pieces a forget of the first one
    left behind (before it took them all) go the same way: the first need not be there. The
    row is the first memory forgotten's, with ``pieces``: the ids of every memory forgotten."""
    for namespace in user_scopes(store, user, persona):
        head = store.get(namespace, memory_id)
        items = ([head] if head is not None else []) + _pieces_after(store, namespace, memory_id)
        if items:
            store.batch([PutOp(namespace, item.key, None) for item in items])
            return {**item_dict(items[0]), "pieces": [item.key for item in items]}
    raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user!r}", see=SEE_MEMORIES)


def _pieces_after(store: BaseStore, namespace: tuple[str, ...], memory_id: str) -> list[Item]:
    """The pieces stored after ``memory_id``'s first, ``ID:2`` on, in order; one forgotten alone
    (a gap) does not hide the ones after it while a batch of ``PIECE_PAGE`` ids holds any."""
    found: list[Item] = []
    start = 2
    while True:
        ops = [GetOp(namespace, f"{memory_id}:{number}") for number in range(start, start + PIECE_PAGE)]
        page = [item for item in store.batch(ops) if isinstance(item, Item)]
        if not page:
            return found
        found += page
        start += PIECE_PAGE


def forgot_line(row: dict[str, Any]) -> str:
    """What ``memory forget`` and the chat's ``/forget`` say of ``forget``'s ``row``: the id, and
    for a memory stored in pieces, how many went (one line for both, so they agree)."""
    return f"forgot {row['id']}{_in_pieces(row)}"


def _in_pieces(row: dict[str, Any]) -> str:
    """`` in N pieces (FIRST to LAST)`` for a row of several pieces; "" for one."""
    pieces = row["pieces"]
    return f" in {len(pieces)} pieces ({pieces[0]} to {pieces[-1]})" if len(pieces) > 1 else ""


def stats(store: BaseStore, user: str | None = None) -> dict[str, Any]:
    """Memories per scope that holds any (a store may list a namespace that holds none: one
    whose first write was cut short, see ``ChromaStore._apply_puts``), and their total."""
    prefix = user_prefix(user) if user else (ROOT,)
    scopes = {}
    for namespace in store.list_namespaces(prefix=prefix, limit=10_000):
        if count := sum(1 for _ in iter_items(store, namespace)):
            scopes[scope_text(namespace)] = count
    return {"scopes": scopes, "total": sum(scopes.values())}


def export_jsonl(store: BaseStore, user: str, persona: str | None, path: Path) -> int:
    """Write every memory in scope to ``path`` atomically; the number written."""
    rows = [
        {"format": EXPORT_FORMAT, **item_dict(item)}
        for namespace in sorted(user_scopes(store, user, persona))
        for item in sorted(iter_items(store, namespace), key=lambda i: (i.created_at, i.key))
    ]
    text = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)
    atomic_write(path, text.encode("utf-8"), MemoryStoreError)
    return len(rows)


def read_export(path: Path) -> list[dict[str, Any]]:
    """Every row of an export file, checked before anything is written.

    A row is refused if the store could not take it whole or could not read it back: a
    namespace other than ``memories/<user>/<persona>`` (labels without ``.`` or NUL), text that
    is not valid Unicode, nesting JSON libraries refuse to write again, or a timestamp that is
    not an ISO date and time. Timestamps are normalised to the store's own form (UTC,
    microseconds), which exports back to the same text.
    """
    try:
        # Lines end at "\n" only: JSON text may hold U+2028, U+0085 and friends unescaped
        # (export writes them so), and str.splitlines() would cut a row in two at them.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except FileNotFoundError as exc:
        raise ExportFileError(f"import file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportFileError(f"cannot read {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportFileError(f"{where}: not JSON ({exc.msg})") from exc
        except RecursionError as exc:
            raise ExportFileError(f"{where}: nested too deeply") from exc
        if not isinstance(row, dict) or row.get("format") != EXPORT_FORMAT:
            raise ExportFileError(f"{where}: not an agentmm memory export (format {EXPORT_FORMAT!r})")
        namespace, value = row.get("namespace"), row.get("value")
        if (
            not isinstance(namespace, list)
            or len(namespace) != len(SCOPE_SHAPE)
            or namespace[0] != ROOT
            or not all(_is_label(p) for p in namespace)
            or not isinstance(row.get("id"), str)
            or not isinstance(value, dict)
        ):
            raise ExportFileError(
                f"{where}: a memory needs namespace [{', '.join(SCOPE_SHAPE)}] (no '.' in a name), id and value"
            )
        _check_writable(row, where)
        for stamp in ("created_at", "updated_at"):
            if row.get(stamp) is not None:
                row[stamp] = _timestamp(row[stamp], f"{where}: {stamp}")
        rows.append(row)
    return rows


SCOPE_SHAPE = (ROOT, "user", "persona")
MAX_NESTING = 64


def _is_label(label: Any) -> bool:
    return isinstance(label, str) and bool(label) and "." not in label and "\0" not in label


def _check_writable(row: dict[str, Any], where: str) -> None:
    """The row as the store will write it: strict UTF-8 and JSON nesting the encoder takes."""
    stack: list[tuple[Any, int]] = [(row, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ExportFileError(f"{where}: nested more than {MAX_NESTING} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in [*item.keys(), *item.values()])
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ExportFileError(f"{where}: holds text that is not valid Unicode (a lone surrogate)") from None


def _timestamp(value: Any, where: str) -> str:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None:
        raise ExportFileError(f"{where} is not an ISO date and time ({str(value)[:40]!r})")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def import_jsonl(store: BaseStore, path: Path) -> int:
    """Load an export: all rows are validated first, then written in one batch; the number of
    memories written (a memory given twice counts once: the later row wins).

    All or nothing where the store offers it (``all_or_nothing``: the embedded Chroma store),
    even across a kill: an import cut off part way, its items or its timestamps, is taken back
    (by the next open of the store if the process died), so the store never holds half a file.
    """
    latest = {(tuple(row["namespace"]), row["id"]): row for row in read_export(path)}
    rows = list(latest.values())
    whole = getattr(store, "all_or_nothing", None)
    with whole() if whole is not None else contextlib.nullcontext():
        store.batch([PutOp(tuple(row["namespace"]), row["id"], row["value"]) for row in rows])
        _restore_timestamps(store, rows)
    return len(rows)


def _restore_timestamps(store: BaseStore, rows: Sequence[dict[str, Any]]) -> None:
    """Keep the exported created/updated times where the store lets us set them (a row with
    only one of them gets it for both; one with neither keeps the time of the import)."""
    restore = getattr(store, "restore_timestamps", None)
    if restore is None:
        return
    stamped = []
    for r in rows:
        created, updated = r.get("created_at"), r.get("updated_at")
        if created or updated:
            stamped.append((tuple(r["namespace"]), r["id"], created or updated, updated or created))
    if stamped:
        restore(stamped)
