"""The rolling summary: turns that leave the context window are folded into it by the LLM.

It is written only when the window folds (many turns at once), so it changes rarely and the
prompt head stays cacheable between folds; it is checkpointed with the thread.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

INSTRUCTIONS = (
    "You keep the running summary of a long conversation. Merge the earlier summary and the new "
    "messages into one short summary in the third person: facts about the people, names, dates, "
    "plans, promises and open questions. Do not invent anything. Answer with the summary only."
)
MAX_TRANSCRIPT_CHARS = 12_000


def transcript(messages: Sequence[BaseMessage], user_name: str, char_name: str) -> str:
    lines = []
    for message in said(messages):
        speaker = user_name if isinstance(message, HumanMessage) else char_name
        lines.append(f"{speaker}: {message.text}")
    text = "\n".join(lines)
    return text[-MAX_TRANSCRIPT_CHARS:]


def said(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` without the lines a turn said to the user instead of a reply (marked
    ``no_reply``: the model's answer was cut twice): they are no one's words in the story, and
    folded in they became the character's ("Bo: (no reply: ...)")."""
    return [m for m in messages if not m.response_metadata.get("no_reply")]


SUMMARY_TOKENS = 200
MIN_SUMMARY_TOKENS = 32


def summary_tokens(n_ctx: int) -> int:
    """The longest summary for a context of ``n_ctx``: a sixteenth of it, 32 to 200 tokens.

    A fixed 200 filled 40% of a 512-token context: the history had ~2 messages of room, so
    every turn folded and ran the summary again (4-12 s each); at 256 it was written and then
    dropped to fit."""
    return max(MIN_SUMMARY_TOKENS, min(SUMMARY_TOKENS, n_ctx // 16))


def fold_into_summary(
    model: BaseChatModel,
    previous: str,
    folded: Sequence[BaseMessage],
    *,
    user_name: str,
    char_name: str,
    max_tokens: int = SUMMARY_TOKENS,
) -> str:
    """The new summary: ``previous`` with ``folded`` merged in (``previous`` if none fold)."""
    if not said(folded):  # none, or only lines to the user: nothing to tell
        return previous
    # The length is said as words (about 3 of 4 tokens are words in English): told nothing, a
    # small model wrote past max_tokens and the summary ended "...the girl you're referring".
    words = max(8, max_tokens * 3 // 4 - 8)
    prompt = (
        f"Earlier summary:\n{previous or '(none)'}\n\n"
        f"New messages:\n{transcript(folded, user_name, char_name)}\n\n"
        f"Updated summary, at most {words} words:"
    )
    bound = model.bind(max_tokens=max_tokens) if _accepts_max_tokens(model) else model
    reply = bound.invoke([SystemMessage(INSTRUCTIONS), HumanMessage(prompt)])
    text = reply.text.strip()
    if reply.response_metadata.get("finish_reason") == "length":  # cut at max_tokens
        text = whole_sentences(text)
    return text or previous


_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s|$)")
# Words a full stop ends that do not end a sentence ("Dr. Patel", "6 p.m. from bay 4"), and
# initials ("J. R. Hartley").
_NOT_AN_END = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Mt|Sr|Jr|Capt|Lt|Col|Gen|Sgt|Rev|vs|etc|approx|No|Vol|ca)|\b[A-Za-z]|\b(?:a\.m|p\.m|e\.g|i\.e))\.$",
)


def whole_sentences(text: str) -> str:
    """``text`` up to its last whole sentence: a summary cut at ``max_tokens`` mid-sentence
    ("(10) The sea is a") loses the torn end, not the sense of the rest. Text with no sentence
    end at all is kept as it is. (Only for a cut summary: a whole one may end without a stop.)"""
    ends = [m.end() for m in _SENTENCE_END.finditer(text) if not _NOT_AN_END.search(text[: m.start() + 1])]
    if not ends or ends[-1] == len(text.rstrip()):
        return text
    return text[: ends[-1]].rstrip()


def _accepts_max_tokens(model: BaseChatModel) -> bool:
    return "max_tokens" in type(model).model_fields
