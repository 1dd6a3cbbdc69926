"""llama.cpp has one log callback per process, and a log line does not say which model wrote it:
its lines are shown while any open model was loaded ``verbose``, not as the last load said."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.llama_runtime import LoadedModel, load_model


def load(path: Path, *, verbose: bool) -> LoadedModel:
    return load_model(str(path), n_ctx=256, n_gpu_layers=0, n_threads=1, n_batch=64, chat_format=None,
                      verbose=verbose)  # fmt: skip


def test_a_quiet_model_loaded_later_leaves_a_verbose_ones_logs_on(
    shipped_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The last load's verbose switched the callback for the whole process: a quiet model loaded
    after one loaded with ``verbose = true`` (a caption model for a picture) silenced its logs."""
    loud = load(shipped_model, verbose=True)
    quiet = load(shipped_model, verbose=False)
    try:
        capsys.readouterr()
        loud.llama.create_completion("Hi", max_tokens=1)
        assert "llama_perf_context_print" in capsys.readouterr().err  # llama.cpp's own timing lines
    finally:
        loud.close()
    try:
        load(shipped_model, verbose=False).close()  # no verbose model open: its load says nothing
        assert capsys.readouterr().err == ""
    finally:
        quiet.close()
