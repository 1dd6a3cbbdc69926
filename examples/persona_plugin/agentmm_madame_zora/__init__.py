"""An agentmm persona plugin: a persona file shipped as package data, found by entry point.

The ``agentmm.personas`` entry point may name a Persona, a path (a TOML/JSON/PNG card or a
folder of them) or a callable returning either; this one returns the path of its TOML file.
"""

from __future__ import annotations

from pathlib import Path


def persona_file() -> Path:
    return Path(__file__).with_name("madame-zora.toml")
