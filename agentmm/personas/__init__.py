"""Personas: who the agent plays, from native TOML files, character cards and plugins.

The public surface is re-exported here; submodules are named for what they hold:
``model`` (the Persona / Lorebook models), ``cards`` (card JSON V1/V2/V3),
``character_book`` (a card's lorebook), ``png`` (card PNGs), ``toml_format`` (native files),
``lorebook`` (activation), ``worldinfo`` (standalone lorebooks), ``macros``, ``registry``
(finding personas), ``files`` (import / export), ``prompt`` (the persona's part of the
prompt). Nothing here imports LangChain or a model.
"""

from __future__ import annotations

from agentmm.personas.cards import Limits, card_from_persona, load_card_json, persona_from_card
from agentmm.personas.errors import (
    CardEncodingError,
    CardError,
    CardJSONError,
    CardSpecError,
    CardTooLargeError,
    CorruptPNGError,
    LorebookError,
    NoCardInPNGError,
    NotAPNGError,
    PersonaError,
    PersonaFormatError,
    PersonaNotFoundError,
    UnknownFormatError,
    UnsupportedExportError,
)
from agentmm.personas.files import (
    Validation,
    aexport,
    aimport_file,
    export,
    import_bytes,
    import_file,
    validate,
    validation,
)
from agentmm.personas.lorebook import ActivatedEntry, activate
from agentmm.personas.macros import expand
from agentmm.personas.model import Lorebook, LoreEntry, Persona
from agentmm.personas.png import load_card_png
from agentmm.personas.prompt import greeting, lore_text, persona_parts, post_history
from agentmm.personas.registry import PersonaRegistry, persona_summary
from agentmm.personas.toml_format import template
from agentmm.personas.worldinfo import load_world_info

__all__ = [
    "ActivatedEntry",
    "CardEncodingError",
    "CardError",
    "CardJSONError",
    "CardSpecError",
    "CardTooLargeError",
    "CorruptPNGError",
    "Limits",
    "LoreEntry",
    "Lorebook",
    "LorebookError",
    "NoCardInPNGError",
    "NotAPNGError",
    "Persona",
    "PersonaError",
    "PersonaFormatError",
    "PersonaNotFoundError",
    "PersonaRegistry",
    "UnknownFormatError",
    "UnsupportedExportError",
    "Validation",
    "activate",
    "aexport",
    "aimport_file",
    "card_from_persona",
    "expand",
    "export",
    "greeting",
    "import_bytes",
    "import_file",
    "load_card_json",
    "load_card_png",
    "load_world_info",
    "lore_text",
    "persona_from_card",
    "persona_parts",
    "persona_summary",
    "post_history",
    "template",
    "validate",
    "validation",
]
