"""Hostile settings: whatever a config file or an ``AGENTMM_*`` variable holds, ``load_settings``
(what every command calls first) gives validated settings or one ``SettingsError`` line, and
``agentmm config show`` a result or that one line with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from agentmm.cli import app
from agentmm.errors import AgentmmError, ModelError, ModelNotFoundError, SettingsError
from agentmm.models import resolve_gguf, resolve_model
from agentmm.settings import ENV_PREFIX, Settings, load_settings

HOSTILE = settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)
FIELDS = sorted(Settings.model_fields)
PATH_FIELDS = ["data_dir", "models_dir", "personas_dir", "tools_dir"]

# -- a small TOML writer, so any value of any type can be put under any key ------------------


def toml_key(key: str) -> str:
    return json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int | datetime | date | time):
        return value.isoformat() if not isinstance(value, int) else str(value)
    if isinstance(value, str):
        return json.dumps(value)  # TOML basic strings take JSON's escapes
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


# Text that looks like what each setting wants, and text that does not.
likely_text = st.sampled_from(
    ["auto", "-1", "0", "7", "1e3", "true", "no", "smollm2", "~", "~/x", "~nosuchuser_xyz/x", "/tmp/x\x00y",
     "{{user}}", "{{nope}}", "[]", '["dice"]', "{}", "null", " ", "", "http://127.0.0.1:1", "9" * 5000]
)  # fmt: skip
scalars = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | likely_text
    | st.text(max_size=30)
    | st.datetimes()
    | st.dates()
)
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
config_tables = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=12), toml_values, max_size=6)


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the ``AGENTMM_*`` environment for the block (monkeypatch is per test,
    not per example); the test's own AGENTMM_DATA_DIR etc. would hide the config file's paths."""
    saved = {name: value for name, value in os.environ.items() if name.startswith(ENV_PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ.update(values)
    try:
        yield
    finally:
        for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
            del os.environ[name]
        os.environ.update(saved)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text, repr(exc)
    return text


def load_or_typed_error(config: Path, env: Mapping[str, str] | None = None) -> Settings | None:
    try:
        with environment(env or {}):
            loaded = load_settings(config)
    except SettingsError as exc:
        one_line(exc)
        return None
    loaded.public_dict()  # what `config show --json` prints
    for name in PATH_FIELDS:  # a path that was accepted can be used as one
        value = getattr(loaded, name)
        if value is not None:
            value.exists()
            assert "\0" not in str(value)
    return loaded


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


@HOSTILE
@given(table=config_tables)
@example(table={"data_dir": "~nosuchuser_xyz/agentmm"})
@example(table={"personas_dir": "/tmp/a\x00b"})
@example(table={"model": "~nosuchuser_xyz/m.gguf"})
@example(table={"mmproj": "/tmp/\x00.gguf"})
@example(table={"tools": [[[]]]})
def test_any_config_table_loads_or_is_one_typed_line(config_dir: Path, table: dict[str, Any]) -> None:
    config = config_dir / "config.toml"
    config.write_text("".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items()), encoding="utf-8")
    loaded = load_or_typed_error(config)
    if loaded is not None:
        assert set(table) <= set(FIELDS)


@HOSTILE
@given(data=st.binary(max_size=200) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_any_config_bytes_load_or_are_one_typed_line(config_dir: Path, data: bytes) -> None:
    config = config_dir / "config.toml"
    config.write_bytes(data)
    load_or_typed_error(config)


@HOSTILE
@given(depth=st.integers(1, 3000), table=st.booleans())
def test_deeply_nested_config_is_one_typed_line(config_dir: Path, depth: int, table: bool) -> None:
    config = config_dir / "config.toml"
    nested = "{a = " * depth + "1" + "}" * depth if table else "[" * depth + "1" + "]" * depth
    config.write_text(f"tools = {nested}\n", encoding="utf-8")
    assert load_or_typed_error(config) is None


env_text = likely_text.filter(lambda t: "\0" not in t) | st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=30
)


@HOSTILE
@given(env=st.dictionaries(st.sampled_from(FIELDS), env_text, max_size=4))
@example(env={"tools": "roll_dice"})
@example(env={"data_dir": "~nosuchuser_xyz"})
def test_any_environment_value_loads_or_is_one_typed_line(config_dir: Path, env: dict[str, str]) -> None:
    load_or_typed_error(config_dir / "absent.toml", {ENV_PREFIX + name.upper(): v for name, v in env.items()})


@settings(HOSTILE, max_examples=40)
@given(table=config_tables, env=st.dictionaries(st.sampled_from(FIELDS), env_text, max_size=2))
def test_config_show_prints_or_exits_with_one_line(
    config_dir: Path, table: dict[str, Any], env: dict[str, str]
) -> None:
    config = config_dir / "cli.toml"
    config.write_text("".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in table.items()), encoding="utf-8")
    with environment({ENV_PREFIX + name.upper(): value for name, value in env.items()}):
        result = CliRunner().invoke(app, ["--config", str(config), "config", "show", "--json"])
    if result.exit_code == 0:
        assert json.loads(result.stdout)["settings"]
    else:  # main() prints an AgentmmError as "agentmm: error: <line>" and exits with its code
        assert isinstance(result.exception, AgentmmError), result.exception
        one_line(result.exception)


def no_download(repo_id: str, filename: str, models_dir: Path | None) -> Path:
    raise ModelNotFoundError(f"{repo_id}/{filename} is not on this machine (no network in tests)")


model_specs = likely_text | st.text(max_size=40) | st.text(alphabet="/.~ax", max_size=300) | st.just("a" * 300)


@HOSTILE
@given(spec=model_specs)
@example(spec="~nosuchuser_xyz/m.gguf")
@example(spec="b" * 300 + ".gguf")
@example(spec="x/" * 200 + "m.gguf")
@example(spec="not a repo!/with spaces/m.gguf")
def test_any_model_name_resolves_or_is_one_typed_line(spec: str) -> None:
    """The model setting (and /model in the REPL) goes through resolve_model; the projector through resolve_gguf."""
    for resolve in (lambda: resolve_model(spec, download=no_download), lambda: resolve_gguf(spec, "mmproj")):
        try:
            resolve()
        except ModelError as exc:
            one_line(exc)


@pytest.mark.parametrize(
    ("config", "env", "needle"),
    [
        (b"\xff\xfe not utf-8", {}, "not UTF-8"),
        (b"tools = " + b"[" * 2000 + b"]" * 2000, {}, "too deeply"),
        (b"", {"AGENTMM_TOOLS": "roll_dice"}, "JSON list"),
        (b'data_dir = "~nosuchuser_xyz/agentmm"', {}, "names no user"),
    ],
)
def test_the_command_prints_one_line_and_exits_non_zero(
    tmp_path: Path, config: bytes, env: dict[str, str], needle: str
) -> None:
    """The real entry point (main() in a subprocess): no traceback, one line, exit 2."""
    path = tmp_path / "config.toml"
    path.write_bytes(config)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    done = subprocess.run(
        [sys.executable, "-m", "agentmm.cli", "--config", str(path), "config", "show"],
        capture_output=True, text=True, timeout=120, env={**clean, **env},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentmm: error: ") and needle in lines[0], done.stderr
