"""``agenerated_apart``/``agenerated_batches`` and ``ChatLlamaCpp._astream``: tokens awaited without blocking the event
loop; cancelling or closing the stream stops the producer and frees the model lock. The
``acquire(timeout=...)`` guards turn a deadlock into a failure; the one bound asserted is the
issue's "frees the model within a second" on the shipped model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk

from agentmm.llama_runtime import agenerated_apart, agenerated_batches
from agentmm.llm import ChatLlamaCpp, _merged

DEADLOCK_GUARD_S = 120


def endless(made: list[int]) -> Iterator[int]:
    n = 0
    while True:
        made.append(n)
        time.sleep(0.001)
        yield n
        n += 1


def test_closing_an_async_stream_frees_the_lock_and_stops_the_producer() -> None:
    lock = threading.Lock()
    made: list[int] = []

    async def run() -> None:
        stream = agenerated_apart(lock, lambda: endless(made))
        assert await anext(stream) == 0
        await stream.aclose()
        assert not lock.locked()  # free as soon as aclose() returns
        count = len(made)
        await asyncio.sleep(0.05)
        assert len(made) == count  # the producer stopped, it did not go on in the background

    asyncio.run(run())


def test_cancelling_the_consuming_task_frees_the_lock() -> None:
    lock = threading.Lock()
    made: list[int] = []

    async def run() -> None:
        async def consume() -> None:
            async for _ in agenerated_apart(lock, lambda: endless(made)):
                pass

        task = asyncio.create_task(consume())
        while len(made) < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not lock.locked()

    asyncio.run(run())


def test_errors_while_producing_are_raised_in_the_consumer() -> None:
    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("boom")

    async def run() -> list[int]:
        return [x async for x in agenerated_apart(threading.Lock(), broken)]

    with pytest.raises(ValueError, match="boom"):
        asyncio.run(run())


def test_the_loop_keeps_running_while_tokens_are_awaited() -> None:
    lock = threading.Lock()
    ticks: list[float] = []

    def slow() -> Iterator[int]:
        for i in range(3):
            time.sleep(0.1)
            yield i

    async def run() -> list[int]:
        async def tick() -> None:
            while True:
                ticks.append(time.perf_counter())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        got = [x async for x in agenerated_apart(lock, slow)]
        ticker.cancel()
        return got

    assert asyncio.run(run()) == [0, 1, 2]
    assert len(ticks) > 5  # the loop ran other work while the producer slept


def test_cancelling_astream_on_the_shipped_model_frees_it(shipped_model: Path) -> None:
    model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048, max_tokens=2048)

    async def run() -> None:
        async def story() -> None:
            async for _ in model.astream("Write a very long story about a dragon, in many chapters."):
                started.set()

        started = asyncio.Event()
        task = asyncio.create_task(story())
        await started.wait()
        lock = model.load().lock
        assert lock.locked()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lock.acquire(timeout=DEADLOCK_GUARD_S)
        lock.release()
        reply = await model.ainvoke("Say hi.")  # the model answers the next call
        assert reply.text and reply.usage_metadata

    try:
        asyncio.run(run())
    finally:
        close = getattr(model, "close", None)
        if close is not None:
            close()


def test_batches_gather_what_was_made_meanwhile_in_order() -> None:
    lock = threading.Lock()

    def quick() -> Iterator[int]:
        for i in range(40):
            time.sleep(0.002)
            yield i

    async def run() -> list[list[int]]:
        return [batch async for batch in agenerated_batches(lock, quick, every=0.03)]

    batches = asyncio.run(run())
    assert [x for batch in batches for x in batch] == list(range(40))
    assert batches[0] == [0]  # the first item is handed over as soon as it is made
    assert len(batches) < 40  # the rest came gathered, not one wake-up per item
    assert not lock.locked()


def test_an_error_after_some_items_comes_after_them() -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("boom")

    async def run(got: list[int]) -> None:
        async for batch in agenerated_batches(threading.Lock(), broken, every=0.05):
            got.extend(batch)

    got: list[int] = []
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(run(got))
    assert got == [1, 2]


def test_a_batched_stream_is_the_same_reply_as_a_chunk_by_chunk_one(shipped_model: Path) -> None:
    """Gathered chunks are added up as LangChain adds them: the text, and the usage chunk last."""
    model = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048, max_tokens=48, temperature=0.0, seed=1)

    async def run(every: float) -> list[AIMessageChunk]:
        model.stream_every_s = every
        # Each run from an empty KV cache: a prompt whose prefix came from the cache is evaluated
        # in other batches, which on some CPUs (AVX2-only EPYC) flips a near tie at temperature 0.
        model.load().llama.reset()
        return [chunk async for chunk in model.astream("Name three colours.")]  # type: ignore[misc]

    try:
        one_by_one = asyncio.run(run(0.0))
        gathered = asyncio.run(run(0.5))
    finally:
        model.close()
    assert "".join(c.text for c in gathered) == "".join(c.text for c in one_by_one)
    assert len(gathered) < len(one_by_one)
    for chunks in (one_by_one, gathered):
        assert [c.chunk_position for c in chunks].count("last") == 1
        assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata
        assert chunks[-1].usage_metadata["output_tokens"] == one_by_one[-1].usage_metadata["output_tokens"]


def test_merged_keeps_the_usage_chunk_apart_and_joins_tool_call_chunks() -> None:
    parts = [
        AIMessageChunk(content="", tool_call_chunks=[tool_call_chunk(name="add", args='{"a":', id="c1", index=0)]),
        AIMessageChunk(content="", tool_call_chunks=[tool_call_chunk(args=" 1}", index=0)]),
        AIMessageChunk(content="", usage_metadata={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3},
                       chunk_position="last"),
    ]  # fmt: skip
    merged = _merged(list(parts))
    assert len(merged) == 2 and merged[1] is parts[2]
    assert merged[0].tool_calls == [{"name": "add", "args": {"a": 1}, "id": "c1", "type": "tool_call"}]
