"""Settings that say what they take and where they come from: a setting of two kinds says both,
`config show` says when its config file is absent, and an `AGENTMM_*` variable that names no
setting is warned of (it was ignored without a word; the same typo in the file is an error)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from agentmm.errors import SettingsError
from agentmm.settings import load_settings, unknown_env_names
from tests.test_cli import assert_one_line_error, ok_json

Run = Callable[..., CompletedProcess[str]]


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("cpu_extra_buffers", "maybe", "give true, false or 'auto'"),
        ("n_gpu_layers", "1.5", "give a whole number or 'auto'"),
    ],
)
def test_a_setting_of_two_kinds_says_all_it_takes(
    name: str, value: str, said: str, monkeypatch: pytest.MonkeyPatch, agentmm_here: Run
) -> None:
    """It said the first kind's complaint alone: "Input should be a valid boolean, unable to
    interpret input", though "auto" is valid too."""
    monkeypatch.setenv(f"AGENTMM_{name.upper()}", value)
    with pytest.raises(SettingsError, match=said):
        load_settings()
    assert_one_line_error(agentmm_here("config", "show"), f"(from AGENTMM_{name.upper()}): {said}")


def test_config_show_says_when_its_file_is_absent(tmp_path: Path, agentmm_here: Run) -> None:
    absent = {"AGENTMM_CONFIG": str(tmp_path / "nonexistent.toml")}
    shown = agentmm_here("config", "show", env=absent)
    assert shown.returncode == 0 and "(absent: defaults)" in " ".join(shown.stdout.split())
    assert ok_json("config", "show", "--json", env=absent, via=agentmm_here)["config_file_exists"] is False
    (tmp_path / "here.toml").write_text("n_ctx = 3000\n")
    present = {"AGENTMM_CONFIG": str(tmp_path / "here.toml")}
    assert "absent" not in agentmm_here("config", "show", env=present).stdout
    assert ok_json("config", "show", "--json", env=present, via=agentmm_here)["config_file_exists"] is True


def test_an_env_name_that_is_no_setting_is_warned_of(agentmm_here: Run) -> None:
    done = agentmm_here("config", "show", "--json", env={"AGENTMM_N_CTXX": "3000", "AGENTMM_WHATEVER": "1"})
    assert done.returncode == 0
    assert done.stderr.splitlines() == [
        "agentmm: warning: AGENTMM_N_CTXX is no setting; it is ignored (did you mean AGENTMM_N_CTX?)",
        "agentmm: warning: AGENTMM_WHATEVER is no setting; it is ignored (agentmm config show lists the settings)",
    ]
    assert agentmm_here("config", "show", "--json").stderr == ""  # AGENTMM_CONFIG and the settings: no warning
    assert unknown_env_names({"agentmm_n_ctx": "1", "AGENTMM_CONFIG": "c", "OTHER": "x"}) == []


def test_a_list_setting_with_two_bad_items_says_what_an_item_takes(tmp_path: Path) -> None:
    """Two bad items of a list were read as a setting of two kinds: 'give a valid string or a
    valid string'."""
    config = tmp_path / "config.toml"
    config.write_text("tools = [1, {}]\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert str(caught.value).endswith(": Input should be a valid string"), caught.value
    config.write_text("intent_recall = [1, {}]\n")  # its values were listed twice
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    assert str(caught.value).count("'ooc'") == 1, caught.value
