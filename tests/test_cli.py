"""The agentmm command end to end on the real shipped model: in subprocesses, or in this process
through the console entry point (``agentmm_here``) where a test is about output, not processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

HEAVY = ("llama_cpp", "langgraph", "langchain_core", "chromadb", "torch", "sentence_transformers", "numpy")


def agentmm(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentmm.cli", *args],
        input=stdin, capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
    )  # fmt: skip


Run = Callable[..., subprocess.CompletedProcess[str]]  # agentmm, or conftest's agentmm_here


def ok_json(*args: str, env: dict[str, str] | None = None, via: Run | None = None) -> Any:
    """The command's --json object; ``via`` runs it (conftest's ``agentmm_here``: in this process)."""
    done = (via or agentmm)(*args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_one_line_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("agentmm: error: ")
    assert needle in lines[0]


def test_help_imports_nothing_heavy() -> None:
    code = f"import sys, agentmm.cli; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert agentmm("--help").returncode == 0


@pytest.mark.slow
def test_one_turn_then_resume_in_a_second_process() -> None:
    first = ok_json("chat", "-m", "Hi, I am Mira. What is your name?", "--json", "--seed", "3", "--max-tokens", "40")
    assert set(first) >= {"reply", "thread_id", "model", "usage", "timings", "trace"}
    assert first["reply"].strip()
    assert first["model"] == "smollm2"
    assert first["usage"]["prompt_tokens"] > 0 and first["usage"]["completion_tokens"] > 0
    assert first["trace"]["path"] == ["ingest", "compose", "generate"]
    assert {p["part"] for p in first["trace"]["prompt_parts"]} >= {"system", "history", "message"}

    second = ok_json("chat", "-m", "What is my name?", "--thread", first["thread_id"], "--json", "--max-tokens", "30")
    assert second["thread_id"] == first["thread_id"]
    assert second["trace"]["turn"] == 2
    history = next(p for p in second["trace"]["prompt_parts"] if p["part"] == "history")
    assert history["tokens"] > 0

    shown = ok_json("threads", "show", first["thread_id"], "--json")
    assert [m["role"] for m in shown["messages"]] == ["user", "assistant", "user", "assistant"]
    assert shown["messages"][0]["content"] == "Hi, I am Mira. What is your name?"
    listed = ok_json("threads", "list", "--json")
    assert listed["threads"][0]["thread_id"] == first["thread_id"]
    assert ok_json("threads", "delete", first["thread_id"], "--json") == {"deleted": first["thread_id"]}
    assert_one_line_error(agentmm("threads", "show", first["thread_id"]), "unknown thread")


@pytest.mark.slow
def test_plain_output_and_piped_repl() -> None:
    done = agentmm("chat", "-m", "Say hi.", "--max-tokens", "20")
    assert done.returncode == 0 and done.stdout.strip()
    assert "[thread " in done.stderr
    repl = agentmm("chat", "--max-tokens", "15", stdin="Hello there\n\nHow are you?\n/exit\nnever sent\n")
    assert repl.returncode == 0, repl.stderr
    threads = ok_json("threads", "list", "--json")["threads"]
    assert {t["turns"] for t in threads} >= {2}


def test_ctrl_c_stops_the_reply_and_keeps_it(agentmm_here: Run) -> None:
    """The Ctrl-C is sent to a process of its own; what it left is read back in this process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentmm.cli", "chat", "-m", "Write a very long story about a dragon.",
         "--max-tokens", "2000", "--temperature", "0.9"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    proc.stdout.read(20)  # the reply has started streaming
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - started < 10
    assert proc.returncode == 0, err
    thread_id = err.strip().split("[thread ")[-1].rstrip("]")
    shown = ok_json("threads", "show", thread_id, "--json", via=agentmm_here)
    assert shown["messages"][-1]["role"] == "assistant"
    assert shown["messages"][-1]["interrupted"] is True
    # The conversation goes on after an interrupted reply.
    went_on = ok_json("chat", "-m", "Go on.", "--thread", thread_id, "--json", "--max-tokens", "10", via=agentmm_here)
    assert went_on["trace"]["turn"] == 2


def test_models_config_doctor_json(agentmm_here: Run) -> None:
    models = ok_json("models", "list", "--json", via=agentmm_here)["models"]
    assert models[0]["name"] == "smollm2" and models[0]["installed"] is True
    config = ok_json("config", "show", "--json", via=agentmm_here)
    assert config["settings"]["model"] == "smollm2"
    assert config["sources"]["data_dir"] == "env"
    report = ok_json("doctor", "--json", via=agentmm_here)
    assert report["ok"] is True
    assert report["model"]["architecture"] == "llama"
    assert report["gpu"]["gpu_layers"] == (31 if report["gpu"]["offload_available"] else 0)
    assert "llama-cpp-python" in report["versions"]
    hub = next(check for check in report["checks"] if check["name"] == "hub")
    assert hub["ok"] is True and hub["reachable"] is False  # conftest: HF_HUB_OFFLINE=1


def test_user_errors_are_one_line(tmp_path: Path, shipped_model: Path, agentmm_here: Run) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("hello")
    truncated = tmp_path / "cut.gguf"
    with shipped_model.open("rb") as f:
        truncated.write_bytes(f.read(4000))
    huge = tmp_path / "huge.gguf"
    huge.write_bytes(shipped_model.read_bytes())
    with huge.open("r+b") as f:
        f.truncate(4 * 2**40)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    cases = [
        (["chat", "-m", "hi", "--model", str(tmp_path / "missing.gguf")], {}, "model not found"),
        (["chat", "-m", "hi", "--model", str(not_gguf)], {}, "not a GGUF"),
        (["chat", "-m", "hi", "--model", str(truncated)], {}, "truncated"),
        (["chat", "-m", "hi", "--model", str(huge)], {}, "of memory is free"),
        (["chat", "-m", "hi", "--thread", "no-such-thread"], {}, "unknown thread"),
        (["chat", "-m", "hi"], {"AGENTMM_N_CTX": "lots"}, "bad setting n_ctx 'lots' (from AGENTMM_N_CTX)"),
        (["threads", "list"], {"AGENTMM_DATA_DIR": ""}, "bad setting data_dir '' (from AGENTMM_DATA_DIR): a folder"),
        (["chat", "-m", "   "], {}, "message is empty"),
        (["chat", "-m", "hi"], {"AGENTMM_DATA_DIR": str(blocker / "data")}, f"{blocker} is a file, not a folder"),
        (["threads", "list"], {"AGENTMM_DATA_DIR": str(blocker)}, f"{blocker} is a file, not a folder"),
        (["chat", "-m", "word " * 5000, "--n-ctx", "512"], {}, "shorten it or raise n_ctx"),
        (["threads", "delete", "nope"], {}, "unknown thread"),
    ]
    for args, env, needle in cases:
        assert_one_line_error(agentmm_here(*args, env=env), needle)


def test_an_unusable_cache_dir_is_one_line_and_a_doctor_problem(tmp_path: Path, agentmm_here: Run) -> None:
    """A file as cache_dir made every start redo the embedder's export and the native probe
    (about 5x slower) while doctor said all ok; the commands that use it now stop in one line.
    In this process (``agentmm_here``): the lines and exit codes are the point, not processes."""
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env = {"AGENTMM_CACHE_DIR": str(blocker), "AGENTMM_MEMORY": "true"}
    for args in (["chat", "-m", "hi"], ["memory", "list"]):
        assert_one_line_error(agentmm_here(*args, env=env), f"cache dir {blocker} cannot be made")
    ok_json("threads", "list", "--json", env=env, via=agentmm_here)  # a command that does not use the cache runs
    doctor = agentmm_here("doctor", "--json", env=env)
    report = json.loads(doctor.stdout)
    check = next(check for check in report["checks"] if check["name"] == "cache_dir")
    assert doctor.returncode == 1 and report["ok"] is False and report["cache_dir"] == str(blocker)
    assert check["ok"] is False and f"{blocker} is a file, not a folder" in check["detail"]


def test_text_that_is_not_utf8_is_one_line(isolated_env: Path, agentmm_here: Run) -> None:
    """In this process: sys.argv holds what Python's start decoded, the lone surrogate."""
    latin1 = os.fsdecode(b"caf\xe9")  # a Latin-1 terminal's "café": a lone surrogate once decoded
    assert_one_line_error(agentmm_here("chat", "-m", latin1), "the message is not valid Unicode text")
    memory = {"AGENTMM_MEMORY": "true"}
    assert_one_line_error(agentmm_here("memory", "add", latin1, env=memory), "the memory is not valid Unicode text")


@pytest.mark.slow
def test_brackets_and_escapes_in_messages_are_shown_as_written(isolated_env: Path, agentmm_here: Run) -> None:
    """'[/i]' crashed threads list and memory list (rich markup); '[ooc]' and 'list[int]' vanished."""
    said = "I wrote list[int] in [bold]Python[/bold] [/i] [ooc] \x1b[31mred"
    memory = {"AGENTMM_MEMORY": "true", "COLUMNS": "300"}
    turn = ok_json("chat", "-m", said, "--json", "--max-tokens", "3", env=memory, via=agentmm_here)
    listed = agentmm_here("threads", "list", env={"COLUMNS": "300"})
    assert listed.returncode == 0, listed.stderr
    assert "list[int] in [bold]Python[/bold] [/i] [ooc]" in listed.stdout and "\x1b[31m" not in listed.stdout
    shown = agentmm_here("threads", "show", turn["thread_id"])
    assert "[/i] [ooc] red" in shown.stdout and "\x1b" not in shown.stdout
    remembered = agentmm_here("memory", "list", env=memory)
    assert remembered.returncode == 0 and "[/i] [ooc]" in remembered.stdout, remembered.stderr
    found = agentmm_here("memory", "search", "Python list", env=memory)
    assert found.returncode == 0 and "[/i]" in found.stdout, found.stderr  # the text column was empty


@pytest.mark.slow
def test_options_for_a_new_thread_are_refused_where_they_would_be_ignored(
    isolated_env: Path, agentmm_here: Run
) -> None:
    thread = ok_json("chat", "-m", "hi", "--json", "--max-tokens", "2", via=agentmm_here)["thread_id"]
    assert_one_line_error(agentmm_here("chat", "--greeting", "1", "-m", "hi"), "--greeting picks a persona's greeting")
    assert_one_line_error(agentmm_here("chat", "-t", thread, "-p", "Nora Quill", "--greeting", "1", "-m", "hi"),
                          f"thread {thread} has begun")  # fmt: skip
    assert_one_line_error(agentmm_here("chat", "-t", thread, "--system", "Be brief.", "-m", "hi"), "keeps its own")
    ok_json("chat", "-p", "Nora Quill", "--greeting", "1", "-m", "hi", "--json", "--max-tokens", "2", via=agentmm_here)


@pytest.mark.slow
def test_a_thread_whose_persona_was_removed_says_so(isolated_env: Path, agentmm_here: Run) -> None:
    card = isolated_env / "personas" / "wren.toml"
    card.parent.mkdir(exist_ok=True)
    card.write_text('name = "Wren"\ndescription = "A wren."\n')
    thread = ok_json("chat", "-p", "Wren", "-m", "hi", "--json", "--max-tokens", "2", via=agentmm_here)["thread_id"]
    card.unlink()
    assert_one_line_error(
        agentmm_here("chat", "-t", thread, "-m", "hi"), "this thread plays 'Wren', which is no longer"
    )
    ok_json("chat", "-t", thread, "-p", "Nora Quill", "-m", "hi", "--json", "--max-tokens", "2", via=agentmm_here)


def test_a_config_file_named_with_a_flag_must_exist(isolated_env: Path) -> None:
    missing = isolated_env / "confg.toml"
    assert_one_line_error(agentmm("--config", str(missing), "config", "show"), f"config file {missing} does not exist")
    (isolated_env / "config.toml").write_text("n_ctx = 2048\n")
    shown = ok_json("--config", str(isolated_env / "config.toml"), "config", "show", "--json")
    assert shown["settings"]["n_ctx"] == 2048


def test_serve_without_the_fleet_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """It was a 40-line ModuleNotFoundError traceback for starlette after README's install."""
    import importlib.util

    from agentmm import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "starlette" else real(name, *a))
    with pytest.raises(cli.AgentmmError, match=r'agentmm serve needs starlette: pip install "agentmm\[fleet\]"'):
        cli._check_serving_installed()
