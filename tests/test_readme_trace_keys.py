"""README's ``--json`` section names every key of a chat turn's trace: a turn without a persona,
with memory on, had keys README left out (``recall_window``, ``timings.recall_s``,
``timings.remember_s``) or listed only under "With a persona" (``lore``, ``dropped_parts``)."""

from __future__ import annotations

from pathlib import Path

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore

from agentmm.graphs.chat import build_graph
from agentmm.settings import Settings
from agentmm.state import TurnContext
from tests.memory.conftest import CharacterEmbeddings

README = Path(__file__).resolve().parent.parent / "README.md"


def trace_text_without_the_persona_part() -> str:
    """From "`trace` keys:" to the other commands' keys, less the sentence on what a persona adds."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("`trace` keys:") : text.index("Other commands' `--json`")]
    persona_start = section.index("With a persona, ")
    return section[:persona_start] + section[section.index("With memory on", persona_start) :]


def test_every_key_of_a_turn_without_a_persona_is_in_readme() -> None:
    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]})
    settings = Settings(memory_min_similarity=0.0, n_ctx=1001, max_tokens=1)
    graph = build_graph(settings, model=FakeListChatModel(responses=["Noted!"]), checkpointer=InMemorySaver(),
                        store=store)  # fmt: skip
    config = {"configurable": {"thread_id": "t"}}
    trace = graph.invoke({"input": "My sister Mira lives in Lisbon."}, config, context=TurnContext(user_name="Ada"))[
        "trace"
    ]
    assert "recall_window" in trace and "lore" in trace  # what this test is about: keys it can check
    documented = trace_text_without_the_persona_part()
    missing = [key for key in trace if f"`{key}`" not in documented]
    missing += [f"timings.{key}" for key in trace["timings"] if f"`{key}`" not in documented]
    shape = documented.split("`recall_window` (`{", 1)[1].split("}`", 1)[0]  # README: `{budget, held, room}`
    missing += [f"recall_window.{key}" for key in trace["recall_window"] if key not in shape.split(", ")]
    assert missing == []


def test_the_cuts_of_a_tool_output_are_in_readme() -> None:
    """The trace's ``tool_calls[].output`` is cut to 500 characters; README named only the
    2,000-character cut of what the model gets, so a trace's shorter output looked like a loss."""
    from agentmm.graphs.tool_calls import MAX_OUTPUT_CHARS, TRACE_OUTPUT_CHARS

    documented = trace_text_without_the_persona_part()
    assert f"first {TRACE_OUTPUT_CHARS} characters" in documented
    assert f"up to {MAX_OUTPUT_CHARS:,}" in documented
