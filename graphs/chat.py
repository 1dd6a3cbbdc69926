"""The default turn graph: ingest -> compose -> generate, over any LangChain chat model.

A thread may play a persona (``TurnContext.persona``): compose then builds the prompt from it.

``build_graph`` returns a compiled LangGraph graph; give it a checkpointer for threads that
survive the process. Later capabilities (perceive, recall, remember) are nodes added here.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from agentmm.compose import DROP_ORDER, TurnParts, persona_turn_parts, plain_parts
from agentmm.context import CONTEXT_KEY, WindowPlan, plan_window, render, turn_context
from agentmm.errors import EmptyInputError
from agentmm.graphs.tool_calls import RunTools, ToolBox, rounds_this_turn, wants_tools
from agentmm.memory.conversation import format_recalled
from agentmm.observations import ObservationPhrasing, describe_observations
from agentmm.personas import PersonaRegistry, greeting
from agentmm.settings import DEFAULT_SYSTEM_PROMPT
from agentmm.state import ChatInput, ChatState, TurnContext, trace_step
from agentmm.summary import fold_into_summary
from agentmm.tokens import TokenCounter
from agentmm.tools.perception import Perception

GRAPH_NAME = "agentmm-chat"


class Ingest:
    """Validate this turn's text and append it to the thread; start a fresh trace.

    A persona asked for in the run's context becomes the thread's persona (checked first, so
    a bad name saves nothing); a new thread with a persona opens with its greeting.
    """

    def __init__(self, personas: PersonaSource) -> None:
        self.personas = personas

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        text = (state.get("input") or "").strip()
        context = runtime.context or TurnContext()
        if not text and not context.attachments:
            raise EmptyInputError("nothing to say: the message is empty")
        history = state.get("messages", [])
        update: dict[str, Any] = {}
        persona_name = state.get("persona")
        if context.persona:
            persona_name = update["persona"] = self.personas().get(context.persona).name
        started_at = state.get("started_at") or datetime.now(UTC).isoformat(timespec="seconds")
        opening: list[AIMessage] = []
        if not history and persona_name:
            persona = self.personas().get(persona_name)
            seed = thread_seed(config)
            words = greeting(persona, context.greeting, context.user_name, seed=seed, now=_when(started_at))
            if words:
                opening.append(AIMessage(words, response_metadata={"greeting": context.greeting}))
        turn = 1 + sum(isinstance(m, HumanMessage) for m in history)
        trace: dict[str, Any] = {"turn": turn, "path": ["ingest"]}
        if persona_name:
            trace["persona"] = persona_name
        if opening:
            trace["greeting"] = opening[0].text
        update.update(attachments=list(context.attachments), observations=[], recalled=[])
        return {**update, "messages": [*opening, HumanMessage(text)], "started_at": started_at, "trace": trace}


class Composer:
    """Plans the prompt: the head (system prompt or persona, then the rolling summary), as much
    of the thread as fits, this turn's context (recalled memories, fired lore) with its message,
    then the post-history instructions. When old turns leave the window they are folded into
    the summary (``summarize``), all at once."""

    def __init__(
        self,
        counter: TokenCounter,
        personas: PersonaSource,
        system_prompt: str,
        n_ctx: int,
        reply_tokens: int,
        summarize: Summarizer | None = None,
        toolbox: ToolBox | None = None,
        phrasing: ObservationPhrasing | None = None,
    ) -> None:
        self.counter = counter
        self.phrasing = phrasing or ObservationPhrasing()
        self.toolbox = toolbox
        self.personas = personas
        self.system_prompt = system_prompt
        self.n_ctx = n_ctx
        self.reply_tokens = reply_tokens
        self.summarize = summarize

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        context = runtime.context or TurnContext()
        messages = state["messages"]
        parts = self._parts(state, config, context)
        memories = format_recalled(state.get("recalled") or [], context.user_name)
        seen = describe_observations(state.get("observations") or [], context.user_name,
                                     state.get("persona") or "you", self.phrasing)  # fmt: skip
        turn = [("memories", memories), *parts.turn, ("observations", seen)]
        summary = state.get("summary", "")
        plan = self._plan(state, parts, turn, summary)
        update: dict[str, Any] = {"window_start": plan.window_start}
        trace: dict[str, Any] = {}
        if plan.folded_messages and self.summarize is not None:
            folded = messages[state.get("window_start", 0) : plan.window_start]
            summary = self.summarize(summary, folded, context, state.get("persona") or "Assistant")
            plan = self._plan({**state, "window_start": plan.window_start}, parts, turn, summary)
            update["summary"] = summary
            trace["summary"] = {"updated": True, "folded_messages": len(folded), "text": summary}
        elif summary:
            trace["summary"] = {"updated": False, "text": summary}
        head_names = [name for name, _ in parts.head] + ["summary"]
        update["system_prompt"] = "\n\n".join(plan.kept[name] for name in head_names if name in plan.kept)
        update["post_history"] = plan.kept.get("post_history", "")
        if not state.get("persona"):
            update["base_prompt"] = parts.head[0][1]
        stored = "\n\n".join(plan.kept[name] for name in ("memories", "lore", "observations") if name in plan.kept)
        if stored:  # the turn's context is stored with its message, so later prompts repeat it exactly
            newest = messages[-1]
            extra = {**newest.additional_kwargs, CONTEXT_KEY: stored}
            update["messages"] = [newest.model_copy(update={"additional_kwargs": extra})]
        lore = parts.lore
        if "lore" in plan.dropped:
            lore = [{**entry, "inserted": False, "note": "dropped to fit the context"} for entry in lore]
        update["trace"] = trace_step(
            state,
            "compose",
            prompt_parts=plan.parts,
            budget={**plan.budget, "folded_this_turn": plan.folded_messages, **self._reserve_split(state)},
            tokenizer="model" if self.counter.exact else "approximate",
            lore=lore,
            dropped_parts=plan.dropped,
            **trace,
        )
        return update

    def _plan(self, state: ChatState, parts: TurnParts, turn: list[tuple[str, str]], summary: str) -> WindowPlan:
        summary_part = f"Summary of the conversation so far:\n{summary}" if summary else ""
        return plan_window(
            state["messages"],
            state.get("window_start", 0),
            self.counter,
            n_ctx=self.n_ctx,
            reply_tokens=self.reply_tokens + self._tool_reserve(state),
            head=[*parts.head, ("summary", summary_part)],
            turn=turn,
            tail=parts.tail,
            droppable=DROP_ORDER,
        )

    def _reserve_split(self, state: ChatState) -> dict[str, int]:
        """The budget's reply reserve, with the part kept for tools said apart."""
        reserve = self._tool_reserve(state)
        return {"reply_reserve": self.reply_tokens, "tool_reserve": reserve} if reserve else {}

    def _tool_reserve(self, state: ChatState) -> int:
        return self.toolbox.reserve_tokens(state, self.counter.text) if self.toolbox is not None else 0

    def _parts(self, state: ChatState, config: RunnableConfig, context: TurnContext) -> TurnParts:
        name = state.get("persona")
        if not name:
            # Fixed once per thread, so the prompt head never changes under it.
            return plain_parts(state.get("base_prompt") or self.system_prompt)
        persona = self.personas().get(name)
        window = state["messages"][state.get("window_start", 0) :]
        return persona_turn_parts(
            persona,
            [m.text for m in window],
            self.counter,
            user_name=context.user_name,
            seed=thread_seed(config),
            now=_when(state.get("started_at")),
            in_window="\n".join(turn_context(m) for m in window),
        )


Summarizer = Callable[[str, list[BaseMessage], TurnContext, str], str]


def model_summarizer(model: BaseChatModel) -> Summarizer:
    """Fold turns into the summary with the chat model itself."""

    def summarize(previous: str, folded: list[BaseMessage], context: TurnContext, char_name: str) -> str:
        return fold_into_summary(model, previous, folded, user_name=context.user_name, char_name=char_name)

    return summarize


def thread_seed(config: RunnableConfig) -> str:
    """The thread id: seeds a persona's {{random}} macros so they stay fixed for the thread."""
    return str(config.get("configurable", {}).get("thread_id", ""))


def _when(started_at: str | None) -> datetime | None:
    return datetime.fromisoformat(started_at) if started_at else None


def prompt_messages(state: ChatState) -> list[BaseMessage]:
    """The messages compose planned: the head as one system message, the window of the thread
    (each user turn with its stored context), the post-history instructions after the last."""
    window = state["messages"][state.get("window_start", 0) :]
    prompt: list[BaseMessage] = [SystemMessage(state["system_prompt"])]
    for message in window:
        prompt.append(HumanMessage(render(message)) if isinstance(message, HumanMessage) else message)
    post = state.get("post_history")
    last_user = next((i for i in range(len(prompt) - 1, 0, -1) if isinstance(prompt[i], HumanMessage)), None)
    if post and last_user is not None:  # after this turn's message, also while tools are called
        prompt[last_user] = HumanMessage(f"{prompt[last_user].text}\n\n{post}")
    return prompt


class Generator:
    """Streams the model's reply; stops early (keeping what came) when the run is cancelled.

    With tools offered to the thread the model may answer with tool calls instead; after
    ``max_rounds`` of them in one turn it must answer in words (``tool_choice="none"``).
    With ``native_images`` the turn's pictures ride on its user message (for this call only).
    """

    def __init__(self, model: BaseChatModel, toolbox: ToolBox | None = None, native_images: bool = False) -> None:
        self.model = model
        self.toolbox = toolbox
        self.native_images = native_images

    def _prompt(self, state: ChatState) -> list[BaseMessage]:
        prompt = prompt_messages(state)
        if self.native_images and state.get("observations"):
            from agentmm.graphs.perceive import with_images

            prompt = with_images(prompt, state["observations"])
        return prompt

    def _bound(self, state: ChatState) -> Runnable[Any, BaseMessage]:
        offered = self.toolbox.offered(state) if self.toolbox is not None else []
        if not offered:
            return self.model
        done = rounds_this_turn(state["messages"]) >= self.toolbox.max_rounds  # type: ignore[union-attr]
        return self.model.bind_tools(offered, tool_choice="none" if done else "auto")

    def __call__(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        cancel = runtime.context.cancel if runtime.context else None
        started = time.perf_counter()
        first: float | None = None
        reply: AIMessageChunk | None = None
        interrupted = cancel is not None and cancel.is_set()
        # Stopped before the model even started (Ctrl-C while it loaded): no prefill, no reply.
        stream = iter(()) if interrupted else self._bound(state).stream(self._prompt(state))
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
        # After tool calls this turn generates again: the turn's usage and time add up.
        before = state.get("trace") or {}
        again = "generate" in before.get("path", [])
        spent = before.get("usage", {}) if again else {}
        took = before.get("timings", {}).get("generate_s", 0.0) if again else 0.0
        ttft = before["timings"]["generate_ttft_s"] if again else round((first or ended) - started, 4)
        trace = trace_step(
            state,
            "generate",
            timings={"generate_ttft_s": ttft, "generate_s": round(took + ended - started, 4)},
            usage={
                "prompt_tokens": usage.get("input_tokens", 0),
                "completion_tokens": spent.get("completion_tokens", 0) + usage.get("output_tokens", 0),
            },
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
        invalid_tool_calls=reply.invalid_tool_calls,
    )


PersonaSource = Callable[[], PersonaRegistry]


def _persona_source(registry: PersonaRegistry | None) -> PersonaSource:
    """The registry, created on first use: threads without a persona never load one."""
    holder: list[PersonaRegistry] = [registry] if registry is not None else []

    def source() -> PersonaRegistry:
        if not holder:
            holder.append(PersonaRegistry())
        return holder[0]

    return source


def build_graph(
    model: BaseChatModel,
    checkpointer: BaseCheckpointSaver | None = None,
    *,
    store: BaseStore | None = None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    n_ctx: int = 4096,
    reply_tokens: int = 512,
    counter: TokenCounter | None = None,
    personas: PersonaRegistry | None = None,
    summarize: bool = True,
    recall_k: int = 5,
    perception: Perception | None = None,
    tools: Sequence[BaseTool] = (),
    approve_tools: Collection[str] = (),
    tool_timeout_s: float = 30.0,
    max_tool_rounds: int = 3,
    native_images: bool | None = None,
    phrasing: ObservationPhrasing | None = None,
) -> CompiledStateGraph:
    """The turn graph over ``model`` (any LangChain ``BaseChatModel``).

    ``n_ctx`` and ``reply_tokens`` size the window; ``counter`` counts tokens (default: the
    model's own tokenizer where it has one); ``personas`` finds the personas a thread may
    play (default: the built-ins and the ``agentmm.personas`` entry points, loaded on first use).
    With a ``store`` (any LangGraph ``BaseStore``) each turn recalls up to ``recall_k``
    memories before compose and remembers the exchange after generate. ``summarize`` folds
    turns that leave the window into a rolling summary written by ``model``. A turn with
    attachments (``TurnContext.attachments``) runs ``perception`` (default: the shipped
    speech model and the configured captioner, loaded on first use) before recall.
    ``tools`` are the tools the model may call (a persona narrows them with its
    ``allowed_tools``); those named in ``approve_tools`` or marked ``requires_approval`` pause
    the turn for a yes/no (``interrupt``; resume with ``Command(resume=True|False)``). A call
    running past ``tool_timeout_s`` is abandoned; ``max_tool_rounds`` bounds the calls per turn.
    ``native_images`` sends a turn's pictures to ``model`` itself instead of captioning them
    (default: when the model says it ``accepts_images``, as ``ChatLlamaCpp`` with an mmproj does).
    ``phrasing`` says how observations read in the turn's context (default: SillyTavern's).
    """
    from agentmm.graphs.memory import Recall, Remember
    from agentmm.graphs.perceive import Perceive

    source = _persona_source(personas)
    toolbox = ToolBox(tools, source, approve=approve_tools, timeout_s=tool_timeout_s, max_rounds=max_tool_rounds)
    composer = Composer(
        counter or TokenCounter.for_model(model), source, system_prompt, n_ctx, reply_tokens,
        model_summarizer(model) if summarize else None, toolbox if tools else None, phrasing,
    )  # fmt: skip
    builder = StateGraph(ChatState, context_schema=TurnContext, input_schema=ChatInput)
    builder.add_node("ingest", Ingest(source))
    builder.add_node("compose", composer)
    if native_images is None:
        native_images = getattr(model, "accepts_images", False) is True
    builder.add_node("generate", Generator(model, toolbox if tools else None, native_images))
    builder.add_node("perceive", Perceive(perception, model_label(model) if native_images else None))
    steps = ["ingest", "compose", "generate"]
    if store is not None:
        builder.add_node("recall", Recall(k=recall_k))
        builder.add_node("remember", Remember(phrasing))
        steps = ["ingest", "recall", "compose", "generate", "remember"]
    after_ingest = steps[1]
    builder.add_edge(START, "ingest")
    # perceive runs only for a turn with attachments, between ingest and the next step.
    builder.add_conditional_edges(
        "ingest", lambda state: "perceive" if state.get("attachments") else after_ingest, ["perceive", after_ingest]
    )
    builder.add_edge("perceive", after_ingest)
    after_generate = steps[steps.index("generate") + 1] if steps[-1] != "generate" else END
    for before, after in itertools.pairwise([*steps[1:], END]):
        if before != "generate" or not tools:
            builder.add_edge(before, after)
    if tools:  # generate -> tools -> generate, until the reply is words (or the rounds run out)
        builder.add_node("tools", RunTools(toolbox))
        builder.add_edge("tools", "generate")

        def route(state: ChatState) -> str:
            messages = state["messages"]
            more = wants_tools(messages[-1]) and rounds_this_turn(messages) <= max_tool_rounds
            return "tools" if more else after_generate

        builder.add_conditional_edges("generate", route, ["tools", after_generate])
    return builder.compile(checkpointer=checkpointer, store=store, name=GRAPH_NAME)


def model_label(model: BaseChatModel) -> str:
    """The model's name as the trace shows it."""
    name = getattr(model, "display_name", None) or getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name or type(model).__name__)


def make_graph() -> CompiledStateGraph:
    """The graph LangGraph's own server loads (``langgraph.json``): configured from Settings,
    without a checkpointer, because the server brings its own persistence."""
    from agentmm.llm import ChatLlamaCpp
    from agentmm.plugins import enabled_tools
    from agentmm.settings import load_settings

    settings = load_settings()
    return build_graph(
        ChatLlamaCpp.from_settings(settings),
        system_prompt=settings.system_prompt,
        n_ctx=settings.n_ctx,
        reply_tokens=settings.max_tokens,
        tools=enabled_tools(settings),
        approve_tools=settings.approve_tools,
        tool_timeout_s=settings.tool_timeout_s,
        max_tool_rounds=settings.max_tool_rounds,
    )
