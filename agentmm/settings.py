"""One validated ``Settings`` object: config file < ``AGENTMM_*`` environment < explicit values.

Only this module reads the environment; everything else is handed a ``Settings``.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import tomllib
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings import SettingsError as PydanticSettingsError

from agentmm.errors import SettingsError
from agentmm.intent import Intent
from agentmm.observations import (
    IMAGE_NOTE,
    NATIVE_IMAGE_NOTE,
    SILENT_AUDIO_NOTE,
    UNHEARD_AUDIO_NOTE,
    UNREADABLE_NOTE,
    UNSEEN_IMAGE_NOTE,
    VOICE_NOTE,
    check_note,
)

APP_NAME = "agentmm"
ENV_PREFIX = "AGENTMM_"
CONFIG_ENV = "AGENTMM_CONFIG"

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, helpful companion. Answer in a natural, conversational way and "
    "keep replies short unless asked for more."
)


def default_config_file() -> Path:
    """The config file: ``$AGENTMM_CONFIG`` or ``config.toml`` in the platform user config dir."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return platformdirs.user_config_path(APP_NAME) / "config.toml"


def unknown_env_names(environ: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    """``AGENTMM_*`` variables that name no setting, each with the nearest setting's variable (or
    None): the environment layer reads only the names it knows, so ``AGENTMM_N_CTXX=3000`` was
    ignored without a word while the same typo in the config file is an error. ``AGENTMM_CONFIG``
    (the config file's path) is the one such variable that is no setting. Matched as the
    environment layer matches them, without regard to case."""
    known = sorted({name.upper() for name in Settings.model_fields} | {CONFIG_ENV.removeprefix(ENV_PREFIX)})
    unknown = []
    for name in sorted(os.environ if environ is None else environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper.removeprefix(ENV_PREFIX) not in known:
            near = difflib.get_close_matches(upper.removeprefix(ENV_PREFIX), known, n=1, cutoff=0.75)
            unknown.append((name, ENV_PREFIX + near[0] if near else None))
    return unknown


def default_personas_dir() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "personas"


def default_tools_dir() -> Path:
    return platformdirs.user_config_path(APP_NAME) / "tools"


def default_data_dir() -> Path:
    return platformdirs.user_data_path(APP_NAME)


def default_cache_dir() -> Path:
    return platformdirs.user_cache_path(APP_NAME)


# The settings that name a folder, and those that may name a model file: checked as paths, and
# read from a config file's own folder when relative (``_paths_from``).
_FOLDER_SETTINGS = ("data_dir", "models_dir", "personas_dir", "tools_dir", "cache_dir")
_FILE_SETTINGS = ("model", "mmproj", "caption_model", "caption_mmproj")


class Settings(BaseSettings):
    """Everything a user can set. Field names are the config-file keys and, upper-cased
    with the ``AGENTMM_`` prefix, the environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, frozen=True)

    model: str = Field(
        "smollm2",
        min_length=1,
        description="Chat model: a shipped model name, a local .gguf path or a hub id owner/repo/file.gguf.",
    )
    n_ctx: int = Field(4096, ge=256, le=1_048_576, description="Context window in tokens.")
    n_gpu_layers: int | Literal["auto"] = Field(
        "auto",
        description="Layers offloaded to the GPU: 'auto' (all when llama.cpp has GPU support), 0, N or -1 (all).",
    )
    n_threads: int | None = Field(None, ge=1, description="CPU threads for generation (default: llama.cpp's choice).")
    n_batch: int = Field(512, ge=1, description="Prompt tokens processed per batch.")
    cpu_extra_buffers: bool | Literal["auto"] = Field(
        "auto",
        description="llama.cpp's extra CPU buffer types (repacked weights for faster CPU kernels): 'auto' (off on "
        "CPUs with AMX, where they crash, and wherever a one-token probe crashes with them), true or false.",
    )
    max_tokens: int = Field(512, ge=1, description="Longest reply in tokens; this much context is kept free for it.")
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = Field(None, description="Sampling seed (default: random).")
    system_prompt: str = Field(DEFAULT_SYSTEM_PROMPT, description="System prompt when no persona gives one.")
    user_name: str = Field("User", min_length=1)
    persona: str | None = Field(None, description="Persona new threads play (a name from `agentmm personas list`).")
    persona_reminder: str = Field(
        "",
        description="Said after the user's message while a persona without post-history instructions is played "
        "(macros filled), e.g. PERSONA_REMINDER in agentmm.personas.prompt; empty: nothing.",
    )
    persona_introduction: str = Field(
        "",
        description="An exchange in which the played character says who it is, put first among its example "
        "dialogue (macros filled), e.g. PERSONA_INTRODUCTION in agentmm.personas.prompt; empty: none.",
    )
    persona_guard: bool = Field(
        True,
        description="While a persona is played, keep the reply from calling itself an AI or an assistant "
        '(a sampling guard after openings like "I\'m an"; llama.cpp models only, see agentmm.character_guard).',
    )
    persona_identity_start: str = Field(
        "I'm {{char}}",
        description="While a persona is played, the reply to a message asking the character who it is (its name, "
        "whether it is an AI or a person, an introduction; English rules in agentmm.identity_questions) starts "
        "with these words (macros filled) and the model goes on from them; llama.cpp models rendered by their "
        "GGUF's own chat template only; empty: off.",
    )
    persona_copy_limit: int = Field(
        0,
        ge=0,
        description="While a persona is played, a reply cannot repeat this many tokens in a row from its prompt or "
        "from itself (a sampling guard against copied greetings, lore and earlier replies; llama.cpp models only, "
        "see agentmm.copy_guard); 0: off.",
    )
    personas_dir: Path = Field(default_factory=default_personas_dir, description="Your own personas and cards.")
    intent: bool = Field(
        False,
        description="Decide each turn's intent first (chat, recall, tool, attachment, ooc) and route on it: recall "
        "only for intent_recall, tools only when asked for, an out-of-character message answered as such.",
    )
    intent_classifier: Literal["examples", "model"] = Field(
        "examples",
        description="How a turn's intent is decided: 'examples' (nearest labelled examples by sentence embedding) "
        "or 'model' (the chat model's constrained pick; far less accurate on the shipped models).",
    )
    intent_recall: list[Intent] = Field(
        default_factory=lambda: ["chat", "recall", "attachment"],
        description="With intent on: the intents whose turns recall long-term memory.",
    )
    memory: bool = Field(True, description="Long-term memory: recall before each reply, remember after it.")
    memory_url: str | None = Field(None, description="A Chroma server (http://host:port) instead of the data dir.")
    store_url: str | None = Field(
        None,
        description="Long-term memory in Postgres with pgvector (postgresql://user@host:port/db): LangGraph's "
        "PostgresStore, shared by every worker; instead of Chroma (memory_url or the data dir).",
    )
    checkpointer_url: str | None = Field(
        None,
        description="Threads in Postgres (postgresql://user@host:port/db): LangGraph's Postgres saver, shared by "
        "every worker; instead of the SQLite file in the data dir.",
    )
    model_url: str | None = Field(
        None,
        description="An OpenAI-compatible model server (http://host:port/v1: llama.cpp's server, vLLM, Ollama) "
        "instead of loading the model in this process; `model` then names the model on the server.",
    )
    model_api_key: str | None = Field(
        None, description="The model server's API key, if it wants one (sent as a bearer token)."
    )
    memory_k: int = Field(5, ge=0, le=100, description="Memories recalled per turn at most.")
    memory_rounds: int = Field(
        1,
        ge=1,
        le=2,
        description="2: a second recall round seeded by the names the best memory brings (multi-hop; "
        "about twice recall's time).",
    )
    memory_by_date: bool = Field(
        True,
        description="A question that names a time ('what did I say yesterday?', 'in May 2023') also recalls "
        "the memories that speak of those days; false: dense + BM25 only.",
    )
    memory_rerank: bool = Field(
        False,
        description="Rerank recall's best 50 candidates by late interaction (MiniLM token vectors, "
        "ColBERT's MaxSim): development-set Recall@10 82.7 -> 88.4, at one embedder pass over the "
        "candidates per recall (tens of ms).",
    )
    memory_min_similarity: float = Field(
        0.3,
        ge=0.0,
        le=1.01,
        description="Relevance bar: a recalled memory enters the prompt only at this cosine "
        "similarity to the message or more (0.1 less when it holds most of the message's content words).",
    )
    memory_max_tokens: int = Field(200, ge=0, description="Recalled memories placed in a prompt, in tokens at most.")
    memory_window_share: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Recalled memories all the turns in the window hold together, as a share of the context left "
        "after the reply's reserve (each turn's block stays in the prompt: this bounds how much sooner memory makes "
        "the window fold).",
    )
    shared_memory: bool = Field(False, description="Also recall what the user told any persona.")
    user_id: str = Field("local", min_length=1, description="Whose memories these are (scopes memory).")
    embedding_model: str | None = Field(None, description="sentence-transformers model (default: shipped MiniLM).")
    caption_model: str | None = Field(None, description="Vision-language GGUF (path or hub id) for image captions.")
    caption_mmproj: str | None = Field(None, description="Its image projector (mmproj) GGUF.")
    mmproj: str | None = Field(
        None,
        description="The chat model's image projector (mmproj GGUF, path or hub id): images then go to the chat "
        "model itself instead of a captioner.",
    )
    asr_model: str | None = Field(None, description="faster-whisper model (default: shipped Whisper tiny.en).")
    clip_model: str = Field(
        "ViT-B-32", min_length=1, description="open_clip model for image search: a name, hf-hub:ID or local-dir:PATH."
    )
    clip_pretrained: str | None = Field(
        "laion2b_s34b_b79k",
        description="Its weights: a pretrained tag (downloaded on first use) or a local checkpoint path; "
        "'random' or 'none' builds random weights (only for tests and benchmarks: search is meaningless).",
    )
    image_note: str = Field(IMAGE_NOTE, description="How a captioned picture reads in the turn's context.")
    native_image_note: str = Field(NATIVE_IMAGE_NOTE, description="How a picture the chat model sees itself reads.")
    voice_note: str = Field(VOICE_NOTE, description="How a transcribed voice note reads in the turn's context.")
    unreadable_note: str = Field(UNREADABLE_NOTE, description="How an attachment that could not be read is told.")
    unseen_image_note: str = Field(
        UNSEEN_IMAGE_NOTE, description="How a picture reads when no captioner is available (the reason goes to you)."
    )
    unheard_audio_note: str = Field(
        UNHEARD_AUDIO_NOTE, description="How a voice note reads when no speech model is available."
    )
    silent_audio_note: str = Field(
        SILENT_AUDIO_NOTE, description="How a voice note reads when no words were found in it."
    )
    tools: list[str] = Field(
        default_factory=list,
        description="Tools the model may call (names from `agentmm tools list`); a persona narrows them.",
    )
    tools_dir: Path = Field(default_factory=default_tools_dir, description="Your own tools: *.py files of @tool's.")
    tool_calling: Literal["auto", "constrained", "native"] = Field(
        "auto",
        description="How the model calls tools: 'constrained' (two steps, each answer bound by a grammar, or on a "
        "model server by its JSON-schema support: for small models), 'native' (the GGUF chat template's, or the "
        "server's, own tool calls), 'auto' (built-in model: native where the template renders tools; model server: "
        "constrained on llama-cpp-python's, which answers tool_choice auto in text, native elsewhere).",
    )
    approve_tools: list[str] = Field(default_factory=list, description="Tools that ask you before each call.")
    tool_timeout_s: float = Field(30.0, gt=0, le=3600, description="A tool call running longer is stopped.")
    max_tool_rounds: int = Field(3, ge=0, le=20, description="Tool calls the model may make per turn at most.")
    data_dir: Path = Field(default_factory=default_data_dir, description="Threads, memory and indexes live here.")
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="What agentmm learns about this machine (native-probe verdicts, the embedder's ONNX export).",
    )
    models_dir: Path | None = Field(None, description="Where hub downloads go (default: the Hugging Face cache).")
    verbose: bool = Field(False, description="Let llama.cpp log to stderr.")

    @field_validator(*_FOLDER_SETTINGS, mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        """``AGENTMM_DATA_DIR=`` would be ``Path("")``, the current directory: refused instead."""
        if isinstance(value, str) and not value.strip():
            raise ValueError("a folder is needed, not an empty value")
        return value

    @field_validator(*_FOLDER_SETTINGS, mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return usable_path(value).expanduser() if value is not None else None

    @field_validator(*_FILE_SETTINGS)
    @classmethod
    def _model_path(cls, value: str | None) -> str | None:
        if value is not None and not _looks_like_url(value):
            usable_path(Path(value))
        return value

    @field_validator(
        "image_note",
        "native_image_note",
        "voice_note",
        "unreadable_note",
        "unseen_image_note",
        "unheard_audio_note",
        "silent_audio_note",
    )
    @classmethod
    def _note(cls, value: str) -> str:  # {{user}}, {{char}}, {{text}}, {{file}}, {{error}}
        return check_note(value)

    @field_validator("store_url", "checkpointer_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a Postgres URL: postgresql://user:password@host:port/database")
        return value

    @field_validator("model_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL of an OpenAI-compatible API, e.g. http://host:8000/v1")
        return value.rstrip("/") if value is not None else None

    @field_validator("persona_copy_limit")
    @classmethod
    def _copy_limit(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (off) or a run of at least 2 tokens")
        return value

    @model_validator(mode="after")
    def _one_memory_store(self) -> Settings:
        if self.memory_url and self.store_url:
            raise ValueError("memory_url (a Chroma server) and store_url (Postgres) both name the memory store")
        return self

    @field_validator("n_gpu_layers", mode="before")
    @classmethod
    def _gpu_layers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, int) and value < -1:
            raise ValueError("must be 'auto', -1 (all layers), 0 or a positive number of layers")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) is explicit values over the environment; load_settings() adds the config
        # file beneath both (ConfigFileSource) and records where each value came from.
        return (init_settings, env_settings)

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def memory_window_tokens(self) -> int:
        """``memory_window_share`` in tokens: of the context compose can fill (n_ctx less the
        reply's reserve)."""
        return int(self.memory_window_share * max(self.n_ctx - self.max_tokens, 0))

    @property
    def sources(self) -> dict[str, str]:
        """Where each value came from: default, file PATH, env or flag (set by load_settings)."""
        return dict(self._sources) or {name: "default" for name in type(self).model_fields}

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready values, paths as strings."""
        return self.model_dump(mode="json")

    def given_for_this_run(self) -> frozenset[str]:
        """The settings given for this run itself (a flag, the environment, an argument), which
        a played persona's own ``model`` and ``[sampling]`` leave alone; a config file's or a
        default value gives way to them."""
        return frozenset(name for name, origin in self.sources.items() if origin in ("flag", "env", "argument"))

    def updated(self, *, origin: str = "argument", **changes: Any) -> Settings:
        """A copy with ``changes`` applied and checked as ``load_settings`` checks a flag (a bad
        value is one ``SettingsError`` line); ``model_copy`` would take any value unchecked.
        ``model_validate`` skips the settings sources, so nothing is re-read from the environment.
        ``origin`` is what ``sources`` says of them ("persona": a played persona's choice)."""
        if not changes:
            return self
        try:
            copy = type(self).model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise SettingsError(_one_line(exc, set(), None)) from exc
        copy._sources = {**self.sources, **dict.fromkeys(changes, origin)}
        return copy


class ConfigFileSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source for the config file, with what can go wrong in a user's file
    as one ``SettingsError`` line naming it. The library lets a file it cannot read (OSError,
    UnicodeDecodeError), bad TOML and tomllib's RecursionError (``[[[...]]]`` nested a thousand deep)
    out as tracebacks, reads without the BOM some editors write, skips a path that is not a file as if
    absent, and hands unknown keys (``modle``) to validation, whose message would not name the file."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self.path = path
        try:
            if path.expanduser().is_dir():
                raise SettingsError(f"cannot read config file {path}: it is a directory")
            super().__init__(settings_cls, toml_file=path)
        except OSError as exc:  # an unusable path (too long, ...) that is_file() does not swallow
            raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
        known = set(settings_cls.model_fields)
        unknown = sorted(set(self.toml_data) - known)  # raw keys: the source would fold MODEL into model
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
            raise SettingsError(f"config file {path}: unknown setting {unknown[0]!r} ({hint})")

    def _read_file(self, file_path: Path | Traversable) -> dict[str, Any]:
        try:
            text = file_path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise SettingsError(f"cannot read config file {self.path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise SettingsError(f"config file {self.path} is not UTF-8 text: {_where_not_utf8(exc)}") from exc
        try:
            return _paths_from(Path(file_path).expanduser().absolute().parent, tomllib.loads(text))
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {self.path} is not valid TOML: {exc}") from exc
        except RecursionError as exc:  # tomllib recurses once per level of [[[...]]] or {a = {a = ...}}
            raise SettingsError(f"config file {self.path} nests arrays or tables too deeply") from exc


def _where_not_utf8(exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, as an editor shows it (the line and column of the byte,
    and the byte), and what to do: it said "byte 0 is not", an offset that read as a count."""
    data = bytes(exc.object)
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it is UTF-16 (save it as UTF-8)"
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode("utf-8", "replace")) + 1
    return f"byte 0x{data[exc.start]:02x} at line {line}, column {column} (save it as UTF-8)"


def _paths_from(folder: Path, data: dict[str, Any]) -> dict[str, Any]:
    """A config file's relative paths read from its own folder, not from wherever agentmm is
    run (``data_dir = "chats"`` beside the file meant another, empty data dir in each folder).
    A model setting is taken as a path there only if that file is there: it may as well be a
    shipped model's name or a hub id."""
    for key in _FOLDER_SETTINGS + _FILE_SETTINGS:
        value = data.get(key)
        if not isinstance(value, str) or not value.strip() or value.startswith("~") or _looks_like_url(value):
            continue
        if "\0" in value or Path(value).is_absolute():
            continue
        there = folder / value
        if key in _FOLDER_SETTINGS or _exists(there):
            data[key] = str(there)
    return data


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from the config file, then the environment, then ``overrides``.

    ``overrides`` whose value is ``None`` are ignored, so CLI flags that were not given
    do not hide the environment or the file.

    Each layer is one of pydantic-settings' own sources (``ConfigFileSource`` over its
    ``TomlConfigSettingsSource``, ``EnvSettingsSource``, ``InitSettingsSource``); only their
    order is written here, because ``Settings.sources`` needs to know which layer gave each value:
    ``BaseSettings.__init__`` merges its sources and keeps no record of that, and its
    ``settings_customise_sources`` is a classmethod with no way to be told a per-call ``--config``
    path. The merged values are validated once, as ``BaseSettings`` would.
    """
    path = config_file if config_file is not None else default_config_file()
    explicit = {key: value for key, value in overrides.items() if value is not None}
    layers: list[tuple[str, PydanticBaseSettingsSource]] = [(f"file {path}", ConfigFileSource(Settings, path))]
    try:
        layers.append(("env", EnvSettingsSource(Settings)))
        layers.append(("flag", InitSettingsSource(Settings, init_kwargs=explicit)))
        values: dict[str, Any] = {}
        sources = dict.fromkeys(Settings.model_fields, "default")
        for origin, source in layers:  # lowest first: a later layer wins
            found = source()
            values.update(found)
            sources.update(dict.fromkeys(found, origin))
    except PydanticSettingsError as exc:  # an environment value that should be JSON (a list) is not
        raise SettingsError(_env_one_line(exc)) from exc
    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        from_file = {name for name, origin in sources.items() if origin.startswith("file ")}
        from_env = frozenset(name for name, origin in sources.items() if origin == "env")
        raise SettingsError(_one_line(exc, from_file, path, from_env)) from exc
    settings._sources = {name: sources[name] for name in Settings.model_fields}
    return settings


def usable_path(path: Path) -> Path:
    """``path`` if the OS can take it: a NUL byte, a ``~user`` naming no user or a name too long
    fails here, as a bad setting, instead of as a ValueError, RuntimeError or OSError wherever
    the path is first used."""
    text = str(path)
    if "\0" in text:
        raise ValueError("a path cannot contain a NUL character")
    try:
        os.stat(path.expanduser())
    except RuntimeError:
        home = text.split("/", 1)[0]
        raise ValueError(f"{home!r} names no user on this machine") from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise ValueError("the path is too long for this system") from None
    return path


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _looks_like_url(value: str) -> bool:
    return "://" in value


def _env_one_line(exc: PydanticSettingsError) -> str:
    """pydantic-settings names the field but not the fix: list settings in the environment are JSON."""
    found = re.search(r'field "(\w+)"', str(exc))
    name = found.group(1) if found else "?"
    example = '["a", "b"]'
    return f"bad setting {name} (from {ENV_PREFIX}{name.upper()}): give a JSON list, e.g. {example}"


def _accepted(error: Any) -> list[str]:
    """What one kind of a union setting takes, in the words a user types."""
    kind = str(error["type"])
    if kind.startswith("bool"):
        return ["true", "false"]
    if kind.startswith("int"):
        return ["a whole number"]
    if kind == "literal_error":
        return [str(error["ctx"]["expected"])]
    return [str(error["msg"]).removeprefix("Value error, ").removeprefix("Input should be ")]


# A number outside a setting's bounds; NaN fails them all (nan > 5 and nan < 0 are both false),
# so AGENTMM_TEMPERATURE=nan said only "Input should be less than or equal to 5".
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _range(name: str) -> str:
    """The numbers setting ``name`` takes, in words ("a number from 0 to 5"); "" if it has no bounds."""
    field = Settings.model_fields.get(name)
    if field is None:
        return ""
    bounds = {kind: getattr(m, kind) for m in field.metadata for kind in ("ge", "gt", "le", "lt") if hasattr(m, kind)}
    whole = "int" in str(field.annotation) and "float" not in str(field.annotation)
    noun = "a whole number" if whole else "a number"

    def shown(kind: str) -> str:
        value = bounds[kind]
        return f"{value:,}" if isinstance(value, int) else f"{value:g}"

    if "ge" in bounds and "le" in bounds:
        return f"{noun} from {shown('ge')} to {shown('le')}"
    words = {"ge": "of at least", "gt": "over", "le": "at most", "lt": "under"}
    parts = [f"{words[kind]} {shown(kind)}" for kind in ("ge", "gt", "le", "lt") if kind in bounds]
    return f"{noun} {' and '.join(parts)}" if parts else ""


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _one_line(
    exc: ValidationError, file_keys: set[str], path: Path | None, env_keys: frozenset[str] = frozenset()
) -> str:
    error = exc.errors()[0]
    error["msg"] = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings (model_validator): its message names them
        return f"bad settings: {error['msg']}"
    name = str(error["loc"][0])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r}"
    # A union's errors are one per kind, located (name, kind); a list's are (name, index).
    union = [e for e in exc.errors() if len(e["loc"]) == 2 and e["loc"][0] == name and isinstance(e["loc"][1], str)]
    if len(union) > 1:  # a setting of two kinds (true/false or "auto"): all it takes, not the first kind's complaint
        error["msg"] = "give " + _either([word for e in union for word in _accepted(e)])
    elif error["type"] in _BOUND_ERRORS and (allowed := _range(name)):
        error["msg"] = f"give {allowed}"
    origin = ""
    if name in file_keys:
        origin = f" (from {path})"
    elif name in env_keys:
        origin = f" (from {ENV_PREFIX}{name.upper()})"
    value = error.get("input")
    shown = f" {_clip(repr(value))}" if isinstance(value, (str, int, float)) else ""
    return f"bad setting {name}{shown}{origin}: {error['msg']}"
