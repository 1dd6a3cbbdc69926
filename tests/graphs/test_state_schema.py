"""The turn graph's input is the user's message only: who plays the thread, and which greeting opens
it, come from the run's context (``TurnContext``), where ingest checks them."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver

from agentmm.graphs.chat import build_graph
from agentmm.settings import Settings
from agentmm.tokens import TokenCounter

WORDS = TokenCounter(lambda text: len(text.split()))


def test_the_input_is_the_message_and_the_schemas_can_be_served() -> None:
    graph = build_graph(Settings(memory=False), model=FakeListChatModel(responses=["Hi."]),
                        checkpointer=InMemorySaver(), counter=WORDS)  # fmt: skip
    # What LangGraph's server publishes for the graph (pydantic builds it from the TypedDicts).
    given = graph.get_input_jsonschema()
    assert set(given["properties"]) == {"input", "messages"} and not given.get("required")  # one or the other
    assert {"messages", "trace", "persona"} <= set(graph.get_output_jsonschema()["properties"])
    # A persona in the input is not a side door around ingest's check of the context's persona.
    state = graph.invoke({"input": "hello", "persona": "Nobody Such"}, {"configurable": {"thread_id": "t"}})
    assert "persona" not in state and "persona" not in state["trace"]
    assert state["messages"][-1].text == "Hi."


def test_the_context_schema_is_json_so_studio_can_offer_persona_and_the_rest() -> None:
    """``threading.Event`` (the cancel flag) made it fail: Studio and agent-chat-ui got none."""
    graph = build_graph(Settings(), model=FakeListChatModel(responses=["x"]), counter=TokenCounter(len))
    fields = graph.get_context_jsonschema()["properties"]
    assert {"persona", "user_name", "user_id", "greeting", "attachments"} <= set(fields)
    assert "cancel" not in fields


def test_a_context_with_an_unknown_key_or_a_wrong_type_is_one_typed_error() -> None:
    """LangGraph makes the context from the run's ``context`` dict: an unknown key was Python's
    bare ``TypeError`` from ``__init__``, a persona of 5 an ``AttributeError`` in ingest."""
    import pytest

    from agentmm.errors import InvalidContextError

    graph = build_graph(Settings(memory=False), model=FakeListChatModel(responses=["Hi."]),
                        checkpointer=InMemorySaver(), counter=WORDS)  # fmt: skip
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(InvalidContextError, match=r"^the run's context has no 'mood', 'temper': it takes user_name, "):
        graph.invoke({"input": "hello"}, config, context={"mood": "odd", "temper": 1})
    with pytest.raises(TypeError):  # as Python's own was
        graph.invoke({"input": "hello"}, config, context={"mood": "odd"})
    wrong = [({"persona": 5}, "persona must be str or None, not int"),
             ({"retry": "yes"}, "retry must be bool, not str"),
             ({"seed": True}, "seed must be int or None, not bool"),
             ({"attachments": "cat.png"}, "attachments must be a list of file paths, not str")]  # fmt: skip
    for context, message in wrong:
        with pytest.raises(InvalidContextError, match=f"^{message}$"):
            graph.invoke({"input": "hello"}, config, context=context)
    assert graph.get_state(config).values == {}  # nothing was saved
    state = graph.invoke({"input": "hello"}, config, context={"user_name": "Ada", "attachments": []})
    assert state["messages"][-1].text == "Hi."
