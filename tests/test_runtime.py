"""The runtime object: resources opened once per key and closed together."""

from __future__ import annotations

import threading

import pytest

from agentmm.errors import RuntimeClosedError
from agentmm.runtime import Runtime


def test_opens_once_per_key_and_closes_newest_first() -> None:
    closed: list[str] = []
    opened: list[str] = []
    runtime = Runtime()

    def opener(name: str):
        def open_() -> str:
            opened.append(name)
            return name

        return open_

    assert runtime.get("a", opener("a"), close=closed.append) == "a"
    assert runtime.get("a", opener("again"), close=closed.append) == "a"
    assert runtime.get("b", opener("b"), close=closed.append) == "b"
    assert opened == ["a", "b"]
    assert "a" in runtime and runtime.peek("b") == "b" and runtime.peek("c") is None
    runtime.close()
    assert closed == ["b", "a"]
    runtime.close()
    assert closed == ["b", "a"]


def test_closed_runtime_refuses_new_resources() -> None:
    runtime = Runtime("agent")
    runtime.close()
    with pytest.raises(RuntimeClosedError, match="agent is closed"):
        runtime.get("a", lambda: 1)


def test_failed_open_leaves_nothing_and_can_be_retried() -> None:
    runtime = Runtime()
    tries = iter([ValueError("no"), "ok"])

    def open_() -> str:
        value = next(tries)
        if isinstance(value, Exception):
            raise value
        return value

    with pytest.raises(ValueError):
        runtime.get("k", open_)
    assert "k" not in runtime
    assert runtime.get("k", open_) == "ok"


def test_one_failing_close_does_not_keep_others_open() -> None:
    runtime = Runtime()
    closed: list[str] = []

    def bad(_: str) -> None:
        raise OSError("stuck")

    runtime.get("a", lambda: "a", close=closed.append)
    runtime.get("b", lambda: "b", close=bad)
    runtime.get("c", lambda: "c", close=closed.append)
    with pytest.raises(OSError, match="stuck"):
        runtime.close()
    assert closed == ["c", "a"]


def test_concurrent_gets_open_once() -> None:
    runtime = Runtime()
    started = threading.Event()
    count = 0

    def slow() -> object:
        nonlocal count
        count += 1
        started.wait(0.2)
        return object()

    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(runtime.get("k", slow))) for _ in range(4)]
    for thread in threads:
        thread.start()
    started.set()
    for thread in threads:
        thread.join()
    assert count == 1 and len({id(r) for r in results}) == 1
