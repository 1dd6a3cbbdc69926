"""Relative dates in a recalled memory, resolved against the day it was said."""

from __future__ import annotations

from datetime import date, datetime

from agentmm.memory.conversation import format_recalled
from agentmm.memory.dates import annotate, resolved


def test_relative_expressions_are_resolved_against_the_day_said() -> None:
    said = date(2023, 7, 24)
    assert resolved("I went to the climbing gym yesterday.", said) == [("yesterday", "23 July 2023")]
    assert resolved("Last week I saw a film, and two days ago a play", said) == [
        ("Last week", "the week before 24 July 2023"), ("two days ago", "22 July 2023")]  # fmt: skip
    assert resolved("3 weeks ago", said) == [("3 weeks ago", "about 3 July 2023")]
    assert resolved("Tomorrow, and tomorrow, and tomorrow", datetime(2023, 12, 31, 9)) == [
        ("Tomorrow", "1 January 2024")]  # fmt: skip
    assert resolved("yesterday", None) == [] and resolved("yesterday", "sometime in May") == []
    assert resolved("I like today's weather", said) == [("today", "24 July 2023")]
    assert annotate("Nothing relative here.", said) == "Nothing relative here."


def test_the_prompts_memory_block_says_days_in_words() -> None:
    recalled = [{"when": "2023-07-24T10:00:00", "speaker": "Yara", "text": "I went climbing yesterday"},
                {"when": "8:56 pm on 20 July, 2023", "speaker": "Ravi", "text": "Hi"}]  # fmt: skip
    block = format_recalled(recalled, "Ada")
    assert "- (24 July 2023) Yara: I went climbing yesterday [yesterday: 23 July 2023]" in block
    assert "- (8:56 pm on 20 July, 2023) Ravi: Hi" in block  # not a date: shown as stored
