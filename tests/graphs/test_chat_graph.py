"""The turn graph over langchain-core's fake chat models: any BaseChatModel works."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.errors import EmptyInputError
from agentmm.graphs.chat import build_graph
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter

WORDS = TokenCounter(lambda text: len(text.split()))


def replies(*texts: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(t) for t in texts]))


def config(thread: str = "t1") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def test_one_turn_trace_and_reply() -> None:
    graph = build_graph(
        Settings(system_prompt="Be kind."),
        model=replies("Hello there, traveller."),
        checkpointer=InMemorySaver(),
        counter=WORDS,
    )
    state = graph.invoke({"input": "hi"}, config())
    assert state["messages"][-1].content == "Hello there, traveller."
    trace = state["trace"]
    assert trace["path"] == ["ingest", "compose", "generate"]
    assert trace["turn"] == 1
    assert [p["part"] for p in trace["prompt_parts"]] == ["system", "history", "message"]
    assert trace["prompt_parts"][0]["tokens"] == 2
    assert trace["interrupted"] is False


def test_threads_keep_history_and_prompt_order() -> None:
    seen: list[list[Any]] = []

    class Recording(FakeListChatModel):
        def _stream(self, messages: list[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
            seen.append(list(messages))
            return super()._stream(messages, *args, **kwargs)

    graph = build_graph(
        Settings(), model=Recording(responses=["one", "two", "three"]), checkpointer=InMemorySaver(), counter=WORDS
    )
    graph.invoke({"input": "first"}, config("a"))
    graph.invoke({"input": "second"}, config("a"))
    graph.invoke({"input": "other thread"}, config("b"))
    prompt = seen[1]
    assert isinstance(prompt[0], SystemMessage)
    assert [m.content for m in prompt[1:]] == ["first", "one", "second"]
    assert [m.content for m in seen[2][1:]] == ["other thread"]
    # Turn 2's prompt starts with turn 1's prompt: append-only, so the KV cache carries over.
    assert [m.content for m in seen[1][: len(seen[0])]] == [m.content for m in seen[0]]


def test_tokens_stream_in_messages_mode() -> None:
    graph = build_graph(Settings(), model=replies("a b c d"), checkpointer=InMemorySaver(), counter=WORDS)
    chunks = [
        chunk.content
        for chunk, meta in graph.stream({"input": "go"}, config(), stream_mode="messages")
        if meta["langgraph_node"] == "generate" and isinstance(chunk, AIMessageChunk)
    ]
    assert "".join(chunks) == "a b c d"
    assert len([c for c in chunks if c]) >= 4


def test_empty_input_is_refused_before_anything_is_saved() -> None:
    saver = InMemorySaver()
    graph = build_graph(Settings(), model=replies("x"), checkpointer=saver, counter=WORDS)
    with pytest.raises(EmptyInputError):
        graph.invoke({"input": "   "}, config())
    assert not graph.get_state(config()).values.get("messages")


def test_cancel_before_generation_starts_asks_the_model_nothing() -> None:
    """Ctrl-C while the model is still loading: no prefill, no token, an empty reply marked interrupted."""
    context = TurnContext()
    context.cancel.set()
    asked: list[int] = []

    class CountingModel(GenericFakeChatModel):
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            asked.append(1)
            yield from super()._stream(*args, **kwargs)

    graph = build_graph(
        Settings(),
        model=CountingModel(messages=iter([AIMessage("I am here")])),
        checkpointer=InMemorySaver(),
        counter=WORDS,
    )
    state = graph.invoke({"input": "talk"}, config(), context=context)
    reply = state["messages"][-1]
    assert asked == []
    assert reply.content == "" and reply.response_metadata["interrupted"] is True
    assert state["trace"]["interrupted"] is True


def test_cancel_keeps_partial_reply_marked_interrupted() -> None:
    context = TurnContext()

    class SlowModel(GenericFakeChatModel):
        def _stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            for i, chunk in enumerate(super()._stream(*args, **kwargs)):
                if i == 2:
                    context.cancel.set()
                yield chunk

    slow = SlowModel(messages=iter([AIMessage("w1 w2 w3 w4 w5 w6 w7 w8")]))
    graph = build_graph(Settings(), model=slow, checkpointer=InMemorySaver(), counter=WORDS)
    state = graph.invoke({"input": "talk"}, config(), context=context)
    reply = state["messages"][-1]
    assert reply.response_metadata["interrupted"] is True
    assert 0 < len(reply.content) < len("w1 w2 w3 w4 w5 w6 w7 w8")
    assert state["trace"]["interrupted"] is True
    # The thread goes on normally afterwards.
    graph2 = build_graph(Settings(), model=replies("fine"), checkpointer=graph.checkpointer, counter=WORDS)
    state = graph2.invoke({"input": "again"}, config(), context=TurnContext())
    assert [type(m) for m in state["messages"]] == [HumanMessage, AIMessage, HumanMessage, AIMessage]


def test_small_context_folds_old_turns_and_keeps_window() -> None:
    model = FakeListChatModel(responses=["word " * 20] * 40)
    graph = build_graph(Settings(n_ctx=300, max_tokens=50), model=model, checkpointer=InMemorySaver(), counter=WORDS)
    starts = []
    for i in range(12):
        state = graph.invoke({"input": f"message number {i} " + "pad " * 10}, config())
        starts.append(state["window_start"])
        assert state["trace"]["budget"]["prompt_tokens"] <= 250
    assert starts[-1] > 0
    moves = sum(1 for a, b in pairwise(starts) if b != a)
    assert moves < len(starts) // 2  # many turns fold at once, not one per turn


def test_concurrent_threads_are_isolated() -> None:
    graph = build_graph(
        Settings(), model=FakeListChatModel(responses=["r"] * 20), checkpointer=InMemorySaver(), counter=WORDS
    )

    def run(thread: str) -> None:
        for i in range(3):
            graph.invoke({"input": f"{thread}-{i}"}, config(thread))

    workers = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i in range(4):
        humans = [m.content for m in graph.get_state(config(f"t{i}")).values["messages"] if m.type == "human"]
        assert humans == [f"t{i}-0", f"t{i}-1", f"t{i}-2"]


def test_default_counter_falls_back_when_model_has_no_tokenizer() -> None:
    graph = build_graph(Settings(), model=replies("ok"), checkpointer=InMemorySaver())
    state = graph.invoke({"input": "hello"}, config())
    assert state["trace"]["tokenizer"] == "approximate"


def test_a_store_without_a_vector_index_is_warned_of_since_recall_would_find_nothing() -> None:
    import warnings

    from langgraph.store.memory import InMemoryStore

    from agentmm.memory.errors import StoreWithoutIndexWarning

    with pytest.warns(StoreWithoutIndexWarning, match="no vector index, so recall will find nothing"):
        build_graph(Settings(), model=replies("x"), checkpointer=InMemorySaver(), counter=WORDS, store=InMemoryStore())
    indexed = InMemoryStore(index={"dims": 2, "embed": lambda texts: [[1.0, 0.0] for _ in texts]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWithoutIndexWarning)
        build_graph(Settings(), model=replies("x"), checkpointer=InMemorySaver(), counter=WORDS, store=indexed)


def test_a_message_sent_as_messages_is_answered_once_as_studio_sends_it() -> None:
    """LangGraph Studio and agent-chat-ui send ``{"messages": [user message]}``: it was dropped,
    and the thread's previous message (still in the ``input`` channel) answered again."""
    from agentmm.errors import InvalidInputError

    graph = build_graph(Settings(), model=replies("R0", "R1", "R2"), checkpointer=InMemorySaver(), counter=WORDS)
    config = {"configurable": {"thread_id": "t"}}
    state = graph.invoke({"messages": [{"role": "user", "content": " first "}]}, config)
    assert [m.text for m in state["messages"]] == ["first", "R0"] and state["trace"]["turn"] == 1
    state = graph.invoke({"input": "second"}, config)
    state = graph.invoke({"messages": [HumanMessage("third")]}, config)
    assert [m.text for m in state["messages"]] == ["first", "R0", "second", "R1", "third", "R2"]
    assert state["trace"]["turn"] == 3
    with pytest.raises(EmptyInputError, match="or a user message last in"):  # nothing is answered again
        graph.invoke({}, config)
    with pytest.raises(InvalidInputError, match=r'the input must be the message as text, \{"input": "..."\}, not int'):
        graph.invoke({"input": 5}, {"configurable": {"thread_id": "u"}})


def test_tools_with_a_model_that_cannot_bind_them_are_refused_when_the_graph_is_built() -> None:
    """It was a bare NotImplementedError from LangChain at the first turn."""
    from langchain_core.tools import tool

    from agentmm.errors import ToolsNotSupportedError

    @tool
    def open_vault() -> str:
        """Open the vault."""
        return "open"

    with pytest.raises(ToolsNotSupportedError, match=r"FakeListChatModel cannot call tools .*enabled \(open_vault\)"):
        build_graph(Settings(), model=FakeListChatModel(responses=["x"]), checkpointer=InMemorySaver(),
                    counter=WORDS, tools=[open_vault])  # fmt: skip
    build_graph(Settings(), model=FakeListChatModel(responses=["x"]), checkpointer=InMemorySaver(), counter=WORDS)


def test_a_run_refused_at_ingest_leaves_nothing_that_a_later_run_answers() -> None:
    """A raw graph (``langgraph dev``, Studio) keeps what a run was given even when the run
    fails: a refused ``{"input": 5}`` made every later run on the thread fail with "not int",
    and a message whose run failed (a mistyped persona) was answered later, after the new one."""
    from agentmm.errors import InvalidInputError
    from agentmm.personas import PersonaNotFoundError

    graph = build_graph(Settings(), model=replies("R0", "R1", "R2"), checkpointer=InMemorySaver(), counter=WORDS)
    with pytest.raises(InvalidInputError):
        graph.invoke({"input": 5}, config("a"))
    state = graph.invoke({"messages": [{"role": "user", "content": "hello"}]}, config("a"))
    assert [m.text for m in state["messages"]] == ["hello", "R0"]

    with pytest.raises(PersonaNotFoundError):
        graph.invoke({"input": "first"}, config("b"), context=TurnContext(persona="Nobody Here"))
    state = graph.invoke({"messages": [{"role": "user", "content": "second"}]}, config("b"))
    assert [m.text for m in state["messages"]] == ["second", "R1"]

    with pytest.raises(PersonaNotFoundError):
        graph.invoke({"messages": [HumanMessage("lost")]}, config("c"), context=TurnContext(persona="Nobody Here"))
    state = graph.invoke({"messages": [HumanMessage("again")]}, config("c"))
    # The message whose run failed is answered with the new one, in order, not after it.
    assert [m.text for m in state["messages"]] == ["lost\n\nagain", "R2"]
    assert state["trace"]["unanswered_joined"] == 1


def test_several_user_messages_in_one_run_are_one_turns_message() -> None:
    """All but the last were dropped as if left by a failed run."""
    graph = build_graph(Settings(), model=replies("R0", "R1"), checkpointer=InMemorySaver(), counter=WORDS)
    both = [HumanMessage("My name is Mira."), HumanMessage("What is my name?", id="m-2")]
    state = graph.invoke({"messages": both}, config("two"))
    assert [m.text for m in state["messages"]] == ["My name is Mira.\n\nWhat is my name?", "R0"]
    assert state["messages"][0].id == "m-2" and state["trace"]["turn"] == 1
    state = graph.invoke({"input": "and now?", "messages": [HumanMessage("first")]}, config("two"))
    assert [m.text for m in state["messages"]][2:] == ["first\n\nand now?", "R1"]


def test_a_message_sent_as_messages_keeps_its_id_so_an_outer_graph_does_not_hold_it_twice() -> None:
    """Ingest took the message out and put it back under a new id: agent-chat-ui lost its
    optimistic message's id, and a parent graph's ``messages`` held every user message twice."""
    from langgraph.graph import START, MessagesState, StateGraph

    turn = build_graph(Settings(), model=replies("m1", "m2"), counter=WORDS)
    outer = StateGraph(MessagesState)
    outer.add_node("turn", turn)
    outer.add_edge(START, "turn")
    app = outer.compile(checkpointer=InMemorySaver())
    app.invoke({"messages": [HumanMessage("hey", id="m-123")]}, config("p"))
    state = app.invoke({"messages": [HumanMessage("again")]}, config("p"))
    assert [m.text for m in state["messages"]] == ["hey", "m1", "again", "m2"]
    assert state["messages"][0].id == "m-123"


def test_build_graph_checks_its_arguments_as_the_agent_does(tmp_path: Any) -> None:
    """Tool names, a model name and a settings dict gave AttributeErrors from deep inside."""
    from agentmm.errors import NotAChatModelError, SettingsError
    from tests.graphs.scripted_model import ScriptedToolModel

    model = ScriptedToolModel(script=[AIMessage("x")])
    graph = build_graph(Settings(data_dir=tmp_path), model=model, tools=["roll_dice"], counter=WORDS)
    assert "tools" in graph.nodes  # the name, as the tools setting takes it
    with pytest.raises(NotAChatModelError, match="model must be a LangChain BaseChatModel or a model name"):
        build_graph(Settings(data_dir=tmp_path), model=42)  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match=r"settings must be agentmm's Settings .* not dict"):
        build_graph({"memory": False}, model=replies("x"))  # type: ignore[arg-type]
    from agentmm.tools.builtin import roll_dice

    graph = build_graph(Settings(data_dir=tmp_path), model=model, tools=map(lambda t: t, [roll_dice]), counter=WORDS)
    assert "tools" in graph.nodes  # an iterator is read once, not emptied by the check
    with pytest.raises(SettingsError, match=r"not one string: tools=\['roll_dice'\]"):
        build_graph(Settings(data_dir=tmp_path), model=model, tools="roll_dice")
    with pytest.raises(SettingsError, match="not a mix"):
        build_graph(Settings(data_dir=tmp_path), model=replies("x"), tools=["roll_dice", 3])  # type: ignore[list-item]


def test_a_picture_inside_a_message_is_refused_not_dropped() -> None:
    """agent-chat-ui sends [text, image] content: the picture was dropped without a word, and a
    picture alone was 'nothing to say'."""
    from agentmm.errors import UnsupportedContentError

    graph = build_graph(Settings(), model=replies("R0"), checkpointer=InMemorySaver(), counter=WORDS)
    picture = {"type": "image", "source_type": "base64", "data": "iVBORw0KGgo=", "mime_type": "image/png"}
    refused = [
        [HumanMessage([{"type": "text", "text": "What is this?"}, picture])],
        [HumanMessage([picture])],
        [HumanMessage([{"type": "text", "text": "look"}, picture]), HumanMessage("what is it?")],  # earlier in the run
    ]
    for messages in refused:
        with pytest.raises(UnsupportedContentError, match=r"holds image content.*as attachments"):
            graph.invoke({"messages": messages}, config("pic"))
        assert graph.get_state(config("pic")).values["messages"] == []  # a refused run leaves nothing behind
    state = graph.invoke({"messages": [HumanMessage([{"type": "text", "text": "Hello."}])]}, config("pic"))
    assert [m.text for m in state["messages"]] == ["Hello.", "R0"]  # text blocks alone are text
