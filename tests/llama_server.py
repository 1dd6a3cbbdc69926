"""A real OpenAI-compatible model server for the tests and benchmarks: llama-cpp-python's
(``python -m llama_cpp.server``, the test extra's ``llama-cpp-python[server]``) on a GGUF, on a
free 127.0.0.1 port, stopped by its PID (terminate, then kill).

It answers one request at a time. By default (``interrupt_requests``) it cuts the reply it is
streaming short whenever another request arrives, a tokenize call included, and ends that
stream with no finish reason (agentmm then raises ``ModelServerError``): two agents on one
server would cut each other's replies. Started here with ``--interrupt_requests False`` unless
asked otherwise, so requests wait their turn.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO


def free_port() -> int:
    """A port the OS gives on 127.0.0.1 (bound, read, closed: free for the server to take)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LlamaServer:
    """``python -m llama_cpp.server`` on ``model``: ``url`` is its OpenAI base (``…/v1``) once
    started; its stdout and stderr (llama.cpp's timings included) go to ``log_path``."""

    def __init__(self, model: Path, *, n_ctx: int = 2048, n_threads: int = 2, alias: str | None = None,
                 interrupt_requests: bool = False, extra: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.model = model
        self.interrupt_requests = interrupt_requests
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.alias = alias
        self.extra = extra
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkdtemp(prefix="agentmm-llama-server-")) / "server.log"
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout_s: float = 60.0) -> LlamaServer:
        import httpx

        self.port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--host", "127.0.0.1",
                   "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                   "--n_threads_batch", str(self.n_threads), "--interrupt_requests", str(self.interrupt_requests),
                   *self.extra]  # fmt: skip
        if self.alias:
            command += ["--model_alias", self.alias]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/models", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log()[-2000:]
                self.stop()
                raise RuntimeError(f"llama_cpp.server did not start on port {self.port}:\n{tail}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
