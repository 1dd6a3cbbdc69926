"""agentmm: a local, multimodal, role-playing chat agent built on LangGraph.

``import agentmm`` stays light: ``Agent`` and ``build_graph`` live with the graphs and are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Agent", "TurnResult", "__version__", "build_graph"]

if TYPE_CHECKING:
    from agentmm.graphs.agent import Agent, TurnResult
    from agentmm.graphs.chat import build_graph


def __getattr__(name: str) -> Any:
    if name in {"Agent", "TurnResult"}:
        from agentmm.graphs import agent

        return getattr(agent, name)
    if name == "build_graph":
        from agentmm.graphs.chat import build_graph

        return build_graph
    raise AttributeError(f"module 'agentmm' has no attribute {name!r}")
