"""Saved conversations: LangGraph's SQLite checkpointer in the data dir, and a thread catalogue.

LangGraph's saver API has no "list threads" call; for the SQLite saver the catalogue reads
its ``checkpoints`` table (read-only), for any other saver it walks ``saver.list``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.sqlite import SqliteSaver

from agentmm.errors import DataDirError, ThreadNotFoundError

CHECKPOINT_FILE = "threads.sqlite"


def ensure_data_dir(path: Path) -> Path:
    """Create the data dir if needed and prove it is writable, or raise DataDirError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataDirError(f"data dir {path} is not writable: {exc.strerror or exc}") from exc
    return path


class ThreadedSqliteSaver(SqliteSaver):
    """LangGraph's SQLite saver with its async methods run on a worker thread.

    ``SqliteSaver`` is sync-only, so an async run (``graph.astream``, ``astream_events``) over
    it fails; ``AsyncSqliteSaver`` would need a second connection bound to one event loop.
    The sync saver already serialises access with its own lock, so the async twins simply
    call it off the loop.
    """

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None, limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:  # fmt: skip
        found = await asyncio.to_thread(lambda: list(self.list(config, filter=filter, before=before, limit=limit)))
        for item in found:
            yield item

    async def aput(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:  # fmt: skip
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)


def open_checkpointer(data_dir: Path) -> SqliteSaver:
    """The SQLite saver in ``data_dir`` (created on first use), usable from sync and async runs."""
    ensure_data_dir(data_dir)
    db = data_dir / CHECKPOINT_FILE
    try:
        conn = sqlite3.connect(db, check_same_thread=False)
        saver = ThreadedSqliteSaver(conn)
        saver.setup()
    except sqlite3.DatabaseError as exc:
        raise DataDirError(f"cannot open the thread database {db}: {exc}") from exc
    return saver


def new_thread_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class ThreadSummary:
    thread_id: str
    messages: int
    turns: int
    updated_at: str
    title: str

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def thread_values(saver: BaseCheckpointSaver, thread_id: str) -> tuple[dict[str, Any], str]:
    """The thread's latest state values and checkpoint timestamp; ThreadNotFoundError if none."""
    found = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    if found is None:
        raise ThreadNotFoundError(f"unknown thread {thread_id!r} (see: agentmm threads list)")
    return dict(found.checkpoint.get("channel_values", {})), str(found.checkpoint.get("ts", ""))


def thread_exists(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    return saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is not None


def thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread id in the saver, most recently updated first."""
    if isinstance(saver, SqliteSaver):
        with saver.cursor(transaction=False) as cur:
            cur.execute(
                "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' "
                "GROUP BY thread_id ORDER BY MAX(checkpoint_id) DESC"
            )
            return [row[0] for row in cur.fetchall()]
    seen: dict[str, None] = {}
    for item in saver.list(None):
        seen.setdefault(str(item.config["configurable"]["thread_id"]), None)
    return list(seen)


def summarize_thread(saver: BaseCheckpointSaver, thread_id: str) -> ThreadSummary:
    values, ts = thread_values(saver, thread_id)
    messages: list[AnyMessage] = values.get("messages", [])
    first_user = next((m.text for m in messages if isinstance(m, HumanMessage)), "")
    return ThreadSummary(
        thread_id=thread_id,
        messages=len(messages),
        turns=sum(isinstance(m, HumanMessage) for m in messages),
        updated_at=_iso(ts),
        title=" ".join(first_user.split())[:60],
    )


def list_threads(saver: BaseCheckpointSaver) -> list[ThreadSummary]:
    return [summarize_thread(saver, tid) for tid in thread_ids(saver)]


def delete_thread(saver: BaseCheckpointSaver, thread_id: str) -> None:
    if not thread_exists(saver, thread_id):
        raise ThreadNotFoundError(f"unknown thread {thread_id!r} (see: agentmm threads list)")
    saver.delete_thread(thread_id)


def _iso(ts: str) -> str:
    try:
        return datetime.fromisoformat(ts).isoformat(timespec="seconds")
    except ValueError:
        return ts
