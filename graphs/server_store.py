"""The embedder of LangGraph's server store's semantic index, named in ``langgraph.json``
(``store.index.embed``): the configured sentence-transformers model, so memories written under
``langgraph dev`` are embedded as the ``Agent``'s Chroma store embeds them.

The server loads this file by its path (it takes ``embed`` as a file path, never as a module
name), so it holds only the embedder. ``store.index.dims`` in ``langgraph.json`` is the shipped
model's 384; another ``embedding_model`` needs its own width there. The embedder opens its model
in the server process's ``Runtime`` (``agentmm.graphs.server.RUNTIME``), imported by name so the
file loaded by path and the graph module share the one runtime, closed at exit.
"""

from __future__ import annotations

from agentmm.graphs.server import RUNTIME
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from agentmm.settings import load_settings

embeddings = SentenceTransformerEmbeddings.from_settings(load_settings(), runtime=RUNTIME)
