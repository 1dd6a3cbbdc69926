"""The Agent, LangGraph's server entry (``langgraph.json``) and ``agentmm graph show`` run one
builder from the same settings, so they draw the same graph."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage
from langgraph.store.memory import InMemoryStore

from agentmm.graphs.agent import Agent
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from tests.graphs.scripted_model import ScriptedToolModel

ROOT = Path(__file__).resolve().parents[2]


def edges(mermaid: str) -> set[str]:
    return {line.strip() for line in mermaid.splitlines() if "-->" in line or "-.->" in line}


def test_agent_server_and_graph_show_build_the_same_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMM_MEMORY", "true")
    monkeypatch.setenv("AGENTMM_TOOLS", '["roll_dice"]')
    command = [sys.executable, "-m", "agentmm.cli", "graph", "show", "--format", "mermaid"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    model = ScriptedToolModel(script=[AIMessage("x")])  # binds the tools, as the real model does
    with Agent(model=model, store=InMemoryStore()) as agent:
        ran = agent.graph.get_graph().draw_mermaid()
    from agentmm.graphs import server

    served = importlib.reload(server).graph  # built from the settings as they are now
    assert served.checkpointer is None and served.store is None  # the server brings its own
    assert edges(shown) == edges(ran) == edges(served.get_graph().draw_mermaid())
    assert {"recall --> compose;", "generate -.-> tools;", "tools --> generate;", "generate -.-> remember;",
            "remember -.-> summarize;", "summarize --> __end__;"} <= edges(ran)  # fmt: skip


def test_langgraph_json_names_the_server_graph_and_the_embedder() -> None:
    config = json.loads((ROOT / "langgraph.json").read_text())
    module, name = config["graphs"]["chat"].split(":")
    assert module == "agentmm.graphs.server" and name == "graph"
    embed_file, embed_name = config["store"]["index"]["embed"].rsplit(":", 1)
    # As the server loads it: by its path, relative to the project folder.
    spec = importlib.util.spec_from_file_location("server_store_by_path", ROOT / embed_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    embeddings = getattr(module, embed_name)
    assert isinstance(embeddings, SentenceTransformerEmbeddings) and embeddings.dims == config["store"]["index"]["dims"]
