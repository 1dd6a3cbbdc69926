"""Memory tools for the agent itself: search what it remembers, save what it should not forget.

They act on the calling turn's own long-term memory: the graph's store, scoped to the thread's
user and persona (``agentmm.state.ACTIVE_TURN``, set by the graph's tool node), so a persona
can neither read nor write another persona's memories. Without memory they say so, politely,
to the model.
"""

from __future__ import annotations

from langchain_core.tools import ToolException, tool

from agentmm.state import ACTIVE_TURN, ActiveTurn

MAX_FACT = 1000


def _turn() -> ActiveTurn:
    turn = ACTIVE_TURN.get()
    if turn is None or turn.store is None:
        raise ToolException("long-term memory is off in this conversation")
    return turn


@tool(parse_docstring=True)
def search_memory(query: str) -> str:
    """Search your long-term memory of this user: what they told you in earlier conversations.

    Args:
        query: what to look for, in a few words.
    """
    from agentmm.memory.conversation import recall, scope

    turn = _turn()
    scopes = [scope(turn.user_id, turn.persona)]
    if turn.shared_memory:
        scopes.append(scope(turn.user_id, shared=True))
    found = recall(turn.store, scopes, query, k=5)
    if not found:
        return f"nothing remembered about {query!r}"
    return "\n".join(f"- {r.text} ({r.value.get('when', '?')}, id {r.key})" for r in found)


@tool(parse_docstring=True)
def save_memory(fact: str) -> str:
    """Save one fact about the user to long-term memory, to recall in later conversations.

    Args:
        fact: the fact, in one sentence.
    """
    from agentmm.memory.manage import add_memory

    turn = _turn()
    if len(fact) > MAX_FACT:
        raise ToolException(f"a fact is at most {MAX_FACT} characters")
    try:
        saved = add_memory(turn.store, turn.user_id, turn.persona, fact)
    except Exception as exc:  # an empty fact or a store error: the model hears why
        raise ToolException(str(exc)) from exc
    return f"saved (id {saved['id']})"


for _tool in (search_memory, save_memory):
    _tool.handle_tool_error = True
