"""The turn graph LangGraph's own server loads (``langgraph.json``: ``langgraph dev``, studio).

Built once per server process from ``Settings``, like the ``Agent``'s, by the same
``build_graph``, with no checkpointer or store of its own: the server copies its checkpointer
and its store into the graph for each run, and the memory nodes use that store (its semantic
index, configured in ``langgraph.json``, embeds with agentmm's embedder: ``server_store.py``).
A module-level graph, not a factory, because the server calls a factory for every request.

``RUNTIME`` is the server process's ``agentmm.runtime.Runtime``: what the graph opens (the
loaded chat model, the tools' and perception's models, the image index) lives there, as an
``Agent``'s lives in ``Agent.runtime``. It is
module-level because this module is loaded once per server process and the graph lives as long
as the process; it is closed at exit, while the interpreter is whole.
"""

from __future__ import annotations

import atexit

from agentmm.graphs.chat import build_graph
from agentmm.model_server import chat_model
from agentmm.runtime import Runtime
from agentmm.settings import load_settings

RUNTIME = Runtime("langgraph server")
atexit.register(RUNTIME.close)

_settings = load_settings()
graph = build_graph(_settings, model=chat_model(_settings, runtime=RUNTIME), runtime=RUNTIME)
