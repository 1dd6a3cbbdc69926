"""The played character's name before its lines (``persona_names``): past replies named in the
prompt, the reply prefilled after the name and trimmed of it, and the turn that asks for it.

The prompt and the prefill are checked on the shipped model's real template and tokens; the
graph seam (who asks for a speaker, when) with a recording fake model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import Field

from agentmm.graphs.agent import Agent
from agentmm.llm import ChatLlamaCpp
from agentmm.speaker_names import LeadingName, named_replies, prefilled_handler


def test_past_replies_in_words_are_named_once() -> None:
    rendered = [
        {"role": "system", "content": "You are Nora."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": " *waves* Hello."},
        {"role": "assistant", "content": "Nora Quill: Already named."},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]},
        {"role": "tool", "content": "42"},
    ]
    named = named_replies(rendered, "Nora Quill")
    assert [m["content"] for m in named] == [
        "You are Nora.", "Hi", "Nora Quill: *waves* Hello.", "Nora Quill: Already named.", "", "42",
    ]  # fmt: skip
    assert rendered[2]["content"] == " *waves* Hello."  # the caller's messages are not changed
    assert named_replies(named, "Nora Quill") == named  # the same prompt turn after turn


@pytest.mark.parametrize(
    ("pieces", "shown"),
    [
        ([" Hello", " there."], "Hello there."),
        (["No", "ra Quill:", " Hi."], "Hi."),  # the model wrote the name again
        ([" Nor", "th wind."], "North wind."),  # began like the name, was not
        (["  ", "\n", "Fine."], "Fine."),
        (["Nora Quill:"], ""),  # only the name: nothing to show
        (["Nora"], "Nora"),  # a reply that is one word, which the name begins with
    ],
)
def test_the_reply_is_trimmed_of_the_name_only_at_its_start(pieces: list[str], shown: str) -> None:
    trim = LeadingName("Nora Quill")
    out = "".join(trim.feed(p) for p in pieces) + trim.finish()
    assert out == shown
    assert trim.feed(" Nora Quill: later") == " Nora Quill: later"  # after the start, words pass as they are


@pytest.fixture(scope="module")
def model(shipped_model: Path) -> Iterator[ChatLlamaCpp]:
    with ChatLlamaCpp(model_path=str(shipped_model), n_ctx=1024, max_tokens=24, temperature=0.0, seed=1) as chat:
        yield chat


def test_the_prefilled_prompt_is_the_template_s_own_with_the_name_after_it(model: ChatLlamaCpp) -> None:
    loaded = model.load()
    handler = prefilled_handler(loaded, "Nora Quill:")
    assert handler is not None
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Who are you?"}]
    prompt = loaded.chat_formatter(messages=messages).prompt
    assert prompt.endswith("<|im_start|>assistant\n")  # the GGUF template's own opening of the reply
    seen: list[str] = []
    real_tokenize = loaded.llama.tokenize

    def tokenize(text: bytes, *args: Any, **kwargs: Any) -> list[int]:
        seen.append(text.decode())
        return real_tokenize(text, *args, **kwargs)

    loaded.llama.tokenize = tokenize  # type: ignore[method-assign]
    try:
        list(handler(llama=loaded.llama, messages=messages, stream=True, max_tokens=2, temperature=0.0))
    finally:
        del loaded.llama.tokenize
    assert seen[0] == prompt + "Nora Quill:"


@pytest.mark.e2e
def test_a_named_reply_on_the_shipped_model_starts_after_the_name(model: ChatLlamaCpp) -> None:
    messages = [
        SystemMessage("You are Nora Quill, keeper of the lighthouse on Gull Rock."),
        HumanMessage("Hello!"),
        AIMessage("*She sets down the lamp.* Evening."),
        HumanMessage("What is your name?"),
    ]
    reply = model.invoke(messages, speaker="Nora Quill")
    assert reply.text and reply.text == reply.text.lstrip()
    assert not reply.text.startswith("Nora Quill:")
    # Its usage counts the prompt the model was given, the name on the earlier reply included.
    plain = model.invoke(messages)
    assert reply.usage_metadata["input_tokens"] > plain.usage_metadata["input_tokens"]


class Recording(FakeListChatModel):
    """A fake chat model that, like ``ChatLlamaCpp``, takes ``speaker`` and ``copy_limit``."""

    accepts_speaker: ClassVar[bool] = True
    accepts_copy_limit: ClassVar[bool] = True
    calls: list[dict[str, Any]] = Field(default_factory=list)

    def _stream(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Iterator[Any]:
        self.calls.append({**kwargs, "stop": stop})
        return super()._stream(messages, stop, run_manager, **kwargs)

    async def _astream(
        self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        self.calls.append({**kwargs, "stop": stop})
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk


@pytest.mark.parametrize(
    ("settings", "message", "speaker"),
    [
        ({"persona": "nora-quill", "persona_names": True}, "Who are you?", "Nora Quill"),
        ({"persona": "nora-quill"}, "Who are you?", None),  # off by default
        ({"persona_names": True}, "Who are you?", None),  # no persona: nobody to name
        ({"persona": "nora-quill", "persona_names": True, "intent": True}, "((OOC: which model is this?))", None),
    ],
)
def test_the_turn_names_the_speaker_while_a_persona_is_played(
    tmp_path: Path, settings: dict[str, Any], message: str, speaker: str | None
) -> None:
    model = Recording(responses=["Aye."] * 3, calls=[])
    with Agent(model=model, data_dir=tmp_path, memory=False, user_name="Sam", **settings) as agent:
        agent.chat(message)
    [call] = model.calls
    assert call.get("speaker") == speaker
    assert call["stop"] == (["\nSam:"] if speaker else None)  # the user's next line is not the model's to write
