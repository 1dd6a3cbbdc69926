"""The turn graph: ingest -> [perceive] -> [recall] -> compose -> generate <-> [tools] -> [remember]
-> [summarize], over any LangChain chat model.

``build_graph`` is the one place the graph is built from ``Settings``: the ``Agent``, LangGraph's
server (``langgraph.json``, through ``agentmm.graphs.server``) and ``agentmm graph show`` all call
it. A thread may play a persona (``TurnContext.persona``): compose then builds the prompt from it.
"""

from __future__ import annotations

import os
import random
import time
import uuid
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph._internal._constants import NS_SEP
from langgraph._internal._runnable import RunnableCallable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.store.base import BaseStore

from agentmm.compose import DROP_ORDER, TRUNCATABLE, TurnParts, persona_turn_parts, plain_parts
from agentmm.console_text import shown_name
from agentmm.context import (
    CONTEXT_KEPT_KEY,
    CONTEXT_KEY,
    MEMORY_TOKENS_KEY,
    RECALLED_DROPPED_KEY,
    WindowPlan,
    clip_to_tokens,
    plan_window,
    render,
    turn_context,
    without_recalled,
)
from agentmm.errors import (
    EmptyInputError,
    Hint,
    InputTooLongError,
    InvalidInputError,
    InvalidTextError,
    NotAChatModelError,
    SettingsError,
    ToolsNotSupportedError,
    UnsupportedContentError,
)
from agentmm.exchange import (
    SUMMARY_BEFORE_KEY,
    last_exchange_start,
    summary_put_back,
    summary_record,
    take_out_last_exchange,
)
from agentmm.graphs.tool_calls import RunTools, ToolBox, rounds_this_turn, wants_tools
from agentmm.identity_questions import asks_identity
from agentmm.intent import ExampleClassifier
from agentmm.memory.conversation import format_recalled, memory_line_stops
from agentmm.memory.selection import IN_WINDOW, memory_shown
from agentmm.observations import ObservationPhrasing, describe_observations
from agentmm.personas import Persona, PersonaNotFoundError, PersonaRegistry, greeting
from agentmm.personas.macros import expand
from agentmm.reply_cut import USERS_LINE as CUT_USERS_LINE
from agentmm.reply_cut import ReplyCut
from agentmm.runtime import Runtime as ResourceRuntime
from agentmm.settings import Settings, load_settings
from agentmm.state import ChatInput, ChatState, TurnContext, run_context, trace_step
from agentmm.summary import summary_tokens
from agentmm.tokens import PER_MESSAGE_OVERHEAD, TokenCounter
from agentmm.tools.perception import Perception
from agentmm.users_line import character_names, users_line_start

GRAPH_NAME = "agentmm-chat"


class Ingest:
    """Validate this turn's text and append it to the thread; start a fresh trace.

    A persona asked for in the run's context becomes the thread's persona (checked first, so
    a bad name saves nothing); a new thread asking for none plays ``default_persona`` (the
    ``persona`` setting); a new thread with a persona opens with its greeting. A retry
    (``TurnContext.retry``) takes the thread's last exchange out in the same update, so the
    message is answered again in its place, as the same turn.
    """

    def __init__(self, personas: PersonaSource, default_persona: str | None = None) -> None:
        self.personas = personas
        self.default_persona = default_persona

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        sent_before: list[str] = list(state.get("turn_message_ids") or [])
        # As a subgraph, what a retry took out comes back: the outer graph keeps its copies (a
        # subgraph cannot take messages out of it) and hands them back with every run, appended
        # after the retried exchange. Taken out again, they stay out of this thread's prompt.
        # So do the messages a turn joined before its own (several sent in one run), which stay
        # out once it is answered; while it is not (its run failed), they are its message still,
        # to be joined again.
        taken_out = list(state.get("taken_out_ids") or [])
        gone = taken_out
        if sent_before and not _answered(state.get("messages", []), sent_before[-1]):
            gone = [out for out in taken_out if out not in sent_before[:-1]]
        came_back = [m for m in state.get("messages", []) if m.id in gone]
        history = _in_sent_order([m for m in state.get("messages", []) if m.id not in gone], sent_before)
        retried_out: list[str] = []
        removed: list[AnyMessage] = []
        text = _input_text(state.get("input"))
        given: HumanMessage | None = None
        context = run_context(runtime.context)
        resent_unanswered = False
        sent: AnyMessage | None = None  # the message sent in ``messages``, if one was
        dropped: AnyMessage | None = None  # an empty one a retry sent, taken out
        if not text and history and isinstance(history[-1], HumanMessage):  # sent as {"messages": [...]}
            given = sent = history[-1]
            text = given.text.strip()
            history = history[:-1]
            # The message a run that failed was answering (``turn_message_ids``' last), sent again
            # under its own id, replaced it in place: it is the exchange, and nothing before it goes.
            resent_unanswered = given.id is not None and given.id == ([None, *sent_before][-1])
            # An empty or blank message with retry (agent-chat-ui sends its input box as it is)
            # is nothing new, as {"input": ""} with retry is: it goes, and the last exchange is
            # answered again.
            if not text and context.retry and not context.attachments and not resent_unanswered:
                dropped, given = (given, None) if not _unread_content([given]) else (None, given)
        if given is None and context.retry and not text and not context.attachments:
            # A retry sent nothing new (no input, or an empty one: clients send the input box as
            # it is), or sent the last turn's message again under its id (a client that keeps
            # ids: agent-chat-ui, Studio), which replaced it in place: that message is answered
            # again (it was EmptyInputError, the message not being last; so was {"input": ""}).
            start = last_exchange_start(history)
            given = history[start] if start is not None else None  # type: ignore[assignment]
            text = given.text.strip() if given is not None else ""
        update: dict[str, Any] = {}
        # A retry takes the thread's last exchange out first, the message it is given aside: a
        # raw graph's failed run left its message as that exchange, unanswered, which is what a
        # retry answers again (it was joined to the retried message, and the exchange before it
        # taken out, the turn counted from 1; sent again under its id, the turn before was lost).
        if (
            context.retry
            and not resent_unanswered
            and (taken := take_out_last_exchange({**state, "messages": history})) is not None
        ):
            removed = taken.pop("messages")
            retried_out = [str(r.id) for r in removed]
            history = history[: last_exchange_start(history)]
            before = config.get("configurable", {}).get(SUMMARY_BEFORE_KEY) or state.get("summary_before")
            update.update(summary_put_back(taken, before))
        # A retry of the last turn (or its message sent again under its id) that sends only that
        # turn's own message again: the messages the turn had joined before it are answered with
        # it again, in the order sent (those an outer graph hands back are in the thread already;
        # a retry that sends the joined text, or nothing new, has them).
        retried_turn = resent_unanswered or (bool(retried_out) and retried_out[0] == [None, *sent_before][-1])
        present = {m.id for m in history}
        earlier = [(sent, words)
                   for sent, words in zip(sent_before[:-1], state.get("joined_texts") or [], strict=False)
                   if sent not in present]  # fmt: skip
        sent_whole = text.startswith("\n\n".join(words for _, words in earlier if words) + "\n\n")
        rejoined = earlier if retried_turn and not sent_whole else []
        # The summary as this turn finds it, for a retry of it (written when it changed: at a fold).
        if (found := summary_record({**state, **update})) != state.get("summary_before"):
            update["summary_before"] = found
        # User messages no reply follows, before this one: several sent in one run ({"messages":
        # [u1, u2]}), or a raw graph's failed run (the Agent rolls its own back). They are this
        # turn's message too, in order: dropped, they were lost; left, answered after it.
        unanswered = _unanswered_tail(history)
        pending = [*unanswered, *([given] if given is not None else [])]
        if refused := _unread_content(pending):
            # Taken out of the thread in this step, then refused by the next (``refuse``): a run
            # that fails here would leave them for a later run to answer.
            return _refused([*came_back, *([dropped] if dropped else []), *pending], refused)
        if dropped is not None:
            removed.append(RemoveMessage(id=str(dropped.id)))
        if unanswered:
            removed.extend(RemoveMessage(id=m.id) for m in unanswered)  # type: ignore[arg-type]
            history = history[: -len(unanswered)]
        joined = [*rejoined, *((str(m.id), m.text.strip()) for m in unanswered)]
        if joined:
            text = "\n\n".join(part for part in [*(words for _, words in joined), text] if part)
        if not text and not context.attachments:
            if sent is not None:
                # An empty message sent in ``messages`` goes again, as a refused picture does:
                # left, it stayed in the thread, and each retry of it added another.
                return _refused([*came_back, *unanswered, sent], "nothing to say: the message is empty", empty=True)
            raise EmptyInputError(_nothing_to_say(state, history))
        InvalidTextError.check(text, "the message")
        persona_name = state.get("persona")
        asked = context.persona or (self.default_persona if not history and not persona_name else None)
        if asked:
            persona_name = update["persona"] = self.personas().get(asked).name
        elif persona_name and self.personas().find(persona_name) is None:
            raise PersonaNotFoundError(
                f"this thread plays {shown_name(persona_name)}, which is no longer installed; play another in it",
                see=Hint(cli="agentmm personas list; then -p NAME", http='GET /personas; then "persona": NAME'),
            )
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
        if joined:
            trace["unanswered_joined"] = len(joined)
        update.update(attachments=list(context.attachments), observations=[], recalled=[], intent="",
                      clear_recalled_blocks=False)  # fmt: skip
        # A message sent in ``messages`` keeps its id, which a client (agent-chat-ui) and an
        # outer graph match it by: put back under it, it keeps its place.
        message = HumanMessage(text, id=given.id if given is not None else str(uuid.uuid4()))
        if given is not None and opening:  # ... but the greeting goes first: the thread anew
            removed = [RemoveMessage(id=REMOVE_ALL_MESSAGES)]
            if _nested(config):
                # An outer graph merges this graph's messages into its own by id (``add_messages``):
                # its copy of the message keeps its place, first, and the greeting landed after it.
                # The greeting takes the first sent message's id, and so its place there.
                opening[0].id = pending[0].id
                if pending[0] is given:
                    message = HumanMessage(text, id=str(uuid.uuid4()))
        update["turn_message_ids"] = [*(sent for sent, _ in joined), str(message.id)]
        if (texts := [words for _, words in joined]) != (state.get("joined_texts") or []):
            update["joined_texts"] = texts
        if _nested(config):
            kept = {str(message.id), *(str(m.id) for m in opening)}
            out = [*taken_out, *retried_out, *(sent for sent, _ in joined)]
            if (out := [o for o in dict.fromkeys(out) if o not in kept]) != taken_out:
                update["taken_out_ids"] = out
        back = [RemoveMessage(id=m.id) for m in came_back]  # type: ignore[arg-type]
        messages = [*back, *removed, *opening, message]
        return {**update, "messages": messages, "started_at": started_at, "trace": trace}


def _nested(config: RunnableConfig) -> bool:
    """Whether this run is a subgraph's, a node of an outer graph: a node's checkpoint namespace
    is its graph's, then its own name (``ingest:<task>``), and a nested graph's has the outer
    node's before it (``turn:<task>|ingest:<task>``)."""
    return NS_SEP in str(config.get("configurable", {}).get("checkpoint_ns", ""))


def _answered(messages: Sequence[AnyMessage], message_id: str) -> bool:
    """Whether a reply follows the message ``message_id`` in ``messages`` (False: not there)."""
    at = next((i for i, m in enumerate(messages) if m.id == message_id), None)
    return at is not None and any(isinstance(m, AIMessage) for m in messages[at + 1 :])


def _unread_content(messages: Sequence[BaseMessage]) -> str:
    """Why ``messages`` are refused, "" when they are not: content with more than text (a
    picture or file block, as agent-chat-ui sends one), which the turn does not read from
    messages (pictures and voice notes come as attachments); it was dropped without a word."""
    kinds = sorted({
        str(block.get("type", "?"))
        for message in messages if isinstance(message.content, list)
        for block in message.content if isinstance(block, dict) and block.get("type") != "text"
    })  # fmt: skip
    if not kinds:
        return ""
    return (f"the message holds {', '.join(kinds)} content, which this graph does not read from messages: "
            "send pictures and voice notes as attachments (the run's context attachments=[path])")  # fmt: skip


def _refused(messages: Sequence[AnyMessage], why: str, empty: bool = False) -> dict[str, Any]:
    """Ingest's update for a refused run: ``messages`` taken out of the thread in this step,
    then refused by the next (``refuse``): a run that fails here would leave them for a later
    run to answer. ``empty``: refused as empty (``EmptyInputError``), else as unread content."""
    removed = [RemoveMessage(id=str(m.id)) for m in messages]
    return {"messages": removed, "trace": {"path": ["ingest"], "refused": why, "refused_empty": empty}}


def _nothing_to_say(state: ChatState, history: Sequence[AnyMessage]) -> str:
    """Why a run with no message is refused. A run whose thread ends with a reply either sent
    nothing or sent the answered message again under its id (``add_messages`` replaced it in
    place, the run cannot tell which): either way that message was already answered."""
    if state.get("input") is not None:
        return "nothing to say: the message is empty"
    start = last_exchange_start(history)
    if start is not None and history and isinstance(history[-1], AIMessage):
        answered = history[start]
        named = f"message {answered.id}" if answered.id else "the thread's last message"
        return (f"{named} was already answered; send retry to answer it again, "
                'or a new message ({"input": "..."} or a user message last in "messages")')  # fmt: skip
    return ("nothing to say: the message is empty "
            '(a run\'s message is {"input": "..."} or a user message last in "messages")')  # fmt: skip


def refuse(state: ChatState) -> dict[str, Any]:
    """End a run ingest refused, its messages already taken out of the thread."""
    trace = state.get("trace") or {}
    why = str(trace.get("refused", "the message was refused"))
    raise (EmptyInputError if trace.get("refused_empty") else UnsupportedContentError)(why)


def _unanswered_tail(history: Sequence[AnyMessage]) -> list[AnyMessage]:
    """The user messages at the end of ``history``, which no reply follows."""
    tail: list[AnyMessage] = []
    for message in reversed(history):
        if not isinstance(message, HumanMessage):
            break
        tail.append(message)
    return tail[::-1]


def _in_sent_order(history: Sequence[AnyMessage], sent_before: Sequence[str]) -> list[AnyMessage]:
    """``history`` with the unanswered messages a turn joined (``sent_before``:
    ``turn_message_ids``) back in the order they were sent. An outer graph keeps each of them
    after a run that failed, and hands them all back: its copy of the last replaced the joined
    message in place, while the ones before it, taken out here, came back after it
    (``add_messages`` appends an id it does not hold), and were joined out of order ("u4, u3, u5")."""
    tail = _unanswered_tail(history)
    order = {sent: i for i, sent in enumerate(sent_before)}
    if sum(m.id in order for m in tail) < 2:
        return list(history)
    known = iter(sorted((m for m in tail if m.id in order), key=lambda m: order[str(m.id)]))
    return [*history[: len(history) - len(tail)], *(next(known) if m.id in order else m for m in tail)]


def _input_text(given: object) -> str:
    """The run's ``input``, stripped; a typed error for one that is not text."""
    if given is None:
        return ""
    if not isinstance(given, str):
        raise InvalidInputError(
            f'the input must be the message as text, {{"input": "..."}}, not {type(given).__name__}'
        )
    return given.strip()


class Composer:
    """Plans the prompt: the head (system prompt or persona, then the rolling summary), as much
    of the thread as fits, this turn's context (recalled memories, fired lore) with its message,
    then the post-history instructions.

    When old turns leave the window (many at once), the window moves on here and the prompt
    keeps the summary it had; the ``summarize`` node folds those turns into the summary after
    the reply, so no user waits for that extra generation before the first token, and the
    next turn's prompt starts with the new summary.
    """

    def __init__(
        self,
        counter: TokenCounter,
        personas: PersonaSource,
        system_prompt: str,
        n_ctx: int,
        reply_tokens: int,
        toolbox: ToolBox | None = None,
        phrasing: ObservationPhrasing | None = None,
        reminder: str = "",
        introduction: str = "",
        fixed: frozenset[str] = frozenset(),
    ) -> None:
        self.fixed = fixed
        self.counter = counter
        self.reminder = reminder
        self.introduction = introduction
        self.phrasing = phrasing or ObservationPhrasing()
        self.toolbox = toolbox
        self.personas = personas
        self.system_prompt = system_prompt
        self.n_ctx = n_ctx
        self.reply_tokens = reply_tokens

    def __call__(self, state: ChatState, config: RunnableConfig, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        context = run_context(runtime.context)
        summary = state.get("summary", "")
        start = state.get("window_start", 0)
        shown = _shown_context(state["messages"], start)  # the stored context the prompt shows
        parts, turn = self._turn_parts(state, config, context, shown)
        state, cut_message, fitted = self._fit_voice_message(state, parts, turn, summary)
        messages = state["messages"]
        plan = fitted or self._plan(state, parts, turn, summary)
        # Lore and memories "already in the window" are judged again against the window the
        # plan leaves: one shown with a turn this plan folds away, or whose recalled block it
        # takes out, is in the prompt no more. More context can only fold more, so this ends;
        # three rounds are plenty.
        for _ in range(3):
            if plan.window_start == start and not plan.stripped:
                break
            shown = _shown_context(messages, plan.window_start, plan.stripped)
            again, turn_again = self._turn_parts(state, config, context, shown)
            if again.lore == parts.lore and turn_again == turn:
                break
            parts, turn = again, turn_again
            plan = self._plan(state, parts, turn, summary)
        # Threads saved before the summary had its own node: their summary covers the messages
        # before their window.
        covered = state.get("summary_through", state.get("window_start", 0))
        update: dict[str, Any] = {"window_start": plan.window_start, "summary_through": covered}
        trace: dict[str, Any] = {}
        if summary or plan.window_start > covered:
            trace["summary"] = {"updated": False, "text": summary, "to_fold": plan.window_start - covered}
        head_names = [name for name, _ in parts.head] + ["summary"]
        update["system_prompt"] = "\n\n".join(plan.kept[name] for name in head_names if name in plan.kept)
        update["post_history"] = "\n\n".join(plan.kept[name] for name, _ in parts.tail if name in plan.kept)
        if not state.get("persona"):
            update["base_prompt"] = parts.head[0][1]
        stored = "\n\n".join(plan.kept[name] for name in ("memories", "lore", "observations") if name in plan.kept)
        # Earlier turns whose recalled memories and lore leave the prompt are marked so (before
        # this turn's message, which notes_sent reads as the last).
        update["messages"] = [without_recalled(messages[i]) for i in plan.stripped]
        if cut_message:  # the thread keeps the voice note's transcript as cut, as the prompt had it
            update["messages"].append(messages[-1])
        if stored:  # the turn's context is stored with its message, so later prompts repeat it exactly
            newest = messages[-1]
            extra = {**newest.additional_kwargs, CONTEXT_KEY: stored}
            for key in (MEMORY_TOKENS_KEY, CONTEXT_KEPT_KEY, RECALLED_DROPPED_KEY):
                extra.pop(key, None)
            if memory_part := next((p for p in plan.parts if p["part"] == "memories"), None):
                extra[MEMORY_TOKENS_KEY] = memory_part["tokens"]  # recall bounds the window's memories with it
            if "memories" in plan.kept or "lore" in plan.kept:  # what stays once they leave the prompt
                extra[CONTEXT_KEPT_KEY] = plan.kept.get("observations", "")
            update["messages"] = [*update["messages"][: len(plan.stripped)],
                                  newest.model_copy(update={"additional_kwargs": extra})]  # fmt: skip
        if not update["messages"]:
            del update["messages"]
        # Lore the plan left out never reached the model: its timers do not start (the state's stay).
        kept_lore = "lore" not in plan.dropped
        if kept_lore and parts.lore_timers is not None and parts.lore_timers != (state.get("lore_timers") or {}):
            update["lore_timers"] = parts.lore_timers
        lore = parts.lore
        if "lore" in plan.dropped:
            lore = [{**entry, "inserted": False, "note": "dropped to fit the context"} for entry in lore]
        recalled = state.get("recalled") or []
        if repeated := [r for r in recalled if memory_shown(r, shown)]:
            # Recall's trace and the turn's record say what was placed; the rest, why not.
            update["recalled"] = [r for r in recalled if not memory_shown(r, shown)]
            memory_part = next((p for p in plan.parts if p["part"] == "memories"), None)
            dropped_memories = [*(state.get("trace") or {}).get("recall_dropped", []),
                                *({"id": r.get("id"), "similarity": r.get("similarity"), "reason": IN_WINDOW}
                                  for r in repeated)]  # fmt: skip
            trace = {**trace, "recalled": update["recalled"], "recall_dropped": dropped_memories,
                     "recall_tokens": memory_part["tokens"] if memory_part else 0}  # fmt: skip
        update["trace"] = trace_step(
            state,
            "compose",
            prompt_parts=plan.parts,
            budget={**plan.budget, "folded_this_turn": plan.folded_messages, **self._reserve_split(state)},
            tokenizer="model" if self.counter.exact else "approximate",
            lore=lore,
            dropped_parts=plan.dropped,
            **({"truncated_parts": [*plan.truncated, *cut_message]} if plan.truncated or cut_message else {}),
            **trace,
        )
        return update

    def _fit_voice_message(
        self, state: ChatState, parts: TurnParts, turn: list[tuple[str, str]], summary: str
    ) -> tuple[ChatState, list[dict[str, Any]], WindowPlan | None]:
        """The state with a voice note's transcript that is the message (perceive's
        ``as_message``) cut short, at a sentence, when the turn does not fit with it whole: cut to
        half the room the head and tail leave (as a long observation is), less while even that
        does not fit. A typed message too long is still refused; a voice note is not, since its
        length is not the user's to choose. The cut is reported as a ``truncated_parts`` entry
        (``part`` "message"); the plan that fitted comes with it (None: no voice note to fit),
        so the turn does not plan it again."""
        message = state["messages"][-1]
        if not any(o.get("as_message") for o in state.get("observations") or []):
            return state, [], None
        try:
            return state, [], self._plan(state, parts, turn, summary)
        except InputTooLongError:
            pass
        text = message.text
        empty = {**state, "messages": [*state["messages"][:-1], message.model_copy(update={"content": ""})]}
        room = self._plan(empty, parts, turn, summary)  # type: ignore[arg-type]  # raises: nothing fits
        frame = {name for name, _ in (*parts.head, ("summary", ""), *parts.tail)}
        framed = sum(p["tokens"] for p in room.parts if p["part"] in frame)
        tokens = (room.budget["n_ctx"] - room.budget["reply_reserve"] - framed) // 2
        while True:
            cut = clip_to_tokens(text, tokens, self.counter)
            if not cut:
                break
            shorter = {**state, "messages": [*state["messages"][:-1], message.model_copy(update={"content": cut})]}
            try:
                plan = self._plan(shorter, parts, turn, summary)  # type: ignore[arg-type]
            except InputTooLongError:
                tokens //= 2
                continue
            kept, full = (self.counter.text(t) + PER_MESSAGE_OVERHEAD for t in (cut, text))
            return shorter, [{"part": "message", "tokens": kept, "full_tokens": full}], plan  # type: ignore[return-value]
        return state, [], self._plan(state, parts, turn, summary)  # raises: not even a short cut fits

    def _turn_parts(
        self, state: ChatState, config: RunnableConfig, context: TurnContext, in_window: str
    ) -> tuple[TurnParts, list[tuple[str, str]]]:
        """The prompt's parts (see ``_parts``), and the turn's context among them (memories,
        lore, observations)."""
        parts = self._parts(state, config, context, in_window)
        if state.get("intent") == "ooc" and state.get("persona"):
            from agentmm.graphs.intent import ooc_instruction

            character = self.personas().get(state["persona"]).name  # type: ignore[arg-type]
            parts = replace(parts, tail=[("post_history", ooc_instruction(character))])
        recalled = [r for r in state.get("recalled") or [] if not memory_shown(r, in_window)]
        memories = format_recalled(recalled, context.user_name)
        seen = describe_observations(state.get("observations") or [], context.user_name,
                                     state.get("persona") or "you", self.phrasing)  # fmt: skip
        return parts, [("memories", memories), *parts.turn, ("observations", seen)]

    def _plan(self, state: ChatState, parts: TurnParts, turn: list[tuple[str, str]], summary: str) -> WindowPlan:
        summary_part = f"Summary of the conversation so far:\n{summary}" if summary else ""
        return plan_window(
            state["messages"],
            state.get("window_start", 0),
            self.counter,
            n_ctx=self.n_ctx,
            reply_tokens=self._reply_tokens(state) + self._tool_reserve(state),
            clear_recalled=bool(state.get("clear_recalled_blocks")),
            head=[*parts.head, ("summary", summary_part)],
            turn=turn,
            tail=parts.tail,
            droppable=DROP_ORDER,
            truncatable=TRUNCATABLE,
        )

    def _reserve_split(self, state: ChatState) -> dict[str, int]:
        """The budget's reply reserve, with the part kept for tools said apart."""
        reserve = self._tool_reserve(state)
        return {"reply_reserve": self._reply_tokens(state), "tool_reserve": reserve} if reserve else {}

    def _reply_tokens(self, state: ChatState) -> int:
        """Room kept for the reply: the played persona's ``max_tokens`` where it sets one."""
        sampling = persona_sampling(self.personas, state.get("persona"), self.fixed)
        return int(sampling.get("max_tokens", self.reply_tokens))

    def _tool_reserve(self, state: ChatState) -> int:
        return self.toolbox.reserve_tokens(state, self.counter.text) if self.toolbox is not None else 0

    def _parts(self, state: ChatState, config: RunnableConfig, context: TurnContext, in_window: str) -> TurnParts:
        """The parts; lore fires on the thread's window, and is left out as already there when
        ``in_window`` (the stored context the plan leaves in the prompt) holds it."""
        name = state.get("persona")
        if not name:
            # Fixed once per thread, so the prompt head never changes under it.
            return plain_parts(state.get("base_prompt") or self.system_prompt)
        persona = self.personas().get(name)
        window = state["messages"][state.get("window_start", 0) :]
        # Lore scans "Name: message", as SillyTavern with "Include Names" (its default): a key
        # that is the character's or the user's name fires. A no-reply line is no one's words
        # (``_no_reply``): scanned as an empty reply, as the prompt has it.
        names = {"human": context.user_name, "ai": persona.display_name}
        said = ["" if m.response_metadata.get("no_reply") else m.text for m in window]
        return persona_turn_parts(
            persona,
            [
                f"{names[m.type]}: {text}" if m.type in names and text else text
                for m, text in zip(window, said, strict=True)
            ],
            self.counter,
            user_name=context.user_name,
            seed=thread_seed(config),
            now=_when(state.get("started_at")),
            in_window=in_window,
            default_system_prompt=self.system_prompt,
            reminder=self.reminder,
            introduction=self.introduction,
            chance=lore_dice(config, state, context),
            chat_length=chat_length(state["messages"]),
            lore_timers=state.get("lore_timers") or {},
        )


def _shown_context(messages: Sequence[BaseMessage], start: int, stripped: Sequence[int] = ()) -> str:
    """The stored context of ``messages[start:]`` as the prompt shows it once the messages at
    ``stripped`` are shown without what their turns recalled."""
    gone = set(stripped)
    return "\n".join(
        turn_context(without_recalled(m) if i in gone else m) for i, m in enumerate(messages) if i >= start
    )


def model_and_tools(
    model: BaseChatModel | str | os.PathLike[str] | None, tools: Sequence[BaseTool | str] | None
) -> tuple[BaseChatModel | None, list[BaseTool] | None, dict[str, Any]]:
    """The chat model and tools given to ``build_graph`` or an ``Agent``, checked, and the
    settings they name: a model file or name (``model``), tool names (``tools``). Typed errors
    for anything else."""
    named: dict[str, Any] = {}
    if isinstance(tools, str):
        raise SettingsError(f"tools takes a list of tools or tool names, not one string: tools=[{tools!r}]")
    tools = list(tools) if tools is not None else None  # an iterator (map, a generator) is read once
    if isinstance(model, (str, os.PathLike)):
        named["model"], model = os.fspath(model), None
    elif model is not None and not isinstance(model, BaseChatModel):
        raise NotAChatModelError(_not_a_chat_model(model))
    if tools is not None and all(isinstance(tool, str) for tool in tools):
        named["tools"], tools = list(tools), None  # names, as the tools setting takes them
    elif tools is not None and not all(isinstance(tool, BaseTool) for tool in tools):
        raise SettingsError("tools takes LangChain tools (BaseTool) or tool names, not a mix or anything else")
    return model, tools, named  # type: ignore[return-value]


def not_settings(settings: object) -> str:
    return (f"settings must be agentmm's Settings (Settings(...), load_settings(...)), not {type(settings).__name__}; "
            "a dict's keys go to load_settings(**keys)")  # fmt: skip


def _not_a_chat_model(model: object) -> str:
    """Why ``model`` cannot be the chat model, in one line."""
    if isinstance(model, type):
        hint = f": pass an instance, {model.__name__}(...)" if issubclass(model, BaseChatModel) else ""
        return f"model is the class {model.__name__}, not a chat model{hint}"
    shown = " ".join(repr(model).split())
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return (f"model must be a LangChain BaseChatModel or a model name or path (str or Path), "
            f"not {type(model).__name__} {shown}")  # fmt: skip


def chat_length(messages: Sequence[BaseMessage]) -> int:
    """The thread's length as SillyTavern's ``chat.length`` counts it for lore's timed effects:
    the greeting, the user's messages (this turn's included) and the replies; a tool call's
    steps (the call, its result) are not chat messages there."""
    return sum(m.type == "human" or (m.type == "ai" and not getattr(m, "tool_calls", None)) for m in messages)


def lore_dice(config: RunnableConfig, state: ChatState, context: TurnContext) -> random.Random:
    """The rolls for this turn's lore entries with a probability: the same for the same thread,
    turn and seed (a turn's trace can be told again), new on the next turn or a retry's seed."""
    turn = (state.get("trace") or {}).get("turn", 0)
    return random.Random(f"{thread_seed(config)}|{turn}|{context.seed}")


def _check_indexed(store: BaseStore | None) -> None:
    """Warn of a store made without ``index`` (LangGraph's ``InMemoryStore()``): memories would
    be written and never recalled, every one below the relevance bar, without a word."""
    if store is not None and hasattr(store, "index_config") and not store.index_config:
        from agentmm.memory.errors import StoreWithoutIndexWarning

        warnings.warn(
            f"the {type(store).__name__} given for long-term memory has no vector index, so recall will find "
            "nothing; make it with index=SentenceTransformerEmbeddings.from_settings(settings).index_config() "
            "(agentmm.memory)",
            StoreWithoutIndexWarning,
            stacklevel=3,
        )


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
        if isinstance(message, HumanMessage):
            message = HumanMessage(render(message))
        elif isinstance(message, AIMessage) and message.response_metadata.get("no_reply"):
            message = AIMessage("")  # a line to the user, not the character's words (``_no_reply``)
        prompt.append(message)
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
    With ``guard``, a model that ``accepts_character_guard`` is asked to keep a played persona
    from calling itself an assistant; with ``copy_limit``, a model that ``accepts_copy_limit``
    cannot copy that many tokens of its prompt (neither on a turn said out of character).
    With ``identity_start`` (macros filled, e.g. "I'm {{char}}") and ``personas`` to find the
    character's name, a model that ``accepts_reply_start`` begins its answer to a message asking
    the played character who it is (``agentmm.identity_questions``) with those words, and is
    offered no tool call on that turn.
    """

    def __init__(
        self, model: BaseChatModel, toolbox: ToolBox | None = None, native_images: bool = False, guard: bool = False,
        copy_limit: int = 0, identity_start: str = "", personas: PersonaSource | None = None,
        fixed: frozenset[str] = frozenset(),
    ) -> None:  # fmt: skip
        self.fixed = fixed
        self.model = model
        self.toolbox = toolbox
        self.native_images = native_images
        self.guard = guard and getattr(model, "accepts_character_guard", False) is True
        self.copy_limit = copy_limit if getattr(model, "accepts_copy_limit", False) is True else 0
        starts = getattr(model, "accepts_reply_start", False) is True and personas is not None
        self.identity_start = identity_start if starts else ""
        self.personas = personas

    def _kwargs(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        """The reply's call options: the persona's sampling, its seed (``Agent.retry``), the
        character and copy guards, the words an answer to "who are you?" starts with."""
        kwargs = {**persona_sampling(self.personas, state.get("persona"), self.fixed), **_seed(runtime)}
        played = played_in(state)
        if played and (stops := _name_stops(getattr(self.model, "stop", None), _memory_stops(state))):
            kwargs["stop"] = stops
        if self.guard and played:
            kwargs["character_guard"] = True
        if self.copy_limit and played:
            kwargs["copy_limit"] = self.copy_limit
        if played and (start := self._identity_start(state, played, runtime)):
            kwargs["reply_start"] = start
        return kwargs

    def _identity_start(self, state: ChatState, played: str, runtime: Runtime[TurnContext]) -> str:
        """The words this reply starts with: ``identity_start`` for the played character when
        the user's message (not a tool's result: the turn's first reply only) asks who it is."""
        last = state["messages"][-1] if state["messages"] else None
        if not self.identity_start or not isinstance(last, HumanMessage) or not asks_identity(last.text):
            return ""
        context = run_context(runtime.context)
        name = self.personas().get(played).name  # type: ignore[misc]
        return expand(self.identity_start, char=name, user=context.user_name, now=_when(state.get("started_at")))

    def _prompt(self, state: ChatState) -> list[BaseMessage]:
        prompt = prompt_messages(state)
        if self.native_images and state.get("observations"):
            from agentmm.graphs.perceive import with_images

            prompt = with_images(prompt, state["observations"])
        return prompt

    def _bound(self, state: ChatState, in_words: bool = False) -> Runnable[Any, BaseMessage]:
        """The model with the thread's tools; ``in_words``: none may be called this time."""
        offered = self.toolbox.offered(state) if self.toolbox is not None else []
        if not offered:
            return self.model
        done = rounds_this_turn(state["messages"]) >= self.toolbox.max_rounds  # type: ignore[union-attr]
        # A turn whose intent is not a tool's gets none (still rendered: the prompt's prefix stays).
        not_asked = bool(state.get("intent")) and state.get("intent") != "tool"
        return self.model.bind_tools(offered, tool_choice="none" if done or not_asked or in_words else "auto")

    def __call__(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        cancel = run_context(runtime.context).cancel
        started = time.perf_counter()
        # Stopped before the model even started (Ctrl-C while it loaded): no prefill, no reply.
        user = run_context(runtime.context).user_name
        attempt = _Attempt(
            interrupted=cancel is not None and cancel.is_set(), cut=_reply_cut(state, user, self.personas)
        )
        kwargs = self._kwargs(state, runtime)
        bound = self._bound(state, in_words="reply_start" in kwargs)
        prompt = self._prompt(state)
        if not attempt.interrupted:
            attempt.run(bound.stream(prompt, **kwargs), cancel)
        redo = self._nothing_of_its_own(state, attempt)
        if redo:
            attempt = _Attempt(first=attempt.first, cut=attempt.cut)
            attempt.run(bound.stream(_nudged(prompt, user), **kwargs), cancel)
        return self._reply(state, attempt, started, redo)

    async def acall(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        """``__call__`` in an async run (the ``Agent``'s turns): the model's ``astream``, so the
        loop is not blocked while tokens come. A model that ``accepts_stop_event``
        (``ChatLlamaCpp``) is handed the run's cancel flag and ends the reply itself after the
        current token, its stream closed from the inside (an async stream closed from outside
        closes its inner generators only when the loop gets to them, generation going on
        meanwhile); any other model's stream is closed when the flag is seen."""
        cancel = run_context(runtime.context).cancel
        started = time.perf_counter()
        user = run_context(runtime.context).user_name
        attempt = _Attempt(
            interrupted=cancel is not None and cancel.is_set(), cut=_reply_cut(state, user, self.personas)
        )
        redo = ""
        if not attempt.interrupted:
            kwargs = self._kwargs(state, runtime)
            stops_itself = cancel is not None and getattr(self.model, "accepts_stop_event", False) is True
            if stops_itself:
                kwargs["stop_event"] = cancel
            bound = self._bound(state, in_words="reply_start" in kwargs)
            prompt = self._prompt(state)
            await attempt.arun(bound.astream(prompt, **kwargs), cancel, stops_itself)
            redo = self._nothing_of_its_own(state, attempt)
            if redo:
                attempt = _Attempt(first=attempt.first, cut=attempt.cut)
                await attempt.arun(bound.astream(_nudged(prompt, user), **kwargs), cancel, stops_itself)
        return self._reply(state, attempt, started, redo)

    def _nothing_of_its_own(self, state: ChatState, attempt: _Attempt) -> str:
        """Why a played reply came back with nothing of the character's own, so it is generated
        once more; "" when it did not. A reply that begins with a copy of the recalled-memory
        block is stopped at once by the memory stops (``memory_line_stops``): it is empty. One
        that begins with the user's line or a line in the memory block's form was ended there
        (``agentmm.reply_cut``); the character's own name on a line of its own before either
        does not count, and a reply that is only that is empty: generated again as an empty one
        is, but for what it was (``NAME_ONLY``: whether a memory stop cut what followed the name
        is not known, and the model may simply have ended there)."""
        if attempt.interrupted or not played_in(state):
            return ""
        if attempt.began_with:
            return USERS_LINE if attempt.began_with == CUT_USERS_LINE else COPIED_MEMORY
        if attempt.text.strip() or attempt.has_tool_calls or not _memory_stops(state):
            return ""
        return NAME_ONLY if attempt.name_only else COPIED_MEMORY

    def _reply(self, state: ChatState, attempt: _Attempt, started: float, redo: str = "") -> dict[str, Any]:
        """The turn's reply (``attempt``'s) and its trace; ``redo``: why the reply was generated a
        second time (the trace says so, and a second reply with nothing of its own is a line
        saying so)."""
        chunks, interrupted, first = attempt.chunks, attempt.interrupted, attempt.first
        ended = time.perf_counter()
        # Added up once here, not chunk by chunk while tokens come (each addition builds a
        # message: ~3.5 ms of a 128-token reply on the loop the tokens come through, vs ~0.9).
        # A model that does not stream yields its whole message once (an AIMessage, not a chunk).
        reply = add_ai_message_chunks(chunks[0], *chunks[1:]) if len(chunks) > 1 else (chunks[0] if chunks else None)
        message = _final_message(reply, interrupted)
        if redo and (again := self._nothing_of_its_own(state, attempt)):
            message = _no_reply(message, again)
        if state.get("intent") == "ooc":
            message.response_metadata["ooc"] = True  # said out of character: the UIs mark it
        usage = message.usage_metadata or {}
        # After tool calls this turn generates again: the turn's usage and time add up.
        before = state.get("trace") or {}
        again = "generate" in before.get("path", [])
        spent = before.get("usage", {}) if again else {}
        took = before.get("timings", {}).get("generate_s", 0.0) if again else 0.0
        ttft = before["timings"]["generate_ttft_s"] if again else round((first or ended) - started, 4)
        started_with = message.response_metadata.get("reply_start")
        extra: dict[str, Any] = {"reply_start": started_with} if started_with else {}
        if sampling := persona_sampling(self.personas, state.get("persona"), self.fixed):
            extra["persona_sampling"] = sampling
        if redo:
            extra["reply_again"] = redo
        trace = trace_step(
            state,
            "generate",
            timings={"generate_ttft_s": ttft, "generate_s": round(took + ended - started, 4)},
            usage={  # a generate stopped before it began (Ctrl-C during a tool) keeps the last prompt's size
                "prompt_tokens": usage.get("input_tokens", 0) or spent.get("prompt_tokens", 0),
                "completion_tokens": spent.get("completion_tokens", 0) + usage.get("output_tokens", 0),
            },
            cache=dict(message.response_metadata.get("cache", {})),
            interrupted=interrupted,
            **extra,
        )
        return {"messages": [message], "trace": trace}


@dataclass
class _Attempt:
    """One generation of the reply: its chunks, when its first text came, whether it was stopped."""

    chunks: list[AIMessageChunk] = field(default_factory=list)
    first: float | None = None
    interrupted: bool = False
    # Where the reply stops being the character's (``agentmm.reply_cut``; None: not watched),
    # and what it began with when that was at its very start: the stream is ended there, as a
    # stop string would, and the reply is cut there.
    cut: ReplyCut | None = None
    began_with: str = ""
    name_only: bool = False  # the ended reply held the character's own name line and nothing more
    _seen: str = ""  # the reply's text so far

    @property
    def text(self) -> str:
        return "".join(chunk.text for chunk in self.chunks)

    @property
    def has_tool_calls(self) -> bool:
        return any(getattr(chunk, "tool_call_chunks", None) or getattr(chunk, "tool_calls", None)
                   for chunk in self.chunks)  # fmt: skip

    def _take(self, chunk: AIMessageChunk, cancel: Any) -> bool:
        """Keep ``chunk``; whether the stream ends here: the run's cancel flag is set, or the
        reply began with the user's line."""
        if self.first is None and chunk.content:
            self.first = time.perf_counter()
        self.chunks.append(chunk)
        if self.cut is not None and chunk.text:
            self._seen += chunk.text
            lead = self.cut.opening(self._seen)  # the character's own name line, not its text
            if lead is not None and (found := self.cut.find(self._seen[lead:])) is not None:
                kept = self._seen[lead : lead + found[0]].rstrip()
                self._cut_to(lead + len(kept))
                self.began_with = found[1] if not kept.strip() else ""
                return True
        if cancel is not None and cancel.is_set():
            self.interrupted = True
        return self.interrupted

    def _cut_to(self, size: int) -> None:
        """Keep the reply's first ``size`` characters of text (its chunks' other fields kept)."""
        kept: list[AIMessageChunk] = []
        for chunk in self.chunks:
            text = chunk.text
            if text and size <= 0:
                continue
            if text and len(text) > size and isinstance(chunk.content, str):
                chunk = chunk.model_copy(update={"content": text[:size]})
            size -= len(text)
            kept.append(chunk)
        self.chunks = kept

    def _drop_opening(self) -> None:
        """Take the character's own name line off the ended reply's start ("Odo Finch:\\n",
        ``ReplyCut.opening``): a reply that was only that has no text left, as an empty one."""
        size = self.cut.opening(self.text, ended=True) if self.cut is not None else 0
        if not size:
            return
        self.name_only = size == len(self.text)
        kept: list[AIMessageChunk] = []
        for chunk in self.chunks:
            text = chunk.text
            if text and size > 0:
                if isinstance(chunk.content, str):
                    chunk = chunk.model_copy(update={"content": text[size:]})
                size -= len(text)
            kept.append(chunk)
        self.chunks = kept

    def run(self, stream: Any, cancel: Any) -> None:
        try:
            for chunk in stream:
                if self._take(chunk, cancel):
                    break
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        self._drop_opening()

    async def arun(self, stream: Any, cancel: Any, stops_itself: bool) -> None:
        try:
            async for chunk in stream:
                if self._take(chunk, cancel) and not (stops_itself and self.interrupted):
                    break
        finally:
            await stream.aclose()
        self._drop_opening()


# Why a played reply was generated again (the trace's ``reply_again``), and what the reply says
# when the second one has nothing of the character's own either: an empty reply said nothing.
COPIED_MEMORY = "copied memory"
USERS_LINE = "the user's line"
NAME_ONLY = "the character's name only"  # its own name on a line of its own, then nothing
NO_REPLY = {
    COPIED_MEMORY: "(no reply: the model began its answer twice by copying its memory notes, and that was cut; "
    "say something else, or retry)",
    USERS_LINE: "(no reply: the model began its answer twice by writing your next line, and that was cut; "
    "say something else, or retry)",
    NAME_ONLY: "(no reply: twice the model's answer was only the character's name, and nothing after it; "
    "say something else, or retry)",
}
NUDGE = "(Answer in your own words, in character: do not copy the notes above, and do not write {user}'s lines.)"


def _reply_cut(state: ChatState, user: str, personas: PersonaSource | None = None) -> ReplyCut | None:
    """Where a played reply stops being the character's: the user's line (unless the user goes
    by the character's name) and lines in the memory block's form; None for a reply not played."""
    return reply_cut_for(user, played_in(state), personas)


def played_in(state: Mapping[str, Any]) -> str | None:
    """The persona a turn plays in character: none for an out-of-character turn."""
    return state.get("persona") if state.get("intent") != "ooc" else None


def reply_cut_for(user: str, played: str | None, personas: PersonaSource | None = None) -> ReplyCut | None:
    """``_reply_cut`` for a known played persona: the one place the generate node and TurnStream
    (which holds back on screen what the node cuts) build it, so the two cannot drift apart."""
    if not played:
        return None
    nickname = nickname_of(personas, played)
    return ReplyCut(users_line_start(user, played, nickname), own=character_names(played, nickname))


def nickname_of(personas: PersonaSource | None, name: str) -> str:
    """The played persona's V3 nickname ("" when it has none or is not found)."""
    persona = personas().find(name) if personas is not None else None
    return persona.nickname if persona is not None else ""


def _memory_stops(state: ChatState) -> list[str]:
    """The stops for copies of the recalled-memory blocks in the window's prompt, newest first."""
    window = state["messages"][state.get("window_start", 0) :]
    return memory_line_stops([turn_context(m) for m in reversed(window)])


def _nudged(prompt: list[BaseMessage], user: str) -> list[BaseMessage]:
    """``prompt`` with a reminder after its last message for a reply generated again, when that
    message is the user's (after a tool's result the prompt is left as it was)."""
    last = prompt[-1] if prompt else None
    if not isinstance(last, HumanMessage):
        return prompt
    nudge = NUDGE.format(user=user or "the user")
    content: Any = f"{last.content}\n\n{nudge}" if isinstance(last.content, str) else [
        *last.content, {"type": "text", "text": nudge}]  # fmt: skip
    return [*prompt[:-1], last.model_copy(update={"content": content})]


def _no_reply(message: AIMessage, why: str) -> AIMessage:
    """The line a reply with nothing of its own becomes: a new message (not the streamed one), so
    the turn's stream shows it; marked ``no_reply`` so it is not remembered nor put in a prompt."""
    return AIMessage(
        content=NO_REPLY[why],
        id=f"run-no-reply-{uuid.uuid4().hex}",
        usage_metadata=message.usage_metadata,
        response_metadata={**message.response_metadata, "no_reply": why},
    )


def _name_stops(configured: list[str] | None, memory_lines: list[str]) -> list[str]:
    """The model's own stop strings and the copies of the recalled-memory blocks in its prompt,
    their header or a line in their exact form ("- (7 December 2026) User: ...",
    ``memory_lines``), which a small model writes in a long thread: anywhere, the reply's very
    start included (``memory_line_stops``). The user's line ("\\nAda:", SillyTavern's "names as
    stop strings") is no stop string: ``agentmm.reply_cut`` ends the reply there from its text,
    in more forms ("ada:", "**Ada:**"), and tells one that began so (a stop would cut it to
    nothing, taken for a copied memory) from one with nothing of its own."""
    stops = list(configured or [])
    for line in memory_lines:
        if line and line not in stops:
            stops.append(line)
    return stops


def _seed(runtime: Runtime[TurnContext]) -> dict[str, Any]:
    """The reply's sampling seed from the run's context (``Agent.retry``), as the model's kwargs."""
    seed = run_context(runtime.context).seed
    return {"seed": seed} if seed is not None else {}


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
        tool_calls=[{**c, "id": c.get("id") or _call_id()} for c in reply.tool_calls],
        invalid_tool_calls=[{**c, "id": c.get("id") or _call_id()} for c in reply.invalid_tool_calls],
    )


def _call_id() -> str:
    """An id for a call the model made without one (a malformed call often has none). It goes
    on the reply itself, not only on the tools node's answer: the thread then pairs each call
    with its result, as a prompt, an export and ``threads import`` read it."""
    return f"call_{uuid.uuid4().hex[:16]}"


PersonaSource = Callable[[], PersonaRegistry]


def persona_sampling(personas: PersonaSource | None, name: str | None, fixed: frozenset[str]) -> dict[str, Any]:
    """A played persona's sampling (``[sampling]``, a card's ``extensions.agentmm.sampling``),
    less what the user set for this run (``fixed``: a flag, the environment or an argument),
    which wins over the persona's file; a config file's value does not."""
    persona = personas().find(name) if personas is not None and name else None
    sampling = (persona.sampling or {}) if persona is not None else {}
    return {key: value for key, value in sampling.items() if value is not None and key not in fixed}


def persona_model(settings: Settings, persona: Persona | None) -> str | None:
    """The model a played persona asks for (``model = ...``, a card's
    ``extensions.agentmm.model``), unless a model was given for this run itself."""
    if persona is None or not persona.model or "model" in settings.given_for_this_run():
        return None
    return persona.model


def _persona_source(registry: PersonaRegistry | None, folder: Path | None = None) -> PersonaSource:
    """The registry (built-ins, ``agentmm.personas`` entry points, ``folder``), created on first
    use: threads without a persona never load one."""
    holder: list[PersonaRegistry] = [registry] if registry is not None else []

    def source() -> PersonaRegistry:
        if not holder:
            holder.append(PersonaRegistry(folder))
        return holder[0]

    return source


def build_graph(
    settings: Settings | None = None,
    *,
    model: BaseChatModel | str | os.PathLike[str] | None = None,
    checkpointer: BaseCheckpointSaver | bool | None = None,
    store: BaseStore | None = None,
    tools: Sequence[BaseTool | str] | None = None,
    personas: PersonaRegistry | None = None,
    perception: Perception | None = None,
    counter: TokenCounter | None = None,
    runtime: ResourceRuntime | None = None,
) -> CompiledStateGraph:
    """The turn graph, configured by ``settings`` (default: ``load_settings()``).

    Each argument replaces what the settings would give: ``model`` (any LangChain
    ``BaseChatModel``, or a model name or file as the ``model`` setting takes; default: the
    configured one, on ``settings.model_url``'s server or the GGUF, loaded on its first turn),
    ``checkpointer`` (none: the caller's server or outer graph brings one; ``True`` for a node of
    your own graph: the turn's own state, the persona played, the rolling summary and the window,
    is kept in your graph's checkpointer from turn to turn, LangGraph's subgraph persistence),
    ``store`` (any
    LangGraph ``BaseStore``), ``tools`` (LangChain tools, or tool names as the ``tools`` setting
    takes; default: those named in ``settings.tools``), ``personas`` (default: the built-ins,
    the ``agentmm.personas`` entry points and ``settings.personas_dir``), ``perception`` (the
    captioner and speech model attachments go through) and ``counter`` (default: the model's own
    tokenizer where it has one). ``runtime`` is where the tools and perception open what they
    load (models, the image index): the ``Agent``'s, closed with it (default: the tools
    package's process runtime, ``agentmm.tools.shared_runtime``); tools that name a factory are
    built over it and ``settings`` (``agentmm.plugins.build_tools``).

    Long-term memory (recall before compose, remember after the reply) is part of the turn when
    ``settings.memory`` is on or a ``store`` is given; its nodes use the store the graph runs
    with (LangGraph's ``Runtime.store``): the one given here, or the one LangGraph's server
    hands the graph. Pictures go to ``model`` itself when it says it ``accepts_images``
    (``ChatLlamaCpp`` with an mmproj), to the captioner otherwise. Tools named in
    ``settings.approve_tools`` or marked ``requires_approval`` pause the turn for a yes/no
    (``interrupt``; resume with ``Command(resume=True|False)``).
    """
    from agentmm.graphs.intent import DecideIntent
    from agentmm.graphs.memory import Recall, Remember
    from agentmm.graphs.perceive import Perceive
    from agentmm.graphs.summarize import Summarize, summary_pending
    from agentmm.plugins import build_tools, enabled_tools

    if settings is not None and not isinstance(settings, Settings):
        raise SettingsError(not_settings(settings))
    model, tools, named = model_and_tools(model, tools)
    settings = settings if settings is not None else load_settings()
    settings = settings.updated(**named) if named else settings
    if model is None:
        from agentmm.model_server import chat_model

        model = chat_model(settings)
    memory = settings.memory or store is not None
    _check_indexed(store)
    source = _persona_source(personas, settings.personas_dir)
    chosen = enabled_tools(settings, runtime) if tools is None else build_tools(tools, settings, runtime)
    if chosen and type(model).bind_tools is BaseChatModel.bind_tools:  # LangChain's own: NotImplementedError
        names = ", ".join(tool.name for tool in chosen)
        raise ToolsNotSupportedError(
            f"{type(model).__name__} cannot call tools (it has no bind_tools), and tools are enabled ({names}): "
            "turn them off (tools=[], the tools setting or --tool), or use a chat model that supports tool calling"
        )
    toolbox = ToolBox(chosen, source, approve=settings.approve_tools, timeout_s=settings.tool_timeout_s,
                      max_rounds=settings.max_tool_rounds) if chosen else None  # fmt: skip
    phrasing = ObservationPhrasing.from_settings(settings)
    native_images = getattr(model, "accepts_images", False) is True

    builder = StateGraph(ChatState, context_schema=TurnContext, input_schema=ChatInput)
    builder.add_node("ingest", Ingest(source, settings.persona))
    builder.add_node("perceive", Perceive(perception or Perception(settings=settings, runtime=runtime),
                                          model_label(model) if native_images else None))  # fmt: skip
    counter = counter or TokenCounter.for_model(model)
    if settings.intent:
        examples = intent_examples(settings, runtime) if settings.intent_classifier == "examples" else None
        builder.add_node("intent", DecideIntent(model, source, toolbox, memory=memory,
                                                recall_for=settings.intent_recall, examples=examples))  # fmt: skip
    if memory:
        builder.add_node("recall", Recall(settings.memory_k, counter=counter, relevance=settings.memory_min_similarity,
                                          max_tokens=settings.memory_max_tokens,
                                          window_tokens=settings.memory_window_tokens,
                                          rounds=settings.memory_rounds,
                                          by_date=settings.memory_by_date,
                                          rerank=settings.memory_rerank))  # fmt: skip
    composer = Composer(counter, source, settings.system_prompt, settings.n_ctx, settings.max_tokens, toolbox,
                        phrasing, reminder=settings.persona_reminder,
                        introduction=settings.persona_introduction, fixed=settings.given_for_this_run())  # fmt: skip
    builder.add_node("compose", composer)
    generator = Generator(model, toolbox, native_images, guard=settings.persona_guard,
                          copy_limit=settings.persona_copy_limit, identity_start=settings.persona_identity_start,
                          personas=source, fixed=settings.given_for_this_run())  # fmt: skip
    # Both paths: sync runs call the model's stream, async ones (the Agent's) its astream.
    builder.add_node("generate", RunnableCallable(generator, generator.acall, name="generate", trace=False))
    if toolbox is not None:
        tools_node = RunTools(toolbox)  # an async run awaits async-only tools on its loop (an Agent's: on threads)
        builder.add_node("tools", RunnableCallable(tools_node, tools_node.acall, name="tools", trace=False))
    if memory:
        builder.add_node("remember", Remember(phrasing, counter=counter, max_tokens=settings.memory_max_tokens))
    builder.add_node("summarize", Summarize(model, summary_tokens(settings.n_ctx)))

    # The edges, as ARCHITECTURE.md draws the turn:
    # ingest -> [perceive] -> [intent] -> [recall] -> compose -> generate <-> [tools] -> [remember] -> [summarize]
    after_input = "recall" if memory else "compose"
    gather = "intent" if settings.intent else after_input  # where the turn goes once its input is read
    builder.add_edge(START, "ingest")
    builder.add_node("refuse", refuse)

    def after_ingest(state: ChatState) -> str:
        if (state.get("trace") or {}).get("refused"):
            return "refuse"
        return "perceive" if state.get("attachments") else gather

    builder.add_conditional_edges("ingest", after_ingest, ["refuse", "perceive", gather])
    builder.add_edge("refuse", END)
    builder.add_edge("perceive", gather)
    if settings.intent and memory:
        builder.add_conditional_edges("intent", lambda s: "recall" if s.get("intent") in settings.intent_recall
                                      else "compose", ["recall", "compose"])  # fmt: skip
    elif settings.intent:
        builder.add_edge("intent", "compose")
    if memory:
        builder.add_edge("recall", "compose")
    builder.add_edge("compose", "generate")

    def fold_or_end(state: ChatState) -> str:
        return "summarize" if summary_pending(state) else END

    def after_generate(state: ChatState) -> str:
        messages = state["messages"]
        wants = bool(messages) and wants_tools(messages[-1])  # empty after an undo of the only exchange
        if toolbox is not None and wants and rounds_this_turn(messages) <= toolbox.max_rounds:
            return "tools"
        return "remember" if memory else fold_or_end(state)

    replied = ["remember"] if memory else ["summarize", END]
    builder.add_conditional_edges("generate", after_generate, (["tools"] if toolbox else []) + replied)
    if toolbox is not None:
        builder.add_edge("tools", "generate")
    if memory:
        builder.add_conditional_edges("remember", fold_or_end, ["summarize", END])
    builder.add_edge("summarize", END)
    return builder.compile(checkpointer=checkpointer, store=store, name=GRAPH_NAME)


def intent_examples(settings: Settings, runtime: ResourceRuntime | None) -> ExampleClassifier:
    """The examples classifier over the configured embedder, made on the first turn it decides:
    the runtime's, which the memory store shares, so recall's search of the same text finds
    its vector in the embedder's query cache (default: the tools package's process runtime)."""

    def embedder() -> Any:
        from agentmm.memory.embeddings import SentenceTransformerEmbeddings
        from agentmm.tools.shared_runtime import process_runtime

        return SentenceTransformerEmbeddings.from_settings(settings, runtime=runtime or process_runtime())

    return ExampleClassifier(embedder)


def model_label(model: BaseChatModel) -> str:
    """The model's name as the trace shows it."""
    name = getattr(model, "display_name", None) or getattr(model, "model_name", None) or getattr(model, "model", None)
    return str(name or type(model).__name__)
