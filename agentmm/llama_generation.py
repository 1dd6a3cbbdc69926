"""One reply's llama.cpp calls on a loaded model, as LangChain message chunks, usage summed.

A reply may take several generations (a tool decision, a call's arguments, the answer, a
retry): ``Generation`` runs each against the shared loaded model (whose lock its caller
holds, see ``agentmm.llama_runtime.generated_apart``), and adds up what they cost for the
reply's ``usage_metadata``. The tool-calling strategies (``agentmm.tool_strategies``) decide
which calls a reply makes; this module only makes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk

from agentmm.character_guard import CharacterGuard
from agentmm.errors import InputTooLongError, UnsupportedContentError
from agentmm.llama_runtime import CallStats, LoadedModel, add_stats, clear_errors, last_error, vocab_pieces


class Generation:
    """The calls that make one reply, and what they cost together.

    ``finish_reason`` and ``said`` (whether a streamed reply held any words or call) describe
    the last streamed reply; ``metadata`` gathers what the strategy reports (its name, a tool
    decision) for the reply's ``response_metadata``.
    """

    def __init__(self, loaded: LoadedModel, params: dict[str, Any], *, model_name: str, n_ctx: int) -> None:
        self.loaded = loaded
        self.params = params
        self.model_name = model_name
        self.n_ctx = n_ctx
        self.spent = CallStats()
        self.metadata: dict[str, Any] = {}
        self.finish_reason: str | None = None
        self.said = False
        # Words the reply in words starts with (``agentmm.reply_start``), used by the first
        # streamed reply that is not a tool call; what was used is in ``metadata["reply_start"]``.
        self.reply_start = ""

    def complete(
        self, messages: list[dict[str, Any]], grammar: str | None = None, *, max_tokens: int, greedy: bool = False,
        **extra: Any,
    ) -> str:  # fmt: skip
        """One whole (not streamed) answer's text, under ``grammar`` when given: a tool step's
        decision or a call's arguments, never the character's words, so the reply's guards
        (``logits_processor``: a copy guard would forbid quoting the user) are left out."""
        from llama_cpp import LlamaGrammar

        call = {**self.params, "max_tokens": max_tokens, "stop": None, **extra}
        call.pop("logits_processor", None)
        if greedy:
            call["temperature"] = 0.0
        if grammar is not None:
            call["grammar"] = LlamaGrammar.from_string(grammar, verbose=False)
        result = self.loaded.llama.create_chat_completion(messages=messages, stream=False, **call)
        add_stats(self.spent, self.loaded.stats)
        return str(result["choices"][0]["message"].get("content") or "")  # type: ignore[index,union-attr]

    def stream(self, rendered: list[dict[str, Any]], images: int = 0, **extra: Any) -> Iterator[AIMessageChunk]:
        """Stream one reply (``extra`` overrides this reply's parameters: stop, logit_bias,
        tools...; ``words_first=True``: it may not end before a word, see ``agentmm.words_first``);
        ``finish_reason`` and ``said`` describe it when it ends."""
        words_first = bool(extra.pop("words_first", False))
        params = {**self.params, **extra}
        if isinstance(params.get("tool_choice"), dict):  # a forced call's arguments: no reply guards
            params.pop("logits_processor", None)
        if words_first:
            params["logits_processor"] = self._words_first(params.get("logits_processor"))
        params = _bias_among_processors(params)
        started_calls: set[int] = set()
        self.said = False
        # The words the reply starts with go out with the model's first token, not before it,
        # so the time to the first token stays the model's.
        start = ""
        if images:
            chunks = self._see(rendered, params)
        elif handler := self._started(params):
            chunks = handler(llama=self.loaded.llama, messages=rendered, stream=True, **params)
            start = self.metadata["reply_start"]
        else:
            chunks = self.loaded.llama.create_chat_completion(messages=rendered, stream=True, **params)
        # Closed early (a reply stopped mid-way), the reply still counts what it spent, and an
        # image turn's cache is still cleared: hence finally.
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                self.finish_reason = choice.get("finish_reason") or self.finish_reason
                message = delta_to_chunk(choice.get("delta") or {}, started_calls)
                if message is None:
                    continue
                if start:
                    message = message.model_copy(update={"content": start + message.text})
                    start = ""
                self.said = self.said or bool(message.text.strip()) or bool(message.tool_call_chunks)
                yield message
            if start:  # the model ended at once: the reply is the start alone
                self.said = True
                yield AIMessageChunk(content=start)
        finally:
            if images:
                # The handler cleared the KV cache and filled it with image embeddings that the
                # token list cannot describe: start the next call cold rather than let it "reuse"
                # them as if they were the tokens once at those positions.
                self.loaded.stats.reused_tokens = 0
                self.loaded.llama.reset()
            add_stats(self.spent, self.loaded.stats)

    def _words_first(self, guards: Any) -> Any:
        """The reply's guards with ``agentmm.words_first``'s: the reply may not end before a word."""
        from llama_cpp import LogitsProcessorList

        from agentmm.words_first import WordsFirst, end_tokens

        loaded = self.loaded
        guard = WordsFirst(loaded.llama, end_tokens(loaded), vocab_pieces(loaded))
        return LogitsProcessorList([*(guards or ()), guard])

    def _started(self, params: dict[str, Any]) -> Any:
        """The chat handler that begins this reply with ``reply_start``, once per reply and only
        for a reply in words (no tool call can follow the words); None otherwise."""
        if not self.reply_start or "reply_start" in self.metadata or params.get("tool_choice") not in (None, "none"):
            return None
        from agentmm.reply_start import started_handler

        handler = started_handler(self.loaded, self.reply_start)
        if handler is not None:
            self.metadata["reply_start"] = self.reply_start
            for processor in params.get("logits_processor") or ():
                if isinstance(processor, CharacterGuard):  # the words are the reply's own
                    processor.lead = self.reply_start
        return handler

    def _see(self, rendered: list[dict[str, Any]], params: dict[str, Any]) -> Iterator[Any]:
        """Stream a reply to messages holding images, through the multimodal handler.

        The handler encodes the images and evaluates the whole prompt before it returns the
        stream, so what can go wrong with an image goes wrong here, as a typed error.
        """
        loaded = self.loaded
        clear_errors()
        try:
            return iter(loaded.vision(llama=loaded.llama, messages=rendered, stream=True, **params))
        except ValueError as exc:
            loaded.llama.reset()
            if "exceeds n_ctx" in str(exc):
                raise InputTooLongError(
                    f"the message and its images do not fit in the context (n_ctx={self.n_ctx}): {exc}"
                ) from exc
            why = last_error(exc)
            raise UnsupportedContentError(f"llama.cpp cannot read an image sent to {self.model_name}: {why}") from exc

    def last_chunk(self) -> AIMessageChunk:
        """The reply's closing chunk: usage over all its calls, cache reuse, finish reason."""
        spent = self.spent
        usage = {
            "input_tokens": spent.prompt_tokens,
            "output_tokens": spent.completion_tokens,
            "total_tokens": spent.prompt_tokens + spent.completion_tokens,
            "input_token_details": {"cache_read": spent.reused_tokens},
        }
        cache = {"prompt_tokens": spent.prompt_tokens, "reused_tokens": spent.reused_tokens}
        metadata = {**self.metadata, "finish_reason": self.finish_reason, "model_name": self.model_name, "cache": cache}
        return AIMessageChunk(
            content="",
            usage_metadata=usage,  # type: ignore[arg-type]
            response_metadata=metadata,
            chunk_position="last",
        )


def _bias_among_processors(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with a ``logit_bias`` moved into the ``logits_processor`` list, when a call
    has both: llama-cpp-python 0.3 then drops both (it joins them with ``list.extend``, whose
    value is None), so a retry's bracket bias and a played character's guards went unapplied."""
    bias, guards = params.get("logit_bias"), params.get("logits_processor")
    if not bias or not guards:
        return params
    import numpy as np
    from llama_cpp import LogitsProcessorList

    tokens = np.array([int(token) for token in bias], dtype=np.intc)
    values = np.array(list(bias.values()), dtype=np.single)

    def biased(input_ids: Any, scores: Any) -> Any:
        scores[tokens] += values
        return scores

    return {**params, "logit_bias": None, "logits_processor": LogitsProcessorList([*guards, biased])}


def delta_to_chunk(delta: dict[str, Any], started_calls: set[int]) -> AIMessageChunk | None:
    """One streamed OpenAI-style delta as a LangChain message chunk (None when it is empty).

    llama-cpp-python repeats a tool call's name and id in every chunk of it; LangChain
    concatenates chunk fields, so only the first chunk of each call may carry them.
    """
    content = delta.get("content") or ""
    calls = []
    for i, call in enumerate(delta.get("tool_calls") or []):
        index = call.get("index", i)
        function = call.get("function") or {}
        first = index not in started_calls
        started_calls.add(index)
        calls.append(
            tool_call_chunk(
                name=function.get("name") if first else None,
                args=function.get("arguments"),
                id=call.get("id") if first else None,
                index=index,
            )
        )
    if not content and not calls:
        return None
    return AIMessageChunk(content=content, tool_call_chunks=calls)
