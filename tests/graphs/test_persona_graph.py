"""Personas in the turn graph: greeting, persona head, lore in the turn's context, trace."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGenerationChunk
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from agentmm.graphs.chat import COPIED_MEMORY, NAME_ONLY, NO_REPLY, build_graph
from agentmm.memory.dates import day
from agentmm.personas import PersonaNotFoundError, PersonaRegistry
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter

WORDS = TokenCounter(lambda text: len(text.split()))
CARD = """
name = "Tamsin"
description = "{{char}} keeps the lighthouse on Gull Rock and talks to {{user}} about the sea."
personality = "wry, patient"
greetings = ["*{{char}} waves.* Welcome to Gull Rock, {{user}}.", "Storm's coming, {{user}}."]
post_history_instructions = "Reply as {{char}} only."

[lorebook]
scan_depth = 2

[[lorebook.entries]]
name = "The lamp"
keys = ["lamp", "light"]
content = "The lamp is a first-order Fresnel lens from 1871."

[[lorebook.entries]]
name = "Gulls"
keys = ["gull"]
content = "The gulls of Gull Rock steal sandwiches."
"""


class Recording(FakeListChatModel):
    seen: list[list[BaseMessage]]

    def _stream(self, messages: list[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.seen.append(list(messages))
        return super()._stream(messages, *args, **kwargs)


@pytest.fixture
def registry(tmp_path: Path) -> PersonaRegistry:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "tamsin.toml").write_text(CARD)
    return PersonaRegistry(folder, entry_points=False)


def run(graph: Any, text: str, **context: Any) -> dict[str, Any]:
    return graph.invoke({"input": text}, {"configurable": {"thread_id": "t"}},
                        context=TurnContext(user_name="Ada", **context))  # fmt: skip


def test_persona_thread_greeting_head_lore_and_trace(registry: PersonaRegistry) -> None:
    model = Recording(responses=["Aye.", "It is old."], seen=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state = run(graph, "Hello!", persona="tamsin", greeting=1)
    messages = state["messages"]
    assert isinstance(messages[0], AIMessage) and messages[0].content == "Storm's coming, Ada."
    trace = state["trace"]
    assert trace["persona"] == "Tamsin"
    assert trace["greeting"] == "Storm's coming, Ada."
    parts = [p["part"] for p in trace["prompt_parts"]]
    assert parts == ["system_prompt", "description", "personality", "history", "message", "post_history"]
    prompt = model.seen[0]
    assert isinstance(prompt[0], SystemMessage)
    assert "Tamsin keeps the lighthouse on Gull Rock and talks to Ada" in prompt[0].content
    assert prompt[-1].content.endswith("Reply as Tamsin only.")

    state = run(graph, "Tell me about the lamp.")  # the thread keeps its persona
    assert [e["entry"] for e in state["trace"]["lore"]] == ["The lamp"]
    assert "lore" in [p["part"] for p in state["trace"]["prompt_parts"]]
    prompt = model.seen[1]
    assert "Fresnel lens" in prompt[-1].content and "Tell me about the lamp." in prompt[-1].content
    # The turn's lore is stored with its message, so the next prompt repeats it verbatim.
    stored = state["messages"][-2]
    assert isinstance(stored, HumanMessage) and stored.content == "Tell me about the lamp."
    assert "Fresnel" in stored.additional_kwargs["agentmm_context"]


def test_lore_already_in_the_window_is_not_repeated(registry: PersonaRegistry) -> None:
    model = Recording(responses=["a", "b", "c"], seen=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    run(graph, "The light is bright.", persona="Tamsin")
    state = run(graph, "Is the light old?")
    lore = state["trace"]["lore"]
    assert lore and lore[0]["inserted"] is False
    assert "lore" not in [p["part"] for p in state["trace"]["prompt_parts"]]


def test_head_is_identical_across_turns(registry: PersonaRegistry) -> None:
    model = Recording(responses=["x"] * 4, seen=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    for text in ["one", "two", "three"]:
        run(graph, text, persona="Tamsin" if text == "one" else None)
    heads = {prompt[0].content for prompt in model.seen}
    assert len(heads) == 1
    # Append-only: each prompt starts with the previous one's messages (bar the tail instructions).
    for before, after in zip(model.seen, model.seen[1:], strict=False):
        assert [m.content for m in after[: len(before) - 1]] == [m.content for m in before[:-1]]


def test_small_context_drops_lowest_priority_parts_first(registry: PersonaRegistry) -> None:
    # Three tokens a word, so the smallest context settings allow is as tight as 110 words were.
    triple = TokenCounter(lambda text: 3 * len(text.split()))
    graph = build_graph(Settings(n_ctx=330, max_tokens=120), model=Recording(responses=["x"], seen=[]),
                        checkpointer=InMemorySaver(), counter=triple, personas=registry)  # fmt: skip
    state = run(graph, "Tell me about the lamp and the gull.", persona="Tamsin")
    dropped = state["trace"]["dropped_parts"]
    assert dropped and dropped[0] == "lore"
    assert state["trace"]["budget"]["prompt_tokens"] <= 210
    assert state["trace"]["lore"][0]["inserted"] is False


def test_unknown_persona_saves_nothing(registry: PersonaRegistry) -> None:
    saver = InMemorySaver()
    graph = build_graph(
        Settings(), model=Recording(responses=["x"], seen=[]), checkpointer=saver, counter=WORDS, personas=registry
    )
    with pytest.raises(PersonaNotFoundError):
        run(graph, "hi", persona="Nobody")
    state = run(graph, "hi")
    assert "persona" not in state
    assert [m.type for m in state["messages"]] == ["human", "ai"]


def test_the_persona_reminder_follows_the_message_only_where_the_card_has_no_instructions(
    registry: PersonaRegistry, tmp_path: Path
) -> None:
    from agentmm.personas.prompt import PERSONA_REMINDER

    plain = CARD.replace('post_history_instructions = "Reply as {{char}} only."\n', "").replace("Tamsin", "Wren")
    (tmp_path / "personas" / "wren.toml").write_text(plain)
    registry = PersonaRegistry(tmp_path / "personas", entry_points=False)
    for reminder, persona, expected in [
        ("", "wren", None),  # off by default: no tail at all
        (PERSONA_REMINDER, "wren", "[Reply as Wren, in the first person, in Wren's own voice."),
        (PERSONA_REMINDER, "tamsin", "Reply as Tamsin only."),  # the card's own instructions win
    ]:
        model = Recording(responses=["Aye."], seen=[])
        graph = build_graph(Settings(persona_reminder=reminder), model=model, checkpointer=InMemorySaver(),
                            counter=WORDS, personas=registry)  # fmt: skip
        state = run(graph, "Who are you?", persona=persona)
        parts = [p["part"] for p in state["trace"]["prompt_parts"]]
        last = model.seen[0][-1].content
        if expected is None:
            assert "post_history" not in parts and last.endswith("Who are you?")
        else:
            assert parts[-2:] == ["message", "post_history"] and expected in last
            assert last.index("Who are you?") < last.index(expected)
            # the tail is not stored with the message: the history stays append-only
            assert expected not in state["messages"][-2].content


def test_the_introduction_setting_puts_the_persona_s_own_name_first_among_its_examples(
    registry: PersonaRegistry,
) -> None:
    from agentmm.personas.prompt import PERSONA_INTRODUCTION

    for introduction, expected in [("", None), (PERSONA_INTRODUCTION, "Ada: Who are you?\nTamsin: I'm Tamsin.")]:
        model = Recording(responses=["Aye."], seen=[])
        graph = build_graph(Settings(persona_introduction=introduction), model=model, checkpointer=InMemorySaver(),
                            counter=WORDS, personas=registry)  # fmt: skip
        state = run(graph, "Hello", persona="tamsin")
        system = model.seen[0][0].content
        parts = [p["part"] for p in state["trace"]["prompt_parts"]]
        if expected is None:
            assert "example_dialogue" not in parts and "Who are you?" not in system
        else:
            assert "example_dialogue" in parts and expected in system


class KwargsLog(FakeListChatModel):
    calls: list[dict[str, Any]]

    def _stream(self, messages: list[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.calls.append(kwargs)
        return super()._stream(messages, *args, **kwargs)


def test_a_personas_sampling_reaches_the_model_unless_the_user_set_it(registry: PersonaRegistry) -> None:
    folder = registry.user_dir
    assert folder is not None
    (folder / "tamsin.toml").write_text(CARD + "\n[sampling]\ntemperature = 0.2\ntop_k = 7\nmax_tokens = 64\n")
    registry.reload()
    model = KwargsLog(responses=["Aye."] * 3, calls=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state = run(graph, "Hello!", persona="tamsin")
    assert {k: model.calls[0][k] for k in ("temperature", "top_k", "max_tokens")} == {
        "temperature": 0.2, "top_k": 7, "max_tokens": 64}  # fmt: skip
    assert state["trace"]["persona_sampling"] == {"temperature": 0.2, "top_k": 7, "max_tokens": 64}
    assert state["trace"]["budget"]["reply_reserve"] == 64

    flagged = Settings().updated(temperature=1.1)  # as `--temperature 1.1` gives it
    graph = build_graph(flagged, model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state = run(graph, "Hello!", persona="tamsin")
    assert "temperature" not in model.calls[1] and model.calls[1]["top_k"] == 7
    assert state["trace"]["persona_sampling"] == {"top_k": 7, "max_tokens": 64}

    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state = run(graph, "Hello!")
    assert "temperature" not in model.calls[2] and "persona_sampling" not in state["trace"]


def test_a_lore_key_with_a_macro_fires_on_this_chats_names(registry: PersonaRegistry) -> None:
    folder = registry.user_dir
    assert folder is not None
    (folder / "tamsin.toml").write_text(CARD + '\n[[lorebook.entries]]\nname = "Visitor"\nkeys = [" {{user}} "]\n'
                                        'content = "{{user}} once rowed {{char}} home in a storm."\n')  # fmt: skip
    registry.reload()
    graph = build_graph(Settings(), model=Recording(responses=["Aye."], seen=[]), checkpointer=InMemorySaver(),
                        counter=WORDS, personas=registry)  # fmt: skip
    state = run(graph, "It's me, Ada!", persona="Tamsin")
    fired = {entry["entry"]: entry for entry in state["trace"]["lore"]}
    assert "Visitor" in fired and fired["Visitor"]["inserted"]
    assert "Ada once rowed Tamsin home in a storm." in state["messages"][-2].additional_kwargs["agentmm_context"]


def test_a_no_reply_line_fires_no_lore(registry: PersonaRegistry) -> None:
    """The bracketed line a turn says when the model gave no reply twice (``NO_REPLY``, marked
    ``no_reply``) is no one's words: lore scanned it as the character's ("... or retry")."""
    from agentmm.graphs.chat import _no_reply

    folder = registry.user_dir
    assert folder is not None
    (folder / "tamsin.toml").write_text(CARD + '\n[[lorebook.entries]]\nname = "Retry"\nkeys = ["retry"]\n'
                                        'content = "Tamsin never tries twice."\n')  # fmt: skip
    registry.reload()
    graph = build_graph(Settings(), model=Recording(responses=["Aye.", "Hm."], seen=[]), checkpointer=InMemorySaver(),
                        counter=WORDS, personas=registry)  # fmt: skip
    state = run(graph, "Hello there.", persona="Tamsin")
    cut = _no_reply(AIMessage(""), COPIED_MEMORY).model_copy(update={"id": state["messages"][-1].id})
    graph.update_state({"configurable": {"thread_id": "t"}}, {"messages": [cut]})
    assert "retry" in graph.get_state({"configurable": {"thread_id": "t"}}).values["messages"][-1].text
    state = run(graph, "Is it windy?")
    assert "Retry" not in [entry["entry"] for entry in state["trace"].get("lore", [])]


class HonorsStops(FakeListChatModel):
    """Ends its reply where a stop string starts, as llama.cpp does."""

    stops: list[list[str] | None]
    stop: list[str] | None = None  # the model's own, as ``ChatLlamaCpp.stop``
    prompts: list[list[Any]] = Field(default_factory=list)  # each call's messages

    def _stream(self, messages: list[Any], stop: list[str] | None = None, *args: Any, **kwargs: Any) -> Iterator[Any]:
        self.stops.append(stop)
        self.prompts.append(list(messages))
        response = self.responses[len(self.stops) - 1]
        cut = min((response.index(s) for s in stop or () if s in response), default=len(response))
        yield from FakeListChatModel(responses=[response[:cut]])._stream(messages)
        # Its closing chunk, as a real model's (usage, finish reason): a reply stopped at once is one.
        yield ChatGenerationChunk(message=AIMessageChunk(content="", response_metadata={"finish_reason": "stop"}))

    async def _astream(self, messages: list[Any], stop: list[str] | None = None, *args: Any, **kwargs: Any) -> Any:
        for chunk in self._stream(messages, stop):
            yield chunk


def test_a_played_reply_ends_where_the_model_starts_writing_the_users_turn(registry: PersonaRegistry) -> None:
    model = HonorsStops(responses=["Aye, the lamp is old.\nAda: Tell me more!\nTamsin: Gladly.", "Ada: hi"], stops=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state = run(graph, "Is the lamp old?", persona="tamsin")
    assert state["messages"][-1].content == "Aye, the lamp is old."
    assert model.stops[0] is None  # no memories in its prompt: no memory-line stop (the user's line: reply_cut)

    ooc = build_graph(Settings(intent=True), model=model, checkpointer=InMemorySaver(), counter=WORDS,
                      personas=registry)  # fmt: skip
    state = run(ooc, "OOC: shorter replies please", persona="tamsin")  # out of character: no name stop
    assert state["intent"] == "ooc" and model.stops[1] is None


def test_the_users_line_is_no_stop_string(registry: PersonaRegistry) -> None:
    """A '\\nAda:' stop cut a reply that began so to nothing: ``agentmm.reply_cut`` ends it."""
    model = HonorsStops(responses=["Aye."], stops=[], stop=["<END>"])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    run(graph, "Hello", persona="tamsin")
    assert "\nAda:" not in (model.stops[0] or [])


def _recalling_graph(registry: PersonaRegistry, replies: list[str]) -> tuple[Any, HonorsStops, Any]:
    """A graph over a store that recalls everything (no relevance bar), its model and the store."""
    from langgraph.store.memory import InMemoryStore

    from tests.memory.conftest import CharacterEmbeddings

    store = InMemoryStore(index={"dims": 64, "embed": CharacterEmbeddings(dims=64), "fields": ["text"]})
    model = HonorsStops(responses=replies, stops=[])
    graph = build_graph(Settings(memory_min_similarity=0.0), model=model, checkpointer=InMemorySaver(),
                        counter=WORDS, personas=registry, store=store)  # fmt: skip
    return graph, model, store


def test_a_reply_copying_the_memory_blocks_form_is_cut_there_and_such_lines_are_not_remembered(
    registry: PersonaRegistry,
) -> None:
    """In a long thread the 135M model wrote lines like '- (7 December 2026) User: What are you
    talking about?' (19 of 31 replies), which were remembered and recalled as the user's. A list
    of the character's own ('- (3 coins) Stew: lamb') is neither cut nor forgotten."""
    today = day(datetime.now(UTC).date())
    replies = [
        "Tonight:\n- (3 coins) Stew: lamb\n- (1 coin) Bread: fresh",
        f"Aye, the lamp.\n- ({today}) Ada: I never said that.",
        f"The lamp is old. - ({today}) Ada: Liar.",
    ]
    graph, model, store = _recalling_graph(registry, replies)
    menu = run(graph, "What is there to eat?", persona="tamsin")["messages"][-1].text
    assert menu == replies[0]  # no memory block in its prompt yet, and a list of its own is no copy
    # Another thread recalls the first one's turn: a memory block in the prompt.
    other = {"configurable": {"thread_id": "other"}}
    state = graph.invoke({"input": "What is there to eat tonight?"}, other,
                         context=TurnContext(user_name="Ada", persona="tamsin"))  # fmt: skip
    assert state["trace"]["recalled"] and f"\n- ({today}) Ada:" in model.stops[-1]
    # A dated list of the character's own is no copy: it has no speaker and colon after the day.
    assert not [stop for stop in model.stops[-1] if stop.lstrip().startswith("- (") and not stop.endswith(":")]
    assert state["messages"][-1].text == "Aye, the lamp."  # stopped at the copied line
    state = run(graph, "Is the lamp old?")  # a copy within a line is cut there too
    assert state["messages"][-1].text == "The lamp is old. "
    remembered = [item.value["content"] for item in store.search((), limit=50)]
    assert replies[0] in remembered and "The lamp is old." in remembered
    assert not [text for text in remembered if "never said" in text or "Liar" in text]


def test_a_reply_beginning_with_the_memory_blocks_header_or_a_line_of_it_ends_there(
    registry: PersonaRegistry,
) -> None:
    """A stop string on a new line cannot stop a reply that begins with the copy: the 135M model's
    whole reply was once "[Things you remember from", and the user saw it. A reply of the
    character's own that begins with "- " or "[" is untouched."""
    from agentmm.memory.conversation import HEADER_START

    today = day(datetime.now(UTC).date())
    replies = [
        "The lamp is old.",  # the memory recalled below
        f"[Things you remember from earlier conversations with Ada:]\n- ({today}) Ada: Is the lamp old?",
        "Aye, it is old.",  # generated again: nothing of its own came
        "[Things you remember from",
        "[Things you remember from",  # again, and again nothing: a line says so
        f"- ({today}) Tamsin: The lamp is old.\nAye.",
        "Aye.",
        "[waves] Aye, the lamp. [laughs]",
        "- Milk\n- Eggs\n- (3 coins) Stew: lamb",
    ]
    graph, model, store = _recalling_graph(registry, replies)
    run(graph, "Is the lamp old?", persona="tamsin")
    shown = []
    questions = ("Tell me of the lamp.", "The lamp?", "Old lamp?", "Hi, lamp keeper.", "Lamp oil to buy?")
    for n, question in enumerate(questions):
        state = graph.invoke({"input": question}, {"configurable": {"thread_id": f"other {n}"}},
                             context=TurnContext(user_name="Ada", persona="tamsin"))  # fmt: skip
        assert state["trace"]["recalled"]  # a memory block in its prompt
        shown.append(state["messages"][-1].text)
    assert shown == [replies[2], NO_REPLY[COPIED_MEMORY], replies[6], replies[7], replies[8]]
    assert all(HEADER_START in stops and f"\n{HEADER_START}" in stops for stops in model.stops[1:])
    remembered = [item.value["content"] for item in store.search((), limit=50)]
    assert not [text for text in remembered if HEADER_START in text or f"({today})" in text]
    assert replies[7] in remembered and replies[8] in remembered
    assert NO_REPLY[COPIED_MEMORY] not in remembered  # a line to the user, not the character's words


@pytest.mark.parametrize("call", ["invoke", "ainvoke"])
def test_a_reply_that_begins_with_the_memory_header_is_generated_again_with_a_nudge(
    registry: PersonaRegistry, call: str
) -> None:
    """Stopped at once by the memory stops, such a reply was empty and the turn ended with
    nothing said (f58648e). It is generated once more, the user's message followed by a
    reminder; a second one with nothing of its own is a line saying so, which is neither
    remembered nor put in a later prompt as the character's words."""
    import asyncio

    header = "[Things you remember from earlier conversations with Ada:]"
    replies = ["The lamp is old.", header, "Aye, it is old.", header, header, "Aye."]
    graph, model, _ = _recalling_graph(registry, replies)
    run(graph, "Is the lamp old?", persona="tamsin")

    def turn(text: str) -> dict[str, Any]:
        invoked = getattr(graph, call)({"input": text}, {"configurable": {"thread_id": "other"}},
                                       context=TurnContext(user_name="Ada", persona="tamsin"))  # fmt: skip
        return asyncio.run(invoked) if call == "ainvoke" else invoked

    state = turn("Tell me of the lamp.")
    assert state["messages"][-1].text == "Aye, it is old."
    assert state["trace"]["reply_again"] == COPIED_MEMORY
    first, second = model.prompts[1][-1].text, model.prompts[2][-1].text
    assert "do not copy the notes above" not in first and second.startswith(first)
    assert "do not copy the notes above, and do not write Ada's lines" in second
    state = turn("The lamp?")
    reply = state["messages"][-1]
    assert reply.text == NO_REPLY[COPIED_MEMORY] and reply.response_metadata["no_reply"] == COPIED_MEMORY
    state = turn("Old lamp?")
    assert state["messages"][-1].text == "Aye." and "reply_again" not in state["trace"]
    assert [m.text for m in model.prompts[-1] if isinstance(m, AIMessage)][-1] == ""  # the line, left out


def test_a_reply_that_is_only_the_characters_name_is_generated_again_for_that(registry: PersonaRegistry) -> None:
    """'Tamsin:\n' and nothing more (smollm2's script speaker tag, taken off the reply) with
    memories in the prompt was generated again as a "copied memory", which nothing was copied
    of: the trace and the line said after a second one give what it was."""
    replies = ["The lamp is old.", "Tamsin:\n", "Aye, it is old.", "**Tamsin:**\n\n", "Tamsin:", "Aye."]
    graph, model, _ = _recalling_graph(registry, replies)
    run(graph, "Is the lamp old?", persona="tamsin")

    def turn(text: str) -> dict[str, Any]:
        return graph.invoke({"input": text}, {"configurable": {"thread_id": "other"}},
                            context=TurnContext(user_name="Ada", persona="tamsin"))  # fmt: skip

    state = turn("Tell me of the lamp.")
    assert state["trace"]["recalled"] and state["messages"][-1].text == "Aye, it is old."
    assert state["trace"]["reply_again"] == NAME_ONLY == "the character's name only"
    assert "do not write Ada's lines" in model.prompts[2][-1].text  # generated again with the reminder
    reply = turn("The lamp?")["messages"][-1]
    assert reply.text == NO_REPLY[NAME_ONLY] and reply.response_metadata["no_reply"] == NAME_ONLY
    assert "copying its memory notes" not in reply.text


def test_a_lore_entry_with_a_probability_is_rolled_each_turn_and_the_trace_says_how(
    registry: PersonaRegistry,
) -> None:
    folder = registry.user_dir
    assert folder is not None
    (folder / "tamsin.toml").write_text(CARD.replace('content = "The gulls', 'probability = 50\ncontent = "The gulls'))
    registry.reload()
    model = Recording(responses=["Aye."] * 24, seen=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    rolls = []
    for _ in range(24):
        state = run(graph, "Look at the gull!", persona="Tamsin")
        (gulls,) = [entry for entry in state["trace"]["lore"] if entry["entry"] == "Gulls"]
        assert gulls["why"].startswith("key 'gull' in chat, 50% chance (rolled ")
        roll = float(gulls["why"].rsplit(" ", 1)[1].rstrip(")"))
        won = gulls["inserted"] or gulls["note"] == "already in the window"
        assert won == (roll <= 50) and (won or gulls["note"] == "lost its roll")
        rolls.append(roll)
    assert 4 <= sum(r <= 50 for r in rolls) <= 20  # rolled anew each turn, not once per thread


def test_a_new_thread_sent_as_messages_opens_with_the_greeting_before_the_message_by_its_id(
    registry: PersonaRegistry,
) -> None:
    graph = build_graph(Settings(), model=Recording(responses=["Aye."], seen=[]), checkpointer=InMemorySaver(),
                        counter=WORDS, personas=registry)  # fmt: skip
    state = graph.invoke(
        {"messages": [HumanMessage(" Hello! ", id="m-1")]},
        {"configurable": {"thread_id": "studio"}},
        context=TurnContext(persona="Tamsin", user_name="Ada"),
    )
    assert [(type(m).__name__, m.text) for m in state["messages"]] == [
        ("AIMessage", "*Tamsin waves.* Welcome to Gull Rock, Ada."), ("HumanMessage", "Hello!"), ("AIMessage", "Aye."),
    ]  # fmt: skip
    assert state["messages"][1].id == "m-1"


def test_lore_stored_with_a_turn_this_turn_folds_away_is_inserted_again(registry: PersonaRegistry) -> None:
    """It was judged against the window before the fold: 'already in the window' in the trace
    and /why, and in the prompt nowhere."""
    folded_it = 0
    for asked_at in range(2, 14):  # the lamp again at turn asked_at: some of these turns fold turn 1 away
        model = Recording(responses=["word " * 20] * 40, seen=[])
        graph = build_graph(Settings(n_ctx=300, max_tokens=50), model=model, checkpointer=InMemorySaver(),
                            counter=WORDS, personas=registry)  # fmt: skip
        run(graph, "Tell me of the lamp.", persona="Tamsin")  # its lore is stored with turn 1
        for turn in range(2, asked_at):
            run(graph, f"Turn {turn}: " + "pad " * 12)
        state = run(graph, "And the lamp? " + "pad " * 10)
        prompt = "\n".join(m.text for m in model.seen[-1])
        (lamp,) = [entry for entry in state["trace"]["lore"] if entry["entry"] == "The lamp"]
        folded_it += state["window_start"] > 1 and state["trace"]["budget"]["folded_this_turn"] > 0
        if lamp["inserted"] or lamp.get("note") == "already in the window":
            assert "Fresnel lens" in prompt, (asked_at, lamp, state["trace"]["budget"])
    assert folded_it, "no turn that asked again folded turn 1 away: the test says nothing"


def test_an_outer_graph_reads_a_new_threads_greeting_before_the_message_that_opened_it(
    registry: PersonaRegistry,
) -> None:
    """As a node of a ``MessagesState`` graph, the greeting landed after the user's first message
    in the outer graph's ``messages``: its ``add_messages`` kept its own copy of the message
    first and appended the greeting (inside the turn graph the order was right)."""
    from langgraph.graph import START, MessagesState, StateGraph

    turn = build_graph(Settings(), model=Recording(responses=["Aye.", "Fair winds."], seen=[]), counter=WORDS,
                       personas=registry)  # fmt: skip
    outer = StateGraph(MessagesState)
    outer.add_node("turn", turn)
    outer.add_edge(START, "turn")
    app = outer.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "outer"}}
    context = TurnContext(persona="Tamsin", user_name="Ada")
    state = app.invoke({"messages": [HumanMessage("Hello!", id="m-1")]}, config, context=context)
    assert [(m.type, m.text) for m in state["messages"]] == [
        ("ai", "*Tamsin waves.* Welcome to Gull Rock, Ada."), ("human", "Hello!"), ("ai", "Aye."),
    ]  # fmt: skip
    state = app.invoke({"messages": [HumanMessage("Bye.")]}, config, context=context)
    assert [m.text for m in state["messages"]][1:] == ["Hello!", "Aye.", "Bye.", "Fair winds."]
    assert len({m.id for m in state["messages"]}) == 5
    # Several messages in the opening run: one turn's message, held once, after the greeting.
    state = app.invoke({"messages": [HumanMessage("One.", id="a"), HumanMessage("Two.", id="b")]},
                       {"configurable": {"thread_id": "two"}}, context=context)  # fmt: skip
    assert [(m.type, m.text) for m in state["messages"]][:2] == [
        ("ai", "*Tamsin waves.* Welcome to Gull Rock, Ada."), ("human", "One.\n\nTwo."),
    ]  # fmt: skip


def test_an_outer_graph_without_our_context_schema_passes_a_dict_context_checked(
    registry: PersonaRegistry,
) -> None:
    """LangGraph makes a ``TurnContext`` from a run's dict only for a graph whose context schema
    it is: as a node of a graph without one, the turn was handed the dict itself, and read it
    as a ``TurnContext`` (AttributeError: 'dict' object has no attribute 'retry')."""
    from dataclasses import dataclass

    from langgraph.graph import START, MessagesState, StateGraph

    from agentmm.errors import InvalidContextError

    turn = build_graph(Settings(), model=Recording(responses=["Aye.", "x"], seen=[]), counter=WORDS,
                       personas=registry, checkpointer=True)  # fmt: skip
    outer = StateGraph(MessagesState)
    outer.add_node("turn", turn)
    outer.add_edge(START, "turn")
    app = outer.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "dict"}}
    state = app.invoke(
        {"messages": [HumanMessage("Hello!")]}, config, context={"persona": "Tamsin", "user_name": "Ada"}
    )
    assert [(m.type, m.text) for m in state["messages"]] == [
        ("ai", "*Tamsin waves.* Welcome to Gull Rock, Ada."), ("human", "Hello!"), ("ai", "Aye."),
    ]  # fmt: skip
    for bad, said in (({"persona": 5}, "persona must be str or None, not int"), ({"bogus": 1}, "has no 'bogus'")):
        with pytest.raises(InvalidContextError, match=said):
            app.invoke({"messages": [HumanMessage("Again.")]}, config, context=bad)

    @dataclass
    class Mine:
        tenant: str = "x"

    own = StateGraph(MessagesState, context_schema=Mine)
    own.add_node("turn", turn)
    own.add_edge(START, "turn")
    with pytest.raises(InvalidContextError, match="a TurnContext or a dict of its fields, not Mine"):
        own.compile(checkpointer=InMemorySaver()).invoke({"messages": [HumanMessage("Hi.")]}, config, context=Mine())


def test_the_subgraph_example_keeps_the_persona_after_the_first_turn(
    registry: PersonaRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``examples/subgraph.py`` built the turn with no state of its own: each turn began from
    the shared messages alone, so from turn 2 the thread played no persona (and its rolling
    summary was folded again from the first message every turn)."""
    import importlib.util
    import sys

    from tests.test_examples import EXAMPLES

    spec = importlib.util.spec_from_file_location("subgraph_example", EXAMPLES / "subgraph.py")
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, example)  # its TypedDict's hints are read from there
    spec.loader.exec_module(example)
    model = Recording(responses=["Aye.", "Aye again."], seen=[])
    turn = example.build_turn(Settings(persona="Tamsin", memory=False), model=model, counter=WORDS,
                              personas=registry)  # fmt: skip
    app = example.build_app(turn)
    config = {"configurable": {"thread_id": "demo"}}
    first = app.invoke({"input": "Hello!"}, config)
    second = app.invoke({"input": "Tell me of the lamp."}, config)
    assert first["trace"]["persona"] == second["trace"].get("persona") == "Tamsin"
    assert second["trace"]["turn"] == 2 and "Gull Rock" in model.seen[-1][0].text
    assert [m.text for m in second["messages"]][1:] == ["Hello!", "Aye.", "Tell me of the lamp.", "Aye again."]


def test_a_reply_beginning_with_the_users_name_is_ended_there_and_generated_again(registry: PersonaRegistry) -> None:
    """The '\\nAda:' stop cannot stop a reply whose first words are 'Ada:' (no line break before)."""
    model = HonorsStops(responses=["Ada: Is it?", "Aye, it is.", "Tamsin: Aye."], stops=[])
    graph = build_graph(Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, personas=registry)
    state = run(graph, "Is the lamp old?", persona="tamsin")
    assert state["messages"][-1].text == "Aye, it is." and state["trace"]["reply_again"] == "the user's line"
    assert run(graph, "And the boat?")["messages"][-1].text == "Tamsin: Aye."  # its own name: kept
