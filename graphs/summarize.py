"""The rolling summary's node: after the reply, fold the turns that left the window into it.

Compose moves the window on when the history overflows (many turns at once) and leaves the
summary as it was; this node then writes the new one with the chat model, after the reply has
been streamed, so a folding turn's first token does not wait for a whole extra generation. The
next turn's prompt starts with the new summary: the prompt's head changes once per fold.
The logic lives in ``agentmm.summary``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from agentmm.state import ChatState, TurnContext, run_context, trace_step
from agentmm.summary import SUMMARY_TOKENS, fold_into_summary


def summary_pending(state: ChatState) -> bool:
    """Whether messages have left the window that the summary does not cover yet."""
    return state.get("summary_through", 0) < state.get("window_start", 0)


class Summarize:
    """Fold ``messages[summary_through:window_start]`` into the summary with ``model``.

    A turn the user stopped (Ctrl-C) leaves the fold for the next turn, as does a model error
    here: the reply is already the user's, so a failed summary must not cost the turn (the
    trace says why; the messages are folded with the next turn's).
    """

    def __init__(self, model: BaseChatModel, max_tokens: int = SUMMARY_TOKENS) -> None:
        self.model = model
        self.max_tokens = max_tokens

    def __call__(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        started = time.perf_counter()
        context = run_context(runtime.context)
        previous = state.get("summary", "")
        end = state.get("window_start", 0)
        folded = state["messages"][state.get("summary_through", 0) : end]
        update: dict[str, Any] = {}
        summary: dict[str, Any] = {"updated": False, "text": previous, "to_fold": len(folded)}
        if context.cancel.is_set():
            # Nothing runs: the trace says the fold waits, and neither its path nor its timings
            # say this node did something (they read "summarize", summarize_s 0.0).
            summary["deferred"] = "the turn was stopped"
            return {"trace": {**(state.get("trace") or {}), "summary": summary}}
        else:
            try:
                with _cache_kept(self.model):
                    text = fold_into_summary(self.model, previous, folded, user_name=context.user_name,
                                             char_name=state.get("persona") or "Assistant",
                                             max_tokens=self.max_tokens)  # fmt: skip
            except Exception as exc:  # any model failure: the turn's reply stands
                summary["deferred"] = f"{type(exc).__name__}: {exc}"
            else:
                update = {"summary": text, "summary_through": end}
                summary = {"updated": True, "folded_messages": len(folded), "text": text}
        timings = {"summarize_s": round(time.perf_counter() - started, 4)}
        return {**update, "trace": trace_step(state, "summarize", summary=summary, timings=timings)}


def _cache_kept(model: BaseChatModel) -> contextlib.AbstractContextManager[None]:
    """The model's own block that keeps its KV cache (``ChatLlamaCpp.cache_kept``), if it has
    one: the summary's prompt shares nothing with the chat's, so without it the turn after a
    fold re-read the whole prompt, persona head included, instead of re-using the head."""
    keep = getattr(model, "cache_kept", None)
    return keep() if callable(keep) else contextlib.nullcontext()
