"""Memory tools for the agent itself: search what it remembers, save what it should not forget.

They act on the calling turn's own long-term memory: the graph's store, scoped to the thread's
user and persona, so a persona can neither read nor write another persona's memories. All of
that reaches the tool through LangGraph's injection (``runtime: ToolRuntime``: the run's store,
its ``TurnContext`` and the thread's state), filled in by the graph's tool node as LangGraph's
``ToolNode`` fills it; the model never sees the parameter. Without memory they say so, politely,
to the model.
"""

from __future__ import annotations

from langchain_core.tools import ToolException, tool
from langgraph.prebuilt import ToolRuntime
from langgraph.store.base import BaseStore

from agentmm.state import ChatState, TurnContext

MAX_FACT = 1000

MemoryRuntime = ToolRuntime[TurnContext, ChatState]


def _store(runtime: MemoryRuntime) -> BaseStore:
    if runtime.store is None:
        raise ToolException("long-term memory is off in this conversation")
    return runtime.store


def _context(runtime: MemoryRuntime) -> TurnContext:
    return runtime.context if isinstance(runtime.context, TurnContext) else TurnContext()


def _persona(runtime: MemoryRuntime) -> str | None:
    state = runtime.state if isinstance(runtime.state, dict) else {}
    return state.get("persona") or None


@tool(parse_docstring=True)
def search_memory(query: str, runtime: MemoryRuntime) -> str:
    """Search your long-term memory of this user: what they told you in earlier conversations.

    Args:
        query: what to look for, in a few words.
    """
    from agentmm.memory.conversation import recall, recall_scopes

    store, context = _store(runtime), _context(runtime)
    scopes = recall_scopes(context.user_id, _persona(runtime), shared_memory=context.shared_memory)
    found = recall(store, scopes, query, k=5)
    if not found:
        return f"nothing remembered about {query!r}"
    return "\n".join(f"- {r.text} ({r.value.get('when', '?')}, id {r.key})" for r in found)


@tool(parse_docstring=True)
def save_memory(fact: str, runtime: MemoryRuntime) -> str:
    """Save one fact about the user to long-term memory, to recall in later conversations.

    Args:
        fact: the fact, in one sentence.
    """
    from agentmm.memory.manage import add_memory

    store, context = _store(runtime), _context(runtime)
    if len(fact) > MAX_FACT:
        raise ToolException(f"a fact is at most {MAX_FACT} characters")
    try:
        saved = add_memory(store, context.user_id, _persona(runtime), fact)
    except Exception as exc:  # an empty fact or a store error: the model hears why
        raise ToolException(str(exc)) from exc
    return f"saved (id {saved['id']})"


for _tool in (search_memory, save_memory):
    _tool.handle_tool_error = True
