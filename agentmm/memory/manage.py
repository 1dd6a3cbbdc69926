"""What an owner does with their memories: list, search, add, forget, export, import, stats.

Works on any LangGraph ``BaseStore``. Export is JSON Lines, one memory per line with its
namespace, key, value and timestamps, so export -> import -> export is byte-identical (the
embeddings are recomputed on import from the indexed text).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langgraph.store.base import BaseStore, Item, PutOp

from agentmm.fileio import atomic_write
from agentmm.memory.conversation import ROOT, memory_text, scope
from agentmm.memory.errors import MemoryStoreError

EXPORT_FORMAT = "agentmm-memory/1"
PAGE = 1000


class MemoryNotFoundError(MemoryStoreError):
    """No memory has that id in the scopes searched."""


class ExportFileError(MemoryStoreError):
    """An import file is not an agentmm memory export."""


def user_scopes(store: BaseStore, user: str, persona: str | None) -> list[tuple[str, ...]]:
    """The namespaces to look in: one persona's, or every scope of the user."""
    if persona is not None:
        return [scope(user, persona)]
    return store.list_namespaces(prefix=(ROOT, user), max_depth=3, limit=10_000)


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
        "scope": "/".join(item.namespace[1:]),
        "namespace": list(item.namespace),
        "value": item.value,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }


def list_memories(store: BaseStore, user: str, persona: str | None, limit: int = 50) -> list[dict[str, Any]]:
    items = [item for ns in user_scopes(store, user, persona) for item in iter_items(store, ns)]
    items.sort(key=lambda i: i.updated_at, reverse=True)
    return [item_dict(i) for i in items[:limit]]


def add_memory(store: BaseStore, user: str, persona: str | None, text: str, *, shared: bool = False) -> dict[str, Any]:
    """A memory the owner writes by hand (speaker: the user)."""
    if not text.strip():
        raise MemoryStoreError("nothing to remember: the text is empty")
    namespace = scope(user, persona, shared=shared)
    when = datetime.now(UTC)
    key = f"note:{uuid.uuid4().hex[:12]}"
    value = {"text": memory_text(user, text, when), "content": text, "speaker": user, "role": "note",
             "when": when.isoformat(timespec="seconds")}  # fmt: skip
    store.put(namespace, key, value)
    item = store.get(namespace, key)
    assert item is not None
    return item_dict(item)


def forget(store: BaseStore, user: str, persona: str | None, memory_id: str) -> dict[str, Any]:
    for namespace in user_scopes(store, user, persona):
        item = store.get(namespace, memory_id)
        if item is not None:
            store.delete(namespace, memory_id)
            return item_dict(item)
    raise MemoryNotFoundError(f"no memory {memory_id!r} for user {user!r} (see: agentmm memory list)")


def stats(store: BaseStore, user: str | None = None) -> dict[str, Any]:
    prefix = (ROOT, user) if user else (ROOT,)
    scopes = {}
    for namespace in store.list_namespaces(prefix=prefix, limit=10_000):
        scopes["/".join(namespace[1:])] = sum(1 for _ in iter_items(store, namespace))
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
    """Every row of an export file, checked before anything is written."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise ExportFileError(f"import file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ExportFileError(f"cannot read {path}: {exc}") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ExportFileError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(row, dict) or row.get("format") != EXPORT_FORMAT:
            raise ExportFileError(f"{path}:{number}: not an agentmm memory export (format {EXPORT_FORMAT!r})")
        namespace, value = row.get("namespace"), row.get("value")
        if (
            not isinstance(namespace, list)
            or not namespace
            or namespace[0] != ROOT
            or not all(isinstance(p, str) and p for p in namespace)
            or not isinstance(row.get("id"), str)
            or not isinstance(value, dict)
        ):
            raise ExportFileError(f"{path}:{number}: a memory needs namespace, id and value")
        rows.append(row)
    return rows


def import_jsonl(store: BaseStore, path: Path) -> int:
    """Load an export: all rows are validated first, then written in one batch."""
    rows = read_export(path)
    store.batch([PutOp(tuple(row["namespace"]), row["id"], row["value"]) for row in rows])
    _restore_timestamps(store, rows)
    return len(rows)


def _restore_timestamps(store: BaseStore, rows: Sequence[dict[str, Any]]) -> None:
    """Keep the exported created/updated times where the store lets us set them."""
    restore = getattr(store, "restore_timestamps", None)
    if restore is not None:
        restore([(tuple(r["namespace"]), r["id"], r["created_at"], r["updated_at"]) for r in rows])
