"""Keeping a played character from saying it is an assistant: a sampling guard for llama.cpp.

Small models playing a persona fall back on their chat tuning ("As an AI…", "I'm just a
chatbot", "I'm here to help you with…", "I don't have a name"): in ``agentmm eval persona`` a
quarter of Qwen2.5-0.5B's replies held one (BENCHMARKS.md). Such a phrase is a short opening
followed by one giveaway word, so while a persona is played the guard watches the tail of the
reply being written and, right after an opening (``I'm an``, ``as a``, ``I'm here to``, ``I
don't have a``…), forbids the tokens that start a giveaway word (``AI``, ``chatbot``,
``assistant``, ``help``, ``name``…); the model writes the sentence some other way ("I'm an
old healer…"). The model's own brand names (Qwen, OpenAI…) are forbidden throughout. Nothing
else is touched: a reply that never reaches an opening samples exactly as without the guard.

It is a llama-cpp-python logits processor (``logits_processor``, one per reply); the tokens
that start each giveaway word are found once per loaded model by tokenizing the word's
spellings (``GuardTokens``), so it works with any GGUF's vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from llama_cpp import Llama

# (opening the reply's tail ends with, words that must not come next): an opening is matched
# at the end of the last few tokens' text, case-insensitively. Words a character may well say
# of itself ("a digital artist", "a large man", "a machine" for a robot) are left out, and so is
# "persona", whose first token " person" would forbid "I'm a real person".
_IDENTITY = [
    "ai", "a.i.", "artificial", "language", "llm", "assistant", "virtual", "chatbot", "bot", "program", "script",
    "automated",
]  # fmt: skip
_I_AM = r"(?:\bi'm|\bi am|\bim)"
_QUALIFIER = r"(?:\s+(?:just|only|simply|merely))?"
# up to four words before the giveaway: "a large, powerful", "a large, intelligent, and conversational"
_WORDS = r"(?:\s+[\w-]+,?){0,4}"
_RULES: list[tuple[re.Pattern[str], list[str]]] = [
    # "I'm an AI", "as a language model", "just another chatbot", "I'm a friendly virtual assistant",
    # "I've been a chatbot for over 30 years", "I'm a large, powerful language model", "as an automated",
    # "I'm just called to be a chatbot", "I've been made to be a creative AI"
    (
        re.compile(
            rf"(?:\bas|{_I_AM}|\bjust|\bi've been|\bi have been|\bto be){_QUALIFIER}\s+(?:an?|another){_WORDS}\s*$",
            re.IGNORECASE,
        ),
        _IDENTITY,
    ),
    # after the name, as a reply started with it goes on: "I'm Bram Tolliver, an AI assistant",
    # "I'm Nora Quill, your virtual assistant"
    (
        re.compile(rf"{_I_AM}(?:\s+[\w'.-]+){{1,4}}\s*,\s*(?:an?|another|your){_WORDS}\s*$", re.IGNORECASE),
        _IDENTITY,
    ),
    (re.compile(rf"{_I_AM}{_QUALIFIER}\s*$", re.IGNORECASE), ["ai", "a.i.", "chatbot", "assistant", "llm"]),
    (
        re.compile(rf"(?:{_I_AM}|\bam|\bbeen)(?:\s+(?:just|only|always))?\s+here\s+to\s*$", re.IGNORECASE),
        ["help", "assist"],
    ),
    (re.compile(r"\b(?:designed|programmed|trained|created|built)\s+to\s*$", re.IGNORECASE), ["help", "assist"]),
    (re.compile(r"\bi\s+(?:don't|do not|dont)\s+have(?:\s+a)?\s*$", re.IGNORECASE), ["name", "personal", "physical"]),
    # "I can't be a real person, but I'm programmed to behave like one" (smollm2, as Bram Tolliver)
    (
        re.compile(rf"(?:{_I_AM}|\bi was|\bi've been|\bi have been)(?:\s+(?:just|only|simply|merely|also))?\s*$", re.I),
        ["programmed"],
    ),
    (re.compile(r"\bopen\.?\s*$", re.IGNORECASE), ["ai"]),  # "OpenAI" written as two tokens, "Open.ai"
    # the character as a made thing: "a digital character", "a character created by <its name>"
    (
        re.compile(r"\b(?:digital|virtual|fictional|simulated|computer|scripted)\s*$", re.IGNORECASE),
        ["character", "being", "entity"],
    ),
    # "a large, powerful model created by OpenMind" (Qwen, pushed)
    (re.compile(r"\b(?:language\s+)?model\s*$", re.IGNORECASE), ["created", "developed", "trained", "made"]),
    # "a computer generated model", "a text-based response" (Qwen, pushed)
    (
        re.compile(r"\b(?:computer[- ]?generated|text-based)\s*$", re.IGNORECASE),
        ["model", "response", "character", "being", "entity"],
    ),
    (
        re.compile(r"\b(?:an?|the)(?:\s+[\w-]+){0,2}\s+(?:character|script|program|persona)\s*$", re.IGNORECASE),
        ["created", "designed", "programmed", "developed", "generated"],
    ),
]
BRANDS = ["qwen", "alibaba", "openai", "chatgpt", "smollm", "huggingface", "anthropic"]
_TAIL_TOKENS = 16  # enough for the longest opening ("I am just an intelligent and friendly")


@dataclass(frozen=True)
class GuardTokens:
    """One vocabulary's giveaway tokens: per rule, the tokens that must not follow its opening;
    the brand names' tokens. Built once per loaded model (``LoadedModel.guard_tokens``)."""

    rules: tuple[tuple[re.Pattern[str], tuple[int, ...]], ...]
    brands: tuple[int, ...]

    @classmethod
    def of(cls, llama: Llama) -> GuardTokens:
        rules = tuple((pattern, tuple(sorted(_starting_tokens(llama, words)))) for pattern, words in _RULES)
        return cls(rules, tuple(sorted(_starting_tokens(llama, BRANDS, whole=True))))

    def banned_after(self, text: str) -> set[int]:
        """The tokens forbidden after a reply ending in ``text`` (brands aside)."""
        return {token for pattern, banned in self.rules if pattern.search(text) for token in banned}


class CharacterGuard:
    """The logits processor for one reply. It learns each call's prompt length on the call's
    first token (a call's tokens come one by one; a jump means the next call of the reply)."""

    def __init__(self, llama: Llama, tokens: GuardTokens) -> None:
        self.llama = llama
        self.tokens = tokens
        self._prompt_length = 0
        self._last = -1  # no call yet: the first token is always a call's first
        # Words the reply was started with (``agentmm.reply_start``): they stand in the prompt,
        # but an opening in them ("I'm Nora Quill, an") is the reply's own.
        self.lead = ""

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        # llama-cpp-python hands over its whole token buffer; what was evaluated is n_tokens of it.
        n = self.llama.n_tokens
        if n != self._last + 1:  # a call's first token
            self._prompt_length = n
        self._last = n
        if self.tokens.brands:
            scores[list(self.tokens.brands)] = -float("inf")
        start = max(self._prompt_length, n - _TAIL_TOKENS)
        tail = self._text(input_ids[start:n].tolist())
        if self.lead and start == self._prompt_length:
            tail = self.lead + tail
        if tail and (banned := self.tokens.banned_after(tail)):
            scores[sorted(banned)] = -float("inf")
        return scores

    def _text(self, tokens: list[int]) -> str:
        """The reply's last few tokens as text (broken multi-byte pieces dropped)."""
        if not tokens:
            return ""
        return self.llama.detokenize(tokens).decode("utf-8", errors="ignore").replace("\u2019", "'")


def _starting_tokens(llama: Llama, words: Iterable[str], *, whole: bool = False) -> set[int]:
    """Tokens that start one of ``words`` as the model would write it (after a space or not;
    lower-case, capitalised, and upper-case for the short ones like "AI"). A first token that
    is not the whole word counts only with four letters or more: "art" of "artificial", "ass"
    of "assistant" would forbid far more than the word. With ``whole``, only the whole word."""
    found: set[int] = set()
    for word in words:
        bare = re.sub(r"[^a-z]", "", word)
        spellings = {word, word.capitalize(), *([word.upper()] if len(bare) <= 3 else [])}
        for text in (f"{space}{spelling}" for spelling in spellings for space in (" ", "")):
            tokens = llama.tokenize(text.encode(), add_bos=False, special=False)
            if not tokens:
                continue
            piece = llama.detokenize(tokens[:1]).decode("utf-8", errors="ignore").strip().lower()
            letters = re.sub(r"[^a-z]", "", piece)
            if letters == bare or (not whole and len(letters) >= 4 and bare.startswith(letters)):
                found.add(tokens[0])
    return found
