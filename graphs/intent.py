"""The ``intent`` node: what the user wants this turn (``agentmm.intent``), decided before recall
so the graph can route on it, and the routes it opens.

With the ``examples`` classifier the message is compared with labelled examples by sentence
embedding. With the ``model`` classifier the question is asked after the thread's prompt as the
last turn left it (head, window, last reply), with the tools the thread offers rendered as a
reply would render them, so the decision shares the reply's prefix: it prefills only the
question, and the reply then prefills only its own turn, as without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import BaseTool
from langgraph.runtime import Runtime

from agentmm.graphs.tool_calls import ToolBox
from agentmm.intent import (
    DEFAULT_INTENT,
    Decision,
    ExampleClassifier,
    Intent,
    allowed_intents,
    decision_prompt,
    intent_in,
    ruled_intent,
)
from agentmm.personas.registry import PersonaRegistry
from agentmm.state import ChatState, TurnContext, run_context, trace_step

OOC_INSTRUCTION = (
    "(Out of character: this message is to you, the AI running the role-play, not to {name}. "
    "Answer it plainly and briefly as yourself, without role-play.)"
)


def routes(intent: str, *, recall_for: Collection[str], memory: bool, has_tools: bool) -> dict[str, bool]:
    """Which routes a turn with ``intent`` takes: recall, tools offered, in character."""
    return {"recall": memory and intent in recall_for, "tools": has_tools and intent == "tool",
            "in_character": intent != "ooc"}  # fmt: skip


def pick(model: BaseChatModel, prompt: Sequence[BaseMessage], choices: Sequence[Intent],
         tools: Sequence[BaseTool]) -> tuple[Intent, str]:  # fmt: skip
    """The model's pick among ``choices``: its constrained ``choose`` where it has one
    (``ChatLlamaCpp``), otherwise its free answer read for the first intent it names."""
    choose = getattr(model, "choose", None)
    if callable(choose):
        answer = str(choose(list(prompt), list(choices), tools=list(tools)))
    else:
        answer = model.invoke(list(prompt)).text
    found = intent_in(answer, choices)
    return (found, "model") if found else (DEFAULT_INTENT, "fallback")


class DecideIntent:
    """Decide the turn's intent and put it, with its routes, in the state and the trace: by rule
    for an out-of-character marker, else by ``examples`` (an ``ExampleClassifier``) when given,
    else by the chat model."""

    def __init__(
        self,
        model: BaseChatModel,
        personas: Callable[[], PersonaRegistry],
        toolbox: ToolBox | None,
        *,
        memory: bool,
        recall_for: Collection[str],
        examples: ExampleClassifier | None = None,
    ) -> None:
        self.model = model
        self.examples = examples  # None: the chat model decides
        self.personas = personas
        self.toolbox = toolbox
        self.memory = memory
        self.recall_for = frozenset(recall_for)

    def __call__(self, state: ChatState, runtime: Runtime[TurnContext]) -> dict[str, Any]:
        started = time.perf_counter()
        offered = self.toolbox.offered(state) if self.toolbox is not None else []
        choices = allowed_intents(has_tools=bool(offered), has_attachments=bool(state.get("attachments")))
        decision = self.decide(state, runtime, choices, offered)
        route = routes(decision.intent, recall_for=self.recall_for, memory=self.memory, has_tools=bool(offered))
        seconds = time.perf_counter() - started
        trace = trace_step(state, "intent", intent=decision.as_trace(seconds, route),
                           timings={"intent_s": round(seconds, 4)})  # fmt: skip
        return {"intent": decision.intent, "trace": trace}

    def decide(
        self, state: ChatState, runtime: Runtime[TurnContext], choices: tuple[Intent, ...], offered: list[BaseTool]
    ) -> Decision:
        message = state["messages"][-1].text
        if (ruled := ruled_intent(message)) is not None:
            return Decision(ruled, "rule", choices)
        if len(choices) == 1:
            return Decision(choices[0], "only", choices)
        cancel = run_context(runtime.context).cancel
        if cancel is not None and cancel.is_set():
            return Decision(DEFAULT_INTENT, "fallback", choices)
        if self.examples is not None:
            intent, scores = self.examples.classify(message, choices)
            return Decision(intent, "examples", choices, scores)
        question = decision_prompt(message, choices, self._character(state), [tool.name for tool in offered])
        intent, how = pick(self.model, [*self._history(state), HumanMessage(question)], choices, offered)
        return Decision(intent, how, choices)  # type: ignore[arg-type]

    def _character(self, state: ChatState) -> str:
        name = state.get("persona")
        return self.personas().get(name).name if name else ""

    @staticmethod
    def _history(state: ChatState) -> list[BaseMessage]:
        """The thread's prompt as the last turn left it, up to its reply: the decision's prefix."""
        from agentmm.graphs.chat import prompt_messages

        before = state["messages"][:-1]
        if "system_prompt" not in state:  # the thread's first turn: no prompt planned yet
            return list(before)
        return prompt_messages({**state, "messages": before, "post_history": ""})  # type: ignore[typeddict-item]


def ooc_instruction(character: str) -> str:
    """The tail that takes the place of the post-history instructions for an ``ooc`` turn."""
    return OOC_INSTRUCTION.format(name=character or "the character")
