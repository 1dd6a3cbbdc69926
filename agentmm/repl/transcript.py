"""``/save``: a thread as a readable Markdown transcript or a JSON document.

The JSON keeps what ``agentmm threads show --json`` gives for each message (its tool calls and
results too), and which greeting opened the thread and its lines said for no reply, plus the
thread's id, persona and model, so a saved file is enough to tell what
happened, and its rolling summary and window, so ``agentmm threads import`` can go on with it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentmm.console_text import printable
from agentmm.errors import AgentmmError
from agentmm.fileio import atomic_write

FORMATS = {".md": "markdown", ".markdown": "markdown", ".json": "json"}


class TranscriptError(AgentmmError):
    """The transcript cannot be written where or how it was asked."""


def message_rows(messages: list[Any]) -> list[dict[str, Any]]:
    """Each message as ``threads show --json`` gives it, plus what ``threads import`` needs to
    make it again (``threads.message_dict``'s ``saved``: one writer of both)."""
    from agentmm.threads import message_dict

    return [message_dict(m, saved=True) for m in messages]


def transcript(thread_id: str, values: dict[str, Any], *, model: str, user_name: str) -> dict[str, Any]:
    return {
        "thread_id": thread_id,
        "persona": values.get("persona") or None,
        "model": model,
        "user_name": user_name,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": message_rows(values.get("messages", [])),
        # As ``threads show --json`` names them, and what ``threads import`` needs to go on with
        # the thread as it was: the rolling summary of the turns before the window, where the
        # window starts, the prompt a thread without a persona started with, and when it began.
        "window_start": values.get("window_start", 0),
        "system_prompt": values.get("system_prompt", ""),
        "summary": values.get("summary", ""),
        "summary_through": values.get("summary_through", 0),
        "base_prompt": values.get("base_prompt", ""),
        "started_at": values.get("started_at", ""),
        # The lorebook's sticky and cooldown timers (``personas.timed_effects``): without them an
        # imported thread started every timer afresh.
        "lore_timers": values.get("lore_timers") or {},
    }


def to_markdown(doc: dict[str, Any]) -> str:
    """The transcript as Markdown, without the control characters and escape sequences a message
    may hold (``cat`` of the file would run them); the JSON keeps them, escaped."""
    speaker = printable(doc["persona"] or "Assistant")
    lines = [f"# agentmm thread {doc['thread_id']}", ""]
    lines.append(f"Model {doc['model']}" + (f" · persona {doc['persona']}" if doc["persona"] else "")
                 + f" · saved {doc['saved_at']}")  # fmt: skip
    for m in doc["messages"]:
        who = printable(doc["user_name"]) if m["role"] == "user" else speaker
        mark = " *(interrupted)*" if m.get("interrupted") else ""
        lines += ["", f"**{who}:**", "", printable(m["content"]).strip() + mark]
    return "\n".join(lines) + "\n"


def format_of(path: Path) -> str:
    """ "markdown" or "json", from the file's extension."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TranscriptError(f"cannot tell the format of {path.name!r}: save as .md or .json")
    if path.is_dir():
        raise TranscriptError(f"{path} is a directory")
    return fmt


def save(path: Path, doc: dict[str, Any]) -> str:
    """Write ``doc`` as the file's extension says; the format written."""
    fmt = format_of(path)
    text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n" if fmt == "json" else to_markdown(doc)
    atomic_write(path.expanduser(), text.encode("utf-8"), TranscriptError)
    return fmt
