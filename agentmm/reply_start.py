"""A reply begun with given words: the prompt ends with them right after the chat template opens
the reply (``<|im_start|>assistant\\n``), so the model goes on from them, and the reply the user
sees starts with them (the ``persona_identity_start`` setting: "I'm {{char}}" before the answer
to "What is your name?"; ``agentmm.identity_questions``).

Only models whose chat template agentmm can render itself get it: a GGUF's own template, as
llama-cpp-python renders it. A named ``chat_format`` or a custom chat handler (an image
projector's) is not re-created here, and such a reply simply starts as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentmm.llama_runtime import LoadedModel


@dataclasses.dataclass(frozen=True)
class _Started:
    """A chat formatter whose prompt ends with ``start`` after the template's own opening of
    the reply."""

    formatter: Any
    start: str

    def __call__(self, **kwargs: Any) -> Any:
        response = self.formatter(**kwargs)
        return dataclasses.replace(response, prompt=response.prompt + self.start)


def started_handler(loaded: LoadedModel, start: str) -> Callable[..., Any] | None:
    """A llama-cpp-python chat handler (called as ``create_chat_completion`` calls one: messages,
    tools, sampling parameters) whose prompt ends with ``start``; None where the model is not
    rendered by its GGUF's own template."""
    from llama_cpp import llama_chat_format

    llama = loaded.llama
    template = loaded.chat_template
    if llama.chat_handler is not None or llama.chat_format != "chat_template.default" or not template:
        return None
    if loaded.chat_formatter is None:
        eos, bos = llama.token_eos(), llama.token_bos()
        loaded.chat_formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llama, eos),
            bos_token=_token_text(llama, bos),
            stop_token_ids=[eos],
        )
    return llama_chat_format.chat_formatter_to_chat_completion_handler(_Started(loaded.chat_formatter, start))


def _token_text(llama: Any, token: int) -> str:
    """A special token's text, as llama-cpp-python gives its template ('' for none)."""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace") if token != -1 else ""
