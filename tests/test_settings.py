from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.errors import SettingsError
from agentmm.settings import load_settings


def test_defaults(isolated_env: Path) -> None:
    settings = load_settings()
    assert settings.model == "smollm2"
    assert settings.n_gpu_layers == "auto"
    assert settings.data_dir == isolated_env / "data"
    assert settings.sources["model"] == "default"
    assert settings.sources["data_dir"] == "env"


def test_file_then_env_then_flags(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated_env / "config.toml").write_text('n_ctx = 1024\ntemperature = 0.2\nmodel = "a.gguf"\n')
    monkeypatch.setenv("AGENTMM_TEMPERATURE", "0.3")
    settings = load_settings(model="b.gguf")
    assert settings.n_ctx == 1024
    assert settings.temperature == 0.3
    assert settings.model == "b.gguf"
    assert settings.sources["n_ctx"].startswith("file ")
    assert settings.sources["temperature"] == "env"
    assert settings.sources["model"] == "flag"


def test_flags_of_none_do_not_hide_lower_sources(isolated_env: Path) -> None:
    (isolated_env / "config.toml").write_text("n_ctx = 2048\n")
    assert load_settings(n_ctx=None).n_ctx == 2048


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        ("n_ctx = 'lots'\n", {}, "bad setting n_ctx 'lots'"),
        ("modle = 'x'\n", {}, "unknown setting 'modle'"),
        ("n_ctx = \n", {}, "is not valid TOML"),
        ("", {"AGENTMM_N_CTX": "12"}, "bad setting n_ctx"),
        ("", {"AGENTMM_N_GPU_LAYERS": "-5"}, "bad setting n_gpu_layers"),
        ("", {"AGENTMM_TOP_P": "0"}, "bad setting top_p"),
    ],
)
def test_bad_values_are_one_line(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, content: str, env: dict[str, str], message: str
) -> None:
    (isolated_env / "config.toml").write_text(content)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=message) as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_gpu_layers_accepts_numbers_from_strings(isolated_env: Path) -> None:
    assert load_settings(n_gpu_layers="12").n_gpu_layers == 12
    assert load_settings(n_gpu_layers="-1").n_gpu_layers == -1
