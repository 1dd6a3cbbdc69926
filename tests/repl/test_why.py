"""``/why`` says what recall left out and how much of the window's memory budget is held."""

from __future__ import annotations

from rich.console import Console

from agentmm.memory.selection import BELOW_BAR, OVER_WINDOW
from agentmm.repl.why import render_trace


def rendered(trace: dict) -> str:
    console = Console(width=120, record=True, force_terminal=False)
    console.print(render_trace(trace))
    return console.export_text()


def test_why_shows_left_out_memories_by_reason_and_the_window_budget() -> None:
    trace = {
        "path": ["ingest", "recall", "compose", "generate"],
        "recalled": [{"id": "m1", "score": 0.03, "similarity": 0.61, "found_by": ["dense"], "text": "Mira likes tea"}],
        "recall_dropped": [
            {"id": "m2", "similarity": 0.1, "reason": BELOW_BAR},
            {"id": "m3", "similarity": 0.2, "reason": BELOW_BAR},
            {"id": "m4", "similarity": 0.5, "reason": OVER_WINDOW},
        ],
        "recall_window": {"budget": 896, "held": 880, "room": 16},
        "recall_tokens": 21,
    }
    text = rendered(trace)
    assert f"left out: 2 {BELOW_BAR}, 1 {OVER_WINDOW}" in text
    assert "memories in the window: 880 of 896 tokens held, 16 room; this turn placed 21" in text


def test_why_says_when_earlier_blocks_left_the_prompt_for_this_turns_memories() -> None:
    """Their room went to this turn (``recall_window.freed``): without a word, "212 of 232
    tokens held, 232 room" read as a miscount."""
    trace = {"path": ["ingest", "recall", "compose"], "recalled": [], "recall_tokens": 40,
             "recall_window": {"budget": 232, "held": 212, "room": 232, "freed": 212, "let_in": ["m1"]}}  # fmt: skip
    text = rendered(trace)
    assert "212 of 232 tokens held (212 of them left the prompt for this turn's memories), 232 room" in text


def test_why_says_nothing_of_left_out_memories_when_none_were() -> None:
    text = rendered({"path": ["ingest", "recall"], "recalled": []})
    assert "left out" not in text and "memories in the window" not in text


RECALLED = {
    "path": ["ingest", "recall"],
    "recalled": [
        {"id": "t-4f1c2a:12:user", "score": 0.0312, "similarity": 0.41, "overlap": 0.5, "found_by": ["dense", "bm25"],
         "text": "Ada's cat is called Miso"},
        {"id": "m2", "score": 0.02, "similarity": 0.6, "overlap": None, "found_by": ["dense"], "text": "tea"},
    ],
}  # fmt: skip


def test_why_shows_each_recalled_memorys_overlap_as_the_trace_has_it() -> None:
    lines = rendered(RECALLED).splitlines()

    def cells(marker: str) -> list[str]:
        line = next(line for line in lines if marker in line)
        return [cell.strip() for cell in line.replace("┃", "│").split("│")]

    assert cells("similarity")[:4] == ["score", "similarity", "overlap", "found by"]
    assert cells("Miso")[:5] == ["0.0312", "0.410", "0.50", "dense+bm25", "t-4f1c2a:12:user"]
    assert cells(" tea")[2] == "-"  # not known


def test_why_prints_recalled_memories_as_blocks_on_a_narrow_terminal() -> None:
    console = Console(width=50, record=True, force_terminal=False)
    console.print(render_trace(RECALLED))
    lines = console.export_text().splitlines()
    start, end = lines.index("t-4f1c2a:12:user"), lines.index("m2")  # each id whole, on a line of its own
    block = lines[start + 1 : end]
    assert all(line.startswith("  ") for line in block)
    assert " ".join(line.strip() for line in block) == (
        "score 0.0312 · similarity 0.410 · overlap 0.50 · found by dense+bm25 Ada's cat is called Miso"
    )
    assert "overlap" not in lines[end + 1]  # not known: left out
