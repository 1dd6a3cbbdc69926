"""Hub downloads where the hub cannot be reached: one fast, clear failure instead of minutes of
retries (``agentmm/hub.py``). The hub is a local port the OS hands out: open (listening) or
closed (nothing listens: refused at once, as an unplugged laptop's DNS failure is)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import huggingface_hub.constants as hub_constants
import pytest

from agentmm import hub
from agentmm.models import ModelNotFoundError, download_from_hub


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The library in its online mode (conftest makes every test offline), with no proxy set."""
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "no_proxy",
                 "NO_PROXY"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    hub.forget_verdict()
    yield
    hub.forget_verdict()


@contextmanager
def listening_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A hub endpoint on a local port that accepts connections while the block runs."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
        yield endpoint


@pytest.fixture
def closed_hub(online: None, monkeypatch: pytest.MonkeyPatch) -> str:
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(hub_constants, "ENDPOINT", endpoint)
    return endpoint


def test_a_listening_hub_is_reachable_and_a_closed_one_is_not(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with listening_hub(monkeypatch):
        assert hub.hub_reachable()
    assert hub.hub_reachable()  # the verdict is kept for a while: a turn with three pictures asks once
    hub.forget_verdict()
    assert not hub.hub_reachable()  # the server is gone
    with listening_hub(monkeypatch):
        assert hub.hub_reachable()  # another endpoint (HF_ENDPOINT, a mirror) is asked afresh


def test_offline_mode_and_proxies_decide_without_a_connection(closed_hub: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert hub.hub_reachable()  # behind a proxy the library is left to try
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert not hub.hub_reachable()  # ... unless the hub is not proxied
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert not hub.hub_reachable()


def test_offline_blocks_in_two_threads_restore_the_state_only_when_both_end(online: None) -> None:
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with hub.hub_offline():
            first_in.set()
            second_done.wait(10)
            seen.append(hub_constants.HF_HUB_OFFLINE)  # the second block ended first: still offline

    worker = threading.Thread(target=first)
    worker.start()
    first_in.wait(10)
    with hub.hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    second_done.set()
    worker.join(10)
    assert seen == [True]
    assert hub_constants.HF_HUB_OFFLINE is False and "HF_HUB_OFFLINE" not in os.environ


def test_a_gguf_from_an_unreachable_hub_fails_at_once(
    closed_hub: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without the check huggingface_hub retries the HEAD five times (~23 s, a warning each)."""
    caplog.set_level(logging.WARNING, logger="huggingface_hub")
    with pytest.raises(ModelNotFoundError, match="no network and not in the local cache"):
        download_from_hub("someone/some-model-GGUF", "model.Q4_K_M.gguf", tmp_path)
    assert not [record for record in caplog.records if "Retrying" in record.getMessage()]
    assert hub_constants.HF_HUB_OFFLINE is False  # offline only for the download


def test_a_picture_offline_is_one_line_not_minutes_of_retries(tmp_path: Path) -> None:
    """The real CLI and open_clip's CoCa, the hub a closed port and the library online: it used
    to print 22 retry lines over ~50 s before the note."""
    from PIL import Image

    picture = tmp_path / "beach.png"
    Image.new("RGB", (64, 48), "skyblue").save(picture)
    env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "agentmm.cli", "perceive", str(picture)], env=env,
                          capture_output=True, text=True, timeout=170)  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(f"agentmm: error: {picture}: no image captioner is available offline")


def test_doctor_says_whether_the_hub_answers(online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentmm.doctor import hub_check

    with listening_hub(monkeypatch) as endpoint:
        up = hub_check()
    hub.forget_verdict()
    down = hub_check()
    assert (up["name"], up["ok"], up["endpoint"], up["reachable"]) == ("hub", True, endpoint, True)
    assert (down["ok"], down["reachable"]) == (True, False)  # offline is a normal state, not a failure
    assert "not reachable" in down["detail"] and "cache" in down["detail"]
