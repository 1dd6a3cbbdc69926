"""agentmm's turn as one node of your own LangGraph graph.

    python examples/subgraph.py "Hello, who keeps this tavern?"

The outer graph checks the message, runs agentmm's whole turn (compose, generate, tools,
memory with the outer graph's store when it has one) as a subgraph, then post-processes the
reply. State keys the two graphs share (``input``, ``messages``, ``trace``) flow between them;
the outer graph's checkpointer keeps the thread, the subgraph's own state included
(``build_turn``).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from agentmm import build_graph
from agentmm.settings import Settings, load_settings


class AppState(TypedDict, total=False):
    input: str
    messages: Annotated[list[AnyMessage], add_messages]
    trace: dict[str, Any]
    word_count: int
    blocked: bool


BLOCKED_WORDS = {"password", "ssn"}


def screen(state: AppState) -> dict[str, Any]:
    """Your own policy, before agentmm sees the message."""
    return {"blocked": any(word in state["input"].lower() for word in BLOCKED_WORDS)}


def count_words(state: AppState) -> dict[str, Any]:
    """Your own step after the reply: here, a statistic for your dashboard."""
    return {"word_count": len(state["messages"][-1].text.split())}


def build_app(turn: Any) -> Any:
    builder = StateGraph(AppState)
    builder.add_node("screen", screen)
    builder.add_node("agentmm", turn)  # the compiled agentmm graph, as a node
    builder.add_node("count_words", count_words)
    builder.add_edge(START, "screen")
    builder.add_conditional_edges("screen", lambda s: END if s["blocked"] else "agentmm", [END, "agentmm"])
    builder.add_edge("agentmm", "count_words")
    builder.add_edge("count_words", END)
    return builder.compile(checkpointer=InMemorySaver())


def build_turn(settings: Settings, **parts: Any) -> Any:
    """agentmm's turn as a node (the Agent's, from the same settings; ``parts`` as
    ``build_graph`` takes them). ``checkpointer=True`` keeps its own state (the persona it
    plays, the rolling summary, the window) in the outer graph's checkpointer from turn to turn:
    without it each turn began from the shared messages alone, with no persona and no summary."""
    return build_graph(settings, checkpointer=True, **parts)


def main() -> None:
    turn = build_turn(load_settings())
    app = build_app(turn)
    config = {"configurable": {"thread_id": "demo"}}
    for text in sys.argv[1:] or ["Hello!"]:
        state = app.invoke({"input": text}, config)
        if state.get("blocked"):
            print(f"you> {text}\n[blocked by the outer graph]")
            continue
        print(f"you> {text}\nagent> {state['messages'][-1].text}")
        print(f"[{state['word_count']} words; agentmm path: {' -> '.join(state['trace']['path'])}]")


if __name__ == "__main__":
    main()
