"""Downloads from the Hugging Face hub that fail fast where the hub cannot be reached.

Offline, ``huggingface_hub`` retries a missing file's HEAD request five times with backoff
(about 23 s and a warning line a try), and open_clip asks for two files: a picture sent in an
offline chat waited about 50 s behind 22 lines of retries before its one-line "no captioner"
note. ``offline_unless_reachable`` first opens one TCP connection to the hub's host (no DNS
answer fails in milliseconds; a silent network at most ``CONNECT_TIMEOUT_S``); when that fails
the download runs in the library's own offline mode, which reads only the cache, so weights
already there still load and missing ones fail at once with the library's usual error.

Behind an HTTP(S) proxy the host cannot be checked directly, so the library is left to try.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 3.0
VERDICT_TTL_S = 60.0  # a chat left open regains the network, or loses it, within a minute

_verdict: tuple[float, str, bool] | None = None  # (when, endpoint, reachable)
_verdict_lock = threading.Lock()
_offline_lock = threading.Lock()
_offline_holders = 0
_offline_saved: tuple[str | None, bool] = (None, False)  # HF_HUB_OFFLINE and the library's flag before


def hub_endpoint() -> str:
    """The hub the library will ask (``HF_ENDPOINT`` where set, e.g. a mirror)."""
    import huggingface_hub.constants as hub_constants

    return str(hub_constants.ENDPOINT)


def hub_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether a download from the hub can start here: False in offline mode or when no TCP
    connection to the hub's host opens within ``timeout``; True behind a proxy (not checked).
    Remembered for ``VERDICT_TTL_S``, so a turn with three pictures checks once."""
    global _verdict
    import huggingface_hub.constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        return False
    endpoint = hub_endpoint()
    parts = urlsplit(endpoint)
    if not parts.hostname or _proxied(parts.scheme, parts.hostname):
        return True
    with _verdict_lock:
        if _verdict is not None and _verdict[1] == endpoint and time.monotonic() - _verdict[0] < VERDICT_TTL_S:
            return _verdict[2]
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            reachable = True
        except OSError:
            reachable = False
        _verdict = (time.monotonic(), endpoint, reachable)
        return reachable


def forget_verdict() -> None:
    """Check the hub afresh on the next download (tests; a long-lived app after a network change)."""
    global _verdict
    with _verdict_lock:
        _verdict = None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Forbid hub requests inside the block, and only there.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import, so the environment variable
    alone would be ignored (already imported) or would stick (imported inside the block).
    Both the variable and the module's flag are set, then restored when the last block open in
    any thread ends (two pictures perceived at once must not restore each other's state).
    """
    import huggingface_hub.constants as hub_constants

    global _offline_holders, _offline_saved
    with _offline_lock:
        if _offline_holders == 0:
            _offline_saved = (os.environ.get("HF_HUB_OFFLINE"), hub_constants.HF_HUB_OFFLINE)
            os.environ["HF_HUB_OFFLINE"] = "1"
            hub_constants.HF_HUB_OFFLINE = True
        _offline_holders += 1
    try:
        yield
    finally:
        with _offline_lock:
            _offline_holders -= 1
            if _offline_holders == 0:
                saved_env, hub_constants.HF_HUB_OFFLINE = _offline_saved
                if saved_env is None:
                    os.environ.pop("HF_HUB_OFFLINE", None)
                else:
                    os.environ["HF_HUB_OFFLINE"] = saved_env


@contextlib.contextmanager
def offline_unless_reachable() -> Iterator[bool]:
    """Run a hub download as is where the hub answers, from the cache alone where it cannot;
    yields whether the hub could be asked (for the error that follows a miss)."""
    if hub_reachable():
        yield True
        return
    with hub_offline():
        yield False


def _proxied(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get(scheme or "https") or proxies.get("all")) and not urllib.request.proxy_bypass(host)
