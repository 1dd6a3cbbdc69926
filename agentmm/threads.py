"""Saved conversations: LangGraph's SQLite checkpointer in the data dir, and a thread catalogue.

LangGraph's saver API has no "list threads" call; for the SQLite saver the catalogue reads
its ``checkpoints`` table (read-only), for any other saver it walks ``saver.list``.

A turn is checkpointed node by node (``DURABILITY``), each node's checkpoint written while the
next node runs, so a process killed in the middle of one (``kill -9``, a closed terminal) leaves
the thread at the last or the last but one node it finished; a power cut, at that node or an
earlier one (the turn's commits reach the disk when it ends, ``sync_to_disk``).
Such a turn is settled by the next process that touches the thread, as SQLite rolls back a hot
journal on the next open: cut off before its reply, it is rolled back (the thread is again as it
was before the turn: whole turns only, the cut-off message gone); cut off after its reply (while
remembering, or folding the summary), it is finished (``settle_thread``, before the next turn).
A run is only settled when no process holds the thread (``agentmm.thread_lock``), so a turn
another process is still answering is never touched, nor a run paused for a tool approval on
purpose (only a new turn on that thread abandons it).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ormsgpack
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, CheckpointTuple, create_checkpoint
from langgraph.checkpoint.sqlite import SqliteSaver

from agentmm.errors import SEE_THREADS, AgentmmError, DataDirError, Hint, ThreadNotFoundError
from agentmm.exchange import summary_record
from agentmm.fileio import folder_problem, os_errors
from agentmm.postgres import saver_conninfo
from agentmm.thread_lock import (
    ThreadInUseError,
    close_locks,
    keep_locks,
    lockable,
    open_locks,
    postgres_saver,
    sqlite_file,
    turn_on,
)

CHECKPOINT_FILE = "threads.sqlite"
# A turn's checkpoint after each node is written while the next node runs ("async"), and the run
# waits for every one before it returns, so a turn that returned is saved whole. With "sync" each
# node waited for its checkpoint first: measured on the shipped model, 1 ms (memory off) to 9 ms
# (memory on: ingest, recall, compose) more before the first token. What "async" gives up: a
# process killed in the few ms while the reply's checkpoint is written finds the turn cut off
# before its reply, so it is rolled back rather than finished; with "exit" nothing of a killed
# turn would be saved, though the user may have read most of the reply.
DURABILITY = "async"
# LangGraph's channel for a run paused by ``interrupt()`` (a tool call waiting for approval).
_INTERRUPT = "__interrupt__"


def ensure_data_dir(path: Path) -> Path:
    """Create the data dir if needed and prove it is writable, or raise DataDirError."""
    if (problem := folder_problem(path, "data dir")) is not None:
        raise DataDirError(problem)
    return path


def open_checkpointer(data_dir: Path) -> SqliteSaver:
    """The SQLite saver in ``data_dir`` (created on first use); an async run uses
    ``async_checkpointer`` over it."""
    ensure_data_dir(data_dir)
    db = data_dir / CHECKPOINT_FILE
    try:
        conn = sqlite3.connect(db, check_same_thread=False)
        saver = SqliteSaver(conn)
        saver.setup()
    except sqlite3.DatabaseError as exc:
        raise DataDirError(f"cannot open the thread database {db}: {exc}") from exc
    return saver


def open_saver(settings: Any) -> BaseCheckpointSaver:
    """The configured thread saver: LangGraph's Postgres saver for ``settings.checkpointer_url``
    (shared by every worker), else the SQLite one in the data dir."""
    if settings.checkpointer_url:
        return open_postgres_checkpointer(settings.checkpointer_url)
    return open_checkpointer(settings.data_dir)


def open_postgres_checkpointer(url: str) -> BaseCheckpointSaver:
    """LangGraph's ``PostgresSaver`` over a pool for ``url``, its tables set up (idempotent)."""
    from agentmm.postgres import FLEET_HINT, DatabaseError, connect_locks, open_pool, setup_lock

    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError as exc:
        raise DatabaseError(f"threads in Postgres need langgraph-checkpoint-postgres: {FLEET_HINT}") from exc
    # The lock connection first: it tells other workers the writer pool's process is alive.
    locks = connect_locks(url, what="threads")
    try:
        pool = open_pool(url, what="threads", writer=True)
    except Exception:
        locks.close()
        raise
    saver = PostgresSaver(pool)
    keep_locks(saver, locks)
    try:
        with setup_lock(pool):  # workers starting together would race in its migrations
            saver.setup()
    except Exception:
        close_saver(saver)
        raise
    return saver


def close_saver(saver: BaseCheckpointSaver) -> None:
    """Close a saver agentmm opened: its connection (SQLite) or pool (Postgres), then its thread
    locks' connection (after the pool, whose writers it vouches for)."""
    conn = getattr(saver, "conn", None)
    if conn is not None:
        conn.close()
    close_locks(saver)


def _postgres_connection(saver: Any) -> contextlib.AbstractContextManager[Any]:
    """A connection of a Postgres saver: one from its pool, or the one it was given."""
    from psycopg_pool import ConnectionPool

    conn = saver.conn
    return conn.connection() if isinstance(conn, ConnectionPool) else contextlib.nullcontext(conn)


@contextlib.asynccontextmanager
async def async_checkpointer(
    saver: BaseCheckpointSaver, *, wait_for_disk: bool = True
) -> AsyncIterator[BaseCheckpointSaver]:
    """A saver for an async run (``astream``, ``astream_events``, ``aget_state``) over the threads
    ``saver`` keeps.

    LangGraph's ``SqliteSaver`` is sync-only (its async methods raise), and its async sibling
    ``AsyncSqliteSaver`` holds an aiosqlite connection bound to the event loop that opened it, so
    it cannot serve the sync turns too. For a saver kept in an SQLite file this opens
    ``AsyncSqliteSaver`` on that file for the run, in the run's loop, and closes it after; both
    connections use SQLite's WAL journal, so each sees what the other wrote. ``PostgresSaver`` is
    sync-only as well: its twin is ``AsyncPostgresSaver`` over an async pool on the same database.
    Any other saver (in memory) has its own async methods and is yielded as it is.

    ``wait_for_disk=False`` (the Agent's turns): commits do not wait for the disk (SQLite's
    synchronous=NORMAL), which a killed process cannot tell apart, and the caller flushes what
    it wrote with ``sync_to_disk`` when that must survive a power cut too.
    """
    conninfo = saver_conninfo(saver)
    if conninfo is not None:  # PostgresSaver is sync-only too: its async twin on a pool of this loop
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

        from agentmm.postgres import open_async_pool

        await asyncio.to_thread(open_locks, saver)  # before the writer pool: see AdvisoryLocks.fence
        pool = await open_async_pool(conninfo, what="threads", writer=True)
        try:
            yield AsyncPostgresSaver(pool, serde=saver.serde)
        finally:
            await pool.close()
        return
    database = sqlite_file(saver) if isinstance(saver, SqliteSaver) else None
    if database is None:
        yield saver
        return
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with AsyncSqliteSaver.from_conn_string(str(database)) as twin:
        if not wait_for_disk:
            # A commit that reaches the OS survives kill -9; waiting for the disk on each of a
            # turn's ~10 checkpoint commits (SQLite's default, FULL: ~1.8 ms each here) is what
            # power-cut safety costs, and a turn pays it once instead, at its end.
            await twin.conn.execute("PRAGMA synchronous=NORMAL")
        yield twin


def sync_to_disk(saver: BaseCheckpointSaver) -> tuple[int, int, int] | None:
    """Make what an SQLite saver's file holds durable (any other saver: nothing, None); SQLite's
    answer: (1 if the checkpoint could not finish for a writer, WAL frames, frames copied).

    The turn's async saver commits without waiting for the disk (``async_checkpointer``), which
    is as safe against a killed process, and in WAL mode keeps the file whole through a power
    cut too, but may lose its last commits then; the turn calls this before it returns, so a
    finished turn, reply and all, is on the disk as with SQLite's FULL mode.

    SQLite does it (a passive WAL checkpoint syncs the WAL first, then the database after the
    pages it copies; it waits for no reader or writer). Never by opening the file to ``fsync``
    it: closing any descriptor of the database releases every POSIX lock this process holds on
    it, its SQLite connections' included, and another process then checkpoints under a reader
    that still believes itself locked: the file is corrupted ("database disk image is
    malformed"; SQLite's "How To Corrupt", 2.2). That is what an earlier version of this
    function did, found when a second process wrote to the file during a turn.
    """
    conn = getattr(saver, "conn", None)
    if not isinstance(conn, sqlite3.Connection) or sqlite_file(saver) is None:
        return None
    guard = getattr(saver, "lock", None)
    with guard if guard is not None else contextlib.nullcontext():
        busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(frames), int(copied)


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
    """The thread's latest state values and when it last changed (``_changed_at``);
    ThreadNotFoundError if none.

    A turn whose process died before its reply is rolled back first (``roll_back_dead_turn``),
    so a reader never sees a message without its reply unless a live process is answering it.
    """
    found = saver.get_tuple(_config(thread_id))
    if found is not None and _cut_off(found) and roll_back_dead_turn(saver, thread_id):
        found = saver.get_tuple(_config(thread_id))
    if found is None:
        raise ThreadNotFoundError(f"unknown thread {thread_id!r}", see=SEE_THREADS)
    return dict(found.checkpoint.get("channel_values", {})), _changed_at(saver, found)


def _changed_at(saver: BaseCheckpointSaver, found: CheckpointTuple) -> str:
    """When the thread last changed: the time of ``found`` (its newest checkpoint), or of the
    checkpoint it copies. A failed or refused turn is rolled back by writing the checkpoint its
    run started from again as the newest (``update_state(before, None)``: a child of it, every
    channel's version as it was), which moved ``threads list``'s updated_at (and place) though
    the thread was as it had been."""
    while found.parent_config is not None:
        parent = saver.get_tuple(found.parent_config)
        if parent is None or parent.checkpoint.get("channel_versions") != found.checkpoint.get("channel_versions"):
            break
        found = parent
    return str(found.checkpoint.get("ts", ""))


def roll_back_dead_turn(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    """If the thread's last turn was cut off before its reply and no process is running a turn
    on it (its process died), put the thread back as it was before that turn; whether it did.

    Only a saver agentmm can lock threads in (SQLite, Postgres) is settled here: the thread lock
    tells a dead run from a live one. A
    thread whose only turn was cut off is deleted (it never held a whole turn). The rollback is
    a copy of the checkpoint before the turn written as the newest one, as LangGraph's own
    ``update_state(..., as_node="__copy__")`` does: the cut-off steps stay in the history.
    """
    if not lockable(saver):
        return False
    try:
        with turn_on(saver, thread_id):
            latest = saver.get_tuple(_config(thread_id))
            if latest is None or not _cut_off(latest):
                return False  # settled meanwhile
            return _restore_before_run(saver, thread_id, latest)
    except ThreadInUseError:
        return False  # a live process is answering in it
    except AgentmmError:
        return False  # the lock cannot be taken here (a read-only data dir): show the thread as it is


def settle_thread(graph: Any, thread_id: str, *, context: Any = None) -> str | None:
    """Settle a turn a dead process left unfinished on ``thread_id``, before a new turn runs.

    ``graph`` is the compiled turn graph and the caller holds the thread (``turn_on``), so no
    live process runs the unfinished turn. Cut off before its reply: rolled back (``"rolled
    back"``). Cut off after it, with remembering or the summary fold still to do: finished by
    resuming the run from its last checkpoint with ``context`` (``"finished"``), as LangGraph's
    durable execution intends. A run paused for a tool approval is abandoned by the new turn,
    so it is rolled back too. None when the thread's last turn finished.
    """
    saver = graph.checkpointer
    config = {"configurable": {"thread_id": thread_id}}
    snapshot = graph.get_state(config)
    if not snapshot.next:
        return None
    latest = saver.get_tuple(_config(thread_id))
    if latest is None:
        return None
    start = _run_start(saver, thread_id)
    before = saver.get_tuple(start.parent_config) if start is not None and start.parent_config else None
    kept = len(before.checkpoint.get("channel_values", {}).get("messages", [])) if before is not None else 0
    added = list(snapshot.values.get("messages", []))[kept:]
    replied = any(isinstance(m, HumanMessage) for m in added) and _whole(added)
    if replied and not _paused(latest):
        graph.invoke(None, config, context=context, durability=DURABILITY)
        return "finished"
    _restore_before_run(saver, thread_id, latest)
    return "rolled back"


def _config(thread_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


def _whole(messages: Sequence[AnyMessage]) -> bool:
    """Whether ``messages`` end between turns: empty, or with a reply (not a tool call)."""
    if not messages:
        return True
    last = messages[-1]
    return isinstance(last, AIMessage) and not last.tool_calls


def _paused(found: CheckpointTuple) -> bool:
    return any(write[1] == _INTERRUPT for write in found.pending_writes or [])


def _cut_off(found: CheckpointTuple) -> bool:
    """A checkpoint in the middle of a turn, before its reply, and not paused on purpose."""
    messages = found.checkpoint.get("channel_values", {}).get("messages", [])
    return not _whole(messages) and not _paused(found)


def _run_start(saver: BaseCheckpointSaver, thread_id: str) -> CheckpointTuple | None:
    """The input checkpoint of the thread's last run (a resumed run starts none of its own)."""
    return next((c for c in saver.list(_config(thread_id)) if (c.metadata or {}).get("source") == "input"), None)


def _restore_before_run(saver: BaseCheckpointSaver, thread_id: str, latest: CheckpointTuple) -> bool:
    start = _run_start(saver, thread_id)
    if start is None:
        return False
    if start.parent_config is None:
        saver.delete_thread(thread_id)
        return True
    before = saver.get_tuple(start.parent_config)
    if before is None:
        return False
    step = int((latest.metadata or {}).get("step", 0)) + 1
    copy = create_checkpoint(before.checkpoint, None, step)
    # A child of the checkpoint it copies, as ``update_state(before, None)`` writes one, so
    # ``_changed_at`` reads the thread's time from it: the rollback is no change.
    saver.put(before.config, copy, {"source": "fork", "step": step, "parents": {}}, {})
    return True


def thread_exists(saver: BaseCheckpointSaver, thread_id: str) -> bool:
    return saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}) is not None


def thread_ids(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread id, most recently changed first: ``threads list``'s order (``_changed_at``:
    a failed or refused turn does not move a thread), read for the chat's every Tab press and a
    prefix's match, so lightly: each thread's newest checkpoints without their values
    (``_frames``), and nothing written. ``list_threads`` read every thread's state, and rolled
    back a dead process's cut-off turn as it read (``roll_back_dead_turn``); here such a thread
    is dated by its newest checkpoint, as ``threads list`` dates one a live turn is answering in,
    until a read settles it."""
    frames = _frames(saver)
    dated = []
    for tid in _newest_checkpoint_first(saver):
        if (latest := frames.get_tuple(_config(tid))) is not None:
            dated.append((tid, _iso(_changed_at(frames, latest))))
    return [tid for tid, _ in sorted(dated, key=lambda item: item[1], reverse=True)]


class _FrameSerde:
    """Reads a msgpack checkpoint (or write) without building its values: each msgpack extension
    in it (a message, a document: what LangGraph's serializer rebuilds an object from) is left
    out as None, so its time, channel versions and parent cost a parse of the bytes, not the
    rebuild of every message. Other formats are read in full by the saver's own serializer."""

    def __init__(self, serde: Any) -> None:
        self._serde = serde

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        return self._serde.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        kind, blob = data
        if kind != "msgpack":
            return self._serde.loads_typed(data)
        return ormsgpack.unpackb(blob, ext_hook=lambda code, payload: None, option=ormsgpack.OPT_NON_STR_KEYS)


def _frames(saver: BaseCheckpointSaver) -> BaseCheckpointSaver:
    """``saver`` for reading checkpoints' frames only (``_FrameSerde``): a shallow copy, so the
    same connection or pool and the same lock, with its own serializer. Never write through it."""
    frames = copy.copy(saver)
    frames.serde = _FrameSerde(saver.serde)
    return frames


def match_thread_id(ids: Sequence[str], given: str, *, see: Hint = SEE_THREADS) -> str:
    """The thread id ``given`` names: itself, or the one id it starts (ids are long: the chat's
    ``/resume`` and ``threads show|export|delete`` take a prefix). ``ThreadNotFoundError`` in
    one line when it starts none or several (a delete by prefix too needs one match)."""
    if given in ids:
        return given
    matches = [t for t in ids if t.startswith(given)] if given else []
    if not matches:
        raise ThreadNotFoundError(f"unknown thread {given!r}", see=see)
    if len(matches) > 1:
        raise ThreadNotFoundError(f"{given!r} starts {len(matches)} thread ids: type more of it")
    return matches[0]


def find_thread(saver: BaseCheckpointSaver, given: str) -> str:
    """``match_thread_id`` over the saved threads (a full id is looked up alone)."""
    return given if thread_exists(saver, given) else match_thread_id(thread_ids(saver), given)


def _newest_checkpoint_first(saver: BaseCheckpointSaver) -> list[str]:
    """Every thread id in the saver, the one with the newest checkpoint first."""
    newest_first = (
        "SELECT thread_id FROM checkpoints WHERE checkpoint_ns = '' GROUP BY thread_id ORDER BY MAX(checkpoint_id) DESC"
    )
    if isinstance(saver, SqliteSaver):
        with saver.cursor(transaction=False) as cur:
            cur.execute(newest_first)
            return [row[0] for row in cur.fetchall()]
    if postgres_saver(saver):  # one query, not every checkpoint of every thread
        from psycopg.rows import tuple_row

        with _postgres_connection(saver) as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(newest_first)
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


def message_dict(message: AnyMessage, *, saved: bool = False) -> dict[str, Any]:
    """One message as ``threads show --json`` (and the HTTP API) gives it: role, content,
    ``interrupted`` for a reply the user stopped, a reply's tool calls (and calls that did not
    parse), and a tool result's call id, tool name and error status. ``saved``: as a ``/save``
    FILE.json keeps it (``repl/transcript.py``), with the rest ``threads import`` needs to make
    it again (``_assistant_message``): which greeting opened the thread, and a line said for no
    reply (``no_reply``: an import without it made the line the character's words)."""
    role = {"human": "user", "ai": "assistant"}.get(message.type, message.type)
    data: dict[str, Any] = {"role": role, "content": message.text}
    meta = message.response_metadata
    if meta.get("interrupted"):
        data["interrupted"] = True
    if saved and meta.get("no_reply"):  # a line to the user, not the character's words
        data["no_reply"] = meta["no_reply"]
    if saved and "greeting" in meta:
        data["greeting"] = True
        data["greeting_index"] = meta["greeting"]
    if calls := getattr(message, "tool_calls", None):
        data["tool_calls"] = [{"name": c["name"], "args": c["args"], "id": c["id"]} for c in calls]
    if invalid := getattr(message, "invalid_tool_calls", None):
        data["invalid_tool_calls"] = [{key: c.get(key) for key in ("name", "args", "id", "error")} for c in invalid]
    if isinstance(message, ToolMessage):
        data["tool_call_id"], data["name"] = message.tool_call_id, message.name
        if message.status == "error":
            data["status"] = "error"
    return data


def thread_dict(saver: BaseCheckpointSaver, thread_id: str) -> dict[str, Any]:
    """A thread as ``threads show --json`` prints it: its summary line, window start, messages,
    system prompt and rolling summary (with the index of the first message it does not cover);
    ``ThreadNotFoundError`` for an unknown one."""
    values, _ = thread_values(saver, thread_id)
    messages = [message_dict(m) for m in values.get("messages", [])]
    return {**summarize_thread(saver, thread_id).to_dict(), "window_start": values.get("window_start", 0),
            "messages": messages, "system_prompt": values.get("system_prompt", ""),
            "summary": values.get("summary", ""), "summary_through": values.get("summary_through", 0)}  # fmt: skip


def list_threads(saver: BaseCheckpointSaver) -> list[ThreadSummary]:
    """Every thread, most recently changed first (a rolled-back turn is no change)."""
    found = []
    for tid in _newest_checkpoint_first(saver):
        try:
            found.append(summarize_thread(saver, tid))
        except ThreadNotFoundError:
            continue  # its only turn was cut off by a dead process: rolled back to nothing
    return sorted(found, key=lambda thread: thread.updated_at, reverse=True)


def delete_thread(saver: BaseCheckpointSaver, thread_id: str) -> None:
    """Delete a thread, holding it as a turn does: a turn running on it would write its
    checkpoints back after the delete and bring the whole thread back, so that is refused
    (``ThreadInUseError``) while the turn runs."""
    if not thread_exists(saver, thread_id):
        raise ThreadNotFoundError(f"unknown thread {thread_id!r}", see=SEE_THREADS)
    with turn_on(saver, thread_id):
        saver.delete_thread(thread_id)


def _iso(ts: str) -> str:
    try:
        return datetime.fromisoformat(ts).isoformat(timespec="seconds")
    except ValueError:
        return ts


class ThreadImportError(AgentmmError):
    """A file ``threads import`` cannot make a thread of, or a thread name it may not take."""


# The state a /save FILE.json keeps beside its messages, with the type each must have.
_SAVED_VALUES: dict[str, type] = {"window_start": int, "summary": str, "summary_through": int, "base_prompt": str,
                                  "started_at": str, "system_prompt": str, "lore_timers": dict}  # fmt: skip
_TYPE_NAMES: dict[type, str] = {int: "an integer", str: "a string", dict: "an object"}


def read_saved_thread(path: Path) -> dict[str, Any]:
    """``imported_values`` of the file at ``path``; a file that cannot be read, or is no JSON,
    is a ``ThreadImportError`` in one line."""
    try:
        with os_errors(missing=lambda: ThreadImportError(f"{path}: no such file"),
                       folder=lambda: ThreadImportError(f"{path} is a folder, not a /save FILE.json"),
                       other=lambda why: ThreadImportError(f"{path}: cannot read ({why})")):  # fmt: skip
            text = path.expanduser().read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ThreadImportError(f"{path}: not UTF-8 text (a /save FILE.json is)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ThreadImportError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    return imported_values(doc, str(path))


def imported_values(doc: Any, source: str) -> dict[str, Any]:
    """The state of a thread saved by the chat's ``/save FILE.json`` (``repl.transcript``), as
    ``threads import`` writes it; ``ThreadImportError`` (one line naming ``source``) for a file
    that is not one. Its messages (user, assistant with its tool calls, and the tool results
    that answer them), its persona, the rolling summary and window, and the lorebook's timers,
    so the next turn composes as the thread did."""
    if not isinstance(doc, dict) or not isinstance(doc.get("messages"), list):
        raise ThreadImportError(f'{source}: not a thread saved by /save FILE.json (no "messages" list)')
    messages: list[AnyMessage] = []
    for i, row in enumerate(doc["messages"], 1):
        role = row.get("role") if isinstance(row, dict) else None
        if role not in ("user", "assistant", "tool"):
            what = f"role {role!r}" if isinstance(role, str) else "no role"
            raise ThreadImportError(f"{source}: message {i} has {what}: threads import takes user, assistant "
                                    "and tool messages (with their text as \"content\")")  # fmt: skip
        if not isinstance(content := row.get("content"), str):
            what = "no content" if content is None else f"content that is {_json_kind(content)}, not text"
            raise ThreadImportError(f'{source}: message {i} has {what}: a message\'s "content" is its text, '
                                    "a string")  # fmt: skip
        if role == "user":
            messages.append(HumanMessage(row["content"]))
        elif role == "tool":
            messages.append(_tool_message(row, messages, f"{source}: message {i}"))
        else:
            if messages and row.get("greeting") is True:
                raise ThreadImportError(f"{source}: message {i} is a greeting, which only opens a thread "
                                        "(the first message)")  # fmt: skip
            messages.append(_assistant_message(row, f"{source}: message {i}"))
    if not messages:
        raise ThreadImportError(f"{source}: no messages: a thread holds at least one reply")
    if not _whole(messages):
        raise ThreadImportError(f"{source}: a thread ends with a reply, and this one's last message is not one")
    _check_answered(messages, source)
    values: dict[str, Any] = {"messages": messages}
    for key, kind in _SAVED_VALUES.items():
        if key in doc and (type(doc[key]) is not kind):  # bool is no int here
            raise ThreadImportError(f'{source}: "{key}" is not {_TYPE_NAMES[kind]}')
        if doc.get(key):
            values[key] = doc[key]
    persona = doc.get("persona")
    if persona is not None and not isinstance(persona, str):
        raise ThreadImportError(f'{source}: "persona" is not a name')
    if persona:
        values["persona"] = persona
    start, through = values.get("window_start", 0), values.get("summary_through", 0)
    if not 0 <= through <= start <= len(messages):
        raise ThreadImportError(
            f'{source}: "summary_through" {through} and "window_start" {start} do not '
            f"fit its {len(messages)} messages (0 <= summary_through <= window_start <= messages)"
        )
    return values


def _json_kind(value: object) -> str:
    """What a JSON value is, in words ("a list")."""
    kinds = {list: "a list", dict: "an object", bool: "true or false", int: "a number", float: "a number"}
    return kinds.get(type(value), type(value).__name__)


def _check_answered(messages: Sequence[AnyMessage], source: str) -> None:
    """Each tool call of a reply answered once, by a result under the called tool's name, in the
    results after it (``_tool_message`` checks each answers a call of that reply): the tools
    node answers every call of a reply (a malformed one as an error), so a thread with a call
    left unanswered, answered twice or by another tool is not one a turn could have made, and
    a prompt made of it would show the model a call with no result. A stopped reply's calls
    were never run."""
    for at, message in enumerate(messages, 1):
        if not isinstance(message, AIMessage) or message.response_metadata.get("interrupted"):
            continue
        calls = {c["id"]: c["name"] for c in message.tool_calls}
        calls.update({c["id"]: c.get("name") or "tool" for c in message.invalid_tool_calls if c.get("id")})
        answered: set[str] = set()
        for offset, result in enumerate(messages[at:], at + 1):
            if not isinstance(result, ToolMessage):
                break
            if result.tool_call_id in answered:
                raise ThreadImportError(f"{source}: message {offset} answers call {result.tool_call_id!r} "
                                        "again: each tool call has one result")  # fmt: skip
            answered.add(result.tool_call_id)
            called = calls.get(result.tool_call_id)
            if result.name is not None and called is not None and result.name != called:
                raise ThreadImportError(f"{source}: message {offset} answers call {result.tool_call_id!r} as "
                                        f"{result.name!r}, but that call was to {called!r}")  # fmt: skip
        if missing := [call_id for call_id in calls if call_id not in answered]:
            raise ThreadImportError(f"{source}: message {at} makes tool call {missing[0]!r}, which no result "
                                    "after it answers (each call is answered before the next message)")  # fmt: skip


def check_greeting(values: dict[str, Any], greetings: int, persona: str, source: str) -> None:
    """``values`` (``imported_values``) opened with one of ``persona``'s ``greetings`` (a
    count), if with a greeting at all: a number beyond them named no greeting this thread's
    persona has (/greeting and a retry of the opening would fail on it)."""
    messages = values.get("messages") or []
    index = messages[0].response_metadata.get("greeting") if messages else None
    if index is not None and index >= greetings:
        has = f"has {greetings} greeting{'s' if greetings != 1 else ''} (0 to {greetings - 1})" if greetings \
            else "has no greetings"  # fmt: skip
        raise ThreadImportError(f"{source}: the thread opens with greeting {index}, but {persona} {has}")


def _assistant_message(row: dict[str, Any], where: str) -> AIMessage:
    """A saved reply: its text, whether it was stopped, whether it was a line said for no reply
    (``no_reply``: kept out of prompts, memory and the summary), which greeting it was (a file
    saved before ``greeting_index`` says only that it was one: greeting 0), and its tool calls."""
    meta: dict[str, Any] = {"interrupted": True} if row.get("interrupted") is True else {}
    if (why := row.get("no_reply")) is not None:  # a line said for no reply: no one's words
        if not isinstance(why, str) or not why:
            raise ThreadImportError(f'{where}: "no_reply" is not a reason')
        meta["no_reply"] = why
    if row.get("greeting") is True:
        index = row.get("greeting_index", 0)
        if type(index) is not int or index < 0:
            raise ThreadImportError(f'{where}: "greeting_index" is not a greeting\'s number')
        meta["greeting"] = index
    calls = _saved_list(row, "tool_calls", where)
    for call in calls:
        if not (isinstance(call.get("name"), str) and isinstance(call.get("args"), dict)
                and isinstance(call.get("id"), str)):  # fmt: skip
            raise ThreadImportError(f'{where}: a tool call needs a "name", "args" (an object) and an "id"')
    bad_calls = _saved_list(row, "invalid_tool_calls", where)
    keys = ("name", "args", "id", "error")
    if any(not all(call.get(k) is None or isinstance(call.get(k), str) for k in keys) for call in bad_calls):
        raise ThreadImportError(f'{where}: an invalid tool call\'s "name", "args", "id" and "error" are text')
    return AIMessage(
        row["content"],
        response_metadata=meta,
        tool_calls=[{"name": c["name"], "args": c["args"], "id": c["id"], "type": "tool_call"} for c in calls],
        invalid_tool_calls=[{**{k: c.get(k) for k in keys}, "type": "invalid_tool_call"} for c in bad_calls],
    )


def _saved_list(row: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    found = row.get(key, [])
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise ThreadImportError(f'{where}: "{key}" is not a list of objects')
    return found


def _tool_message(row: dict[str, Any], before: list[AnyMessage], where: str) -> ToolMessage:
    """A saved tool result, which answers a call of the reply before it (after that reply's
    other results): a result with no such call would be a thread no turn could have made."""
    call_id, name, status = row.get("tool_call_id"), row.get("name"), row.get("status", "success")
    if not isinstance(call_id, str) or not isinstance(name, str | None) or status not in ("success", "error"):
        raise ThreadImportError(f'{where}: a tool result needs a "tool_call_id" and a "name" (and "status" '
                                '"error" or none)')  # fmt: skip
    asking = next((m for m in reversed(before) if not isinstance(m, ToolMessage)), None)
    asked = [c["id"] for c in asking.tool_calls] + [c.get("id") for c in asking.invalid_tool_calls] \
        if isinstance(asking, AIMessage) else []  # fmt: skip
    if call_id not in asked:
        raise ThreadImportError(f"{where}: a tool result for call {call_id!r}, which the reply before it did not make")
    return ToolMessage(row["content"], tool_call_id=call_id, name=name, status=status)


def import_thread(graph: Any, thread_id: str, values: dict[str, Any]) -> None:
    """Write ``values`` (``imported_values``) as the new thread ``thread_id`` through ``graph``
    (the turn graph, over its checkpointer), between turns as a turn leaves a thread: all of it
    or nothing (a failure deletes what was written). ``ThreadImportError`` for a name a thread
    has."""
    from langgraph.graph import END
    from langgraph.types import StateUpdate

    saver = graph.checkpointer
    taken = ThreadImportError(f"thread {thread_id!r} exists (pick another --thread NAME)", see=SEE_THREADS)
    if thread_exists(saver, thread_id):
        raise taken
    with turn_on(saver, thread_id):  # no other process writes it meanwhile
        if thread_exists(saver, thread_id):
            raise taken
        node = next(name for name in graph.nodes if not name.startswith("__"))  # any node may write the state
        # The summary as the file's last turn found it, for a raw graph's retry past a later fold
        # (it had none, and the summary was dropped): the file's covers only turns before its
        # window, none that a retry takes out, so it stands in.
        values = {**values, "summary_before": summary_record(values)}
        steps = [[StateUpdate(values, node)], [StateUpdate(None, END)]]  # written, then left between turns
        try:
            graph.bulk_update_state({"configurable": {"thread_id": thread_id}}, steps)
        except BaseException:
            with contextlib.suppress(Exception):
                saver.delete_thread(thread_id)
            raise
