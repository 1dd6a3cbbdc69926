"""The rolling summary keeps the chat's KV cache: on the real shipped model (SmolLM2-135M)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmm.graphs.agent import Agent

HEAD = ("system_prompt", "description", "personality", "scenario", "example_dialogue")


@pytest.mark.e2e
def test_the_turn_after_a_fold_reuses_the_persona_head_from_the_cache(shipped_model: Path, tmp_path: Path) -> None:
    """The summary was written with the chat's own Llama after the reply, and its prompt
    overwrote the KV cache: the next turn re-used 4 tokens (the template's first) instead of
    the unchanged persona head (~340), a full prefill after every fold."""
    # A 640-token window and a long first message fold on the first turn: the head (~340) and
    # the 48-token summary leave the history ~200 tokens. (768 and one sentence a turn took 6
    # turns to fold: 45 s of the default run's slowest test.)
    with Agent(model=str(shipped_model), data_dir=tmp_path, memory=False, persona="Nora Quill",
               n_ctx=640, max_tokens=16, seed=3) as agent:  # fmt: skip
        thread, folded_at = None, None
        for i in range(4):
            text = "Tell me about the lighthouse, the harbour and the boats near the pier. " * (2 if i == 0 else 1)
            result = agent.chat(f"Turn {i}: {text}", thread)
            thread = result.thread_id
            if folded_at is not None:
                break
            if (result.trace.get("summary") or {}).get("updated"):
                folded_at = i
        assert folded_at is not None, "no fold within 4 turns: the test's context is too big"
    after = result.trace
    head = sum(p["tokens"] for p in after["prompt_parts"] if p["part"] in HEAD)
    assert head > 300 and any(p["part"] == "summary" for p in after["prompt_parts"])
    assert after["cache"]["reused_tokens"] >= head, after["cache"]


def test_a_build_without_the_state_calls_or_a_refused_restore_costs_only_a_prefill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pin allows llama-cpp-python builds older than the sequence-state API: keeping the cache
    is an optimisation, so a missing or refusing call must not fail the summary (and so the turn),
    and a restore that fails leaves the cache empty rather than holding the summary's tokens."""
    import threading
    from types import SimpleNamespace

    import llama_cpp

    from agentmm import llama_cache

    class Llama:
        n_tokens = 5
        resets = 0
        _ctx = SimpleNamespace(ctx=object())
        input_ids = (1, 2, 3, 4, 5)

        def reset(self) -> None:
            self.resets += 1

    loaded = SimpleNamespace(llama=Llama(), lock=threading.Lock(), closed=False)
    monkeypatch.delattr(llama_cpp, "llama_state_seq_get_size")
    with llama_cache.cache_kept(loaded):  # type: ignore[arg-type]
        pass  # no AttributeError out of the copy that the build lacks
    assert loaded.llama.resets == 0

    monkeypatch.setattr(llama_cache, "save_cache", lambda llama: llama_cache.SavedCache(b"", 0, [1]))
    monkeypatch.setattr(llama_cache, "restore_cache", lambda llama, saved: (_ for _ in ()).throw(OSError("no")))
    with llama_cache.cache_kept(loaded):  # type: ignore[arg-type]
        pass
    assert loaded.llama.resets == 1
