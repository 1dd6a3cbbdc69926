"""Typed exceptions for agentmm's library users.

Every error a user can cause (a missing file, a bad setting, an unknown thread) is an
``AgentmmError``; the CLI prints its message as one line and exits non-zero. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Hint:
    """Where to look next, said for each way in: a command for the terminal, a route for an
    HTTP client (empty: nothing to say there)."""

    cli: str
    http: str = ""


SEE_THREADS = Hint(cli="see: agentmm threads list", http="see: GET /threads")
SEE_MEMORIES = Hint(cli="see: agentmm memory list", http="see: GET /memories")
SEE_PERSONAS = Hint(cli="see: agentmm personas list", http="see: GET /personas")
SEE_TOOLS = Hint(cli="see: agentmm tools list")


class AgentmmError(Exception):
    """Base class of every error a user can cause and fix. ``see`` (a ``Hint``) ends the
    message in parentheses: the terminal's words in ``str()``, an HTTP client's in
    ``for_http()``."""

    exit_code: int = 2

    def __init__(self, *args: object, see: Hint | None = None) -> None:
        super().__init__(*args)
        self.see = see

    def __str__(self) -> str:
        return self._with(self.see.cli if self.see else "")

    def for_http(self) -> str:
        """The message as an HTTP API says it: its hint names a route, not a command."""
        return self._with(self.see.http if self.see else "")

    def _with(self, hint: str) -> str:
        said = super().__str__()
        return f"{said} ({hint})" if hint else said


class SettingsError(AgentmmError):
    """A setting has a bad value (config file, environment or flag)."""


class DataDirError(AgentmmError):
    """The data directory cannot be created or written."""


class EmptyInputError(AgentmmError):
    """A turn was asked for with nothing to say."""


class ToolsNotSupportedError(AgentmmError):
    """Tools were given with a chat model that cannot be bound to them (no ``bind_tools``)."""


class InvalidInputError(AgentmmError):
    """A graph run was given an input that is not a message: ``{"input": 5}``."""


class InvalidContextError(InvalidInputError, TypeError):
    """A run's context (``TurnContext``) with a key it does not have, or a value of the wrong
    type: ``context={"persona": 5}``; or an ``Agent`` call's argument of the wrong type
    (``agent.chat("hi", thread_id=5)``). A ``TypeError`` too, as Python's own for a bad argument."""


class InvalidTextError(AgentmmError):
    """Text that is not valid Unicode: a lone surrogate, from a JSON ``"\\ud800"`` or from bytes
    that are not UTF-8 on a command line. No tokenizer, embedder or database can take it."""

    @classmethod
    def check(cls, text: str, what: str) -> str:
        """``text`` if it can be written as UTF-8, else this error naming ``what`` it is."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise cls(f"{what} is not valid Unicode text (at character {exc.start + 1}; was it UTF-8?)") from None
        return text


class ThreadNotFoundError(AgentmmError):
    """A thread id names no saved conversation."""


class NothingToUndoError(AgentmmError):
    """An undo or retry was asked of a thread that holds no message yet."""


class ModelError(AgentmmError):
    """A model cannot be found, read or loaded."""


class ModelNotFoundError(ModelError):
    """The model path or id names no file, shipped model or reachable hub file."""


class NotAChatModelError(ModelError, TypeError):
    """What was given as the chat model is neither a LangChain ``BaseChatModel`` instance nor a
    model setting (a GGUF path, a shipped model's name or a hub id)."""


class NotAGGUFError(ModelError):
    """The file exists but is not a GGUF model."""


class CorruptModelError(ModelError):
    """The file starts like a GGUF model but is truncated or damaged."""


class ModelTooLargeError(ModelError):
    """Loading the model would need more memory than this machine has free."""


class InputTooLongError(AgentmmError):
    """A message does not fit in the model's context window even on its own."""


class TurnStoppedError(AgentmmError):
    """The turn was cancelled before its reply began (Ctrl-C while a voice note was being
    transcribed): it is rolled back, so the thread and long-term memory are as they were. A
    reply already begun is never this: it is kept, marked interrupted."""


class UnsupportedContentError(AgentmmError):
    """A message holds content the chat model cannot take: an image for a model without an
    image projector (``mmproj``), audio or a file block, or an image llama.cpp cannot decode."""


class RuntimeClosedError(AgentmmError):
    """A resource was asked of a runtime (an ``Agent``) that has been closed."""


class ModelServerError(ModelError):
    """The model server (``model_url``) cannot be reached, refuses the key, does not serve the
    model asked for, or answers a request with an error."""


# The typed errors defined beside what raises them, importable from here too (read on first use:
# their modules import this one). The perception tools' errors are in ``agentmm.tools.errors``.
_ELSEWHERE = {
    "agentmm.thread_lock": ["ThreadInUseError"],
    "agentmm.threads": ["ThreadImportError"],
    "agentmm.personas.errors": [
        "PersonaError", "PersonaNotFoundError", "PersonaFormatError", "UnknownFormatError", "UnsupportedExportError",
        "CardError", "NotAPNGError", "CorruptPNGError", "NoCardInPNGError", "CardEncodingError", "CardJSONError",
        "CardSpecError", "CardTooLargeError", "LorebookError",
    ],
    "agentmm.memory.errors": [
        "MemoryStoreError", "StoreInUseError", "StoreDamagedError", "StoreUnreachableError", "VectorExtensionError",
        "EmbeddingDimsMismatchError", "InvalidFilterError", "EmbedderError",
    ],
    "agentmm.memory.manage": ["MemoryNotFoundError", "ExportFileError", "NoteTooLongError"],
    "agentmm.memory.locomo": ["EvalFileError"],
    "agentmm.plugins": ["ToolNotFoundError"],
    "agentmm.postgres": ["DatabaseError"],
    "agentmm.native_probe": ["NativeCrashError"],
    "agentmm.repl.transcript": ["TranscriptError"],
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _ELSEWHERE.items() for name in names}
__all__ = sorted(
    [name for name, value in list(globals().items()) if isinstance(value, type) and issubclass(value, AgentmmError)]
    + ["Hint", *_MODULE_OF]
)


def __getattr__(name: str) -> type[AgentmmError]:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    error: type[AgentmmError] = getattr(importlib.import_module(module), name)
    return error


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
