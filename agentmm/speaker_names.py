"""The played character's name before its lines: on its past replies in the prompt, and written
into the prompt right before the reply being made (the ``persona_names`` setting, issue 16).

Why: a small model asked "What is your name?" answers as whoever it was trained to be, or
as someone new ("Liam."), because the name it should use sits far back in the system prompt.
SillyTavern's "include names" puts it right where the model looks: every earlier reply reads
``Ilse Varga: ...`` and the new one starts after ``Ilse Varga:`` already in the prompt, so the
model continues a line that character is speaking. The user never sees the prefilled name;
a reply that writes it again is trimmed of it (``LeadingName``).

Only models whose chat template agentmm can render itself get the prefill (a GGUF's own
template, as llama-cpp-python renders it); others get the names on past replies only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentmm.llama_runtime import LoadedModel


def speaker_tag(speaker: str) -> str:
    """What stands before the character's lines: ``"Ilse Varga:"``."""
    return f"{speaker}:"


def named_replies(rendered: list[dict[str, Any]], speaker: str) -> list[dict[str, Any]]:
    """``rendered`` (llama-cpp-python's messages) with each past reply in words starting
    ``speaker``'s tag; a reply that calls tools, or already starts with the tag, is left as it is.
    A pure function of its arguments, so each turn's prompt begins as the last one's did."""
    tag = speaker_tag(speaker)
    named = []
    for message in rendered:
        content = message.get("content")
        if (
            message.get("role") == "assistant"
            and isinstance(content, str)
            and content.strip()
            and not message.get("tool_calls")
            and not content.lstrip().startswith(tag)
        ):
            message = {**message, "content": f"{tag} {content.lstrip()}"}
        named.append(message)
    return named


@dataclasses.dataclass(frozen=True)
class _Prefilled:
    """A chat formatter whose prompt ends with ``prefill`` after the template's own opening of
    the reply (``<|im_start|>assistant\\n``)."""

    formatter: Any
    prefill: str

    def __call__(self, **kwargs: Any) -> Any:
        response = self.formatter(**kwargs)
        return dataclasses.replace(response, prompt=response.prompt + self.prefill)


def prefilled_handler(loaded: LoadedModel, prefill: str) -> Callable[..., Any] | None:
    """A llama-cpp-python chat handler (called as ``create_chat_completion`` calls one) whose
    prompt ends with ``prefill``; None where the model is not rendered by its GGUF's own template
    (a named ``chat_format`` or a custom chat handler, which agentmm does not re-create)."""
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
    return llama_chat_format.chat_formatter_to_chat_completion_handler(_Prefilled(loaded.chat_formatter, prefill))


def _token_text(llama: Any, token: int) -> str:
    """A special token's text, as llama-cpp-python gives its template ('' for none)."""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace") if token != -1 else ""


class LeadingName:
    """Trims a streamed reply's start: the space after the prefilled tag, and the tag itself
    when the model writes it again (``Ilse Varga: Ilse Varga: Hello``). Text is held back only
    while it could still be the start of the tag."""

    def __init__(self, speaker: str) -> None:
        self.tag = speaker_tag(speaker)
        self.held = ""
        self.done = False

    def feed(self, text: str) -> str:
        """What of ``text`` can be shown now."""
        if self.done:
            return text
        self.held += text
        lead = self.held.lstrip()
        if not lead:
            return ""
        if lead.startswith(self.tag):
            lead = lead[len(self.tag) :].lstrip()
            if not lead:
                return ""
        elif self.tag.startswith(lead):
            return ""  # maybe the tag again: wait for more
        self.done = True
        self.held = ""
        return lead

    def finish(self) -> str:
        """What is still held when the reply ends (a reply that was only part of the tag)."""
        if self.done:
            return ""
        self.done = True
        held, self.held = self.held.strip(), ""
        return "" if held == self.tag else held
