"""Count tokens the way the model will: with its own tokenizer, cached per text.

Compose counts the whole window every turn; caching by text makes that a dictionary lookup
for every message but the new ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from langchain_core.language_models import BaseChatModel, BaseLanguageModel
from langchain_core.messages import BaseMessage

# Role markers and separators a chat template wraps around each message (ChatML uses 5).
PER_MESSAGE_OVERHEAD = 6
_CACHE_LIMIT = 50_000


def approximate_tokens(text: str) -> int:
    """About 3.5 characters a token: the fallback when a model exposes no tokenizer."""
    return math.ceil(len(text) / 3.5)


class TokenCounter:
    def __init__(self, count_text: Callable[[str], int], exact: bool | Callable[[], bool] = True) -> None:
        self._count_text = count_text
        self._exact = exact
        self._cache: dict[str, int] = {}

    @property
    def exact(self) -> bool:
        """Whether counts are the model's own tokenizer's (a callable ``exact`` is asked each time:
        a model server's model learns it on its first count)."""
        return self._exact() if callable(self._exact) else self._exact

    @classmethod
    def for_model(cls, model: BaseChatModel) -> TokenCounter:
        """The model's own tokenizer where it has one, else the approximation.

        langchain-core's default counts with GPT-2's tokenizer, which is not the model's
        own: a model only counts as having a tokenizer if it overrides the counting.
        """
        own = type(model)
        learns = getattr(model, "counts_exactly", None)
        if callable(learns):  # a model server's: its tokenize endpoint, or the approximation without one
            return cls(model.get_num_tokens, exact=learns)
        if own.get_num_tokens is not BaseLanguageModel.get_num_tokens or (
            own.get_token_ids is not BaseLanguageModel.get_token_ids
        ):
            return cls(model.get_num_tokens, exact=True)
        return cls(approximate_tokens, exact=False)

    def text(self, text: str) -> int:
        if not text:
            return 0
        cached = self._cache.get(text)
        if cached is None:
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            cached = self._cache[text] = self._count_text(text)
        return cached

    def message_text(self, text: str) -> int:
        """Tokens of ``text`` sent as one chat message (role markers included)."""
        return self.text(text) + PER_MESSAGE_OVERHEAD

    def message(self, message: BaseMessage) -> int:
        return self.message_text(message.text)
