"""The long-term memory nodes of the turn graph: recall before compose, remember after generate.

Both use the graph's store (any LangGraph ``BaseStore``); the logic lives in
``agentmm.memory.conversation``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.runtime import Runtime

from agentmm.context import memory_tokens, recalled_shown, turn_context
from agentmm.memory.conversation import recall, recall_scopes, remember_turn, without_copied_memories
from agentmm.memory.incremental import recall_path
from agentmm.memory.pieces import memory_pieces
from agentmm.memory.retrieval import RecallCache
from agentmm.memory.selection import OVER_WINDOW, Selection, memory_shown, select_memories
from agentmm.observations import ObservationPhrasing, describe_observations
from agentmm.state import ChatState, TurnContext, run_context, trace_step
from agentmm.tokens import TokenCounter, approximate_tokens

DEFAULT_K = 5


def _scopes(state: ChatState, context: TurnContext) -> list[tuple[str, ...]]:
    """The persona's scope (where the turn is written) first, then what it also recalls from."""
    return recall_scopes(context.user_id, state.get("persona"), shared_memory=context.shared_memory)


def _thread_id(config: RunnableConfig) -> str:
    return str(config.get("configurable", {}).get("thread_id", ""))


class Recall:
    """Search long-term memory with this turn's message; skip what the prompt already holds.

    ``window_tokens`` bounds the recalled memories that all the turns in the window hold
    together (each turn's block stays in the append-only prompt): this turn's block gets what
    the earlier blocks left, best memories first, and the trace's ``recall_window`` says how much.
    Where that drops a memory the earlier blocks' room would have let in (and no earlier block
    shows it), the turn takes that room instead: ``clear_recalled_blocks`` tells compose to take
    the earlier turns' recalled blocks out of the prompt (as an overflow does: one prefill, no
    summary), so this turn's recall wins over what earlier turns recalled. A memory that would
    not fit even so costs no prefill: the blocks stay (the prompt stays append-only).

    The trace's ``recall_path`` says how: ``"incremental"`` over an ``IncrementalStore`` (the
    embedded Chroma store), ``"full read"`` over any other (the whole scope read each turn).
    ``cache`` keeps the scopes' corpora for a store that cannot keep its own (LangGraph's
    ``InMemoryStore``); it belongs to this node, so to the graph that built it."""

    def __init__(
        self,
        k: int = DEFAULT_K,
        min_similarity: float = 0.25,
        *,
        counter: TokenCounter | None = None,
        relevance: float = 0.0,
        max_tokens: int = 1 << 30,
        window_tokens: int | None = None,
        rounds: int = 1,
        by_date: bool = True,
        rerank: bool = False,
    ) -> None:
        self.k = k
        self.rounds = rounds
        self.by_date = by_date
        self.rerank = rerank
        self.min_similarity = min_similarity
        # What enters the prompt (agentmm.memory.selection): the relevance bar and token cap.
        self.count = (counter or TokenCounter(approximate_tokens, exact=False)).text
        self.relevance = relevance
        self.max_tokens = max_tokens
        # Recalled memories all the turns in the window may hold together (None: no bound).
        self.window_tokens = window_tokens
        self.cache = RecallCache()

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        started = time.perf_counter()
        context = run_context(runtime.context)
        messages = state["messages"]
        start = state.get("window_start", 0)
        thread = _thread_id(config)
        first_turn_in_window = 1 + sum(isinstance(m, HumanMessage) for m in messages[:start])

        def already_in_prompt(value: dict[str, Any]) -> bool:
            # The thread's turns in the window are in the prompt as they are. A memory shown in
            # an earlier turn's recalled block is not left out here: that block may leave the
            # prompt this turn (agentmm.context), so compose judges it against the window it
            # leaves (``memories_in_window``).
            return value.get("thread") == thread and int(value.get("turn", 0)) >= first_turn_in_window

        found = []
        path: dict[str, Any] = {}
        if runtime.store is not None:
            seen = " ".join(str(o.get("text", "")) for o in state.get("observations") or [])
            query = f"{messages[-1].text} {seen}".strip()
            found = recall(runtime.store, _scopes(state, context), query, k=self.k,
                           min_similarity=self.min_similarity, skip=already_in_prompt, cache=self.cache,
                           rounds=self.rounds, now=datetime.now(UTC), by_date=self.by_date,
                           rerank=self.rerank)  # fmt: skip
            path = {"recall_path": recall_path(runtime.store)}
        memories = [r.as_trace() for r in found]
        window: dict[str, Any] = {}
        clear = False
        if self.window_tokens is None:
            chosen = self._select(memories, context.user_name, None)
        else:
            held = sum(memory_tokens(m) for m in messages[start:])
            room = max(self.window_tokens - held, 0)
            chosen = self._select(memories, context.user_name, room)
            # The earlier blocks that could leave the prompt (a turn saved before its recalled
            # part was said apart keeps its whole context, so its block stays).
            freeable = sum(memory_tokens(m) for m in messages[start:] if recalled_shown(m))
            let_in: list[Any] = []
            if freeable and any(d["reason"] == OVER_WINDOW for d in chosen.dropped):
                shown = "\n".join(turn_context(m) for m in messages[start:])
                more = max(self.window_tokens - (held - freeable), 0)
                freed = self._select(memories, context.user_name, more)
                let_in = _let_in(chosen, freed, shown)
                if let_in:
                    chosen, room, clear = freed, more, True
            window = {"recall_window": {"budget": self.window_tokens, "held": held, "room": room,
                                        "freed": freeable if clear else 0, "let_in": let_in}}  # fmt: skip
        timings = {"recall_s": round(time.perf_counter() - started, 4)}
        trace = trace_step(state, "recall", recalled=chosen.kept, recall_dropped=chosen.dropped,
                           recall_tokens=chosen.tokens, timings=timings, **window, **path)  # fmt: skip
        return {"recalled": chosen.kept, "clear_recalled_blocks": clear, "trace": trace}

    def _select(self, memories: list[dict[str, Any]], user_name: str, room: int | None) -> Selection:
        return select_memories(memories, self.count, user_name=user_name, min_similarity=self.relevance,
                               max_tokens=self.max_tokens, window_room=room)  # fmt: skip


def _let_in(kept: Selection, freed: Selection, shown: str) -> list[Any]:
    """The ids of the memories ``kept`` dropped over the window's memory budget that ``freed``
    (the selection with the earlier blocks out of the prompt) places, and that no earlier block
    shows already (there, they are in the prompt either way)."""
    over = {d["id"] for d in kept.dropped if d["reason"] == OVER_WINDOW}
    return [m["id"] for m in freed.kept if m.get("id") in over and not memory_shown(m, shown)]


class Remember:
    """Write the turn to long-term memory: what the user showed or played (captions and
    transcripts, phrased as the prompt had them), their message, and the reply. A retry's
    turn replaces what the turn it answers again had written."""

    def __init__(
        self,
        phrasing: ObservationPhrasing | None = None,
        *,
        counter: TokenCounter | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.phrasing = phrasing or ObservationPhrasing()
        self.count = (counter or TokenCounter(approximate_tokens, exact=False)).text
        # Recall's token cap (``Recall.max_tokens``): a text too long to be recalled whole is
        # stored in pieces that fit it (None: stored whole).
        self.max_tokens = max_tokens

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        started = time.perf_counter()
        context = run_context(runtime.context)
        messages = state["messages"]
        reply = messages[-1]  # tool calls and results may sit between the message and the reply
        message = next(m for m in reversed(messages) if isinstance(m, HumanMessage))
        # A voice note sent alone is the message, maybe cut short to fit the context: remembered whole.
        spoken = [str(o.get("text") or "") for o in state.get("observations") or [] if o.get("as_message")]
        said = " ".join(spoken) if spoken else message.text
        exchange = [("observation", context.user_name, self._perceived(state, said, context.user_name)),
                    ("user", context.user_name, said)]  # fmt: skip
        said_in_words = isinstance(reply, AIMessage) and not reply.response_metadata.get("no_reply")
        if said_in_words and not reply.response_metadata.get("interrupted"):
            exchange.append(("assistant", state.get("persona") or "assistant", without_copied_memories(reply.text)))
        exchange = [(role, speaker, piece) for role, speaker, text in exchange for piece in self._pieces(text)]
        written: list[dict[str, Any]] = []
        if state.get("intent") == "ooc":  # said out of character: not part of the story to recall
            return {"trace": trace_step(state, "remember", remembered=[], remember_skipped="out of character")}
        if runtime.store is not None:
            turn = sum(isinstance(m, HumanMessage) for m in messages)
            when = datetime.now(UTC)
            for namespace in _scopes(state, context)[:1]:
                written += remember_turn(runtime.store, namespace, thread_id=_thread_id(config), turn=turn,
                                         exchange=exchange, when=when, replace=context.retry)  # fmt: skip
        timings = {"remember_s": round(time.perf_counter() - started, 4)}
        return {"trace": trace_step(state, "remember", remembered=written, timings=timings)}

    def _pieces(self, text: str) -> list[str]:
        """``text`` as one memory, or in pieces recall can place (``memory_pieces``: a long
        voice note's transcript over recall's cap was never recalled)."""
        return memory_pieces(text, self.count, self.max_tokens)

    def _perceived(self, state: ChatState, said: str, user_name: str) -> str:
        """The turn's observations worth remembering: those with text (not a file that could not
        be read, nor a picture the model saw itself), less a voice note that is the message."""
        observations = state.get("observations") or []
        kept = [o for o in observations if not o.get("error") and o.get("text") and o["text"] != said]
        return describe_observations(kept, user_name, state.get("persona") or "you", self.phrasing)
