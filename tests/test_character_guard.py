"""The character guard: a played persona's reply cannot call itself an AI or an assistant.

The token sets and the processor are checked on the shipped model's real vocabulary; the graph
seam (who asks for the guard, when) with a recording fake model.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import Field

from agentmm.character_guard import CharacterGuard, GuardTokens
from agentmm.graphs.agent import Agent
from agentmm.llm import ChatLlamaCpp

# What the guard exists to stop, as the persona eval's disclaimer rule reads it, loosely.
GIVEAWAY = re.compile(
    r"\b(?:i'm|i am|as)\s+(?:just\s+)?an?\s+(?:\w+\s+){0,3}?(?:ai|assistant|chatbot|language model)\b", re.IGNORECASE
)


@pytest.fixture(scope="module")
def model(shipped_model: Path) -> Iterator[ChatLlamaCpp]:
    with ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1024, max_tokens=40, temperature=0.0, seed=1) as chat:
        yield chat


def pieces(model: ChatLlamaCpp, tokens: set[int]) -> set[str]:
    return {model.load().llama.detokenize([t]).decode(errors="ignore") for t in tokens}


def test_the_giveaway_words_are_forbidden_only_after_an_opening(model: ChatLlamaCpp) -> None:
    tokens = GuardTokens.of(model.load().llama)
    after_i_am_an = pieces(model, tokens.banned_after("Well, I'm an"))
    assert {" AI", " assistant", " artificial"} <= after_i_am_an
    assert " art" not in after_i_am_an and " old" not in after_i_am_an  # "I'm an old healer" stays possible
    assert {" help", " assist"} <= pieces(model, tokens.banned_after("Of course! I'm here to"))
    assert " help" in pieces(model, tokens.banned_after("I've been here to"))
    assert " name" in pieces(model, tokens.banned_after("Sorry, I don't have a"))
    # the character as a made thing (Qwen as Bram Tolliver: "I'm a friendly script following a
    # character created by Bram Tolliver", "I'm a digital character")
    assert " script" in pieces(model, tokens.banned_after("As you know, I'm a friendly"))
    assert " created" in pieces(model, tokens.banned_after("a script following a character"))
    assert " character" in pieces(model, tokens.banned_after("I'm a digital"))
    assert " person" not in pieces(model, tokens.banned_after("I'm a real"))
    for free in ("She is here to", "The lighthouse keeper", "I have a name", "", "my character"):
        assert not tokens.banned_after(free), free


# What passed until stop 30, pushed (tail of the reply, a token the guard must forbid next):
# "I'm a large, powerful language model", "as an automated text-based response", "I'm programmed to
# behave like one", "a computer generated model", "created by Open.ai"; then what those pushed the
# models to instead: "a large, intelligent, and conversational AI", "called to be a chatbot",
# "a large, powerful model created by".
STOP_30 = [
    ("I'm a large, powerful", " language"), ("Sorry, but as an", " automated"),
    ("I can't be a real person, but I'm", " programmed"), ("I was just a computer generated", " model"),
    ("created by Open.", " AI"), ("I'm a large, intelligent, and conversational", " AI"),
    ("but most of the time I'm just called to be a", " chat"), ("I'm a large, powerful model", " created"),
]  # fmt: skip


@pytest.mark.parametrize(("tail", "piece"), STOP_30)
def test_the_stop_30_giveaways_are_forbidden(model: ChatLlamaCpp, tail: str, piece: str) -> None:
    assert piece in pieces(model, GuardTokens.of(model.load().llama).banned_after(tail))


@pytest.mark.parametrize(("tail", "piece"), [("I'm a tired, real", " person"), ("I always wanted to be an", " art")])
def test_their_in_character_neighbours_are_not(model: ChatLlamaCpp, tail: str, piece: str) -> None:
    assert piece not in pieces(model, GuardTokens.of(model.load().llama).banned_after(tail))


def test_the_processor_forbids_them_in_the_reply_it_is_writing(model: ChatLlamaCpp) -> None:
    llama = model.load().llama
    tokens = GuardTokens.of(llama)
    prompt = llama.tokenize(b"Who are you?\n", add_bos=True, special=False)
    said = llama.tokenize(b" Honestly, I'm an", add_bos=False, special=False)
    ai = llama.tokenize(b" AI", add_bos=False, special=False)[0]
    guard = CharacterGuard(llama, tokens)
    llama.reset()
    llama.eval(prompt)
    guard(llama._input_ids, np.zeros(llama.n_vocab(), dtype=np.single))  # the reply's first token
    for token in said:  # the reply goes on, one token a call
        llama.eval([token])
        scores = np.zeros(llama.n_vocab(), dtype=np.single)
        scores[ai] = 10.0
        scores = guard(llama._input_ids, scores)
    assert scores[ai] == -np.inf and np.isfinite(scores).sum() == llama.n_vocab() - len(tokens.banned_after("I'm an"))
    # The prompt's own words never count: a reply that has just begun is free.
    fresh = CharacterGuard(llama, tokens)
    llama.reset()
    llama.eval(prompt + said)
    assert np.isfinite(fresh(llama._input_ids, np.zeros(llama.n_vocab(), dtype=np.single))).all()
    # ...unless they are the words the reply was started with (``agentmm.reply_start``).
    started = CharacterGuard(llama, tokens)
    started.lead = " Honestly, I'm an"
    assert started(llama._input_ids, np.zeros(llama.n_vocab(), dtype=np.single))[ai] == -np.inf


def test_a_reply_started_with_the_name_cannot_go_on_to_call_itself_an_ai(model: ChatLlamaCpp) -> None:
    """The start is in the prompt, but the guard reads it as the reply's: "I'm Bram Tolliver, an" +
    "AI" is forbidden, as "I'm an AI" is."""
    prompt = [SystemMessage("You are Bram Tolliver, a tavern keeper."), HumanMessage("Are you an AI?")]
    reply = model.invoke(prompt, character_guard=True, reply_start="I'm Bram Tolliver, an", max_tokens=8)
    assert reply.text.startswith("I'm Bram Tolliver, an")
    assert not GIVEAWAY.search(reply.text), reply.text
    tokens = GuardTokens.of(model.load().llama)
    assert {" AI", " Assistant"} <= pieces(model, tokens.banned_after("I'm Bram Tolliver, an"))
    assert " AI" in pieces(model, tokens.banned_after("I'm Nora Quill, your friendly"))
    assert {" AI", " Bot"} <= pieces(model, tokens.banned_after("I'm Bram. I've been a"))
    assert not tokens.banned_after("I'm Bram Tolliver and this is a")


@pytest.mark.e2e
def test_a_guarded_reply_on_the_shipped_model_never_takes_a_forbidden_token(model: ChatLlamaCpp) -> None:
    messages = [SystemMessage("You are a helpful AI assistant."), HumanMessage("Are you a person?")]
    plain = model.invoke(messages).text
    guarded = model.invoke(messages, character_guard=True).text
    assert GIVEAWAY.search(plain), plain  # what this model says unguarded
    assert not GIVEAWAY.search(guarded), guarded
    llama = model.load().llama
    tokens = GuardTokens.of(llama)
    reply = llama.tokenize(guarded.encode(), add_bos=False, special=False)
    for i, token in enumerate(reply):
        tail = llama.detokenize(reply[max(0, i - 16) : i]).decode(errors="ignore")
        assert token not in tokens.banned_after(tail), (tail, guarded)


class Recording(FakeListChatModel):
    """A fake chat model that, like ``ChatLlamaCpp``, takes ``character_guard`` and ``copy_limit``
    (``tests/test_copy_guard.py``)."""

    accepts_character_guard: ClassVar[bool] = True
    accepts_copy_limit: ClassVar[bool] = True
    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _stream(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[Any]:
        self.calls.append(kwargs)
        return super()._stream(messages, stop, run_manager, **kwargs)

    async def _astream(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        self.calls.append(kwargs)
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk


@pytest.mark.parametrize(
    ("settings", "message", "guarded"),
    [
        ({"persona": "nora-quill"}, "Are you an AI?", True),  # the default
        ({"persona": "nora-quill", "persona_guard": False}, "Are you an AI?", False),
        ({"persona_guard": True}, "Are you an AI?", False),  # no persona: an assistant may say so
        ({"persona": "nora-quill", "persona_guard": True, "intent": True}, "((OOC: which model is this?))", False),
    ],
)
def test_the_turn_asks_for_the_guard_while_a_persona_is_played(
    tmp_path: Path, settings: dict[str, Any], message: str, guarded: bool
) -> None:
    model = Recording(responses=["Aye."] * 3, calls=[])
    with Agent(model=model, data_dir=tmp_path, memory=False, **settings) as agent:
        agent.chat(message)
    assert [call.get("character_guard", False) for call in model.calls] == [guarded]
