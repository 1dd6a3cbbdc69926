"""What the user wants this turn, decided before anything else runs, so the turn can route on it.

Five intents:

- ``chat``: talk or action with the character (small talk, questions about the character or
  their world, "are you an AI?" asked of the character);
- ``recall``: a question about something said or done earlier in the conversations;
- ``tool``: a request that one of the thread's tools serves (offered only when it has tools);
- ``attachment``: a question about the picture or sound sent with the message (offered only
  when the turn has attachments);
- ``ooc``: an out-of-character request to whoever runs the role-play (marked "OOC", or about
  the chat itself: the model, the settings, how replies are written).

An explicit out-of-character marker (``OOC:``, ``((…))``, "out of character") decides by rule.
Anything else is decided among the intents the turn allows by one of two classifiers
(the ``intent_classifier`` setting):

- ``examples`` (default): the message's sentence embedding (the memory's embedder, whose query
  cache then serves recall's search of the same text) against labelled examples
  (``agentmm.intent_examples``), each intent scored by the mean similarity of its two nearest
  examples. ``ooc`` must beat the best in-character intent by ``OOC_MARGIN``: a chat message
  taken for out-of-character breaks the character, the other way round costs little (the
  character answers; a marker always works). Independent of the chat model, ~5 ms.
- ``model``: the chat model's pick, with the tool step's cheap constrained decision (one token,
  the choices' logits raised; ``ConstrainedToolCalling.choose``) asked after the thread's own
  prompt, so the KV cache it fills is the one the reply starts from. A model without it (any
  other LangChain chat model) answers in words, read for the first intent it names. Measured
  on the labelled set it is far behind the examples on both shipped tiers (BENCHMARKS.md): the
  135M and 0.5B models answer "tool" or "ooc" for most messages, whatever the prompt.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

Intent = Literal["chat", "recall", "tool", "attachment", "ooc"]
INTENTS: tuple[Intent, ...] = get_args(Intent)
DEFAULT_INTENT: Intent = "chat"

DESCRIPTIONS: dict[Intent, str] = {
    "chat": "talking with {name} or acting in the story, small talk, questions about {name} or their world",
    "recall": "asking what was said or done earlier in our conversations",
    "tool": "asking for something a tool does",
    "attachment": "asking about the file sent with the message",
    "ooc": "speaking out of character to the person running the role-play, about the chat itself",
}
# How much more like the out-of-character examples than like any in-character ones a message
# must be to be answered out of character (cosine similarity; set before measuring, not tuned).
OOC_MARGIN = 0.05
NEAREST = 2

_OOC_MARKER = re.compile(
    r"^\s*(\(\(|\[\s*ooc\b|\(\s*ooc\b|ooc\s*[:\-])|\bout[ -]of[ -]character\b|\bbreak(ing)? character\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Decision:
    """The turn's intent, how it was decided (``rule``, ``model`` or ``only``: one choice), and
    the intents it was chosen among."""

    intent: Intent
    decided_by: Literal["rule", "examples", "model", "only", "fallback"]
    choices: tuple[Intent, ...]
    scores: Mapping[str, float] | None = None

    def as_trace(self, seconds: float, route: Mapping[str, bool]) -> dict[str, Any]:
        """The trace's ``intent``: this decision, the routes it opened, what it took."""
        trace = {"intent": self.intent, "decided_by": self.decided_by, "choices": list(self.choices),
                 "route": dict(route), "seconds": round(seconds, 4)}  # fmt: skip
        if self.scores is not None:
            trace["scores"] = {name: round(score, 4) for name, score in self.scores.items()}
        return trace


def allowed_intents(*, has_tools: bool, has_attachments: bool) -> tuple[Intent, ...]:
    """The intents a turn can have: ``tool`` only with tools, ``attachment`` only with files."""
    skip = {"tool"} if not has_tools else set()
    if not has_attachments:
        skip.add("attachment")
    return tuple(i for i in INTENTS if i not in skip)


def ruled_intent(message: str) -> Intent | None:
    """The intent a message states itself: an out-of-character marker."""
    return "ooc" if _OOC_MARKER.search(message) else None


def decision_prompt(message: str, choices: Sequence[Intent], character: str, tools: Sequence[str] = ()) -> str:
    """The question asked after the thread's prompt; the answer is constrained to ``choices``.

    The message is quoted again right before the question, as in the tool decision, where the
    quote was worth 7 of 32 labelled messages on the 135M model.
    """
    name = character or "the character"
    lines = [f"Which kind of message is this, to {name}?"]
    for intent in choices:
        described = DESCRIPTIONS[intent].format(name=name)
        if intent == "tool" and tools:
            described += f" ({', '.join(tools)})"
        lines.append(f"{intent}: {described}")
    flat = " ".join(message.split())
    quoted = flat if len(flat) <= 400 else flat[:400] + "…"
    lines.append(f'Message: "{quoted}"')
    lines.append("Kind:")
    return "\n".join(lines)


def intent_in(text: str, choices: Sequence[Intent]) -> Intent | None:
    """The first of ``choices`` that ``text`` names (a model's free answer), or None."""
    found = [(m.start(), choice) for choice in choices if (m := re.search(rf"\b{choice}\b", text, re.IGNORECASE))]
    return min(found)[1] if found else None


class ExampleClassifier:
    """An intent from the labelled examples nearest to the message (see the module's docstring).

    ``embeddings`` is a LangChain ``Embeddings`` or a function that makes one on first use (so a
    graph that never decides an intent never loads an embedder).
    """

    def __init__(
        self,
        embeddings: Embeddings | Callable[[], Embeddings],
        examples: Mapping[str, Sequence[str]] | None = None,
        *,
        ooc_margin: float = OOC_MARGIN,
    ) -> None:
        from agentmm.intent_examples import EXAMPLES

        self._embeddings = embeddings
        self.examples = {intent: list(texts) for intent, texts in (examples or EXAMPLES).items() if texts}
        unknown = set(self.examples) - set(INTENTS)
        if unknown:
            known = ", ".join(INTENTS)
            raise ValueError(f"examples for unknown intents: {', '.join(sorted(unknown))} (known: {known})")
        self.ooc_margin = ooc_margin
        self._vectors: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def embeddings(self) -> Embeddings:
        if not hasattr(self._embeddings, "embed_query"):  # the function that makes it
            self._embeddings = self._embeddings()  # type: ignore[operator]
        return self._embeddings  # type: ignore[return-value]

    def _example_vectors(self) -> dict[str, Any]:
        import numpy as np

        with self._lock:
            if self._vectors is None:
                texts = [t for examples in self.examples.values() for t in examples]
                vectors = _unit(np.asarray(self.embeddings().embed_documents(texts), dtype=np.float32))
                split, at = {}, 0
                for intent, examples in self.examples.items():
                    split[intent], at = vectors[at : at + len(examples)], at + len(examples)
                self._vectors = split
            return self._vectors

    def scores(self, message: str, choices: Sequence[Intent]) -> dict[Intent, float]:
        """Each choice with examples: the mean similarity of its ``NEAREST`` nearest examples."""
        import numpy as np

        vectors = self._example_vectors()
        query = _unit(np.asarray([self.embeddings().embed_query(message)], dtype=np.float32))[0]
        scored: dict[Intent, float] = {}
        for intent in choices:
            if intent in vectors:
                nearest = np.sort(vectors[intent] @ query)[::-1][:NEAREST]
                scored[intent] = float(nearest.mean())
        return scored

    def classify(self, message: str, choices: Sequence[Intent]) -> tuple[Intent, dict[Intent, float]]:
        """The intent, and the scores it was chosen by."""
        scored = self.scores(message, choices)
        if not scored:
            return DEFAULT_INTENT, scored
        best = max(scored, key=scored.__getitem__)
        if best == "ooc":
            in_character = {i: v for i, v in scored.items() if i != "ooc"}
            runner_up = max(in_character, key=in_character.__getitem__, default=None)
            if runner_up is not None and scored["ooc"] - in_character[runner_up] < self.ooc_margin:
                best = runner_up
        return best, scored


def _unit(matrix: Any) -> Any:
    import numpy as np

    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)
