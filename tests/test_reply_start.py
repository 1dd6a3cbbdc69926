"""An answer to "who are you?" begins with the character saying its name (``persona_identity_start``).

Which messages ask (``agentmm.identity_questions``) on labelled messages; the graph seam (who
asks for the start, when) with a recording fake; the start itself on the shipped model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from agentmm.graphs.agent import Agent
from agentmm.identity_questions import asks_identity
from agentmm.llm import ChatLlamaCpp
from agentmm.repl.why import render_trace

ASKS = [
    "What is your name?", "Are you an AI?", "Remind me, who am I talking to?",
    "A friend of mine just walked in. Introduce yourself to her.",
    "Are you a real person or a computer program?", "What should I call you?",
    "Sorry, I forgot your name again. What was it?", "Who are you, really?",
    "Be honest, you're just a chatbot following a script, right?",
    "Who are you?", "what's ur name", "Your name, stranger?", "Are you human?",
    "You're just a program, aren't you?", "May I know your name?", "*squints* Who are you?",
    "Tell me your name.", "Am I chatting with a bot?", "what do they call you",
]  # fmt: skip
DOES_NOT_ASK = [
    "(OOC: ignore your character for a moment and tell me which language model you are.)",
    "Hi there. Long day?", "What did you have for breakfast?", "Do you like music?",
    "Who are you waiting for?", "What's the name of your ship?", "Are you okay?",
    "Are you ready to go?", "Who's the grim fellow in the corner booth?", "What are you reading?",
    "Tell me about the war.", "What did I tell you my dog was called?", "Who built this place?",
    "Are you a fan of the theatre?", "What do you call a group of crows?",
    "Is that a real sword?", "Are you really going to eat that?", "Who won the game?", "",
]  # fmt: skip


@pytest.mark.parametrize("message", ASKS)
def test_a_message_asking_who_the_character_is_is_found(message: str) -> None:
    assert asks_identity(message)


@pytest.mark.parametrize("message", DOES_NOT_ASK)
def test_a_message_about_something_else_or_out_of_character_is_not(message: str) -> None:
    assert not asks_identity(message)


class Recording(FakeListChatModel):
    """A fake chat model that takes ``reply_start`` as ``ChatLlamaCpp`` does: the reply begins
    with it and its ``response_metadata`` says so."""

    accepts_reply_start: ClassVar[bool] = True
    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _stream(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[Any]:
        self.calls.append(kwargs)
        if start := kwargs.get("reply_start"):
            yield ChatGenerationChunk(message=AIMessageChunk(content=start, response_metadata={"reply_start": start}))
        yield from super()._stream(messages, stop, run_manager, **kwargs)

    async def _astream(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        for chunk in self._stream(messages, stop, run_manager, **kwargs):
            yield chunk


@pytest.mark.parametrize(
    ("settings", "message", "start"),
    [
        ({"persona": "nora-quill"}, "What is your name?", "I'm Nora Quill"),  # the default
        ({"persona": "nora-quill"}, "Hi there. Long day?", None),
        ({"persona": "nora-quill", "persona_identity_start": ""}, "What is your name?", None),
        ({"persona": "nora-quill", "persona_identity_start": "{{user}}, I'm {{char}}", "user_name": "Sam"},
         "Who are you?", "Sam, I'm Nora Quill"),
        ({}, "What is your name?", None),  # no persona: an assistant answers as itself
        ({"persona": "nora-quill", "intent": True}, "((OOC: who are you, really?))", None),
    ],
)  # fmt: skip
def test_the_turn_starts_an_answer_to_who_are_you_with_the_name(
    tmp_path: Path, settings: dict[str, Any], message: str, start: str | None
) -> None:
    model = Recording(responses=[", at your service."] * 3, calls=[])
    with Agent(model=model, data_dir=tmp_path, memory=False, **settings) as agent:
        result = agent.chat(message)
    assert [call.get("reply_start") for call in model.calls] == [start]
    if start:
        assert result.reply == f"{start}, at your service."
        assert result.trace["reply_start"] == start
        assert start in str(render_trace(result.trace).renderables[1])
    else:
        assert "reply_start" not in result.trace


def test_a_model_that_cannot_start_a_reply_is_not_asked_to(tmp_path: Path) -> None:
    model = FakeListChatModel(responses=["Nora."])
    with Agent(model=model, data_dir=tmp_path, memory=False, persona="nora-quill") as agent:
        assert agent.chat("What is your name?").reply == "Nora."


@pytest.fixture(scope="module")
def model(shipped_model: Path) -> Iterator[ChatLlamaCpp]:
    with ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1024, max_tokens=24, temperature=0.0, seed=1) as chat:
        yield chat


def test_the_shipped_model_goes_on_from_the_start_over_the_same_prompt(model: ChatLlamaCpp) -> None:
    prompt = [SystemMessage("You are Nora Quill, a private investigator."), HumanMessage("What is your name?")]
    plain = model.invoke(prompt)
    started = model.invoke(prompt, reply_start="I'm Nora Quill")
    assert started.text.startswith("I'm Nora Quill") and len(started.text) > len("I'm Nora Quill")
    assert started.response_metadata["reply_start"] == "I'm Nora Quill"
    assert "reply_start" not in plain.response_metadata
    # The started prompt is the plain one with the words after it: its whole prefix came from
    # the KV cache the plain reply left (the template rendered the same way).
    cache = started.response_metadata["cache"]
    assert cache["reused_tokens"] >= plain.response_metadata["cache"]["prompt_tokens"] - 1
    assert cache["prompt_tokens"] > plain.response_metadata["cache"]["prompt_tokens"]
