"""The persona data model: one ``Persona`` with a ``Lorebook`` of ``LoreEntry`` items.

Every source (native TOML, card V1/V2/V3 JSON, card PNG, world-info JSON, plugins) ends up
as these models, so the rest of agentmm reads one shape. Cards carry much more than agentmm
uses (extensions of other apps, V3 assets, unknown fields); instead of modelling all of it,
the raw card dict rides along in ``Persona.card`` and each lore entry keeps its raw dict in
``LoreEntry.raw``. Export starts from those raw dicts and writes back only what changed, which
is what makes import -> export -> import lossless.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SelectiveLogic = Literal["and_any", "and_all", "not_any", "not_all"]
LorePosition = Literal["before_char", "after_char"]


class LoreEntry(BaseModel):
    """One lorebook entry: text that enters the prompt when its keys show up in the chat.

    ``selective`` turns on the secondary-key filter, combined per ``selective_logic``
    (SillyTavern's AND ANY / AND ALL / NOT ANY / NOT ALL; AND ANY is the default).
    ``probability`` (percent, SillyTavern's "trigger %") is the chance an entry whose keys
    matched is inserted, rolled each turn; ``use_probability`` false means always.
    """

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(default_factory=list)
    secondary_keys: list[str] = Field(default_factory=list)
    selective: bool = False
    selective_logic: SelectiveLogic = "and_any"
    content: str = ""
    name: str = ""
    comment: str = ""
    id: int | str | None = None
    enabled: bool = True
    constant: bool = False
    case_sensitive: bool = False
    match_whole_words: bool = False
    use_regex: bool = False
    insertion_order: int = 100
    priority: int = 0
    position: LorePosition = "before_char"
    scan_depth: int | None = Field(default=None, ge=0)
    exclude_recursion: bool = False
    prevent_recursion: bool = False
    delay_until_recursion: bool = False
    """Fires only in a recursion pass (SillyTavern's "delay until recursion"), never on the chat alone."""
    probability: int = Field(default=100, ge=0, le=100)
    use_probability: bool = True
    delay: int = Field(default=0, ge=0)
    """SillyTavern's timed effect "delay": the entry cannot fire until the chat holds at least
    this many messages (0: no delay)."""
    sticky: int = Field(default=0, ge=0)
    """SillyTavern's "sticky": once fired, the entry stays in for this many more messages of the
    chat, its keys or not (``timed_effects``)."""
    cooldown: int = Field(default=0, ge=0)
    """SillyTavern's "cooldown": once fired (after its sticky period, if it has one), the entry
    cannot fire for this many messages of the chat."""
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    """The entry as it was in the card (verbatim), so export keeps fields agentmm ignores."""

    @property
    def label(self) -> str:
        """A short human name for traces: name, comment, first key, or id; "" when it has none
        (the caller names it by its place: it was 'None', its missing id as text)."""
        return (
            self.name
            or self.comment
            or (self.keys[0] if self.keys else "")
            or ("" if self.id is None else str(self.id))
        )

    @property
    def chance(self) -> int | None:
        """The percent chance it is inserted once its keys matched; None when it always is."""
        return self.probability if self.use_probability and self.probability < 100 else None


class Lorebook(BaseModel):
    """A set of lore entries plus the book-level scan settings."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    description: str = ""
    scan_depth: int | None = Field(default=None, ge=0)
    """How many of the latest messages are scanned for keys (None: the default, 2)."""
    token_budget: int | None = None
    """Most tokens all fired entries may take together (None or <= 0: no limit)."""
    recursive_scanning: bool = False
    max_recursion_depth: int = Field(default=3, ge=0)
    """How many rounds fired entries may trigger further entries; bounds runaway books."""
    entries: list[LoreEntry] = Field(default_factory=list)
    raw: dict[str, Any] = Field(default_factory=dict, repr=False)
    """The book as it was in the card, without ``entries`` (those keep their own raw)."""


class Sampling(BaseModel):
    """What a persona may set of how its replies are sampled; anything else is a typo."""

    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: float | None = Field(None, ge=0.0, le=5.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(None, gt=0.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = Field(None, max_length=16)


class Persona(BaseModel):
    """Who the agent plays: the character's text, greetings, lore, tools and model hints.

    ``greetings[0]`` is the main greeting (a card's ``first_mes``); the rest are alternates.
    ``card`` is the raw card dict when the persona came from a card (None for native TOML);
    ``image`` is the PNG it came from with its card chunks taken out (pixels and every other
    chunk byte-exact), so a PNG export puts the card back on the same picture.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    nickname: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    greetings: list[str] = Field(default_factory=list)
    example_dialogue: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    creator_notes: str = ""
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    lorebook: Lorebook = Field(default_factory=Lorebook)
    allowed_tools: list[str] = Field(default_factory=list)
    model: str | None = None
    sampling: dict[str, Any] | None = None
    """Sampling overrides for this persona: the fields of ``Sampling``, as given."""
    source: str = ""
    """Where it came from: ``builtin:<file>``, ``user:<path>``, ``entrypoint:<name>`` or a path."""
    card: dict[str, Any] | None = Field(default=None, repr=False)
    image: bytes | None = Field(default=None, repr=False)
    notes: list[str] = Field(default_factory=list, repr=False)
    """What reading the file got past, one line each (a ``ccv3`` chunk that could not be read,
    so the card came from ``chara``): not part of the character and never written out, but
    said where the persona is listed or validated rather than lost in silence."""

    @field_validator("name")
    @classmethod
    def _has_a_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("a persona needs a name, not only spaces")
        return name

    @field_validator("sampling")
    @classmethod
    def _known_sampling(cls, sampling: dict[str, Any] | None) -> dict[str, Any] | None:
        """Checked as ``Sampling`` (a typo or ``temperature = "hot"`` is an error where the
        persona is read), kept as the dict given, so an export writes back what was read."""
        if sampling:
            Sampling.model_validate(sampling)
        return sampling

    @property
    def display_name(self) -> str:
        """The name ``{{char}}`` expands to: the V3 nickname when set, else the name."""
        return self.nickname or self.name
