"""The perceive node: a turn's attachments become observations before recall and compose.

A voice note with no typed text becomes the user's words (its transcript).
"""

from __future__ import annotations

import time
from typing import Any

from langchain_core.messages import HumanMessage

from agentmm.state import ChatState, trace_step
from agentmm.tools.perception import Perception


class Perceive:
    def __init__(self, perception: Perception | None = None) -> None:
        self._perception = perception

    @property
    def perception(self) -> Perception:
        if self._perception is None:  # models load on the first turn that needs them
            self._perception = Perception()
        return self._perception

    def __call__(self, state: ChatState) -> dict[str, Any]:
        started = time.perf_counter()
        observations = self.perception.perceive(state.get("attachments") or [])
        update: dict[str, Any] = {"observations": [o.as_trace() for o in observations]}
        message = state["messages"][-1]
        spoken = " ".join(o.text for o in observations if o.kind == "audio" and o.text and not o.error)
        if isinstance(message, HumanMessage) and not message.text.strip() and spoken:
            update["messages"] = [message.model_copy(update={"content": spoken})]
        timings = {"perceive_s": round(time.perf_counter() - started, 4)}
        update["trace"] = trace_step(state, "perceive", observations=update["observations"], timings=timings)
        return update
