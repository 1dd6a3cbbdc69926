"""agentmm on an OpenAI-compatible model server (``model_url``): a real llama-cpp-python server on
the shipped model, started once for the module on a free port, stopped by its PID."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.tools import tool

from agentmm.doctor import run_checks
from agentmm.errors import ModelServerError
from agentmm.graphs.agent import Agent
from agentmm.model_server import (
    REQUEST_TIMEOUT_S,
    ServerTokenizer,
    endpoint_check,
    server_chat_class,
    server_chat_model,
)
from agentmm.settings import load_settings
from agentmm.tokens import TokenCounter, approximate_tokens
from agentmm.tools.builtin import roll_dice
from tests.llama_server import LlamaServer, free_port

N_CTX = 1024
SMALL = {"memory": False, "max_tokens": 24, "n_ctx": N_CTX, "seed": 1, "temperature": 0.0}


@pytest.fixture(scope="module")
def server(shipped_model: Path) -> Iterator[LlamaServer]:
    with LlamaServer(shipped_model, n_ctx=N_CTX) as running:
        yield running


@pytest.fixture
def agent(server: LlamaServer, isolated_env: Path) -> Iterator[Agent]:
    with Agent(model_url=server.url, **SMALL) as made:
        yield made


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there


def test_a_streamed_reply_with_usage(agent: Agent) -> None:
    turn = agent.stream("Hi! My name is Oskar. Say hello.")
    text = "".join(turn)
    result = turn.result
    assert text and text == result.reply
    assert 0 < result.usage.completion_tokens <= 24
    assert result.usage.prompt_tokens > 10
    assert result.timings.ttft_s > 0
    assert result.trace["tokenizer"] == "model"  # compose counted with the server's tokenizer
    assert type(agent.model).__name__ == "ChatModelServer" and agent.check_model() is None


def test_the_second_turn_sees_the_first(agent: Agent) -> None:
    first = agent.chat("Remember this word: pineapple.")
    second = agent.chat("Which word did I ask you to remember?", first.thread_id)
    messages = agent.graph.get_state(agent.config(first.thread_id)).values["messages"]
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]
    assert "pineapple" in messages[0].text and messages[1].text == first.reply
    # The second prompt holds the first exchange: at least its message and reply more tokens.
    grown = agent.model.get_num_tokens(messages[0].text) + agent.model.get_num_tokens(first.reply)
    assert second.usage.prompt_tokens >= first.usage.prompt_tokens + grown


def test_tokens_are_counted_by_the_servers_tokenizer(agent: Agent, shipped_model: Path) -> None:
    import llama_cpp

    model = agent.model
    assert model.counts_exactly() and TokenCounter.for_model(model).exact
    # A turn's tokenize call may wait behind other replies on a busy one-at-a-time server.
    assert model.tokenizer.timeout_s == REQUEST_TIMEOUT_S
    local = llama_cpp.Llama(str(shipped_model), vocab_only=True, verbose=False)
    for text in ("Hello there, how are you?", "Ünïcödé — and emoji 🙂 <|im_start|>", "a " * 300):
        expected = local.tokenize(text.encode(), add_bos=False, special=True)
        assert model.get_token_ids(text) == expected
        assert model.get_num_tokens(text) == len(expected)
    assert len(expected) != approximate_tokens(text)  # not the approximation by chance


def test_a_server_without_a_tokenize_endpoint_is_asked_once() -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(404, json={"detail": "Not Found"})

    tokenizer = ServerTokenizer("http://server/v1", "m", None)
    tokenizer._client = httpx.Client(base_url="http://server", transport=httpx.MockTransport(answer))
    assert tokenizer.count("Hello world, again") == approximate_tokens("Hello world, again")
    probes = len(asked)
    assert probes == 3 and not tokenizer.exact  # each endpoint family once
    tokenizer.count("another text")
    tokenizer.count("and one more")
    assert len(asked) == probes


def test_a_stop_sequence_is_honoured(agent: Agent) -> None:
    model = agent.model
    prompt = "Write one sentence about the sea."
    full = model.invoke(prompt).text
    words = full.split()
    assert len(words) > 4, full
    stop = words[3]
    stopped = "".join(chunk.text for chunk in model.stream(prompt, stop=[stop]))
    assert stopped == full[: full.index(stop)]


def test_a_request_meanwhile_waits_instead_of_cutting_the_reply(agent: Agent) -> None:
    """The fixture's server runs with --interrupt_requests False: a tokenize call while a reply
    streams (another agent's compose) waits for it, and the reply ends whole."""
    import threading

    model = agent.model
    replies: list[Any] = []
    streaming = threading.Thread(target=lambda: replies.append(list(model.stream("Tell me a long story."))))
    streaming.start()
    assert model.get_num_tokens("a count asked while the reply streams") > 0
    streaming.join(timeout=60)
    chunks = replies[0]
    assert sum(bool(chunk.text) for chunk in chunks) > 1
    assert any(chunk.response_metadata.get("finish_reason") for chunk in chunks)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


def test_tool_calls_use_the_servers_own_tool_calling(server: LlamaServer, isolated_env: Path) -> None:
    # llama-cpp-python's server forces a named tool with a grammar of its own.
    model = server_chat_model(load_settings(model_url=server.url, tool_calling="native", **SMALL))
    assert model.tool_strategy() == "native"
    reply = model.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Paris?")
    assert reply.tool_calls and reply.tool_calls[0]["name"] == "get_weather"
    assert set(reply.tool_calls[0]["args"]) == {"city"}
    assert "tool_decision" not in reply.response_metadata  # not agentmm's steps


def test_llama_cpp_pythons_server_gets_the_constrained_steps(agent: Agent) -> None:
    """It answers tool_choice="auto" in text, so "auto" picks agentmm's two steps there; each
    answer is constrained by the server's JSON-schema support, so a call is always well formed."""
    model = agent.model
    assert model.tool_strategy() == "constrained"
    reply = model.bind_tools([get_weather, roll_dice], tool_choice="any").invoke("What is the weather in Oslo?")
    assert len(reply.tool_calls) == 1 and not reply.invalid_tool_calls
    call = reply.tool_calls[0]
    schema = {"get_weather": {"city"}, "roll_dice": {"notation"}}
    assert set(call["args"]) == schema[call["name"]] and all(isinstance(v, str) for v in call["args"].values())
    assert reply.response_metadata["tool_calling"] == "constrained"
    assert reply.response_metadata["tool_decision"] == call["name"]
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0  # both steps counted


def test_a_named_tool_skips_the_decision(agent: Agent) -> None:
    reply = agent.model.bind_tools([roll_dice], tool_choice="roll_dice").invoke("Roll two six-sided dice.")
    assert [c["name"] for c in reply.tool_calls] == ["roll_dice"]
    assert set(reply.tool_calls[0]["args"]) == {"notation"}


def test_a_server_that_refuses_openais_schema_form_gets_the_other(server: LlamaServer, isolated_env: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    model = server_chat_model(load_settings(model_url=server.url, tool_calling="constrained", **SMALL))
    # As if the server were of an unknown kind: OpenAI's json_schema first, which this one refuses (422).
    monkeypatch.setattr(type(model), "_server_kind", lambda self: None)
    reply = model.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather in Rome?")
    assert [c["name"] for c in reply.tool_calls] == ["get_weather"]
    assert model._format == 1  # json_object with a schema: llama-cpp-python's form, kept for next time


def test_an_agent_turn_calls_a_tool_through_the_constrained_steps(server: LlamaServer, isolated_env: Path) -> None:
    with Agent(model_url=server.url, tools=["roll_dice"], **SMALL) as made:
        result = made.chat("Roll 2d6 for me, please.")
        messages = made.graph.get_state(made.config(result.thread_id)).values["messages"]
    calls = [call for m in messages if m.type == "ai" for call in m.tool_calls]
    decisions = [m.response_metadata.get("tool_decision") for m in messages if m.type == "ai"]
    assert decisions[0] in ("roll_dice", "none")
    if decisions[0] == "roll_dice":  # then it was run, and answered with its result
        assert calls and calls[0]["name"] == "roll_dice" and set(calls[0]["args"]) == {"notation"}
        assert any(m.type == "tool" and m.name == "roll_dice" for m in messages)
    assert messages[-1].type == "ai" and not messages[-1].tool_calls


def test_doctor_checks_a_live_server(server: LlamaServer, isolated_env: Path) -> None:
    report = run_checks(load_settings(model_url=server.url, memory=False))
    names = [check["name"] for check in report["checks"]]
    assert "model server" in names and "native" not in names and "model" not in names  # no GGUF probed
    check = report["checks"][names.index("model server")]
    assert check["ok"], check
    assert "under any name (llama-cpp-python)" in check["detail"] and "counted by the server" in check["detail"]
    assert report["model"]["models"] == [str(server.model)] and report["model"]["model_served"]
    gpu = report["checks"][names.index("gpu")]
    assert gpu["detail"].startswith(f"the model runs on the server at {server.url}, not on this machine")


def test_doctor_names_a_dead_server_in_one_line(isolated_env: Path) -> None:
    url = dead_url()
    report = run_checks(load_settings(model_url=url, memory=False))
    check = next(check for check in report["checks"] if check["name"] == "model server")
    assert not check["ok"] and not report["ok"]
    assert check["detail"].startswith(f"cannot reach the model server at {url}") and "\n" not in check["detail"]


def test_doctor_says_a_model_the_server_does_not_serve(monkeypatch: pytest.MonkeyPatch, isolated_env: Path) -> None:
    listed = {"data": [{"id": "qwen", "owned_by": "vllm"}, {"id": "llama", "owned_by": "vllm"}]}
    monkeypatch.setattr(httpx, "get", lambda *a, **k: httpx.Response(200, json=listed))
    report = endpoint_check(load_settings(model_url=dead_url(), model="mistral"))
    assert not report.ok and report.reachable and report.models == ["qwen", "llama"]
    assert "does not serve model 'mistral'; it serves qwen, llama" in report.detail


def test_an_agent_on_a_dead_server_fails_with_the_typed_error(isolated_env: Path) -> None:
    url = dead_url()
    with Agent(model_url=url, **SMALL) as agent, pytest.raises(ModelServerError) as caught:
        agent.chat("Hello?")
    message = str(caught.value)
    assert message.startswith(f"cannot reach the model server at {url}") and "\n" not in message


def test_a_model_the_server_does_not_serve_is_the_typed_error(isolated_env: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"error": {"message": "The model `nope` does not exist.", "code": 404}})

    model = server_chat_class()(base_url="http://server/v1", model="nope", api_key="x", max_retries=0,
                                http_client=httpx.Client(transport=httpx.MockTransport(answer)))  # fmt: skip
    with pytest.raises(ModelServerError, match="does not serve model 'nope'"):
        model.invoke("Hello")
    with pytest.raises(ModelServerError, match="does not serve model 'nope'"):
        list(model.stream("Hello"))


def test_the_server_model_takes_its_settings(isolated_env: Path) -> None:
    settings = load_settings(model_url="http://host:8000/v1/", model="qwen", model_api_key="k", max_tokens=33,
                             temperature=0.2, top_p=0.5, seed=3)  # fmt: skip
    model = server_chat_model(settings)
    payload = model._get_request_payload([("user", "hi")], stop=["END"])
    assert payload["model"] == "qwen" and payload["max_tokens"] == 33 and "max_completion_tokens" not in payload
    assert (payload["temperature"], payload["top_p"], payload["seed"], payload["stop"]) == (0.2, 0.5, 3, ["END"])
    assert str(model.openai_api_base) == "http://host:8000/v1" and model.stream_usage
    assert model.openai_api_key.get_secret_value() == "k"


def sse(*chunks: dict[str, Any]) -> httpx.Response:
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})


def delta(content: str | None = None, finish: str | None = None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
    choices = [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [] if usage else choices, **({"usage": usage} if usage else {})}  # fmt: skip


def mocked(answer: Any) -> Any:
    return server_chat_class()(base_url="http://server/v1", model="m", api_key="x", max_retries=0, stream_usage=True,
                               http_client=httpx.Client(transport=httpx.MockTransport(answer)),
                               http_async_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)))  # fmt: skip


def test_a_reply_the_server_cut_short_is_the_typed_error() -> None:
    model = mocked(lambda request: sse(delta("Once"), delta(" upon")))  # no finish_reason: cut
    with pytest.raises(ModelServerError, match="ended the reply before it was finished"):
        list(model.stream("Tell me a story"))

    async def astream() -> None:
        async for _ in model.astream("Tell me a story"):
            pass

    with pytest.raises(ModelServerError, match="interrupt_requests False"):
        asyncio.run(astream())


def test_usage_and_cached_tokens_the_server_reports_are_kept() -> None:
    usage = {"prompt_tokens": 120, "completion_tokens": 2, "total_tokens": 122,
             "prompt_tokens_details": {"cached_tokens": 100}}  # fmt: skip
    model = mocked(lambda request: sse(delta("Hi"), delta("!", finish="stop"), delta(usage=usage)))
    chunks = list(model.stream("Hello"))
    reply = chunks[0]
    for chunk in chunks[1:]:
        reply += chunk
    assert reply.text == "Hi!" and reply.usage_metadata["input_tokens"] == 120
    assert reply.response_metadata["cache"] == {"prompt_tokens": 120, "reused_tokens": 100}
    assert "usage_counted" not in reply.response_metadata


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENTMM_MEMORY": "false"}
    return subprocess.run([sys.executable, "-m", "agentmm.cli", *args], capture_output=True, text=True, timeout=120,
                          env=env)  # fmt: skip


def test_chat_takes_the_server_by_flag(server: LlamaServer, isolated_env: Path) -> None:
    done = _cli("chat", "-m", "Say hello.", "--model-url", server.url, "--max-tokens", "8", "--json")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    assert reply["reply"] and reply["usage"]["completion_tokens"] <= 8


def test_chat_on_a_dead_server_is_one_line(isolated_env: Path) -> None:
    url = dead_url()
    done = _cli("chat", "-m", "Hello?", "--model-url", url)
    assert done.returncode != 0
    assert done.stderr.startswith(f"agentmm: error: cannot reach the model server at {url}")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
