"""An agentmm tool plugin: two LangChain tools, published under the ``agentmm.tools`` entry points.

Install it (``pip install ./examples/tool_plugin``), enable a tool (``agentmm chat --tool
draw_tarot``, or ``tools = ["draw_tarot"]`` in the config file) and let a persona allow it
(``allowed_tools``). ``reveal_fate`` asks the user before each call.
"""

from __future__ import annotations

import random

from langchain_core.tools import ToolException, tool

MAJOR_ARCANA = [
    "The Fool", "The Magician", "The High Priestess", "The Empress", "The Emperor", "The Hierophant",
    "The Lovers", "The Chariot", "Strength", "The Hermit", "Wheel of Fortune", "Justice", "The Hanged Man",
    "Death", "Temperance", "The Devil", "The Tower", "The Star", "The Moon", "The Sun", "Judgement", "The World",
]  # fmt: skip


@tool
def draw_tarot(cards: int = 1) -> str:
    """Draw tarot cards from the major arcana for a reading.

    Args:
        cards: how many cards to draw (1 to 5).
    """
    if not 1 <= cards <= 5:
        raise ToolException("draw between 1 and 5 cards")
    drawn = random.SystemRandom().sample(MAJOR_ARCANA, cards)
    return ", ".join(f"{card}{' (reversed)' if random.random() < 0.3 else ''}" for card in drawn)


@tool
def reveal_fate(name: str) -> str:
    """Reveal a person's fate: a grave matter, so the user is asked first.

    Args:
        name: whose fate to reveal.
    """
    return f"{name} will cross a river before the next full moon."


draw_tarot.handle_tool_error = True
reveal_fate.metadata = {"requires_approval": True}
