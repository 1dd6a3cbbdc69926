"""``Agent.undo`` and ``Agent.retry``: the thread's last exchange taken out, or answered again, in
the library (the REPL's /undo and /retry only call them), with langchain-core's fake chat model,
the real SQLite checkpointer and, where memory matters, the real Chroma store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from agentmm import Agent
from agentmm.errors import NothingToUndoError, ThreadNotFoundError
from agentmm.graphs.chat import build_graph
from agentmm.graphs.thread_edit import last_exchange, take_out
from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import remember_turn, turn_memories
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from agentmm.tools.builtin import roll_dice
from agentmm.tools.perception import Perception
from tests.graphs.scripted_model import ScriptedToolModel, call
from tests.memory.conftest import CharacterEmbeddings
from tests.tools.fake_captioner import FakeCaptioner


class Replies(GenericFakeChatModel):
    """GenericFakeChatModel that records the seed each call was given, samples with a fixed one
    of its own (as ``settings.seed`` makes the built-in model do), and fails a call on request."""

    seed: int | None = 11
    seeds: list[int | None] = Field(default_factory=list)
    fail_next: bool = False

    def _stream(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Iterator:
        self.seeds.append(kw.get("seed"))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the model fell over")
        return super()._stream(messages, stop, run_manager, **kw)


def replies(*texts: str) -> Replies:
    return Replies(messages=iter([AIMessage(t) for t in texts]))


def said(agent: Agent, thread: str) -> list[tuple[str, str]]:
    values = agent.graph.get_state({"configurable": {"thread_id": thread}}).values
    return [(m.type, m.text) for m in values.get("messages", [])]


def said_id(agent: Agent, thread: str, index: int) -> str:
    return str(agent.graph.get_state({"configurable": {"thread_id": thread}}).values["messages"][index].id)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChromaStore]:
    index = {"dims": 64, "embed": CharacterEmbeddings(dims=64), "fields": ["text"]}
    with ChromaStore.from_path(tmp_path / "store", index=index) as opened:
        yield opened


def stored(store: ChromaStore, thread: str, turn: int) -> list[tuple[str, str]]:
    return sorted((item.key, item.value["content"]) for item in turn_memories(store, thread, turn))


def test_undo_takes_the_last_exchange_out_and_the_thread_goes_on(settings: Settings) -> None:
    agent = Agent(settings, model=replies("Hello Mira.", "Your name is Mira.", "Green, I think."))
    agent.chat("Hi, I am Mira.", "t")
    agent.chat("What is my name?", "t")
    undone = agent.undo("t")
    assert (undone.text, undone.turn, undone.messages_removed, undone.memories_forgotten) == (
        "What is my name?", 2, 2, [])  # fmt: skip
    assert said(agent, "t") == [("human", "Hi, I am Mira."), ("ai", "Hello Mira.")]
    state = agent.graph.get_state({"configurable": {"thread_id": "t"}})
    assert state.next == ()  # between turns
    assert state.values["trace"]["turn"] == 1  # /why explains the reply still there
    result = agent.chat("What is my favourite colour?", "t")
    assert result.trace["turn"] == 2 and result.reply == "Green, I think."
    assert said(agent, "t")[-2:] == [("human", "What is my favourite colour?"), ("ai", "Green, I think.")]


def test_undo_errors_are_typed(settings: Settings) -> None:
    agent = Agent(settings, model=replies("One."))
    with pytest.raises(ThreadNotFoundError, match="unknown thread 'nope'"):
        agent.undo("nope")
    agent.chat("only", "t")
    agent.undo("t")
    assert said(agent, "t") == []
    with pytest.raises(NothingToUndoError, match="nothing to undo in thread t"):
        agent.undo("t")
    with pytest.raises(NothingToUndoError, match="nothing to retry in thread t"):
        agent.retry("t")


def test_undo_keeps_a_personas_greeting_and_the_persona(settings: Settings) -> None:
    agent = Agent(settings, model=replies("*nods*"))
    agent.chat("Evening, Nora.", "t", persona="Nora Quill", greeting=1)
    greeting = said(agent, "t")[0]
    undone = agent.undo("t")
    assert undone.persona == "Nora Quill" and undone.messages_removed == 2
    assert said(agent, "t") == [greeting]
    assert agent.graph.get_state({"configurable": {"thread_id": "t"}}).values["persona"] == "Nora Quill"
    with pytest.raises(NothingToUndoError):
        agent.undo("t")


def test_undo_takes_tool_calls_out_with_the_exchange_even_when_nothing_is_left(settings: Settings) -> None:
    model = ScriptedToolModel(script=[call("roll_dice", notation="2d6"), AIMessage("Seven."), AIMessage("Hi.")])
    agent = Agent(settings, model=model, tools=[roll_dice])
    agent.chat("roll 2d6", "t")
    assert [kind for kind, _ in said(agent, "t")] == ["human", "ai", "tool", "ai"]
    assert agent.undo("t").messages_removed == 4
    # The emptied thread was written as the graph's last node (generate, routing on its last
    # message): it is left between turns, and goes on.
    assert said(agent, "t") == []
    assert agent.graph.get_state({"configurable": {"thread_id": "t"}}).next == ()
    assert agent.chat("hello", "t").reply == "Hi."


def paused_agent(settings: Settings, *after: AIMessage) -> Agent:
    """An agent whose thread "t" holds one exchange and a turn paused for a tool approval (as a
    caller of ``astream_events`` may leave it: the run stops at the interrupt)."""
    script = [AIMessage("Hello."), call("roll_dice", notation="2d6"), *after]
    agent = Agent(settings.updated(approve_tools=["roll_dice"]), model=ScriptedToolModel(script=script),
                  tools=[roll_dice])  # fmt: skip
    agent.chat("hi", "t")
    agent.graph.invoke({"input": "roll 2d6"}, {"configurable": {"thread_id": "t"}}, context=TurnContext())
    assert agent.graph.get_state({"configurable": {"thread_id": "t"}}).interrupts
    return agent


def test_undo_of_a_turn_paused_for_approval_takes_out_that_turn_only(settings: Settings) -> None:
    agent = paused_agent(settings, AIMessage("Next."))
    undone = agent.undo("t")
    assert (undone.text, undone.messages_removed) == ("roll 2d6", 2)
    assert said(agent, "t") == [("human", "hi"), ("ai", "Hello.")]
    assert agent.graph.get_state({"configurable": {"thread_id": "t"}}).next == ()
    assert agent.chat("next", "t").reply == "Next."


def test_retry_of_a_turn_paused_for_approval_sends_that_message_again(settings: Settings) -> None:
    agent = paused_agent(settings, call("roll_dice", "c2", notation="2d6"), AIMessage("No dice, then."))
    turn = agent.retry("t")  # no one to approve: the call is denied and the model answers in words
    assert "".join(turn) == "No dice, then." and turn.result.trace["turn"] == 2
    assert said(agent, "t")[:3] == [("human", "hi"), ("ai", "Hello."), ("human", "roll 2d6")]
    assert said(agent, "t")[-1] == ("ai", "No dice, then.")


def test_undo_forgets_what_the_turn_remembered_and_nothing_else(settings: Settings, store: ChromaStore) -> None:
    agent = Agent(settings, model=replies("Noted, tea.", "Noted, cats."), store=store)
    agent.chat("I like tea", "t")
    agent.chat("I like cats", "t")
    kept = stored(store, "t", 1)
    assert stored(store, "t", 2) == [("t:2:assistant", "Noted, cats."), ("t:2:user", "I like cats")]
    undone = agent.undo("t")
    assert sorted(undone.memories_forgotten) == ["t:2:assistant", "t:2:user"]
    assert stored(store, "t", 2) == [] and stored(store, "t", 1) == kept


def test_retry_answers_the_same_message_again_as_the_same_turn(settings: Settings, store: ChromaStore) -> None:
    model = replies("Hello Mira.", "Your name is Maria.", "Your name is Mira.")
    agent = Agent(settings, model=model, store=store)
    agent.chat("Hi, I am Mira.", "t")
    agent.chat("What is my name?", "t")
    turn = agent.retry("t")
    assert turn.text == "What is my name?"
    assert said(agent, "t")[-1] == ("ai", "Your name is Maria.")  # nothing changes until it runs
    assert "".join(turn) == "Your name is Mira."
    assert turn.result.trace["turn"] == 2
    assert said(agent, "t") == [("human", "Hi, I am Mira."), ("ai", "Hello Mira."), ("human", "What is my name?"),
                                ("ai", "Your name is Mira.")]  # fmt: skip
    assert stored(store, "t", 2) == [("t:2:assistant", "Your name is Mira."), ("t:2:user", "What is my name?")]
    # A fixed-seed model samples the retry with a new seed; an ordinary turn passes none.
    assert model.seeds[:2] == [None, None] and isinstance(model.seeds[2], int) and model.seeds[2] != model.seed


def test_retry_takes_the_seed_it_is_given(settings: Settings) -> None:
    model = replies("A.", "B.")
    agent = Agent(settings, model=model)
    agent.chat("hi", "t")
    agent.retry("t", seed=7)  # never iterated: nothing runs, nothing changes
    assert model.seeds == [None] and said(agent, "t") == [("human", "hi"), ("ai", "A.")]
    list(agent.retry("t", seed=42))
    assert model.seeds == [None, 42] and said(agent, "t") == [("human", "hi"), ("ai", "B.")]


def test_a_stopped_retry_replaces_the_old_reply_in_memory(settings: Settings, store: ChromaStore) -> None:
    agent = Agent(settings, model=replies("Tea it is."), store=store)
    agent.chat("I like tea", "t")
    turn = agent.retry("t")
    turn.cancel()  # stopped before the model started: an empty reply, marked interrupted
    list(turn)
    assert turn.result.interrupted
    assert said(agent, "t") == [("human", "I like tea"), ("ai", "")]
    assert stored(store, "t", 1) == [("t:1:user", "I like tea")]  # the old reply is not recalled later


def test_a_retry_that_fails_leaves_the_thread_and_memory_as_they_were(settings: Settings, store: ChromaStore) -> None:
    model = replies("Hello Mira.", "Noted, tea.")
    agent = Agent(settings, model=model, store=store)
    agent.chat("Hi, I am Mira.", "t")
    agent.chat("I like tea", "t")
    before = said(agent, "t")
    remembered = stored(store, "t", 2)
    model.fail_next = True
    with pytest.raises(RuntimeError, match="fell over"):
        list(agent.retry("t"))
    assert said(agent, "t") == before
    assert agent.graph.get_state({"configurable": {"thread_id": "t"}}).values["trace"]["turn"] == 2
    assert stored(store, "t", 2) == remembered


def test_a_raw_graphs_retry_after_a_failed_run_answers_that_runs_message_as_its_turn() -> None:
    """A raw graph keeps a failed run's message, unanswered: a retry joined it to the retried
    message, took the exchange before it out too and counted turn 1; a retry sent in
    ``messages`` took nothing out and was answered as a new turn."""
    from langchain_core.messages import HumanMessage

    model = replies("R1", "R2", "R3")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver(),
                        counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
    config = {"configurable": {"thread_id": "raw"}}
    graph.invoke({"input": "u1"}, config)
    model.fail_next = True
    with pytest.raises(RuntimeError, match="fell over"):
        graph.invoke({"input": "u2"}, config)
    state = graph.invoke({"input": "u2"}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2", "R2"]
    assert state["trace"]["turn"] == 2 and "unanswered_joined" not in state["trace"]
    state = graph.invoke({"messages": [HumanMessage("u2")]}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2", "R3"]
    assert state["trace"]["turn"] == 2


def test_a_raw_graphs_retry_of_a_message_sent_again_under_its_id_answers_that_message() -> None:
    """A client that keeps message ids (agent-chat-ui, Studio) retries by sending the message
    again, same id: it replaces the stored one in place. After a failed run, the exchange before
    it was taken out (the thread lost turn 1); after a turn that was answered, the message was
    not last and the retry was EmptyInputError."""
    from langchain_core.messages import HumanMessage

    model = replies("R1", "R2", "R3")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "ids"}}
    graph.invoke({"messages": [HumanMessage("u1", id="m1")]}, config)
    model.fail_next = True
    with pytest.raises(RuntimeError, match="fell over"):
        graph.invoke({"messages": [HumanMessage("u2", id="m2")]}, config)
    state = graph.invoke({"messages": [HumanMessage("u2", id="m2")]}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2", "R2"]
    assert state["trace"]["turn"] == 2
    state = graph.invoke({"messages": [HumanMessage("u2", id="m2")]}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2", "R3"]
    assert [m.id for m in state["messages"] if m.type == "human"] == ["m1", "m2"]
    assert state["trace"]["turn"] == 2


def test_messages_of_failed_runs_an_outer_graph_hands_back_are_joined_in_the_order_sent() -> None:
    """As a node, after two failed runs the turn had joined u3 and u4 (under u4's id) and taken
    u3 out; the outer graph handed both back, its u4 replacing the joined message in place and
    u3 appended after it, and the next message was answered as 'u4, u3, u5'."""
    from langchain_core.messages import HumanMessage
    from langgraph.graph import START, MessagesState, StateGraph

    model = replies("R1", "R2")
    turn = build_graph(Settings(memory=False), model=model, checkpointer=True)
    outer = StateGraph(MessagesState)
    outer.add_node("turn", turn)
    outer.add_edge(START, "turn")
    app = outer.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "outer"}}
    app.invoke({"messages": [HumanMessage("u1")]}, config)
    for text in ("u3", "u4"):
        model.fail_next = True
        with pytest.raises(RuntimeError, match="fell over"):
            app.invoke({"messages": [HumanMessage(text)]}, config)
    state = app.invoke({"messages": [HumanMessage("u5")]}, config)
    assert state["messages"][-2].text == "u3\n\nu4\n\nu5"
    assert state["messages"][-1].text == "R2"


def _outer_graph(*texts: str) -> tuple[Any, InMemorySaver]:
    """An outer MessagesState graph with the turn graph as its one node (README's subgraph use),
    the turn answering ``texts`` in order; and the outer graph's saver."""
    from langgraph.graph import START, MessagesState, StateGraph

    class Outer(MessagesState):
        trace: dict[str, Any]

    turn = build_graph(Settings(memory=False), model=replies(*texts), checkpointer=True)
    outer = StateGraph(Outer)
    outer.add_node("turn", turn)
    outer.add_edge(START, "turn")
    saver = InMemorySaver()
    return outer.compile(checkpointer=saver), saver


def test_a_retry_through_an_outer_graph_stays_out_of_the_turns_own_thread() -> None:
    """The outer graph keeps the retried exchange (a subgraph cannot take messages out of it)
    and hands it back with every run: the turn's own thread took it in again after the retry
    ('u2', 'R3', 'u2', 'R2'), into the next prompts, and counted the next turn as 4."""
    from langchain_core.messages import HumanMessage

    app, saver = _outer_graph("R1", "R2", "R3", "R4", "R5")
    config = {"configurable": {"thread_id": "outer"}}
    for text in ("u1", "u2"):
        app.invoke({"messages": [HumanMessage(text)]}, config)
    app.invoke({"messages": [HumanMessage("u2")]}, config, context=TurnContext(retry=True))
    for text, turn_number in (("u3", 3), ("u4", 4)):
        state = app.invoke({"messages": [HumanMessage(text)]}, config)
        assert state["trace"]["turn"] == turn_number
    own = saver.get_tuple({"configurable": {"thread_id": "outer", "checkpoint_ns": "turn"}})
    assert own is not None
    assert [m.text for m in own.checkpoint["channel_values"]["messages"]] == [
        "u1",
        "R1",
        "u2",
        "R3",
        "u3",
        "R4",
        "u4",
        "R5",
    ]
    # The outer graph still holds the retried exchange: it is its own list, which only it edits.
    assert [m.text for m in state["messages"]][:6] == ["u1", "R1", "u2", "R2", "u2", "R3"]


def test_the_exchange_is_read_from_the_checkpoint_history(tmp_path: Path) -> None:
    """A voice note sent alone: the thread's message became its transcript, but a retry sends
    what the user sent (no words, the file) again; the attachments are that turn's, whatever
    a later failed turn left in the state."""
    from tests.tools.media_files import write_wav

    voice = write_wav(tmp_path / "note.wav")

    def transcribe(path: Path) -> tuple[str, str, str]:
        return "meet me at noon", "en", "fake-asr"

    graph = build_graph(Settings(memory=False), model=GenericFakeChatModel(messages=iter([AIMessage("Noon it is.")])),
                        checkpointer=InMemorySaver(), counter=TokenCounter(lambda text: len(text.split())),
                        perception=Perception(FakeCaptioner("a cat"), transcribe))  # fmt: skip
    config = {"configurable": {"thread_id": "v"}}
    graph.invoke({"input": ""}, config, context=TurnContext(attachments=[str(voice)]))
    assert graph.get_state(config).values["messages"][0].text == "meet me at noon"
    exchange = last_exchange(graph, "v")
    assert exchange is not None
    assert (exchange.text, exchange.attachments, exchange.turn, exchange.messages) == ("", (str(voice),), 1, 2)
    take_out(graph, exchange)
    values = graph.get_state(config).values
    assert values["messages"] == [] and values["attachments"] == [] and values["trace"] == {}


def test_remember_turn_with_replace_deletes_the_rows_it_does_not_write_again(store: ChromaStore) -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 1, 2, tzinfo=UTC)
    first = [("observation", "Mira", "[Mira sends a picture of a cat]"), ("user", "Mira", "look"),
             ("assistant", "Nora", "A cat!")]  # fmt: skip
    remember_turn(store, ("memories", "local", "Nora"), thread_id="t", turn=3, exchange=first, when=when)
    remember_turn(store, ("memories", "local", "Ilse"), thread_id="t", turn=3, exchange=[("user", "Mira", "look")],
                  when=when, replace=True)  # fmt: skip
    rows = [(item.namespace, item.key) for item in turn_memories(store, "t", 3)]
    assert rows == [(("memories", "local", "Ilse"), "t:3:user")]
    assert store.get(("memories", "local", "Nora"), "t:3:assistant") is None


class SummaryLists(BaseChatModel):
    """Replies in a few words; asked for the rolling summary, lists the WORDn it was shown."""

    @property
    def _llm_type(self) -> str:
        return "summary-lists"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        from langchain_core.outputs import ChatGeneration, ChatResult

        shown = " ".join(m.text for m in messages)
        is_summary = "running summary" in messages[0].text
        text = " ".join(sorted(set(re.findall(r"WORD\d+", shown)))) if is_summary else "Okay, noted. " * 6
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])


def test_undos_past_a_fold_take_the_undone_turns_out_of_the_summary_too(tmp_path: Path) -> None:
    """Undone turns stayed in the rolling summary: after 19 undos past three folds, the next
    prompt still held a summary of turns 2-17."""
    with Agent(model=SummaryLists(), memory=False, n_ctx=512, max_tokens=40, data_dir=tmp_path) as agent:
        thread = None
        for i in range(1, 15):
            thread = agent.chat(f"fact {i}: the password of day {i} is WORD{i}", thread).thread_id
        values = agent.graph.get_state({"configurable": {"thread_id": thread}}).values
        assert "WORD2" in values["summary"]  # the thread folded
        while len(said(agent, thread)) > 4:
            agent.undo(thread)
            values = agent.graph.get_state({"configurable": {"thread_id": thread}}).values
            kept = " ".join(m.text for m in values["messages"])
            told = set(re.findall(r"WORD\d+", values.get("summary", "")))
            assert told <= set(re.findall(r"WORD\d+", kept)), (told, kept)
            assert values.get("summary_through", 0) <= values.get("window_start", 0) <= len(values["messages"])
        reply = agent.chat("What do you know?", thread)
        assert "WORD3" not in str(reply.trace)


def test_a_retry_after_undos_past_a_fold_leaves_the_retried_turn_out_of_the_summary(tmp_path: Path) -> None:
    """A retry took the exchange out but kept a summary that told it: the old turn was in the
    summary and the new one in the window (and a later undo left it there)."""

    def summary_tells_only_what_it_covers(values: dict[str, Any]) -> None:
        covered = " ".join(m.text for m in values["messages"][: values.get("summary_through", 0)])
        told = set(re.findall(r"WORD\d+", values.get("summary", "")))
        assert told <= set(re.findall(r"WORD\d+", covered)), (told, values.get("summary_through"))

    with Agent(model=SummaryLists(), memory=False, n_ctx=512, max_tokens=40, data_dir=tmp_path) as agent:
        thread = None
        for i in range(1, 31):  # folds more than once
            thread = agent.chat(f"fact {i}: the password of day {i} is WORD{i}", thread).thread_id
        config = {"configurable": {"thread_id": thread}}
        retried = put_back = 0
        while len(said(agent, thread)) > 4:
            values = agent.graph.get_state(config).values
            start = max(i for i, m in enumerate(values["messages"]) if m.type == "human")
            if values.get("summary_through", 0) > start:  # the summary tells the last exchange
                found = last_exchange(agent.graph, thread)
                assert found is not None
                turn = agent.retry(thread)
                for _ in turn:
                    pass
                retried += 1
                after = agent.graph.get_state(config).values
                summary_tells_only_what_it_covers(after)
                if "summarize" not in turn.result.trace["path"]:  # the retried turn folded nothing
                    # Put back as the exchange's run found it (not dropped, to be written again).
                    assert after["summary"] == found.before.get("summary", "")
                    put_back += bool(after["summary"])
            agent.undo(thread)
            summary_tells_only_what_it_covers(agent.graph.get_state(config).values)
        assert retried and put_back, "no retry met a summary to put back: the test says nothing"


def test_a_raw_graphs_retry_past_a_fold_puts_back_the_summary_its_turn_started_with() -> None:
    """The ``Agent``'s retry carries the summary its exchange's run found (read from the
    checkpoint history); a raw graph's retry had none and dropped the summary, to fold every
    message it covered again."""
    graph = build_graph(Settings(memory=False, n_ctx=512, max_tokens=40), model=SummaryLists(),
                        checkpointer=InMemorySaver())  # fmt: skip
    config = {"configurable": {"thread_id": "raw"}}
    for i in range(1, 31):  # folds more than once
        graph.invoke({"input": f"fact {i}: the password of day {i} is WORD{i}"}, config)
    put_back = 0
    while len(graph.get_state(config).values["messages"]) > 4:
        values = graph.get_state(config).values
        start = max(i for i, m in enumerate(values["messages"]) if m.type == "human")
        found = last_exchange(graph, "raw")
        assert found is not None
        if values.get("summary_through", 0) > start and found.before.get("summary"):  # the summary tells it
            state = graph.invoke({"input": found.text}, config, context=TurnContext(retry=True))
            if "summarize" in state["trace"]["path"]:  # the retried turn folded: on from the summary put back
                folded = state["trace"]["summary"]["folded_messages"]
                assert folded == state["window_start"] - found.before["summary_through"], "folded again from 0"
            else:
                assert (state["summary"], state["summary_through"]) == (
                    found.before["summary"], found.before["summary_through"])  # fmt: skip
                put_back += 1
        take_out(graph, last_exchange(graph, "raw"))  # type: ignore[arg-type]
    assert put_back, "no retry met a summary to put back: the test says nothing"


def test_a_raw_graphs_retry_with_an_empty_input_answers_the_last_message_again() -> None:
    """Clients send the input box as it is: a retry with ``{"input": ""}`` (or blanks) was
    EmptyInputError, only a retry with no ``input`` key answered the last message again."""
    from agentmm.errors import EmptyInputError

    model = replies("R1", "R2", "R3")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver(),
                        counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
    config = {"configurable": {"thread_id": "empty"}}
    graph.invoke({"input": "u1"}, config)
    for given, reply in (("", "R2"), ("  \n ", "R3")):
        state = graph.invoke({"input": given}, config, context=TurnContext(retry=True))
        assert [m.text for m in state["messages"]] == ["u1", reply]
        assert state["trace"]["turn"] == 1
    with pytest.raises(EmptyInputError):  # without retry an empty input is still nothing to say
        graph.invoke({"input": ""}, config)


def test_a_raw_graphs_empty_message_in_messages_is_taken_out_and_a_retry_of_it_answers_again() -> None:
    """An empty message sent as ``messages`` was refused but stayed in the thread (an empty user
    message for later prompts), and one sent with retry (agent-chat-ui sends its input box as it
    is) was refused too, adding another: it goes, as a refused picture does, and with retry the
    last message is answered again, as ``{"input": ""}`` with retry is. An answered message sent
    again under its id was 'the message is empty': it says the message was answered."""
    from agentmm.errors import EmptyInputError

    model = replies("R1", "R2", "R3")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver(),
                        counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
    config = {"configurable": {"thread_id": "empty-messages"}}
    graph.invoke({"messages": [{"role": "user", "content": "u1", "id": "m1"}]}, config)
    with pytest.raises(EmptyInputError, match="empty"):
        graph.invoke({"messages": [{"role": "user", "content": ""}]}, config)
    assert [m.text for m in graph.get_state(config).values["messages"]] == ["u1", "R1"]
    for given, reply in (("", "R2"), (" \n ", "R3")):
        state = graph.invoke({"messages": [{"role": "user", "content": given}]}, config,
                             context=TurnContext(retry=True))  # fmt: skip
        assert [(m.type, m.text) for m in state["messages"]] == [("human", "u1"), ("ai", reply)]
        assert state["trace"]["turn"] == 1
    with pytest.raises(EmptyInputError, match="message m1 was already answered; send retry"):
        graph.invoke({"messages": [{"role": "user", "content": "u1", "id": "m1"}]}, config)
    assert [m.text for m in graph.get_state(config).values["messages"]] == ["u1", "R3"]


def test_a_raw_graphs_retry_after_two_failed_runs_answers_both_messages_in_order() -> None:
    """Two failed runs (u2, then u3) leave one unanswered message, u2 and u3 joined: a retry
    that sent u3 again took that whole message out and answered u3 alone, and u2 was lost; a
    client that sent u3 again under its id replaced the joined message, losing u2 the same way."""
    from langchain_core.messages import HumanMessage

    model = replies("R1", "R2", "R3")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver(),
                        counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
    config = {"configurable": {"thread_id": "twice"}}
    graph.invoke({"input": "u1"}, config)
    for text in ("u2", "u3"):
        model.fail_next = True
        with pytest.raises(RuntimeError, match="fell over"):
            graph.invoke({"input": text}, config)
    state = graph.invoke({"input": "u3"}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2\n\nu3", "R2"]
    assert state["trace"]["turn"] == 2
    # Retried again, with the reply standing: the turn's message is both again, not u3 alone.
    state = graph.invoke({"input": "u3"}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2\n\nu3", "R3"]

    model = replies("R1", "R2", "R3")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver(),
                        counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
    graph.invoke({"messages": [HumanMessage("u1", id="m1")]}, config)
    for text, sent in (("u2", "m2"), ("u3", "m3")):
        model.fail_next = True
        with pytest.raises(RuntimeError, match="fell over"):
            graph.invoke({"messages": [HumanMessage(text, id=sent)]}, config)
    state = graph.invoke({"messages": [HumanMessage("u3", id="m3")]}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2\n\nu3", "R2"]
    assert [m.id for m in state["messages"] if m.type == "human"] == ["m1", "m3"]
    assert state["trace"]["turn"] == 2
    # The message as the thread shows it, sent again under its id: both once, not u2 twice.
    again = HumanMessage("u2\n\nu3", id="m3")
    state = graph.invoke({"messages": [again]}, config, context=TurnContext(retry=True))
    assert [m.text for m in state["messages"]] == ["u1", "R1", "u2\n\nu3", "R3"]


def test_undos_and_a_raw_retry_past_a_fold_on_an_imported_thread_keep_its_summary() -> None:
    """A thread ``threads import`` wrote has no run of its turns in its history, nor a
    ``summary_before``: an undo of one of its turns past a later fold, and a raw graph's retry
    there, dropped the summary (to fold every message from the first again)."""
    from agentmm.threads import import_thread, imported_values

    graph = build_graph(Settings(memory=False, n_ctx=512, max_tokens=40), model=SummaryLists(),
                        checkpointer=InMemorySaver())  # fmt: skip
    rows: list[dict[str, str]] = []
    for i in range(1, 13):
        rows += [{"role": "user", "content": f"fact {i}: the password of day {i} is WORD{i}"},
                 {"role": "assistant", "content": "Okay, noted. " * 6}]  # fmt: skip
    doc = {"messages": rows, "summary": "WORD1 WORD2", "summary_through": 4, "window_start": 4}
    import_thread(graph, "imp", imported_values(doc, "f"))
    config = {"configurable": {"thread_id": "imp"}}
    state = graph.invoke({"input": "fact 13: the password of day 13 is WORD13"}, config)
    assert "summarize" in state["trace"]["path"] and state["summary_through"] > 4  # a fold past imported turns
    imported = (doc["summary"], doc["summary_through"])
    undone_past = 0
    while (found := last_exchange(graph, "imp")) is not None and found.turn > 3:
        values = graph.get_state(config).values
        start = max(i for i, m in enumerate(values["messages"]) if m.type == "human")
        past = values["summary_through"] > start
        if past:  # a raw retry here puts back the file's summary: it tells none of what goes
            state = graph.invoke({"input": found.text}, config, context=TurnContext(retry=True))
            if "summarize" in state["trace"]["path"]:
                assert state["trace"]["summary"]["folded_messages"] == state["window_start"] - 4, "folded from 0"
            else:
                assert (state["summary"], state["summary_through"]) == imported
        take_out(graph, last_exchange(graph, "imp"))  # type: ignore[arg-type]
        if past:
            values = graph.get_state(config).values
            assert (values["summary"], values["summary_through"]) == imported
            undone_past += 1
    assert undone_past, "no undo went past the fold: the test says nothing"


def test_a_failed_turn_moves_neither_the_threads_updated_at_nor_its_place_in_the_list(settings: Settings) -> None:
    """A turn that fails is rolled back by writing the checkpoint its run started from again, as
    the newest: threads list showed the thread as updated then, and first, though nothing changed."""
    import time

    from agentmm.threads import list_threads

    model = replies("R1", "R2")
    agent = Agent(settings, model=model)
    agent.chat("Hi, I am Mira.", "older")
    time.sleep(1.1)  # updated_at is kept to the second
    agent.chat("Hi, I am Ada.", "newer")
    listed = list_threads(agent.checkpointer)
    assert [t.thread_id for t in listed] == ["newer", "older"]
    time.sleep(1.1)
    model.fail_next = True
    with pytest.raises(RuntimeError, match="fell over"):
        agent.chat("I like tea", "older")
    assert list_threads(agent.checkpointer) == listed


def test_thread_ids_are_in_the_order_of_threads_list(settings: Settings) -> None:
    """``thread_ids`` (the REPL's Tab completion of thread ids) ordered threads by their newest
    checkpoint, which a failed turn's rollback writes: the thread came first there, not in
    ``threads list``."""
    import time

    from agentmm.threads import list_threads, thread_ids

    model = replies("R1", "R2")
    agent = Agent(settings, model=model)
    agent.chat("Hi, I am Mira.", "older")
    time.sleep(1.1)  # updated_at is kept to the second
    agent.chat("Hi, I am Ada.", "newer")
    model.fail_next = True
    with pytest.raises(RuntimeError, match="fell over"):
        agent.chat("I like tea", "older")
    assert thread_ids(agent.checkpointer) == [t.thread_id for t in list_threads(agent.checkpointer)]
    assert thread_ids(agent.checkpointer) == ["newer", "older"]


def test_thread_ids_read_no_thread_state_and_write_nothing(tmp_path: Path) -> None:
    """``thread_ids`` runs on every Tab press of the chat: it was ``list_threads``, which rebuilt
    each thread's messages (its state, and its parents' to date it) and rolled back a turn cut off
    before its reply as it read it, a write. Now it reads checkpoints through the saver's
    serializer never (the frames only), and the cut-off turn stays for a real read to settle."""
    from agentmm.threads import list_threads, open_checkpointer, thread_ids

    model = replies("R1")
    saver = open_checkpointer(tmp_path)
    try:
        graph = build_graph(Settings(memory=False), model=model, checkpointer=saver,
                            counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
        config = {"configurable": {"thread_id": "cut"}}
        graph.invoke({"input": "u1"}, config)
        model.fail_next = True
        with pytest.raises(RuntimeError, match="fell over"):
            graph.invoke({"input": "u2"}, config)
        newest = saver.get_tuple(config)
        assert newest is not None

        loaded: list[str] = []
        serde = saver.serde

        class Counting:
            def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
                return serde.dumps_typed(obj)

            def loads_typed(self, data: tuple[str, bytes]) -> Any:
                loaded.append(data[0])
                return serde.loads_typed(data)

        saver.serde = Counting()  # type: ignore[assignment]
        assert thread_ids(saver) == ["cut"]
        assert "msgpack" not in loaded  # no message (no value) rebuilt
        assert saver.get_tuple(config).config == newest.config  # type: ignore[union-attr]
        saver.serde = serde
        assert [t.messages for t in list_threads(saver)] == [2]  # a real read settles it
    finally:
        saver.conn.close()


def test_a_turn_cut_off_and_rolled_back_when_read_keeps_the_threads_updated_at(tmp_path: Path) -> None:
    """A raw graph's run that fails leaves its message unanswered, as a dead process's turn
    does: reading the thread rolls it back (``roll_back_dead_turn``), and its updated_at was
    the time of that reading."""
    import time

    from agentmm.threads import list_threads, open_checkpointer

    model = replies("R1")
    saver = open_checkpointer(tmp_path)
    try:
        graph = build_graph(Settings(memory=False), model=model, checkpointer=saver,
                            counter=TokenCounter(lambda text: len(text.split())))  # fmt: skip
        config = {"configurable": {"thread_id": "cut"}}
        graph.invoke({"input": "u1"}, config)
        when = graph.get_state(config).created_at
        time.sleep(1.1)  # updated_at is kept to the second
        model.fail_next = True
        with pytest.raises(RuntimeError, match="fell over"):
            graph.invoke({"input": "u2"}, config)
        time.sleep(1.1)
        [thread] = list_threads(saver)
        assert thread.messages == 2  # rolled back
        assert thread.updated_at == datetime.fromisoformat(when).isoformat(timespec="seconds")
    finally:
        saver.conn.close()


def test_messages_an_outer_graph_sent_in_one_run_are_answered_once() -> None:
    """As a node, two messages in one run are one turn's message, joined under the last one's
    id; the outer graph keeps the first too (a subgraph cannot take it out of its list) and
    handed it back with every run: the turn took it in again and joined it to the next message
    ('u1\\n\\nu3'), answering it twice and counting its turns from there."""
    from langchain_core.messages import HumanMessage

    app, saver = _outer_graph("R1", "R2", "R3")
    config = {"configurable": {"thread_id": "outer"}}
    state = app.invoke({"messages": [HumanMessage("u1"), HumanMessage("u2")]}, config)
    assert state["messages"][-2].text == "u1\n\nu2" and state["trace"]["turn"] == 1
    for text, turn_number in (("u3", 2), ("u4", 3)):
        state = app.invoke({"messages": [HumanMessage(text)]}, config)
        assert (state["messages"][-2].text, state["trace"]["turn"]) == (text, turn_number)
    own = saver.get_tuple({"configurable": {"thread_id": "outer", "checkpoint_ns": "turn"}})
    assert own is not None
    assert [m.text for m in own.checkpoint["channel_values"]["messages"]] == [
        "u1\n\nu2", "R1", "u3", "R2", "u4", "R3"]  # fmt: skip


def test_an_undo_after_a_retry_puts_back_the_turn_befores_record(tmp_path: Path) -> None:
    """A retry's message has an id of its own: the undo after it read the retry's start (the
    retried turn's own state) as the turn before's, and put back turn 2's trace, attachments
    and observations instead of turn 1's. Two retries in a row, too."""
    from tests.tools.media_files import make_image

    picture = str(make_image(tmp_path / "p.png"))
    model = replies("R1", "R2", "R2 again", "R2 once more")
    graph = build_graph(Settings(memory=False), model=model, checkpointer=InMemorySaver(),
                        counter=TokenCounter(lambda text: len(text.split())),
                        perception=Perception(FakeCaptioner("a cat"), None))  # fmt: skip
    config = {"configurable": {"thread_id": "r"}}
    graph.invoke({"input": "u1"}, config)
    turn_one = graph.get_state(config).values
    graph.invoke({"input": "u2"}, config, context=TurnContext(attachments=[picture]))
    for _ in range(2):
        state = graph.invoke({"input": "u2"}, config, context=TurnContext(retry=True, attachments=[picture]))
        assert state["trace"]["turn"] == 2 and state["observations"]
        exchange = last_exchange(graph, "r")
        assert exchange is not None and (exchange.turn, exchange.text, exchange.attachments) == (2, "u2", (picture,))
        assert exchange.before["trace"]["turn"] == 1
    take_out(graph, exchange)
    values = graph.get_state(config).values
    assert [m.text for m in values["messages"]] == ["u1", "R1"]
    assert values["trace"] == turn_one["trace"] and values["trace"]["turn"] == 1
    assert (values["attachments"], values["observations"]) == ([], [])


def test_the_agents_undo_after_a_retry_explains_the_turn_before(settings: Settings) -> None:
    agent = Agent(settings, model=replies("Hello Mira.", "Maria.", "Mira."))
    agent.chat("Hi, I am Mira.", "t")
    agent.chat("What is my name?", "t")
    assert "".join(agent.retry("t")) == "Mira."
    assert agent.undo("t").turn == 2
    values = agent.graph.get_state({"configurable": {"thread_id": "t"}}).values
    assert said(agent, "t") == [("human", "Hi, I am Mira."), ("ai", "Hello Mira.")]
    assert values["trace"]["turn"] == 1 and values["turn_message_ids"] == [said_id(agent, "t", 0)]
