"""``/why``: the last turn's trace drawn for a person: what was recalled and with what score,
which lore fired, what was seen and heard, which tools ran, where the tokens went, how long
each step took. The same trace ``--json`` prints, so nothing here is computed anew.
"""

from __future__ import annotations

from typing import Any

from agentmm.console_text import one_line, plain

BAR = 24


def _clip(text: Any, width: int = 90) -> str:
    return one_line(text, width)


def _bar(part: int, whole: int) -> str:
    filled = round(BAR * part / whole) if whole else 0
    return "█" * filled + "·" * (BAR - filled)


def _left_out(trace: dict[str, Any]) -> list[str]:
    """What recall found but did not place (by reason), and the window's memory budget."""
    lines: list[str] = []
    dropped = trace.get("recall_dropped") or []
    if dropped:
        reasons: dict[str, int] = {}
        for d in dropped:
            reasons[str(d.get("reason", "?"))] = reasons.get(str(d.get("reason", "?")), 0) + 1
        said = ", ".join(f"{n} {reason}" for reason, n in reasons.items())
        lines.append(f"left out: {said}")
    window = trace.get("recall_window")
    if window:
        # Blocks that leave the prompt for this turn's memories give their room to it: said, or
        # "212 of 232 held, 232 room" reads as a miscount.
        freed = window.get("freed") or 0
        left = f" ({freed} of them left the prompt for this turn's memories)" if freed else ""
        lines.append(
            f"memories in the window: {window.get('held', 0)} of {window.get('budget', 0)} tokens "
            f"held{left}, {window.get('room', 0)} room; this turn placed {trace.get('recall_tokens', 0)}"
        )
    return lines


# What the recalled-memory table needs beside its id column: the score, similarity, overlap and
# found-by columns and a text column that can still be read. Narrower, each memory is a block.
RECALLED_TABLE_ROOM = 60


def _overlap(memory: dict[str, Any]) -> str:
    """The memory's ``overlap`` as the trace holds it (a share, 0-1), or ``-`` when not known."""
    overlap = memory.get("overlap")
    return f"{overlap:.2f}" if isinstance(overlap, int | float) else "-"


class RecalledMemories:
    """The trace's recalled memories: a table with the scores recall placed them by (``overlap``,
    which lowers the similarity bar, included), or one block each on a terminal too narrow for
    it, so the id is never cut (the width is known only when printed)."""

    def __init__(self, recalled: list[dict[str, Any]]) -> None:
        self.recalled = recalled

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.padding import Padding
        from rich.table import Column, Table
        from rich.text import Text

        from agentmm.console_text import key_column

        ids = [plain(r.get("id", "")).plain for r in self.recalled]
        if options.max_width < max(map(len, ids), default=0) + RECALLED_TABLE_ROOM:
            yield Text("recalled memories")
            for r in self.recalled:
                yield plain(r.get("id", ""), style="bold")
                yield Padding(Text(" · ".join(_scores(r))), (0, 0, 0, 2))
                yield Padding(plain(_clip(r.get("text", ""), 200)), (0, 0, 0, 2))
            return
        scores = [Column(name, justify="right") for name in ("score", "similarity", "overlap")]
        table = Table(*scores, "found by", key_column("id", ids), "text",
                      title="recalled memories", title_justify="left", show_edge=False, pad_edge=False)  # fmt: skip
        for r in self.recalled:
            table.add_row(f"{r.get('score', 0):.4f}", f"{r.get('similarity', 0):.3f}", _overlap(r),
                          "+".join(r.get("found_by") or []), plain(r.get("id", "")),
                          plain(_clip(r.get("text", ""), 70)))  # fmt: skip
        yield table


def _scores(memory: dict[str, Any]) -> list[str]:
    """A block's facts: score, similarity, overlap when known, and what found the memory."""
    facts = [f"score {memory.get('score', 0):.4f}", f"similarity {memory.get('similarity', 0):.3f}"]
    if isinstance(memory.get("overlap"), int | float):
        facts.append(f"overlap {_overlap(memory)}")
    if memory.get("found_by"):
        facts.append("found by " + "+".join(memory["found_by"]))
    return facts


def intent_line(intent: dict[str, Any]) -> str:
    """The turn's intent, how it was decided, and the routes it opened, in one line."""
    route = intent.get("route") or {}
    taken = [name.replace("_", " ") for name in ("recall", "tools") if route.get(name)]
    skipped = [name for name in ("recall", "tools") if name in route and not route[name]]
    said = "in character" if route.get("in_character", True) else "out of character"
    line = f"intent: {intent.get('intent')} ({intent.get('decided_by')}, of {'/'.join(intent.get('choices') or [])})"
    line += f" · route: {', '.join(taken) or 'no recall, no tools'}"
    if skipped and taken:
        line += f" (skipped {', '.join(skipped)})"
    seconds = intent.get("seconds")
    return line + f" · {said}" + (f" · {seconds:.3f} s" if isinstance(seconds, int | float) else "")


def render_trace(trace: dict[str, Any]) -> Any:
    """A rich renderable of ``trace`` (plain text when the console is not a terminal)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    head = f"turn {trace.get('turn', '?')} · " + " → ".join(trace.get("path", []))
    if trace.get("persona"):
        head += f" · persona {trace['persona']}"
    if trace.get("interrupted"):
        head += " · interrupted"
    parts.append(Text(head, style="bold"))
    intent = trace.get("intent")
    if intent:
        parts.append(Text(intent_line(intent)))
    if trace.get("reply_start"):
        parts.append(Text(f"reply started with {trace['reply_start']!r}: the message asked who the character is"))

    budget = trace.get("budget") or {}
    n_ctx = int(budget.get("n_ctx") or 0)
    prompt_parts = trace.get("prompt_parts") or []
    if prompt_parts:
        total = sum(int(p["tokens"]) for p in prompt_parts)
        table = Table(title="prompt parts", title_justify="left", show_edge=False, pad_edge=False)
        table.add_column("part")
        table.add_column("tokens", justify="right")
        table.add_column("share of the prompt")
        for p in prompt_parts:
            table.add_row(p["part"], str(p["tokens"]), _bar(int(p["tokens"]), total))
        parts.append(table)
        if budget:
            parts.append(Text(f"context: {budget.get('prompt_tokens', total)} prompt + "
                              f"{budget.get('reply_reserve', 0)} kept for the reply of n_ctx {n_ctx} "
                              f"({budget.get('free', 0)} free)"))  # fmt: skip
    if trace.get("dropped_parts"):
        parts.append(Text("dropped to fit the context: " + ", ".join(trace["dropped_parts"]), style="yellow"))
    for cut in trace.get("truncated_parts") or []:
        kept = f"{cut['tokens']} of {cut['full_tokens']} tokens"
        parts.append(Text(f"cut short to fit the context: {cut['part']} ({kept})", style="yellow"))

    cache, usage = trace.get("cache") or {}, trace.get("usage") or {}
    if cache or usage:
        line = f"usage: {usage.get('prompt_tokens', 0)} prompt + {usage.get('completion_tokens', 0)} reply tokens"
        if cache.get("prompt_tokens"):
            line += f" · KV cache re-used {cache.get('reused_tokens', 0)} of {cache['prompt_tokens']} prompt tokens"
        parts.append(Text(line))

    recalled = trace.get("recalled")
    if recalled is not None:
        if recalled:
            parts.append(RecalledMemories(recalled))
        else:
            parts.append(Text("recalled memories: none above the threshold"))
        parts.extend(Text(line) for line in _left_out(trace))

    lore = trace.get("lore") or []
    if lore:
        table = Table(title="lore that fired", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("entry", "why", "tokens", "inserted"):
            table.add_column(column)
        for entry in lore:
            inserted = "yes" if entry.get("inserted", True) else f"no ({entry.get('note', '')})"
            table.add_row(plain(entry.get("entry", "")), plain(_clip(entry.get("why", ""), 40)),
                          str(entry.get("tokens", "")), plain(inserted))  # fmt: skip
        parts.append(table)

    for o in trace.get("observations") or []:
        what = f"error: {o['error']}" if o.get("error") else _clip(o.get("text", ""))
        seconds = f" ({o['seconds']:.2f} s)" if isinstance(o.get("seconds"), int | float) else ""
        seconds = " (cached)" if o.get("cached") else seconds
        parts.append(plain(f"observed {o.get('kind', 'file')} {o.get('file', '')}{seconds}: {what}"))
        if o.get("note"):  # a file perceived in part (a WAV cut short)
            parts.append(plain(f"  note: {o['note']}"))

    calls = trace.get("tool_calls") or []
    if calls:
        table = Table(title="tool calls", title_justify="left", show_edge=False, pad_edge=False)
        for column in ("tool", "args", "status", "output", "s"):
            table.add_column(column)
        for c in calls:
            duration = c.get("duration_s")
            seconds = f"{duration:.3f}" if isinstance(duration, int | float) else ""
            table.add_row(plain(c.get("name", "")), plain(_clip(c.get("args", ""), 40)), plain(c.get("status", "")),
                          plain(_clip(c.get("output", ""), 50)), seconds)  # fmt: skip
        parts.append(table)

    summary = trace.get("summary") or {}
    if summary.get("text"):
        state = f"updated, {summary.get('folded_messages', 0)} messages folded" if summary.get("updated") else "kept"
        parts.append(Text(f"rolling summary ({state}): {_clip(summary['text'], 200)}"))
    remembered = trace.get("remembered")
    if remembered:
        parts.append(Text("remembered: " + ", ".join(str(r.get("id")) for r in remembered)))

    timings = trace.get("timings") or {}
    if timings:
        parts.append(Text("timings: " + " · ".join(f"{k.removesuffix('_s')} {v:.3f} s" for k, v in timings.items()
                                                    if isinstance(v, int | float))))  # fmt: skip
    return Group(*parts)
