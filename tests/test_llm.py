"""ChatLlamaCpp on the real shipped model (SmolLM2-135M): fast enough for the default run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from agentmm.errors import CorruptModelError, ModelNotFoundError
from agentmm.llm import ChatLlamaCpp

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def model(shipped_model: Path) -> ChatLlamaCpp:
    return ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048, temperature=0.0, seed=1, max_tokens=40)


def test_stream_usage_and_cache_metadata(model: ChatLlamaCpp) -> None:
    chunks = list(model.stream([SystemMessage("Be brief."), HumanMessage("Name three colours.")]))
    text = "".join(c.text for c in chunks)
    assert len(text.strip()) > 0
    assert sum(1 for c in chunks if c.text) > 3  # token by token, not one block
    final = chunks[-1]
    usage = final.usage_metadata
    assert usage is not None and usage["input_tokens"] > 10 and 0 < usage["output_tokens"] <= 40
    assert final.response_metadata["finish_reason"] in {"stop", "length"}
    assert final.response_metadata["model_name"] == "SmolLM2-135M-Instruct.Q4_1"


def test_invoke_is_deterministic_with_seed(model: ChatLlamaCpp) -> None:
    first = model.invoke("Say hello to Mira.", temperature=0.8, seed=5)
    second = model.invoke("Say hello to Mira.", temperature=0.8, seed=5)
    assert first.content == second.content
    assert first.usage_metadata and first.usage_metadata["output_tokens"] > 0


def test_stop_sequences_cut_the_reply(model: ChatLlamaCpp) -> None:
    reply = model.invoke("Count from 1 to 10 separated by commas.", stop=["5"], max_tokens=60)
    assert "5" not in reply.text
    assert "6" not in reply.text


def test_prefix_cache_is_reused_between_calls(model: ChatLlamaCpp) -> None:
    history = [SystemMessage("You are a ship's navigator. " * 20), HumanMessage("Where are we?")]
    first = model.invoke(history)
    second = model.invoke([*history, first, HumanMessage("And where next?")])
    cache = second.response_metadata["cache"]
    assert cache["reused_tokens"] >= first.usage_metadata["input_tokens"] - 2
    assert second.usage_metadata["input_token_details"]["cache_read"] == cache["reused_tokens"]


def test_copies_and_bindings_share_the_loaded_model_other_runtimes_do_not(
    shipped_model: Path, model: ChatLlamaCpp
) -> None:
    from agentmm.runtime import Runtime

    assert model.model_copy(update={"temperature": 0.5}).load() is model.load()
    assert model.bind_tools([Roll]).bound.load() is model.load()  # type: ignore[attr-defined]
    with Runtime() as runtime:
        one = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=512, runtime=runtime)
        two = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=512, max_tokens=8, runtime=runtime)
        assert one.load() is two.load()  # one runtime: one model per file and context settings
        assert one.load() is not model.load()  # another runtime never shares it
        two.close()  # the runtime is not the model's: it stays loaded
        shared = one.load()
        assert not shared.closed
    assert shared.closed and one.runtime.closed  # closing the runtime freed it


def test_close_frees_the_model_of_its_own_runtime(shipped_model: Path) -> None:
    from agentmm.errors import RuntimeClosedError

    with ChatLlamaCpp(model_path=str(shipped_model), n_ctx=512, max_tokens=2) as own:
        loaded = own.load()
        copy = own.model_copy()
    assert loaded.closed
    with pytest.raises(RuntimeClosedError, match="closed"):
        copy.invoke("hi")


def test_token_counting_uses_the_model_tokenizer(model: ChatLlamaCpp) -> None:
    assert model.get_num_tokens("Hello there") == len(model.get_token_ids("Hello there")) >= 2


class Roll(BaseModel):
    """Roll dice in standard notation."""

    notation: str = Field(description="Dice notation such as 2d6", pattern=r"^[1-9]d(4|6|8|10|12|20)$")


def test_forced_tool_call_is_well_formed(model: ChatLlamaCpp) -> None:
    bound = model.bind_tools([Roll], tool_choice="Roll")
    reply = bound.invoke("Roll two six-sided dice for me.")
    assert len(reply.tool_calls) == 1
    call = reply.tool_calls[0]
    assert call["name"] == "Roll"
    Roll(**call["args"])  # the grammar kept it inside the schema


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dice_tool_call_is_well_formed_at_any_temperature(shipped_model: Path, seed: int) -> None:
    import re

    from agentmm.tools.builtin import DICE_PATTERN, roll_dice

    hot = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=2048, temperature=1.0, seed=seed, max_tokens=40)
    reply = hot.bind_tools([roll_dice], tool_choice="roll_dice").invoke("Roll 4d6, keep the highest 3.")
    (call,) = reply.tool_calls
    assert re.match(DICE_PATTERN, call["args"]["notation"])  # well-formed, whatever the sampling


def test_auto_tool_choice_decides_then_calls(model: ChatLlamaCpp) -> None:
    from agentmm.tools.builtin import calculate, roll_dice

    bound = model.bind_tools([roll_dice, calculate])
    chat = bound.invoke([SystemMessage("You are a game master."), HumanMessage("Hello! Who are you?")])
    assert chat.tool_calls == [] and chat.text and chat.response_metadata["tool_decision"] == "none"
    roll = bound.invoke([SystemMessage("You are a game master."), HumanMessage("Roll 2d6 for my attack please.")])
    assert roll.response_metadata["tool_decision"] == "roll_dice"
    assert [c["name"] for c in roll.tool_calls] == ["roll_dice"] and roll.text == ""
    assert roll.usage_metadata and roll.usage_metadata["output_tokens"] > 0


def test_unknown_tool_choice_is_rejected(model: ChatLlamaCpp) -> None:
    from agentmm.tools.builtin import roll_dice

    with pytest.raises(ValueError, match="names no bound tool"):
        model.bind_tools([roll_dice], tool_choice="lockpick")


def test_structured_output_via_json_schema(model: ChatLlamaCpp) -> None:
    schema = Roll.model_json_schema()
    reply = model.invoke(
        "Roll three twenty-sided dice.",
        response_format={"type": "json_object", "schema": schema},
        max_tokens=30,
    )
    Roll(**json.loads(reply.text))


def test_corrupt_model_fails_typed(tmp_path: Path, shipped_model: Path) -> None:
    broken = tmp_path / "broken.gguf"
    with shipped_model.open("rb") as f:
        broken.write_bytes(f.read(1000))
    with pytest.raises(CorruptModelError):
        ChatLlamaCpp(model_path=str(broken)).invoke("hi")


def test_loading_on_a_thread_never_redirects_the_process_output(shipped_model: Path) -> None:
    """A chat loads its model in the background while the main thread prints and starts the
    line editor: llama-cpp-python's own silencing pointed sys.stdout at /dev/null meanwhile."""
    import os
    import sys
    import threading

    stdout, stderr = sys.stdout, sys.stderr
    fd1 = os.fstat(1)
    seen: set[tuple[bool, bool, bool]] = set()
    fresh = ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1536, max_tokens=4)  # its own runtime: loads afresh
    loader = threading.Thread(target=fresh.load)
    loader.start()
    while loader.is_alive():
        now = os.fstat(1)
        seen.add((sys.stdout is stdout, sys.stderr is stderr, (now.st_dev, now.st_ino) == (fd1.st_dev, fd1.st_ino)))
    loader.join()
    fresh.close()
    assert seen <= {(True, True, True)}


def test_a_start_reads_the_model_file_header_once(
    shipped_model: Path, monkeypatch: pytest.MonkeyPatch, isolated_env: Path
) -> None:
    """Resolving the model, the native check, the chat-template warning and the load each read
    the GGUF header again (~12 ms each, four per chat start)."""
    import agentmm.gguf
    import agentmm.models
    from agentmm.doctor import missing_template
    from agentmm.settings import load_settings

    reads: list[Path] = []
    real = agentmm.gguf.read_gguf

    def counted(path: Path) -> agentmm.gguf.GGUFInfo:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(agentmm.gguf, "read_gguf", counted)
    monkeypatch.setattr(agentmm.models, "read_gguf", counted)
    configured = ChatLlamaCpp.from_settings(load_settings(n_ctx=512))
    llm = configured.model_copy(update={"probe_dir": None})  # no probe child: the reads are the point
    llm.native_check()
    assert missing_template(llm) is None
    with llm:
        llm.load()
    assert reads == [shipped_model]


def test_a_rewritten_model_file_is_read_again(tmp_path: Path) -> None:
    from tests.tiny_gguf import write_header_only_gguf

    path = write_header_only_gguf(tmp_path / "m.gguf", chat_template="first")
    llm = ChatLlamaCpp(model_path=str(path))
    assert llm.gguf_info().chat_template == "first"
    write_header_only_gguf(tmp_path / "next.gguf", chat_template="second, longer").replace(path)
    assert llm.gguf_info().chat_template == "second, longer"
    path.unlink()
    with pytest.raises(ModelNotFoundError, match="not found"):
        llm.gguf_info()
