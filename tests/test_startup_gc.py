"""The chat's start-up imports run with the cyclic collector off and stay frozen while the
command runs (``agentmm/startup_gc.py``); the objects go back to the collector when it ends."""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from agentmm import cli
from agentmm.startup_gc import import_frozen, unfreeze


def test_the_imports_run_without_the_collector_and_are_frozen_after() -> None:
    seen: list[bool] = []
    try:
        assert import_frozen(lambda: seen.append(gc.isenabled()) or "made") == "made"
        assert seen == [False]
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        unfreeze()
    assert gc.get_freeze_count() == 0


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        import_frozen(lambda: None)
        assert not gc.isenabled()
    finally:
        unfreeze()
        gc.enable()


def test_the_chat_command_runs_on_a_frozen_start_and_unfreezes_at_its_end(
    agentmm_here: Callable[..., subprocess.CompletedProcess[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """~440 collections (3 full) rescanned LangGraph's and LangChain's objects during each
    ``agentmm chat -m``'s imports: ~0.3 s of CPU."""
    during: list[tuple[int, bool]] = []

    def chat_with(*args: Any) -> None:
        during.append((gc.get_freeze_count(), gc.isenabled()))

    monkeypatch.setattr(cli, "_chat_with", chat_with)
    assert agentmm_here("chat", "-m", "hi").returncode == 0
    assert len(during) == 1
    frozen, enabled = during[0]
    assert frozen > 0 and enabled
    assert gc.get_freeze_count() == 0
