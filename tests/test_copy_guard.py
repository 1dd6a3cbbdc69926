"""The copy guard: a played persona's reply cannot repeat a long run of tokens from its prompt.

The processor's bookkeeping with a stand-in for llama's token count; the ban on the shipped
model's real generation; the graph seam (who asks for it, when) with a recording fake model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import ValidationError

from agentmm.copy_guard import CopyGuard
from agentmm.graphs.agent import Agent
from agentmm.llm import ChatLlamaCpp
from agentmm.settings import Settings
from tests.test_character_guard import Recording

VOCAB = 50


def step(guard: CopyGuard, llama: Any, buffer: np.ndarray, sequence: list[int]) -> np.ndarray:
    """One sampling step with ``sequence`` evaluated: the scores the guard leaves."""
    buffer[: len(sequence)] = sequence
    llama.n_tokens = len(sequence)
    return guard(buffer, np.zeros(VOCAB, dtype=np.single))


def banned(scores: np.ndarray) -> set[int]:
    return set(np.flatnonzero(np.isinf(scores)).tolist())


def test_the_token_that_would_complete_a_copied_run_is_forbidden_once_the_reply_has_begun_one() -> None:
    llama = SimpleNamespace(n_tokens=0)
    buffer = np.zeros(200, dtype=np.intc)  # llama-cpp-python's whole buffer, longer than what was evaluated
    guard = CopyGuard(llama, limit=4)  # type: ignore[arg-type]
    prompt = [1, 2, 3, 4, 5, 6, 7, 8]
    assert banned(step(guard, llama, buffer, prompt)) == set()  # a reply's first token is free
    assert banned(step(guard, llama, buffer, [*prompt, 2])) == set()
    assert banned(step(guard, llama, buffer, [*prompt, 2, 3])) == set()  # two tokens: no run of 3 yet
    assert banned(step(guard, llama, buffer, [*prompt, 2, 3, 4])) == {5}  # 2 3 4 5 stands in the prompt
    assert banned(step(guard, llama, buffer, [*prompt, 2, 3, 4, 9])) == set()
    # The reply's own runs count too: after 3 4 9 again, 3 (what followed it in the reply) is forbidden.
    assert banned(step(guard, llama, buffer, [*prompt, 2, 3, 4, 9, 3])) == set()
    assert banned(step(guard, llama, buffer, [*prompt, 2, 3, 4, 9, 3, 4])) == set()  # 9 3 4: new
    assert banned(step(guard, llama, buffer, [*prompt, 2, 3, 4, 9, 3, 4, 9])) == {3}


def test_a_new_call_starts_over_on_its_own_prompt() -> None:
    llama = SimpleNamespace(n_tokens=0)
    buffer = np.zeros(64, dtype=np.intc)
    guard = CopyGuard(llama, limit=3)  # type: ignore[arg-type]
    step(guard, llama, buffer, [1, 2, 3])
    step(guard, llama, buffer, [1, 2, 3, 1])
    assert banned(step(guard, llama, buffer, [1, 2, 3, 1, 2])) == {3}
    # The same guard over another prompt (a reply written again): only that prompt's runs count.
    step(guard, llama, buffer, [7, 8, 9, 10, 11])
    step(guard, llama, buffer, [7, 8, 9, 10, 11, 1])
    assert banned(step(guard, llama, buffer, [7, 8, 9, 10, 11, 1, 2])) == set()


def test_a_copy_limit_below_two_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        CopyGuard(SimpleNamespace(n_tokens=0), limit=1)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="at least 2 tokens"):
        Settings(persona_copy_limit=1)


@pytest.fixture(scope="module")
def model(shipped_model: Path) -> Iterator[ChatLlamaCpp]:
    with ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1024, max_tokens=48, temperature=0.0, seed=1) as chat:
        yield chat


@pytest.mark.e2e
def test_a_guarded_reply_on_the_shipped_model_copies_no_run_of_the_limit(model: ChatLlamaCpp) -> None:
    verse = "The lamp of Gull Rock burns all night, and the keeper counts the ships that pass it by."
    messages = [SystemMessage("You repeat what you are told, word for word."), HumanMessage(f"Repeat: {verse}")]
    llama = model.load().llama
    prompt = set()
    rendered = llama.tokenize(f"{messages[0].text}\n{messages[1].text}".encode(), add_bos=False, special=False)
    limit = 6
    for i in range(len(rendered) - limit + 1):
        prompt.add(tuple(rendered[i : i + limit]))
    plain = model.invoke(messages).text
    guarded = model.invoke(messages, copy_limit=limit).text
    assert verse[:40] in plain  # what this model does unguarded
    assert guarded and verse[:40] not in guarded
    reply = llama.tokenize(guarded.encode(), add_bos=False, special=False)
    runs = {tuple(reply[i : i + limit]) for i in range(len(reply) - limit + 1)}
    # Tokenized apart from its prompt, a run may split differently at its edges; the body may not copy.
    assert len(runs & prompt) <= 1, guarded


@pytest.mark.parametrize(
    ("settings", "message", "limit"),
    [
        ({"persona": "nora-quill", "persona_copy_limit": 10}, "Who are you?", 10),
        ({"persona": "nora-quill"}, "Who are you?", None),  # off by default
        ({"persona_copy_limit": 10}, "Who are you?", None),  # no persona: an assistant may quote
        ({"persona": "nora-quill", "persona_copy_limit": 10, "intent": True}, "((OOC: which model is this?))", None),
    ],
)
def test_the_turn_asks_for_the_copy_guard_while_a_persona_is_played(
    tmp_path: Path, settings: dict[str, Any], message: str, limit: int | None
) -> None:
    model = Recording(responses=["Aye."] * 3, calls=[])
    with Agent(model=model, data_dir=tmp_path, memory=False, **settings) as agent:
        agent.chat(message)
    [call] = model.calls
    assert call.get("copy_limit") == limit


def test_tool_steps_and_forced_calls_are_made_without_the_reply_guards() -> None:
    """A call's arguments may quote the user at length; only the character's words are guarded."""
    from agentmm.llama_generation import Generation
    from agentmm.llama_runtime import CallStats

    calls: list[dict[str, Any]] = []

    def create_chat_completion(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if kwargs["stream"]:
            return iter([{"choices": [{"delta": {"content": "ok"}, "finish_reason": "stop"}]}])
        return {"choices": [{"message": {"content": "ok"}}]}

    loaded = SimpleNamespace(llama=SimpleNamespace(create_chat_completion=create_chat_completion), stats=CallStats())
    guards = object()
    gen = Generation(loaded, {"logits_processor": guards, "temperature": 0.7}, model_name="m", n_ctx=64)  # type: ignore[arg-type]
    gen.complete([{"role": "user", "content": "hi"}], max_tokens=4)
    list(gen.stream([{"role": "user", "content": "hi"}], tools=[], tool_choice={"type": "function"}))
    list(gen.stream([{"role": "user", "content": "hi"}], tools=[], tool_choice="none"))
    list(gen.stream([{"role": "user", "content": "hi"}]))
    assert [call.get("logits_processor") for call in calls] == [None, None, guards, guards]
