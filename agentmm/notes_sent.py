"""What of each voice note the model got, for the chat's ``[you said (NOTE): ...]`` lines.

Compose may cut a turn's voice notes to fit the context: a note (or several, joined) that is
the message is cut at its end (``truncated_parts`` part "message"), and notes sent with typed
text are lines of the observations part, which is cut at its end or dropped like any context
part. The chat showed the whole transcript all the same; an observation here gets
``sent_text``, its words as the prompt had them ("" where none of them fit), beside ``text``,
all that was heard. A note the prompt had whole gets none.
"""

from __future__ import annotations

from typing import Any

from agentmm.context import CONTEXT_KEY

ELLIPSIS = "…"  # what ``clip_to_tokens`` ends a cut text with


def notes_as_sent(observations: list[dict[str, Any]], composed: dict[str, Any]) -> list[dict[str, Any]]:
    """``observations`` (perceive's) after compose's update ``composed``, each voice note that was
    cut with its ``sent_text``."""
    trace = composed.get("trace") or {}
    cut = {part.get("part") for part in trace.get("truncated_parts") or []}
    messages = composed.get("messages") or []
    if not messages:
        return observations
    sent: dict[int, str] = {}
    said = [o for o in observations if o.get("as_message") and o.get("text")]
    if "message" in cut and said:
        sent.update(_joined_as_sent(said, messages[-1].text))
    noted = [o for o in observations if _told_as_context(o)]
    if noted and "observations" in (trace.get("dropped_parts") or []):
        sent.update({id(o): "" for o in noted})
    elif noted and "observations" in cut:
        context = str(messages[-1].additional_kwargs.get(CONTEXT_KEY) or "")
        sent.update(_lines_as_sent(noted, context))
    return [{**o, "sent_text": sent[id(o)]} if id(o) in sent else o for o in observations]


def _told_as_context(observation: dict[str, Any]) -> bool:
    """A voice note with words that went to the model as a line of context, not as the message."""
    return (observation.get("kind") == "audio" and not observation.get("as_message")
            and not observation.get("error") and bool(str(observation.get("text") or "").strip()))  # fmt: skip


def _joined_as_sent(notes: list[dict[str, Any]], message: str) -> dict[int, str]:
    """Perceive joins the notes that are the message with a space; the cut message is a start of
    that, so each note's share of it is where its words were."""
    kept = message.removesuffix(ELLIPSIS)
    shares: dict[int, str] = {}
    start = 0
    for note in notes:
        end = start + len(str(note["text"]))
        if len(kept) < end:  # this note was cut: its start, or none of it
            shares[id(note)] = kept[start:].rstrip() + ELLIPSIS if len(kept) > start else ""
        start = end + 1
    return shares


def _lines_as_sent(notes: list[dict[str, Any]], context: str) -> dict[int, str]:
    """The observations part is the last of the stored context, cut at its end: the notes whose
    words are in it whole were sent whole, the one it ends inside was cut there, and the rest
    never reached the model."""
    kept = context.removesuffix(ELLIPSIS).rstrip()
    shares: dict[int, str] = {}
    ended = False
    for note in notes:
        text = str(note["text"])
        if not ended and text in kept:
            continue
        share = "" if ended else _ending_share(text, kept)
        ended = True
        shares[id(note)] = share + ELLIPSIS if share else ""
    return shares


def _ending_share(text: str, kept: str) -> str:
    """The start of ``text`` that ``kept`` ends with ("" for none)."""
    probe = text[:20]
    at = kept.rfind(probe)
    while at != -1:
        if text.startswith(kept[at:]):
            return kept[at:]
        at = kept.rfind(probe, 0, at)
    return next((text[:k] for k in range(min(len(text), 20), 0, -1) if kept.endswith(text[:k])), "")
