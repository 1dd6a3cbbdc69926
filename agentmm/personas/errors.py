"""Typed errors for personas, cards and lorebooks.

Each is an ``AgentmmError`` so the CLI prints its message as one line and exits non-zero.
Messages name the file (when there is one) and say what is wrong in words a person can act
on; they never carry a traceback or a wall of bytes.
"""

from __future__ import annotations

from agentmm.errors import AgentmmError


class PersonaError(AgentmmError):
    """Base class of every persona problem a user can cause and fix."""


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
