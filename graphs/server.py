"""The turn graph LangGraph's own server loads (``langgraph.json``: ``langgraph dev``, studio).

Built once per server process from ``Settings``, like the ``Agent``'s, by the same
``build_graph``, with no checkpointer or store of its own: the server copies its checkpointer
and its store into the graph for each run, and the memory nodes use that store (its semantic
index, configured in ``langgraph.json``, embeds with agentmm's embedder: ``server_store.py``).
A module-level graph, not a factory, because the server calls a factory for every request.
"""

from __future__ import annotations

from agentmm.graphs.chat import build_graph
from agentmm.settings import load_settings

graph = build_graph(load_settings())
