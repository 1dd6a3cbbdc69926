from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.errors import SettingsError
from agentmm.settings import Settings, load_settings


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


@pytest.mark.parametrize(
    ("name", "value", "takes"),
    [
        ("temperature", "nan", "a number from 0 to 5"),
        ("temperature", "-inf", "a number from 0 to 5"),
        ("top_p", "nan", "a number over 0 and at most 1"),
        ("n_ctx", "12", "a whole number from 256 to 1,048,576"),
        ("max_tokens", "0", "a whole number of at least 1"),
    ],
)
def test_a_number_out_of_range_says_the_range(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, takes: str
) -> None:
    """NaN fails every bound, so AGENTMM_TEMPERATURE=nan said only 'Input should be less than or
    equal to 5'; each bound alone is half of what the setting takes."""
    variable = f"AGENTMM_{name.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == f"bad setting {name} {value!r} (from {variable}): give {takes}"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'n_ctx = 1024\nname = "caf\xe9"\n', "byte 0xe9 at line 2, column 12 (save it as UTF-8)"),
        (b'\xef\xbb\xbfname = "\xc3\xa9\xff"\n', "byte 0xff at line 1, column 10 (save it as UTF-8)"),
        ("n_ctx = 1024\n".encode("utf-16"), "it is UTF-16 (save it as UTF-8)"),
    ],
)
def test_a_file_that_is_not_utf8_says_where(isolated_env: Path, content: bytes, message: str) -> None:
    """It said 'is not UTF-8 text (byte 0 is not)': an offset that read as a count."""
    config = isolated_env / "config.toml"
    config.write_bytes(content)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == f"config file {config} is not UTF-8 text: {message}"


def test_gpu_layers_accepts_numbers_from_strings(isolated_env: Path) -> None:
    assert load_settings(n_gpu_layers="12").n_gpu_layers == 12
    assert load_settings(n_gpu_layers="-1").n_gpu_layers == -1


def test_the_file_is_read_as_editors_write_it_and_refused_with_its_name(isolated_env: Path) -> None:
    config = isolated_env / "config.toml"
    config.write_bytes(b"\xef\xbb\xbfn_ctx = 1024\n")  # a BOM, as some editors save UTF-8
    assert load_settings().n_ctx == 1024
    config.write_text("MODEL = 'x.gguf'\n")  # the environment is case-blind; the file's keys are not
    with pytest.raises(SettingsError, match=r"config file .*config.toml: unknown setting 'MODEL'"):
        load_settings()
    config.write_text("n_ctx = 12\n")
    with pytest.raises(SettingsError, match=r"bad setting n_ctx 12 \(from .*config.toml\)"):
        load_settings()
    with pytest.raises(SettingsError, match=r"cannot read config file .*: it is a directory"):
        load_settings(isolated_env)


def test_sources_name_the_layer_that_won(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (isolated_env / "config.toml").write_text("n_ctx = 1024\nseed = 1\nmemory = false\n")
    monkeypatch.setenv("AGENTMM_SEED", "2")
    monkeypatch.setenv("agentmm_top_p", "0.5")  # as case-blind as before
    settings = load_settings(memory=True, max_tokens=None)
    assert (settings.n_ctx, settings.seed, settings.top_p, settings.memory) == (1024, 2, 0.5, True)
    assert settings.sources["n_ctx"] == f"file {isolated_env / 'config.toml'}"
    assert (settings.sources["seed"], settings.sources["top_p"]) == ("env", "env")
    assert (settings.sources["memory"], settings.sources["max_tokens"]) == ("flag", "default")
    assert set(settings.sources) == set(Settings.model_fields)


def test_relative_paths_in_the_config_file_are_read_from_its_folder(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("conf")
    (folder / "mine.gguf").write_bytes(b"GGUF")
    config = folder / "agentmm.toml"
    config.write_text('data_dir = "chats"\ncache_dir = "~/c"\nmodel = "mine.gguf"\nmmproj = "not-there.gguf"\n')
    for name in ("AGENTMM_DATA_DIR", "AGENTMM_CACHE_DIR"):
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    settings = load_settings(config)
    assert settings.data_dir == folder / "chats"
    assert settings.cache_dir == Path("~/c").expanduser()
    assert settings.model == str(folder / "mine.gguf")
    assert settings.mmproj == "not-there.gguf"  # no such file beside the config: left as written
    config.write_text('model = "smollm2"\ndata_dir = "/abs/d"\n')
    assert (load_settings(config).model, load_settings(config).data_dir) == ("smollm2", Path("/abs/d"))
