"""The model lock is held while tokens are made, not while the caller holds a stream.

``generated_apart`` (agentmm/llama_runtime.py) runs generation on its own thread; these tests
prove that a consumer that abandons a stream, or closes it, does not keep the model from the
next caller. The ``acquire(timeout=...)`` guards only turn a deadlock into a failure instead
of a hung run; nothing here asserts how long anything takes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage

from agentmm.llama_runtime import generated_apart
from agentmm.llm import ChatLlamaCpp

DEADLOCK_GUARD_S = 120


def endless(made: list[int]) -> Iterator[int]:
    n = 0
    while True:
        made.append(n)
        yield n
        n += 1


def test_closing_a_stream_frees_the_lock_and_stops_the_producer() -> None:
    lock = threading.Lock()
    made: list[int] = []
    stream = generated_apart(lock, lambda: endless(made))
    assert next(stream) == 0
    stream.close()
    assert not lock.locked()  # free as soon as close() returns
    count = len(made)
    assert lock.acquire(timeout=DEADLOCK_GUARD_S)
    lock.release()
    assert len(made) == count  # the producer stopped, it did not go on in the background


def test_an_abandoned_stream_does_not_hold_the_lock_once_generation_ends() -> None:
    lock = threading.Lock()
    stream = generated_apart(lock, lambda: iter(range(5)))
    assert next(stream) == 0  # the caller takes one chunk and then wanders off, keeping the stream
    assert lock.acquire(timeout=DEADLOCK_GUARD_S), "an abandoned stream kept the model locked"
    lock.release()
    assert list(stream) == [1, 2, 3, 4]  # what was made is still there for it


def test_errors_of_the_producer_are_raised_in_the_consumer() -> None:
    lock = threading.Lock()

    def failing() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    stream = generated_apart(lock, failing)
    assert next(stream) == 1
    with pytest.raises(ValueError, match="boom"):
        next(stream)
    assert lock.acquire(timeout=DEADLOCK_GUARD_S)
    lock.release()


@pytest.mark.e2e
def test_an_abandoned_model_stream_does_not_block_the_next_caller(shipped_model: Path) -> None:
    model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048, temperature=0.0, seed=1, max_tokens=24)
    abandoned = model.stream([HumanMessage("Tell me a long story about a lighthouse.")])
    first = next(abandoned)
    assert first.text or first.tool_call_chunks or first.response_metadata is not None
    # Another turn while the first stream is held open and never read again: before the
    # generation thread, this waited on the model lock forever.
    reply = model.invoke("Say hello.")
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0
    closed = model.stream([HumanMessage("Count to twenty.")])
    next(closed)
    closed.close()
    assert not model.load().lock.locked()
    abandoned.close()


def test_a_model_nobody_closed_is_freed_only_once_its_generation_lets_go() -> None:
    """The exit/collection finaliser takes the model lock, as ``close`` does: freeing a Llama
    under a generation thread still making tokens is a native crash."""
    import threading
    import time

    from agentmm.llama_runtime import _free

    events: list[str] = []

    class FakeLlama:
        def close(self) -> None:
            events.append("closed")

    lock = threading.Lock()
    lock.acquire()

    def generation() -> None:
        time.sleep(0.2)
        events.append("released")
        lock.release()

    worker = threading.Thread(target=generation)
    worker.start()
    _free(FakeLlama(), lock)  # type: ignore[arg-type]
    worker.join()
    assert events == ["released", "closed"]
    assert not lock.locked()
