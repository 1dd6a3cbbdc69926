"""Typed errors for personas, cards and lorebooks.

Each is an ``AgentmmError`` so the CLI prints its message as one line and exits non-zero.
Messages name the file (when there is one) and say what is wrong in words a person can act
on; they never carry a traceback or a wall of bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from agentmm.errors import AgentmmError, Hint


class PersonaError(AgentmmError):
    """Base class of every persona problem a user can cause and fix.

    The message is one line; ``problems`` holds every problem found (each one line naming
    the file), so ``personas validate`` can list them all instead of making the author fix
    one, run again, and meet the next.
    """

    def __init__(self, message: str, *, problems: Sequence[str] = (), see: Hint | None = None) -> None:
        super().__init__(message, see=see)
        self.problems: list[str] = list(problems) or [str(self)]

    @classmethod
    def listing(cls, where: str, problems: Sequence[str]) -> Self:
        """One error for several problems of the file ``where`` (at least one): its message is
        the first and a count of the rest."""
        return cls.several([f"{where}: {problem}" for problem in problems])

    @classmethod
    def several(cls, lines: Sequence[str]) -> Self:
        """One error for several problems, each already a whole line (at least one)."""
        more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
        return cls(lines[0] + more, problems=lines)


class PersonaNotFoundError(PersonaError):
    """No persona has the name asked for."""


class PersonaFormatError(PersonaError):
    """A native persona file (TOML) does not parse or has bad field values."""


class UnknownFormatError(PersonaError):
    """A file is neither a persona TOML, a card JSON nor a card PNG."""


class UnsupportedExportError(PersonaError):
    """An export format name that agentmm does not write."""


class CardError(PersonaError):
    """A character card (JSON or PNG) cannot be read."""


class NotAPNGError(CardError):
    """The file claims to be a PNG (by name or by the caller) but is not one."""


class CorruptPNGError(CardError):
    """The file starts like a PNG but is truncated or damaged."""


class NoCardInPNGError(CardError):
    """A valid PNG that carries no ``chara`` or ``ccv3`` text chunk."""


class CardEncodingError(CardError):
    """The card chunk is not valid base64, or the decoded bytes are not UTF-8."""


class CardJSONError(CardError):
    """The card text is not valid JSON."""


class CardSpecError(CardError):
    """Valid JSON that is not a character card this reader understands."""


class CardTooLargeError(CardError):
    """The card JSON (or file) is over the configured size cap."""


class LorebookError(PersonaError):
    """A lorebook / world-info file cannot be read."""
