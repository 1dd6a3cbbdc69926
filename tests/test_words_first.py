"""The words-first guard: a reply written again after an empty one may not end before a word.

The processor's bookkeeping with a stand-in for llama's token count, then the shipped model's
real generation pushed to end at once (its end token raised by a logit bias).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from agentmm.llama_generation import Generation
from agentmm.llm import ChatLlamaCpp
from agentmm.words_first import WordsFirst, end_tokens

PIECES = [b"", b" ", b"\n", b" Hello", b"<end>"]
END = 4


def step(guard: WordsFirst, llama: Any, sequence: list[int]) -> set[int]:
    """One sampling step with ``sequence`` evaluated: the tokens the guard forbids."""
    buffer = np.zeros(64, dtype=np.intc)  # llama-cpp-python's whole buffer, longer than what was evaluated
    buffer[: len(sequence)] = sequence
    llama.n_tokens = len(sequence)
    scores = guard(buffer, np.zeros(len(PIECES), dtype=np.single))
    return set(np.flatnonzero(np.isinf(scores)).tolist())


def test_the_end_is_forbidden_until_a_token_with_a_word_was_made() -> None:
    llama = SimpleNamespace(n_tokens=0)
    guard = WordsFirst(llama, [END], PIECES)  # type: ignore[arg-type]
    prompt = [3, 3, 1]  # the prompt's own words do not count
    assert step(guard, llama, prompt) == {END}
    assert step(guard, llama, [*prompt, 1]) == {END}  # white space is no word
    assert step(guard, llama, [*prompt, 1, 2]) == {END}
    assert step(guard, llama, [*prompt, 1, 2, 3]) == set()
    assert step(guard, llama, [*prompt, 1, 2, 3, 1]) == set()


def test_after_its_patience_in_white_space_the_reply_may_end() -> None:
    llama = SimpleNamespace(n_tokens=0)
    guard = WordsFirst(llama, [END], PIECES, patience=3)  # type: ignore[arg-type]
    assert step(guard, llama, [3]) == {END}
    assert step(guard, llama, [3, 1, 2]) == {END}
    assert step(guard, llama, [3, 1, 2, 1]) == set()


@pytest.fixture(scope="module")
def model(shipped_model: Path) -> Iterator[ChatLlamaCpp]:
    with ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1024, max_tokens=16, temperature=0.0, seed=1) as chat:
        yield chat


def reply(model: ChatLlamaCpp, **extra: Any) -> str:
    loaded = model.load()
    gen = Generation(loaded, model._call_params(None), model_name="smollm2", n_ctx=1024)
    rendered = [{"role": "user", "content": "Tell me about the harbour."}]
    raised = dict.fromkeys(end_tokens(loaded), 100.0)  # the model made to end at once
    with loaded.lock:
        return "".join(chunk.text for chunk in gen.stream(rendered, logit_bias=raised, **extra))


@pytest.mark.e2e
def test_the_shipped_model_pushed_to_end_at_once_says_a_word_first(model: ChatLlamaCpp) -> None:
    assert end_tokens(model.load())  # the vocabulary's end-of-turn tokens are found
    assert reply(model).strip() == ""
    said = reply(model, words_first=True)
    # A word, then the raised end: both the guard and the bias held.
    assert said.strip() and len(model.load().llama.tokenize(said.encode(), add_bos=False)) <= 3, said


@pytest.mark.e2e
def test_a_logit_bias_and_the_replys_guards_both_hold(model: ChatLlamaCpp) -> None:
    """llama-cpp-python 0.3 drops both a call's ``logits_processor`` and its ``logit_bias`` when
    given both, so the retry's bracket bias and a played character's guards went unapplied."""
    seen: list[int] = []

    def recording(input_ids: Any, scores: Any) -> Any:
        seen.append(len(scores))
        return scores

    loaded = model.load()
    gen = Generation(loaded, {**model._call_params(None), "logits_processor": [recording]}, model_name="m", n_ctx=1024)
    raised = dict.fromkeys(end_tokens(loaded), 100.0)
    with loaded.lock:
        said = "".join(c.text for c in gen.stream([{"role": "user", "content": "Hello."}], logit_bias=raised))
    assert seen and said.strip() == ""
