"""The perceive node: a turn's attachments become observations before recall and compose.

A voice note with no typed text becomes the user's words (its transcript); its observation is
then marked ``as_message`` so the transcript is not told to the model a second time, and compose
cuts it short when it does not fit (``graphs.chat.Compose``), as it would the observation.

When the chat model takes images itself (it has an image projector), pictures are not
captioned: each is checked here (decoded in full, so a bad file is an error observation and
the turn goes on) and recorded as a ``native`` observation with no text; generate then puts
the picture on the turn's user message for the model call only (``with_images``), so the
checkpointed thread keeps the message's words and the file's path, never the image's bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.runtime import Runtime

from agentmm.errors import AgentmmError, TurnStoppedError
from agentmm.state import ChatState, TurnContext, run_context, trace_step
from agentmm.tools.perception import Observation, Perception


class Perceive:
    """Caption and transcribe attachments; with ``native_model`` (the chat model's name, when
    it takes images itself) pictures are only checked and left for the model to see."""

    def __init__(self, perception: Perception | None = None, native_model: str | None = None) -> None:
        self._perception = perception
        self.native_model = native_model

    @property
    def perception(self) -> Perception:
        if self._perception is None:  # models load on the first turn that needs them
            self._perception = Perception()
        return self._perception

    def __call__(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        started = time.perf_counter()
        # Cancelled while perceiving (Ctrl-C during a long transcription): the turn ends here and
        # is rolled back (``TurnStream``), before its message is answered or remembered.
        stop = run_context(runtime.context).cancel
        observations = self._observe([Path(f) for f in state.get("attachments") or []], stop)
        if stop.is_set():
            raise TurnStoppedError("stopped before the attachments were perceived")
        update: dict[str, Any] = {"observations": observations}
        message = state["messages"][-1]
        heard = [o for o in observations if o["kind"] == "audio" and not o.get("error")]
        spoken = " ".join(o["text"] for o in heard if o.get("text"))
        if isinstance(message, HumanMessage) and not message.text.strip() and spoken:
            update["messages"] = [message.model_copy(update={"content": spoken})]
            # The transcript is the message now: the observation says so instead of repeating it.
            said = {id(o) for o in heard if o.get("text")}
            update["observations"] = [{**o, "as_message": True} if id(o) in said else o for o in observations]
        timings = {"perceive_s": round(time.perf_counter() - started, 4)}
        update["trace"] = trace_step(state, "perceive", observations=update["observations"], timings=timings)
        return update

    def _observe(self, files: list[Path], stop: threading.Event) -> list[dict[str, Any]]:
        """One observation (a trace dict) per file, in the order given."""
        native = {i: self._native(f) for i, f in enumerate(files) if self.native_model and _is_image(f)}
        rest = [f for i, f in enumerate(files) if i not in native]
        perceived = iter(self.perception.perceive(rest, stop) if rest else [])
        return [native[i] if i in native else next(perceived).as_trace() for i in range(len(files))]

    def _native(self, path: Path) -> dict[str, Any]:
        """A picture the chat model will see itself: decoded once here to catch a bad file."""
        from agentmm.tools.caption import VLM_IMAGE_SIDE
        from agentmm.tools.media import open_image

        started = time.perf_counter()
        try:
            open_image(path, min_side=VLM_IMAGE_SIDE)
        except AgentmmError as exc:
            return Observation(kind="unsupported", file=str(path), error=str(exc),
                               seconds=round(time.perf_counter() - started, 3)).as_trace()  # fmt: skip
        seen = Observation(kind="image", file=str(path), model=f"{self.native_model} (native)",
                           seconds=round(time.perf_counter() - started, 3))  # fmt: skip
        return {**seen.as_trace(), "native": True}


def _is_image(path: Path) -> bool:
    """Whether the file's bytes say it is an image (anything unreadable goes to perception,
    which turns it into an error observation)."""
    from agentmm.tools.media import sniff

    try:
        return sniff(path).kind == "image"
    except AgentmmError:
        return False


def native_pictures(observations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The observations whose picture goes to the chat model itself."""
    return [o for o in observations if o.get("native") and not o.get("error")]


def image_block(path: str | Path) -> dict[str, Any]:
    """A LangChain standard image content block (PNG, base64) of the file, shrunk to the size
    the captioner's VLM path uses: projectors resize to far less, and a smaller block is
    cheaper to encode and pass."""
    from agentmm.tools.caption import VLM_IMAGE_SIDE, image_data_uri
    from agentmm.tools.media import open_image

    uri = image_data_uri(open_image(path, min_side=VLM_IMAGE_SIDE))
    return {"type": "image", "base64": uri.split(",", 1)[1], "mime_type": "image/png"}


def with_images(prompt: list[BaseMessage], observations: Sequence[dict[str, Any]]) -> list[BaseMessage]:
    """The prompt with the turn's native pictures (before its words) on its last user message.

    Only the model call sees this copy; the thread keeps the plain message. A picture that
    can no longer be read (deleted since perceive) is left out rather than failing the reply.
    """
    blocks = []
    for o in native_pictures(observations):
        try:
            blocks.append(image_block(o["file"]))
        except AgentmmError:
            continue
    last = next((i for i in range(len(prompt) - 1, -1, -1) if isinstance(prompt[i], HumanMessage)), None)
    if not blocks or last is None:
        return prompt
    message = prompt[last]
    content = [*blocks, {"type": "text", "text": message.text}]
    return [*prompt[:last], message.model_copy(update={"content": content}), *prompt[last + 1 :]]
