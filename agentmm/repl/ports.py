"""What the terminal chat needs of an agent and of a turn, as Protocols.

Why: the chat is the CLI's (``cli.py`` hands it an ``agentmm.graphs.agent.Agent``), and the
arrows go one way, ``cli -> graphs -> tools -> agentmm``; this package sits under ``agentmm/``,
so it names no graph class, not even for typing. The ``Agent`` and its ``TurnStream`` satisfy
these structurally; a test can hand the chat anything else that does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.store.base import BaseStore

    from agentmm.personas import Persona, PersonaRegistry
    from agentmm.settings import Settings
    from agentmm.state import TurnContext


# The model a persona asks for, unless the run chose one (``graphs.chat.persona_model``).
PersonaModel = Callable[["Settings", "Persona | None"], "str | None"]


class ChatTurn(Protocol):
    """One turn as the chat plays it: iterated for the reply's text, stoppable from a signal."""

    text: str
    context: TurnContext
    on_observations: Callable[[list[dict[str, Any]]], None] | None
    on_tool_calls: Callable[[list[dict[str, Any]]], None] | None
    on_approval: Callable[[dict[str, Any]], bool] | None

    def __iter__(self) -> Iterator[str]: ...

    def cancel(self) -> None: ...

    @property
    def result(self) -> Any: ...


class UndoneExchange(Protocol):
    """What ``undo`` took out, as the chat reports it."""

    text: str
    attachments: list[str]
    messages_removed: int
    memories_forgotten: list[str]


class ChatAgent(Protocol):
    """The agent the chat talks to (``/model`` makes another of the same type, sharing the
    thread database and the memory store)."""

    settings: Settings
    configured_model: str

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        model: Any = None,
        checkpointer: BaseCheckpointSaver | None = None,
        store: BaseStore | None = None,
    ) -> None: ...

    @property
    def model(self) -> Any: ...

    @property
    def checkpointer(self) -> BaseCheckpointSaver: ...

    @property
    def store(self) -> BaseStore | None: ...

    @property
    def personas(self) -> PersonaRegistry: ...

    def warm_up(self) -> None: ...

    def close(self) -> None: ...

    def attachment_kind(self, path: str | Path) -> str: ...

    def stream(self, text: str, thread_id: str | None = None, *, persona: str | None = None, greeting: int = 0,
               attachments: Sequence[str | Path] = ()) -> ChatTurn: ...  # fmt: skip

    def retry(self, thread_id: str, *, seed: int | None = None) -> ChatTurn: ...

    def undo(self, thread_id: str) -> UndoneExchange: ...
