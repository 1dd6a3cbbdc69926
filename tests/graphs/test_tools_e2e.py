"""The shipped model calls the dice tool through the real Agent, graph and tool node."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from langchain_core.tools import tool

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


@tool
def find_photos(query: str) -> str:
    """Find the user's photos that match a description, best first."""
    return "1. /photos/2025/beach-sunset.jpg (score 0.312)\n2. /photos/2025/forest.jpg (score 0.118)"


@pytest.mark.slow
def test_after_a_result_the_shipped_model_answers_in_words(tmp_path: Path, shipped_model: Path) -> None:
    """Left alone, the 135M model often answers a tool result with a call or a result of its
    own ('[calling find_photos {...}]', '[find_photos result: 1. /photos/made-up.jpg ...]'):
    text that looks like a call nobody ran, or paths nobody found. Replies stop before either,
    and one that would have been nothing but that is written again without brackets."""
    settings = {"data_dir": tmp_path, "memory": False, "max_tokens": 48, "n_ctx": 2048}
    replies = []
    for seed in range(1, 7):
        with Agent(tools=[find_photos], seed=seed, **settings) as agent:
            turn = agent.chat("Find the picture of the beach from last summer in my photos.")
        if turn.trace.get("tool_calls"):
            replies.append(turn.reply)
    assert len(replies) >= 3, "the model called the tool too rarely for this test to say anything"
    for reply in replies:
        assert reply.strip(), replies
        assert "[calling" not in reply and "result:" not in reply, replies


def test_the_shipped_model_asks_image_search_for_words(shipped_model: Path) -> None:
    """search_images' schema steers a constrained model to a query of words; with any string
    allowed the 135M model wrote '', '][' or '{' in most tries."""
    from agentmm.llm import ChatLlamaCpp
    from agentmm.tools.clip_search import QUERY_PATTERN, search_images

    queries = []
    for seed in range(1, 5):
        model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048, temperature=0.8, seed=seed, max_tokens=48)
        reply = model.bind_tools([search_images], tool_choice="search_images").invoke(
            "Find the picture of the beach from last summer in my photos."
        )
        queries += [call["args"]["query"] for call in reply.tool_calls]
    assert len(queries) == 4
    assert all(re.match(QUERY_PATTERN, q) for q in queries), queries
