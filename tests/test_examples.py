"""Every example in examples/ runs: the plugin packages installed by pip, LangGraph's own dev
server on a free loopback port, the subgraph on the shipped model. (``agentmm serve``, which the
SSE example became, is tested in tests/test_http_api.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage

from tests.graphs.scripted_model import ScriptedToolModel, call

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
QUICK = {"AGENTMM_MAX_TOKENS": "16", "AGENTMM_N_CTX": "2048", "AGENTMM_SEED": "3"}
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(command: list[str], health: str, cwd: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group, wait for ``health``, stop it by its PID."""
    log = (cwd / "server.log").open("wb")
    proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (cwd / "server.log").read_text()[-2000:]
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def plugins_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both plugin packages installed with pip, the way a user would, into their own folder."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(EXAMPLES / "tool_plugin"), str(EXAMPLES / "persona_plugin")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def cli_json(*args: str, site: Path) -> Any:
    done = subprocess.run([sys.executable, "-m", "agentmm.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(site)})  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_tool_and_persona_plugins_are_found_once_installed(plugins_site: Path) -> None:
    tools = {t["name"]: t for t in cli_json("tools", "list", "--json", site=plugins_site)["tools"]}
    assert tools["draw_tarot"]["source"] == "agentmm-tarot"
    assert tools["reveal_fate"]["requires_approval"] is True
    assert tools["draw_tarot"]["personas"] == ["Madame Zora"]
    personas = cli_json("personas", "list", "--json", site=plugins_site)
    assert "Madame Zora" in json.dumps(personas)


def test_plugin_tool_runs_in_a_persona_turn(plugins_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from agentmm.graphs.agent import Agent
    from agentmm.plugins import discover_tools

    monkeypatch.syspath_prepend(str(plugins_site))
    importlib.invalidate_caches()
    tools = discover_tools().select(["draw_tarot", "reveal_fate"])
    model = ScriptedToolModel(script=[call("draw_tarot", cards=3), AIMessage("The cards have spoken.")])
    with Agent(model=model, tools=tools, memory=False) as agent:
        result = agent.chat("Read my cards, please.", persona="Madame Zora")
    (entry,) = result.trace["tool_calls"]
    assert entry["status"] == "ok" and len(entry["output"].split(", ")) == 3
    assert result.reply == "The cards have spoken."


def test_subgraph_example_runs_the_turn_inside_another_graph() -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "subgraph.py"), "Hello!", "my password is 1234"],
                          capture_output=True, text=True, timeout=180, env={**os.environ, **QUICK})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "agent> " in done.stdout and "agentmm path: ingest -> compose -> generate" in done.stdout
    assert "[blocked by the outer graph]" in done.stdout


@contextmanager
def langgraph_dev(folder: Path, env: dict[str, str]) -> Iterator[str]:
    """LangGraph's dev server on the project's ``langgraph.json``, run from ``folder`` (its
    ``.langgraph_api`` state stays there), with the file paths the config names (relative to
    the project folder, where ``langgraph dev`` runs) made absolute; yields the base URL."""
    config = json.loads((ROOT / "langgraph.json").read_text())
    index = config["store"]["index"]
    embed_file, embed_name = index["embed"].rsplit(":", 1)
    assert (ROOT / embed_file).is_file(), index["embed"]
    index["embed"] = f"{(ROOT / embed_file).resolve()}:{embed_name}"
    (folder / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    quiet = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "1"}
    command = [str(BIN / "langgraph"), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    with server(command, f"{base}/ok", folder, {**QUICK, **quiet, **env}):
        yield base


def server_turn(base: str, thread: str, text: str, **context: Any) -> dict[str, Any]:
    run = {"assistant_id": "chat", "input": {"input": text}, **({"context": context} if context else {})}
    reply = httpx.post(f"{base}/threads/{thread}/runs/wait", json=run, timeout=300)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def test_langgraph_dev_server_serves_the_graph(tmp_path: Path) -> None:
    with langgraph_dev(tmp_path, {}) as base:
        thread = httpx.post(f"{base}/threads", json={}, timeout=30).json()["thread_id"]
        run = {"assistant_id": "chat", "input": {"input": "Hello there!"}}
        state = httpx.post(f"{base}/threads/{thread}/runs/wait", json=run, timeout=180).json()
        assert state["messages"][-1]["type"] == "ai" and state["messages"][-1]["content"].strip()
        assert state["trace"]["path"] == ["ingest", "compose", "generate"]
        again = httpx.post(f"{base}/threads/{thread}/runs/wait", json={**run, "input": {"input": "And again?"}},
                           timeout=180).json()  # fmt: skip
        assert len(again["messages"]) == 4  # the server's own checkpointer keeps the thread


WREN = """name = "Captain Wren"
description = "{{char}} captains the airship Kestrel over the salt flats of Varrow and logs every passenger's story."
personality = "brisk, curious, fond of weather"
"""


@pytest.mark.slow
def test_langgraph_dev_server_remembers_across_threads_and_plays_the_users_persona(tmp_path: Path) -> None:
    """Under ``langgraph dev`` the turn has long-term memory in the server's own store (its
    index embedding with agentmm's embedder) and plays a persona from the user's folder."""
    (tmp_path / "personas").mkdir(exist_ok=True)  # AGENTMM_PERSONAS_DIR (tests/conftest.py)
    (tmp_path / "personas" / "wren.toml").write_text(WREN)
    with langgraph_dev(tmp_path, {"AGENTMM_MEMORY": "true", "AGENTMM_PERSONA": "Captain Wren"}) as base:
        told, asked = (httpx.post(f"{base}/threads", json={}, timeout=30).json()["thread_id"] for _ in range(2))
        first = server_turn(base, told, "My sister Ottoline breeds racing pigeons in Dunmore.")["trace"]
        assert first["path"] == ["ingest", "recall", "compose", "generate", "remember"]
        assert first["persona"] == "Captain Wren"
        assert {w["scope"] for w in first["remembered"]} == {"local/Captain Wren"}
        second = server_turn(base, asked, "What does Ottoline breed?")["trace"]
        other = httpx.post(f"{base}/threads", json={}, timeout=30).json()["thread_id"]
        chosen = server_turn(base, other, "Evening!", persona="Bram Tolliver")["trace"]  # the run's context
    assert chosen["persona"] == "Bram Tolliver" and "greeting" in chosen
    assert second["persona"] == "Captain Wren"
    parts = [p["part"] for p in second["prompt_parts"]]
    assert "description" in parts and "memories" in parts
    (fact,) = [r for r in second["recalled"] if r["speaker"] == "User"]
    assert fact["thread"] == told and "Ottoline breeds racing pigeons" in fact["text"]
    assert fact["similarity"] is not None and fact["similarity"] > 0.25  # the server's index embedded it
