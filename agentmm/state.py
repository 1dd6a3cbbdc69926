"""The typed state of one conversation thread, as the turn graph reads and writes it.

``messages`` is the thread's history (checkpointed per thread). The prompt is *not* stored:
compose records where the window starts and what it adds, and generate assembles the
messages from that, so a checkpoint holds each message once rather than once per turn.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.channels import EphemeralValue
from langgraph.graph.message import add_messages
from pydantic import InstanceOf
from pydantic.json_schema import SkipJsonSchema
from typing_extensions import TypedDict

from agentmm.errors import InvalidContextError


class PromptPart(TypedDict):
    """One named part of the prompt and its size in the model's tokens."""

    part: str
    tokens: int


class Trace(TypedDict, total=False):
    """Why the agent said what it said: written by each node, printed by ``--json``."""

    turn: int
    path: list[str]
    prompt_parts: list[PromptPart]
    budget: dict[str, int]
    cache: dict[str, int]
    timings: dict[str, float]
    usage: dict[str, int]
    recalled: list[dict[str, Any]]
    # Recalled but not placed (each: id, similarity, reason), the placed block's tokens, and
    # how recall read the store ("incremental" or "full read").
    recall_dropped: list[dict[str, Any]]
    recall_tokens: int
    recall_path: str
    lore: list[dict[str, Any]]
    persona: str
    greeting: str
    dropped_parts: list[str]
    truncated_parts: list[dict[str, Any]]
    persona_sampling: dict[str, Any]
    remembered: list[dict[str, Any]]
    remember_skipped: str
    observations: list[dict[str, Any]]
    summary: dict[str, Any]
    tool_calls: list[dict[str, Any]]
    interrupted: bool
    # The turn's intent, how it was decided, and the routes it took (``agentmm.intent``).
    intent: dict[str, Any]
    # The words the reply was started with (``persona_identity_start``), when it was.
    reply_start: str


class ChatState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    # This turn's input, as given; ingest validates it and appends it to ``messages``. Seen by
    # that one step only (LangGraph's ``EphemeralValue``): a run refused at ingest leaves no
    # input that a later run, given ``messages`` instead, would read.
    input: Annotated[str, EphemeralValue]
    # Index into ``messages`` of the first message still inside the context window. It only
    # moves forward, and in big steps, so the prompt's head stays stable between turns.
    window_start: int
    # The prompt head compose chose (system prompt and persona, stable across the thread's
    # turns) and the post-history instructions placed after this turn's message.
    system_prompt: str
    post_history: str
    # A thread without a persona keeps the system prompt it started with.
    base_prompt: str
    # The persona this thread plays (a name the persona registry knows), if any.
    persona: str
    # When the thread began (ISO 8601): fixes the persona's {{date}}/{{time}} macros.
    started_at: str
    # The rolling summary of the turns that have left the window, and the index into ``messages``
    # it covers up to: the summarize node folds ``messages[summary_through:window_start]`` after
    # the reply, so the turn that moved the window never waits for it.
    summary: str
    summary_through: int
    # The summary, ``summary_through`` and ``window_start`` as the thread's last turn found them
    # (``agentmm.exchange.SUMMARY_RECORD``): a retry of that turn puts them back when the summary
    # had taken in part of what the retry takes out (a raw graph's retry has no other record).
    summary_before: dict[str, Any]
    # The ids of the user messages the thread's last turn answers, in the order sent (several
    # when unanswered ones were joined to it; its message keeps the last one's id), written by
    # ingest, so a run that fails after it keeps them: that message sent again under its id with
    # ``retry`` replaced it in place, and is the exchange a retry answers again (the exchange
    # before it stays); joined ones an outer graph hands back are joined in the order sent.
    turn_message_ids: list[str]
    # The texts of the messages that turn joined before its own (``turn_message_ids`` but the
    # last, in the same order): a retry that sends that turn's own message again (as its input,
    # or under its id) answers them with it; taken out with the joined message, they were lost.
    joined_texts: list[str]
    # As a subgraph: the ids of the messages retries took out, and of those an answered turn
    # joined before its own, which the outer graph keeps (a subgraph cannot take messages out
    # of it) and hands back with each run; ingest takes them out again, so a retried exchange
    # does not come back into this thread, nor a joined message get joined again.
    taken_out_ids: list[str]
    # The lore's sticky and cooldown timers (SillyTavern's timed effects, kept per chat as its
    # ``timedWorldInfo``): {"sticky" | "cooldown": {entry key: {entry, start, end, protected}}},
    # in chat messages (``agentmm.personas.timed_effects``). Written by compose; an undo puts
    # back the turn before's, with the rest of its record.
    lore_timers: dict[str, Any]
    # What recall found for this turn (compose places it with the turn's message).
    recalled: list[dict[str, Any]]
    # Set by recall when this turn's memories fit only once the earlier turns' recalled blocks
    # leave the prompt (the window's memory budget they held): compose takes them out.
    clear_recalled_blocks: bool
    # This turn's attachments and what perception made of them.
    attachments: list[str]
    observations: list[dict[str, Any]]
    # This turn's intent ("" when the graph does not decide one): the later nodes route on it.
    intent: str
    trace: Trace


class ChatInput(TypedDict, total=False):
    """What a run is given: the user's message as ``input`` (text), or as the last of
    ``messages`` (a user message, LangGraph's MessagesState way: LangGraph Studio and
    agent-chat-ui send ``{"messages": [{"role": "user", "content": ...}]}``). Who plays it and
    which greeting opens a new thread are the run's context (``TurnContext``), checked by
    ingest before anything is saved."""

    input: str
    messages: Annotated[list[AnyMessage], add_messages]


@dataclass
class TurnContext:
    """Per-run values that are not state: passed as LangGraph's runtime context."""

    # Set to stop the turn (Ctrl-C, a client gone). Left out of the context's JSON schema, which
    # LangGraph Studio and agent-chat-ui read to offer the other fields (an Event has none).
    cancel: SkipJsonSchema[InstanceOf[threading.Event]] = field(default_factory=threading.Event)
    user_name: str = "User"
    # Switch the thread to this persona from this turn on (a new thread opens with its greeting).
    persona: str | None = None
    # Which greeting opens a new thread: 0 the main one, 1.. the alternates.
    greeting: int = 0
    # Whose long-term memory this is: memories are scoped to (user_id, persona).
    user_id: str = "local"
    # Also recall from (and write to) the user's memory shared by every persona.
    shared_memory: bool = False
    # Files sent with this turn (images, audio), perceived before the reply.
    attachments: list[str] = field(default_factory=list)
    # This turn answers the thread's last message again (``Agent.retry``): ingest takes the last
    # exchange out first, and remember replaces what that turn had written.
    retry: bool = False
    # The sampling seed of this turn's reply (None: the model's own), passed to the model's call.
    seed: int | None = None

    def __new__(cls, *args: Any, **given: Any) -> TurnContext:
        """A key the context does not have is refused by name (LangGraph makes the context from a
        run's ``context`` dict: it was Python's bare ``TypeError`` from ``__init__``)."""
        if unknown := sorted(set(given) - {f.name for f in fields(cls)}):
            known = ", ".join(f.name for f in fields(cls) if f.name != "cancel")
            raise InvalidContextError(f"the run's context has no {', '.join(map(repr, unknown))}: it takes {known}")
        return super().__new__(cls)

    def __post_init__(self) -> None:
        """Values of the wrong type are refused here, by name, before the run starts (a run's
        context may come as JSON, from LangGraph's server or Studio): a persona of 5 was an
        ``AttributeError`` deep in ingest, and a path given as attachments was read letter by
        letter. Attachments are kept as text paths."""
        for name, kinds in _CONTEXT_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
                wanted = " or ".join("None" if kind is type(None) else kind.__name__ for kind in kinds)
                raise InvalidContextError(f"{name} must be {wanted}, not {type(value).__name__}")
        given = self.attachments
        if isinstance(given, (str, bytes, os.PathLike)) or not isinstance(given, (list, tuple)):
            raise InvalidContextError(f"attachments must be a list of file paths, not {type(given).__name__}")
        if bad := [a for a in given if not isinstance(a, (str, os.PathLike))]:
            raise InvalidContextError(f"attachments must be file paths, not {type(bad[0]).__name__}")
        self.attachments = [os.fspath(a) for a in given]


def run_context(given: object) -> TurnContext:
    """The run's context as a ``TurnContext``: LangGraph makes one from a run's ``context`` dict
    only for a graph whose ``context_schema`` it is; a graph used as a node of one without (or
    with its own) is handed the outer run's context as given, and a dict was an
    ``AttributeError`` in the first node that read it. A dict goes through ``TurnContext``'s
    own checks (an unknown key or a wrong type is ``InvalidContextError``); None is the
    defaults; anything else is refused, named."""
    if given is None:
        return TurnContext()
    if isinstance(given, TurnContext):
        return given
    if isinstance(given, Mapping):
        if bad := [key for key in given if not isinstance(key, str)]:
            raise InvalidContextError(f"the run's context keys must be field names, not {type(bad[0]).__name__}")
        return TurnContext(**given)
    raise InvalidContextError(
        f"the run's context must be a TurnContext or a dict of its fields, not {type(given).__name__}: "
        "an outer graph passes its own context to this graph, so give it context_schema=TurnContext "
        "(or none, and a dict)"
    )


# What each field of ``TurnContext`` takes (a bool is an int to Python, but no greeting or seed).
_CONTEXT_TYPES: dict[str, tuple[type, ...]] = {
    "user_name": (str,), "persona": (str, type(None)), "greeting": (int,), "user_id": (str,),
    "shared_memory": (bool,), "retry": (bool,), "seed": (int, type(None)),
}  # fmt: skip


def trace_step(state: ChatState, node: str, **fields: Any) -> Trace:
    """The trace with ``node`` added to its path and ``fields`` merged in."""
    trace: Trace = dict(state.get("trace") or {})  # type: ignore[assignment]
    trace["path"] = [*trace.get("path", []), node]
    if "timings" in fields:  # each node adds its own timings to those before it
        fields["timings"] = {**trace.get("timings", {}), **fields["timings"]}
    trace.update(fields)  # type: ignore[typeddict-item]
    return trace
