"""Server mode: a real ``chroma run`` on a free local port, used through ``ChromaStore.from_url``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmm.memory import StoreUnreachableError
from agentmm.memory.chroma_store import ChromaStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chroma_cli() -> str:
    beside_python = Path(sys.executable).with_name("chroma")
    found = str(beside_python) if beside_python.exists() else shutil.which("chroma")
    if not found:
        pytest.fail("the chroma command is missing (it comes with the chromadb package)")
    return found


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[str]:
    """A Chroma server on 127.0.0.1 and a free port, stopped by its PID afterwards."""
    port = _free_port()
    server = subprocess.Popen(
        [_chroma_cli(), "run", "--path", str(tmp_path / "server"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"chroma run exited early: {server.stderr.read() if server.stderr else ''}")
                if time.monotonic() > deadline:
                    pytest.fail("chroma run did not answer its heartbeat within 30 s")
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=15)


def test_put_and_search_through_a_server(chroma_server: str, fake_embeddings: Any, embeddings_cls: Callable) -> None:
    index = {"dims": fake_embeddings.dims, "embed": fake_embeddings, "fields": ["text"]}
    with (
        ChromaStore.from_url(chroma_server, index=index) as writer,
        ChromaStore.from_url(chroma_server.removeprefix("http://"), index=index) as reader,
    ):
        writer.put(("memories", "u1", "alice"), "m1", {"text": "Alice's sister lives in Lisbon", "kind": "fact"})
        writer.put(("memories", "u1", "alice"), "m2", {"text": "Alice drinks green tea", "kind": "habit"})
        writer.put(("memories", "u10", "alice"), "m1", {"text": "Alice's sister lives in Lisbon", "kind": "fact"})

        hits = reader.search(("memories", "u1", "alice"), query="Alice drinks green tea", limit=5)
        assert [h.key for h in hits] == ["m2", "m1"]
        assert hits[0].score == pytest.approx(1.0, abs=1e-3)
        assert all(h.namespace == ("memories", "u1", "alice") for h in hits)
        assert [h.key for h in reader.search(("memories", "u1"), filter={"kind": "fact"})] == ["m1"]
        assert reader.list_namespaces(prefix=("memories",)) == [
            ("memories", "u1", "alice"),
            ("memories", "u10", "alice"),
        ]
        reader.delete(("memories", "u10", "alice"), "m1")
        assert writer.list_namespaces(prefix=("memories",)) == [("memories", "u1", "alice")]


def test_unreachable_server_is_a_typed_error() -> None:
    with pytest.raises(StoreUnreachableError, match="no Chroma server answers"):
        ChromaStore.from_url(f"http://127.0.0.1:{_free_port()}")
