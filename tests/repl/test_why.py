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


def test_why_says_nothing_of_left_out_memories_when_none_were() -> None:
    text = rendered({"path": ["ingest", "recall"], "recalled": []})
    assert "left out" not in text and "memories in the window" not in text
