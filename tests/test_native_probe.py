"""CPU buffer choice and the one-token native probe: a crash in a child is a sentence, not a dead chat.

The decision is driven with faked CPU flags; the crashes are real (a child process that dies of a
real SIGSEGV), entered through the probe's runner seam; the shipped model is probed for real.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentmm import native_probe
from agentmm.cpu_buffers import AMX_FLAGS, amx_flags, choose_extra_buffers, read_cpu_flags
from agentmm.native_probe import NativeCrashError, ProbeCache, check_native, crash_message, probe, run_probe

AMX_CPU = frozenset({"fpu", "sse4_2", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"})
PLAIN_CPU = frozenset({"fpu", "sse4_2", "avx2", "avx512f", "avx512vl"})


# ------------------------------------------------------------------ the decision


@pytest.mark.parametrize(
    ("setting", "flags", "crashed", "enabled"),
    [
        ("auto", AMX_CPU, None, False),  # AMX: llama.cpp's AMX path can crash, off
        ("auto", AMX_CPU, False, False),  # a good probe does not turn AMX back on
        ("auto", PLAIN_CPU, None, True),  # elsewhere the faster path stays
        ("auto", PLAIN_CPU, False, True),
        ("auto", PLAIN_CPU, True, False),  # the probe crashed with them on: off
        ("auto", frozenset(), None, True),  # no /proc/cpuinfo: the probe guards it
        (True, AMX_CPU, None, True),  # an explicit setting is obeyed
        (True, PLAIN_CPU, True, True),
        (False, PLAIN_CPU, None, False),
    ],
)
def test_choice_follows_setting_flags_and_probe(
    setting: bool | str, flags: frozenset[str], crashed: bool | None, enabled: bool
) -> None:
    choice = choose_extra_buffers(setting, flags, crashed_with_buffers=crashed)  # type: ignore[arg-type]
    assert choice.enabled is enabled
    assert choice.setting == setting
    if setting == "auto" and flags == AMX_CPU:
        assert "AMX" in choice.reason and "amx_int8" in choice.reason
    if setting == "auto" and crashed and flags == PLAIN_CPU:
        assert "probe" in choice.reason


def test_cpu_flags_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: fpu avx512f amx_tile amx_int8\n\nprocessor\t: 1\n")
    assert amx_flags(read_cpu_flags(x86)) == ["amx_int8", "amx_tile"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve\n")
    assert read_cpu_flags(arm) == {"fp", "asimd", "sve"}
    assert read_cpu_flags(tmp_path / "absent") == frozenset()
    assert not AMX_FLAGS & read_cpu_flags(arm)


# ------------------------------------------------------------------ probes through a real child


def _dies_with_buffers(calls: list[dict[str, object]], *, always: bool = False):  # type: ignore[no-untyped-def]
    """A runner whose child really dies of SIGSEGV when extra buffers are on (or always)."""

    def run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        request = json.loads(argv[-1])
        calls.append(request)
        crash = always or request["extra_buffers"]
        code = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)" if crash else "print('{\"ok\": true}')"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)

    return run


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def test_a_real_sigsegv_in_the_child_is_reported_not_fatal(model_file: Path) -> None:
    calls: list[dict[str, object]] = []
    result = run_probe(model_file, extra_buffers=True, n_gpu_layers=0, runner=_dies_with_buffers(calls))
    assert result.crashed and result.detail.startswith("SIGSEGV")
    assert calls == [{"model_path": str(model_file), "extra_buffers": True, "n_gpu_layers": 0, "n_threads": None}]


def test_auto_falls_back_to_no_extra_buffers_when_they_crash(model_file: Path, tmp_path: Path) -> None:
    calls: list[dict[str, object]] = []
    cache = ProbeCache(tmp_path / "cache")
    check = check_native(model_file, "auto", PLAIN_CPU, n_gpu_layers=0, cache=cache, runner=_dies_with_buffers(calls))
    assert check.choice.enabled is False
    assert [p.outcome for p in check.probes] == ["crashed", "ok"]
    assert [c["extra_buffers"] for c in calls] == [True, False]
    # The verdicts are cached: the next chat decides without a child.
    again = check_native(model_file, "auto", PLAIN_CPU, n_gpu_layers=0, cache=cache, runner=_dies_with_buffers(calls))
    assert again.choice.enabled is False and len(calls) == 2
    assert all(p.cached for p in again.probes)


def test_auto_on_amx_probes_only_without_buffers(model_file: Path) -> None:
    calls: list[dict[str, object]] = []
    check = check_native(model_file, "auto", AMX_CPU, n_gpu_layers=0, runner=_dies_with_buffers(calls))
    assert check.choice.enabled is False
    assert [c["extra_buffers"] for c in calls] == [False]


@pytest.mark.parametrize(
    ("setting", "layers", "advice"),
    [
        (True, 0, 'set cpu_extra_buffers = false (or "auto")'),
        ("auto", 0, "rebuild llama-cpp-python"),
        ("auto", -1, "set n_gpu_layers = 0"),
    ],
)
def test_a_crash_that_nothing_avoids_is_one_line_with_the_setting_to_change(
    model_file: Path, setting: bool | str, layers: int, advice: str
) -> None:
    calls: list[dict[str, object]] = []
    with pytest.raises(NativeCrashError) as raised:
        check_native(model_file, setting, PLAIN_CPU, n_gpu_layers=layers, runner=_dies_with_buffers(calls, always=True))  # type: ignore[arg-type]
    message = str(raised.value)
    assert "\n" not in message
    assert "SIGSEGV" in message and model_file.name in message and advice in message
    assert raised.value.probes and all(p.crashed for p in raised.value.probes)


def test_cache_keys_on_buffers_and_survives_damage(model_file: Path, tmp_path: Path) -> None:
    calls: list[dict[str, object]] = []
    cache = ProbeCache(tmp_path / "cache")
    runner = _dies_with_buffers(calls)
    assert probe(model_file, PLAIN_CPU, extra_buffers=False, n_gpu_layers=0, cache=cache, runner=runner).outcome == "ok"
    assert probe(model_file, PLAIN_CPU, extra_buffers=True, n_gpu_layers=0, cache=cache, runner=runner).crashed
    assert probe(model_file, PLAIN_CPU, extra_buffers=True, n_gpu_layers=0, cache=cache, runner=runner).cached
    assert len(calls) == 2
    # Another CPU (other flags) is another verdict.
    probe(model_file, AMX_CPU, extra_buffers=True, n_gpu_layers=0, cache=cache, runner=runner)
    assert len(calls) == 3
    # fresh (doctor) runs it again.
    probe(model_file, PLAIN_CPU, extra_buffers=False, n_gpu_layers=0, cache=cache, fresh=True, runner=runner)
    assert len(calls) == 4
    cache.path.write_text("{not json")
    assert probe(model_file, PLAIN_CPU, extra_buffers=False, n_gpu_layers=0, cache=cache, runner=runner).outcome == "ok"
    assert len(calls) == 5
    assert json.loads(cache.path.read_text())  # rewritten whole


def test_a_timeout_or_python_error_is_no_verdict(model_file: Path, tmp_path: Path) -> None:
    cache = ProbeCache(tmp_path / "cache")

    def slow(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, timeout)

    def refuses(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        code = "import sys; print('ValueError: Failed to load model', file=sys.stderr); sys.exit(3)"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    timed_out = probe(model_file, PLAIN_CPU, extra_buffers=True, n_gpu_layers=0, cache=cache, runner=slow)
    assert timed_out.outcome == "timeout" and not timed_out.crashed
    refused = probe(model_file, PLAIN_CPU, extra_buffers=True, n_gpu_layers=0, cache=cache, runner=refuses)
    assert refused.outcome == "error" and "Failed to load model" in refused.detail
    assert not cache.path.exists()
    check = check_native(model_file, "auto", PLAIN_CPU, n_gpu_layers=0, runner=refuses)
    assert check.choice.enabled is True  # the model's own load reports the error, in its words


def test_crash_message_names_the_signal() -> None:
    result = native_probe.ProbeResult(True, 0, "crashed", "SIGILL", 0.5)
    line = crash_message(Path("/m/x.gguf"), result, 0)
    assert line.startswith("llama.cpp crashed (SIGILL) generating one token with x.gguf")
    assert signal.Signals.SIGILL.name in line


def test_chat_says_the_crash_in_one_line_before_the_first_turn(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The real CLI in this process; only the probe's child is one that dies of SIGSEGV."""
    from agentmm import cli

    calls: list[dict[str, object]] = []
    monkeypatch.setenv("AGENTMM_CACHE_DIR", str(tmp_path / "own-cache"))  # its crash verdicts stay its own
    monkeypatch.setattr(native_probe, "_run", _dies_with_buffers(calls, always=True))
    monkeypatch.setattr(sys, "argv", ["agentmm", "chat", "-m", "Hello!"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("agentmm: error: llama.cpp crashed (SIGSEGV) generating one token with ")
    assert calls, "the probe ran before the turn"
    from agentmm.threads import open_checkpointer

    # No turn was started, none half-saved (read raw: list_threads would roll a half-saved one back).
    assert next(open_checkpointer(tmp_path / "data").list(None), None) is None


# ------------------------------------------------------------------ the real shipped model


@pytest.mark.e2e
def test_the_shipped_model_answers_the_probe_with_and_without_buffers(shipped_model: Path) -> None:
    for extra_buffers in (True, False):
        result = run_probe(shipped_model, extra_buffers=extra_buffers, n_gpu_layers=0)
        assert result.outcome == "ok", result
        assert json.loads(result.detail)["ok"] is True


@pytest.mark.e2e
def test_buffered_llama_really_switches_repacking(shipped_model: Path) -> None:
    """llama.cpp names its CPU_REPACK buffer type at load when extra buffers are on; off, never."""
    code = (
        "import sys; from agentmm.cpu_buffers import buffered_llama_class as b; "
        "l = b()(model_path=sys.argv[1], extra_buffers=sys.argv[2] == 'on', n_ctx=256, verbose=True); "
        "print(l.model_params.use_extra_bufts)"
    )

    def load(mode: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", code, str(shipped_model), mode], capture_output=True, text=True)

    on, off = load("on"), load("off")
    assert on.returncode == 0 and off.returncode == 0, (on.stderr[-500:], off.stderr[-500:])
    assert on.stdout.split() == ["True"] and off.stdout.split() == ["False"]
    # With them on, llama.cpp offers its CPU_REPACK buffer type at load (and logs which tensors
    # it takes, or that it can take none); with them off it never names it.
    assert "CPU_REPACK" not in off.stderr
    if "CPU_REPACK" not in on.stderr:
        pytest.skip("this llama.cpp build offers no CPU_REPACK buffer on this CPU: nothing to switch off")


def test_settings_reach_the_built_in_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """cpu_extra_buffers, cache_dir and tool_calling configure ChatLlamaCpp as the Agent builds it."""
    from agentmm.llm import ChatLlamaCpp
    from agentmm.settings import load_settings

    monkeypatch.setenv("AGENTMM_CPU_EXTRA_BUFFERS", "false")
    monkeypatch.setenv("AGENTMM_TOOL_CALLING", "constrained")
    model = ChatLlamaCpp.from_settings(load_settings(cache_dir=tmp_path / "verdicts"))
    assert model.cpu_extra_buffers is False
    assert model.tool_calling == "constrained"
    assert model.probe_dir == str(tmp_path / "verdicts")
