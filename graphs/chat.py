"""The default turn graph: ingest -> compose -> generate, over any LangChain chat model.

``build_graph`` returns a compiled LangGraph graph; give it a checkpointer for threads that
survive the process. Later capabilities (perceive, recall, remember) are nodes added here.
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from agentmm.context import plan_window
from agentmm.errors import EmptyInputError
from agentmm.settings import DEFAULT_SYSTEM_PROMPT
from agentmm.state import ChatInput, ChatState, TurnContext, trace_step
from agentmm.tokens import TokenCounter

GRAPH_NAME = "agentmm-chat"


def ingest(state: ChatState) -> dict[str, Any]:
    """Validate this turn's text and append it to the thread; start a fresh trace."""
    text = (state.get("input") or "").strip()
    if not text:
        raise EmptyInputError("nothing to say: the message is empty")
    turn = 1 + sum(isinstance(m, HumanMessage) for m in state.get("messages", []))
    return {
        "messages": [HumanMessage(text)],
        "trace": {"turn": turn, "path": ["ingest"]},
    }


class Composer:
    """Plans the prompt: system prompt first, then as much of the thread as fits."""

    def __init__(self, counter: TokenCounter, system_prompt: str, n_ctx: int, reply_tokens: int) -> None:
        self.counter = counter
        self.system_prompt = system_prompt
        self.n_ctx = n_ctx
        self.reply_tokens = reply_tokens

    def __call__(self, state: ChatState) -> dict[str, Any]:
        # The system prompt is fixed once per thread so the prompt head never changes under it.
        system_prompt = state.get("system_prompt") or self.system_prompt
        plan = plan_window(
            state["messages"],
            state.get("window_start", 0),
            self.counter,
            n_ctx=self.n_ctx,
            reply_tokens=self.reply_tokens,
            head=[("system", system_prompt)],
        )
        trace = trace_step(
            state,
            "compose",
            prompt_parts=plan.parts,
            budget={**plan.budget, "folded_this_turn": plan.folded_messages},
            tokenizer="model" if self.counter.exact else "approximate",
        )
        return {"window_start": plan.window_start, "system_prompt": system_prompt, "trace": trace}


def prompt_messages(state: ChatState) -> list[BaseMessage]:
    """The messages compose planned: system prompt, then the window of the thread."""
    return [SystemMessage(state["system_prompt"]), *state["messages"][state.get("window_start", 0) :]]


class Generator:
    """Streams the model's reply; stops early (keeping what came) when the run is cancelled."""

    def __init__(self, model: BaseChatModel) -> None:
        self.model = model

    def __call__(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        cancel = runtime.context.cancel if runtime.context else None
        started = time.perf_counter()
        first: float | None = None
        reply: AIMessageChunk | None = None
        interrupted = False
        stream = self.model.stream(prompt_messages(state))
        try:
            for chunk in stream:
                if first is None and chunk.content:
                    first = time.perf_counter()
                reply = chunk if reply is None else reply + chunk  # type: ignore[assignment]
                if cancel is not None and cancel.is_set():
                    interrupted = True
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        ended = time.perf_counter()
        message = _final_message(reply, interrupted)
        usage = message.usage_metadata or {}
        trace = trace_step(
            state,
            "generate",
            timings={"generate_ttft_s": round((first or ended) - started, 4), "generate_s": round(ended - started, 4)},
            usage={"prompt_tokens": usage.get("input_tokens", 0), "completion_tokens": usage.get("output_tokens", 0)},
            cache=dict(message.response_metadata.get("cache", {})),
            interrupted=interrupted,
        )
        return {"messages": [message], "trace": trace}


def _final_message(reply: AIMessageChunk | None, interrupted: bool) -> AIMessage:
    if reply is None:
        reply = AIMessageChunk(content="")
    metadata = dict(reply.response_metadata)
    if interrupted:
        metadata["interrupted"] = True
    return AIMessage(
        content=reply.content,
        id=reply.id,
        usage_metadata=reply.usage_metadata,
        response_metadata=metadata,
        tool_calls=reply.tool_calls,
    )


def build_graph(
    model: BaseChatModel,
    checkpointer: BaseCheckpointSaver | None = None,
    *,
    store: BaseStore | None = None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    n_ctx: int = 4096,
    reply_tokens: int = 512,
    counter: TokenCounter | None = None,
) -> CompiledStateGraph:
    """The turn graph over ``model`` (any LangChain ``BaseChatModel``).

    ``n_ctx`` and ``reply_tokens`` size the window; ``counter`` counts tokens (default: the
    model's own tokenizer where it has one).
    """
    composer = Composer(counter or TokenCounter.for_model(model), system_prompt, n_ctx, reply_tokens)
    builder = StateGraph(ChatState, context_schema=TurnContext, input_schema=ChatInput)
    builder.add_node("ingest", ingest)
    builder.add_node("compose", composer)
    builder.add_node("generate", Generator(model))
    builder.add_edge(START, "ingest")
    builder.add_edge("ingest", "compose")
    builder.add_edge("compose", "generate")
    builder.add_edge("generate", END)
    return builder.compile(checkpointer=checkpointer, store=store, name=GRAPH_NAME)


def make_graph() -> CompiledStateGraph:
    """The graph LangGraph's own server loads (``langgraph.json``): configured from Settings,
    without a checkpointer, because the server brings its own persistence."""
    from agentmm.llm import ChatLlamaCpp
    from agentmm.settings import load_settings

    settings = load_settings()
    return build_graph(
        ChatLlamaCpp.from_settings(settings),
        system_prompt=settings.system_prompt,
        n_ctx=settings.n_ctx,
        reply_tokens=settings.max_tokens,
    )
