"""Intent-aware turns in the real turn graph: the ``intent`` node decides, the graph routes on it
(recall, tools, out of character), and the trace and ``/why`` show the intent and the route."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from pydantic import Field

from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import build_graph
from agentmm.graphs.intent import ooc_instruction
from agentmm.intent import INTENTS, ExampleClassifier, allowed_intents, decision_prompt, intent_in, ruled_intent
from agentmm.repl.why import intent_line
from agentmm.settings import Settings
from agentmm.tokens import TokenCounter
from agentmm.tools.builtin import roll_dice
from tests.graphs.scripted_model import ScriptedToolModel, call
from tests.memory.conftest import CharacterEmbeddings

WORDS = TokenCounter(lambda text: len(text.split()))
CONFIG = {"configurable": {"thread_id": "t"}}


class ChoosingModel(ScriptedToolModel):
    """A scripted model with ``ChatLlamaCpp``'s constrained ``choose``: answers are scripted too."""

    picks: list[str] = Field(default_factory=list)
    asked: list[dict[str, Any]] = Field(default_factory=list)

    def choose(self, messages: Sequence[BaseMessage], choices: Sequence[str], *, tools: Sequence[Any] = ()) -> str:
        self.asked.append({"messages": list(messages), "choices": list(choices), "tools": [t.name for t in tools]})
        return self.picks.pop(0)


def graph_with(model: ScriptedToolModel, tools: list[Any] | None = None, store: Any = None, **settings: Any) -> Any:
    settings = {"intent_classifier": "model", **settings}
    return build_graph(Settings(intent=True, **settings), model=model, checkpointer=InMemorySaver(), counter=WORDS,
                       tools=tools or [], store=store)  # fmt: skip


def test_out_of_character_markers_decide_by_rule() -> None:
    marked = ["OOC: shorter replies please", "((pause the story))", "[OOC] past tense?", "(ooc) thanks",
              "Out of character, which model is this?", "Breaking character: how do I switch personas?"]  # fmt: skip
    for message in marked:
        assert ruled_intent(message) == "ooc", message
    for message in ["Are you an AI?", "I'm looking for a good book", "Stop by the docks tomorrow"]:
        assert ruled_intent(message) is None, message


def test_the_choices_follow_the_turn_and_the_answer_is_read() -> None:
    assert allowed_intents(has_tools=False, has_attachments=False) == ("chat", "recall", "ooc")
    assert allowed_intents(has_tools=True, has_attachments=True) == ("chat", "recall", "tool", "attachment", "ooc")
    prompt = decision_prompt('Roll "2d6"\nplease', ("chat", "tool"), "Bram Tolliver", ["roll_dice"])
    assert "to Bram Tolliver?" in prompt and "tool: asking for something a tool does (roll_dice)" in prompt
    assert prompt.endswith('Message: "Roll "2d6" please"\nKind:') and "recall" not in prompt
    assert intent_in("Kind: recall, maybe chat", ("chat", "recall")) == "recall"
    assert intent_in("I cannot tell", ("chat", "recall")) is None


def test_a_memory_question_recalls_and_small_talk_skips_recall_when_told() -> None:
    embeddings = CharacterEmbeddings()
    store = InMemoryStore(index={"dims": embeddings.dims, "embed": embeddings, "fields": ["text"]})
    model = ChoosingModel(script=[AIMessage("Noted."), AIMessage("A fine evening."), AIMessage("Marta, you said.")],
                          picks=["chat", "chat", "recall"])  # fmt: skip
    graph = graph_with(model, store=store, intent_recall=["recall"])
    graph.invoke({"input": "My sister Marta arrives tomorrow"}, {"configurable": {"thread_id": "earlier"}})
    first = graph.invoke({"input": "Lovely evening"}, CONFIG)
    assert first["trace"]["path"] == ["ingest", "intent", "compose", "generate", "remember"]
    assert first["trace"]["intent"]["route"] == {"recall": False, "tools": False, "in_character": True}
    second = graph.invoke({"input": "What did I tell you about my sister?"}, CONFIG)
    trace = second["trace"]
    assert trace["path"] == ["ingest", "intent", "recall", "compose", "generate", "remember"]
    assert trace["intent"]["intent"] == "recall" and trace["intent"]["decided_by"] == "model"
    assert any("Marta" in r["text"] for r in trace["recalled"])  # from the other thread
    # The decision's prompt is the thread's prompt up to the last reply, then the question.
    asked = model.asked[2]["messages"]
    assert [type(m).__name__ for m in asked] == ["SystemMessage", "HumanMessage", "AIMessage", "HumanMessage"]
    assert asked[2].text == "A fine evening." and 'Message: "What did I tell you about my sister?"' in asked[-1].text
    assert model.asked[2]["choices"] == ["chat", "recall", "ooc"]


def test_tools_are_offered_only_when_the_intent_asks_for_one() -> None:
    model = ChoosingModel(script=[AIMessage("A fine evening."), call("roll_dice", notation="2d6"),
                                  AIMessage("Seven!")], picks=["chat", "tool"])  # fmt: skip
    graph = graph_with(model, tools=[roll_dice], memory=False)
    graph.invoke({"input": "Lovely weather"}, CONFIG)
    state = graph.invoke({"input": "Roll 2d6 for me"}, CONFIG)
    # Still rendered on a chat turn (the prompt's prefix stays), but not to be called.
    assert [b["tool_choice"] for b in model.bindings] == ["none", "auto", "auto"]
    assert state["trace"]["intent"]["route"]["tools"] is True and state["trace"]["tool_calls"][0]["name"] == "roll_dice"
    assert model.asked[1]["tools"] == ["roll_dice"]


def test_an_out_of_character_turn_is_answered_and_marked_as_such() -> None:
    store = InMemoryStore()
    model = ChoosingModel(script=[AIMessage("Sure, shorter from now on.")], picks=[])
    graph = graph_with(model, store=store, persona="nora-quill")
    state = graph.invoke({"input": "OOC: keep your replies shorter"}, CONFIG)
    trace = state["trace"]
    assert trace["intent"] == {**trace["intent"], "intent": "ooc", "decided_by": "rule"}
    assert trace["intent"]["route"]["in_character"] is False and model.asked == []  # no model call to decide
    prompt = model.prompts[0]
    assert prompt[-1].text.endswith(ooc_instruction("Nora Quill"))  # in place of the post-history
    assert state["messages"][-1].response_metadata["ooc"] is True
    assert trace["remembered"] == [] and trace["remember_skipped"] == "out of character"
    assert "intent: ooc (rule" in intent_line(trace["intent"]) and "out of character" in intent_line(trace["intent"])


def test_a_model_without_choose_answers_in_words() -> None:
    model = ScriptedToolModel(script=[AIMessage("I think this is recall."), AIMessage("Let me think.")])
    state = graph_with(model, memory=False).invoke({"input": "What did I say yesterday?"}, CONFIG)
    assert state["intent"] == "recall" and state["trace"]["intent"]["decided_by"] == "model"
    assert isinstance(model.prompts[0][-1], HumanMessage) and "Kind:" in model.prompts[0][-1].text
    model = ScriptedToolModel(script=[AIMessage("no idea"), AIMessage("Hello.")])
    state = graph_with(model, memory=False).invoke({"input": "hello"}, CONFIG)
    assert state["intent"] == "chat" and state["trace"]["intent"]["decided_by"] == "fallback"


def test_without_the_setting_no_intent_is_decided() -> None:
    model = ScriptedToolModel(script=[AIMessage("Hello.")])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, tools=[roll_dice])
    assert "intent" not in graph.get_graph().nodes
    state = graph.invoke({"input": "hello"}, CONFIG)
    assert "intent" not in state["trace"] and model.bindings[0]["tool_choice"] == "auto"


def test_the_agents_turn_result_carries_the_intent(tmp_path: Path) -> None:
    model = ChoosingModel(script=[AIMessage("Noted, dear.")], picks=[])
    with Agent(model=model, data_dir=tmp_path, memory=False, intent=True, persona="bram-tolliver") as agent:
        result = agent.chat("((can we pause?))")
    assert result.intent == "ooc" and result.out_of_character is True
    assert result.to_json()["intent"] == "ooc" and result.trace["intent"]["route"]["in_character"] is False


@pytest.mark.e2e
def test_the_shipped_model_decides_the_intent_on_the_replys_prefix(shipped_model: Path, tmp_path: Path) -> None:
    with Agent(model=str(shipped_model), data_dir=tmp_path, memory=False, intent=True, intent_classifier="model",
               tools=[roll_dice], persona="bram-tolliver", max_tokens=8, seed=3) as agent:  # fmt: skip
        first = agent.chat("Evening, Bram. Long day on the river, and I'm soaked through.")
        second = agent.chat("((let's pause the story))", first.thread_id)
    decided = first.trace["intent"]
    assert first.trace["path"][:2] == ["ingest", "intent"] and decided["decided_by"] == "model"
    assert first.intent in ("chat", "recall", "tool", "ooc") == tuple(decided["choices"])
    # The decision filled the KV cache with the thread's prompt; the reply started from it.
    assert first.trace["cache"]["reused_tokens"] > 0
    assert second.intent == "ooc" and second.out_of_character and second.trace["intent"]["decided_by"] == "rule"


class KeywordEmbeddings(Embeddings):
    """Vectors that count a few words: enough to tell the examples below apart."""

    WORDS = ("remember", "roll", "photo", "app", "hello")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return [float(w in text.lower()) for w in self.WORDS] + [0.1]


EXAMPLES = {"chat": ["hello there", "hello friend"], "recall": ["do you remember", "remember when"],
            "tool": ["roll dice", "roll d20"], "attachment": ["this photo", "the photo"],
            "ooc": ["about the app", "the app settings"]}  # fmt: skip


def test_the_examples_classifier_takes_the_nearest_examples_among_the_choices() -> None:
    made: list[int] = []

    def embedder() -> KeywordEmbeddings:
        made.append(1)
        return KeywordEmbeddings()

    classifier = ExampleClassifier(embedder, EXAMPLES)
    assert made == []  # nothing loaded until the first decision
    assert classifier.classify("Do you remember my dog?", INTENTS)[0] == "recall"
    assert classifier.classify("roll for me", INTENTS)[0] == "tool"
    assert classifier.classify("roll for me", ("chat", "recall", "ooc"))[0] != "tool"  # not offered
    intent, scores = classifier.classify("how does the app work", INTENTS)
    assert intent == "ooc" and set(scores) == set(INTENTS) and made == [1]
    # Out of character only by a clear margin: a near tie stays in character.
    assert ExampleClassifier(KeywordEmbeddings(), EXAMPLES, ooc_margin=2.0).classify("the app", INTENTS)[0] != "ooc"
    with pytest.raises(ValueError, match="unknown intents: chitchat"):
        ExampleClassifier(KeywordEmbeddings(), {"chitchat": ["hi"]})


def test_the_graph_decides_by_examples_and_traces_the_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentmm.graphs import chat

    monkeypatch.setattr(chat, "intent_examples", lambda settings, runtime: ExampleClassifier(KeywordEmbeddings(),
                                                                                            EXAMPLES))  # fmt: skip
    model = ScriptedToolModel(script=[AIMessage("Of course I remember.")])
    graph = build_graph(Settings(intent=True), model=model, checkpointer=InMemorySaver(), counter=WORDS,
                        store=InMemoryStore())  # fmt: skip
    state = graph.invoke({"input": "Do you remember my dog?"}, CONFIG)
    decided = state["trace"]["intent"]
    assert decided["intent"] == "recall" and decided["decided_by"] == "examples"
    assert set(decided["scores"]) == {"chat", "recall", "ooc"} and model.prompts[0][-1].text.startswith("Do you")


@pytest.mark.e2e
def test_the_shipped_embedder_sorts_plain_messages(tmp_path: Path) -> None:
    from agentmm.graphs.chat import intent_examples

    classifier = intent_examples(Settings(data_dir=tmp_path), None)
    said = {"What did I tell you about my sister last week?": "recall", "Roll 2d6 for me.": "tool",
            "What can you see in this picture?": "attachment", "*pours a drink* Rough night, huh?": "chat"}  # fmt: skip
    for message, intent in said.items():
        assert classifier.classify(message, INTENTS)[0] == intent, message
