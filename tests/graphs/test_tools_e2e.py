"""The shipped model calls the dice tool through the real Agent, graph and tool node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentmm.graphs.agent import Agent
from agentmm.tools.builtin import DICE_PATTERN, roll_dice

pytestmark = pytest.mark.e2e


def test_shipped_model_rolls_dice_mid_conversation(tmp_path: Path, shipped_model: Path) -> None:
    settings = {"data_dir": tmp_path, "memory": False, "max_tokens": 40, "seed": 7, "n_ctx": 2048}
    with Agent(tools=[roll_dice], system_prompt="You are a game master.", **settings) as agent:
        turn = agent.chat("Roll 2d6 for my attack please.", "quest")
        after = agent.chat("Thank you! Who are you?", "quest")
    (call,) = turn.trace["tool_calls"]
    assert call["name"] == "roll_dice" and re.match(DICE_PATTERN, call["args"]["notation"])
    assert turn.trace["path"][-3:] == ["generate", "tools", "generate"]
    assert turn.reply.strip()  # the model answered in words after the result
    # The thread goes on: the call and its result are in it, and chat needs no tool.
    assert after.trace.get("tool_calls") is None and after.reply.strip()
