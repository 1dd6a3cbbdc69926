"""Tool calling in the real turn graph, driven by a scripted model (``ScriptedToolModel``)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolRuntime
from langgraph.types import Command

from agentmm.graphs.agent import Agent
from agentmm.graphs.chat import build_graph
from agentmm.personas import PersonaRegistry
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.tokens import TokenCounter
from agentmm.tools.builtin import roll_dice
from tests.graphs.scripted_model import ScriptedToolModel, call

WORDS = TokenCounter(lambda text: len(text.split()))
CONFIG = {"configurable": {"thread_id": "t"}}
RAN: list[str] = []


@tool
def open_door(door: str) -> str:
    """Open a door in the castle."""
    RAN.append(door)
    return f"the {door} door creaks open"


open_door.metadata = {"requires_approval": True}


@tool
def slow_oracle(question: str) -> str:
    """Ask the oracle (it takes its time)."""
    time.sleep(5)
    return "42"


@tool
def broken_lamp() -> str:
    """Light the lamp."""
    raise RuntimeError("the wick is wet")


@tool
def flood() -> str:
    """Return a great deal of text."""
    return "x" * 10_000_000


@pytest.fixture(autouse=True)
def _clear() -> None:
    RAN.clear()


def graph_with(
    model: ScriptedToolModel, tools: list[Any], personas: PersonaRegistry | None = None, **settings: Any
) -> Any:
    return build_graph(Settings(**settings), model=model, checkpointer=InMemorySaver(), counter=WORDS, tools=tools,
                       personas=personas)  # fmt: skip


def tool_messages(state: dict[str, Any]) -> list[ToolMessage]:
    return [m for m in state["messages"] if isinstance(m, ToolMessage)]


def test_model_calls_dice_and_answers_with_the_result() -> None:
    model = ScriptedToolModel(script=[call("roll_dice", notation="2d6+1"), AIMessage("You rolled well.")])
    state = graph_with(model, [roll_dice]).invoke({"input": "Roll 2d6+1 for me"}, CONFIG)
    assert state["messages"][-1].text == "You rolled well."
    (result,) = tool_messages(state)
    assert result.text.startswith("2d6+1: rolled [") and result.status == "success"
    assert result in model.prompts[1]  # the model saw the result before answering
    trace = state["trace"]
    assert trace["path"] == ["ingest", "compose", "generate", "tools", "generate"]
    (entry,) = trace["tool_calls"]
    assert entry["name"] == "roll_dice" and entry["status"] == "ok" and entry["args"] == {"notation": "2d6+1"}
    assert model.bindings[0] == {"tools": ["roll_dice"], "tool_choice": "auto"}
    assert trace["timings"]["generate_s"] >= 0 and set(trace["usage"]) == {"prompt_tokens", "completion_tokens"}


def test_no_tools_means_no_binding_and_no_tools_node() -> None:
    model = ScriptedToolModel(script=[AIMessage("Hello.")])
    graph = graph_with(model, [])
    assert "tools" not in graph.get_graph().nodes
    graph.invoke({"input": "hi"}, CONFIG)
    assert model.bindings == []


def test_persona_allow_list_narrows_enabled_tools(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "gm.toml").write_text('name = "GM"\ndescription = "A game master."\nallowed_tools = ["roll_dice"]\n')
    (folder / "bard.toml").write_text('name = "Bard"\ndescription = "A bard."\n')
    personas = PersonaRegistry(folder, entry_points=False)
    script = [
        call("roll_dice", notation="d20"),
        AIMessage("Rolled."),
        call("roll_dice", notation="d20"),
        AIMessage("No."),
    ]
    model = ScriptedToolModel(script=script)
    graph = graph_with(model, [roll_dice, open_door], personas=personas)
    gm = graph.invoke({"input": "roll"}, {"configurable": {"thread_id": "gm"}}, context=TurnContext(persona="GM"))
    assert model.bindings[0]["tools"] == ["roll_dice"]  # open_door is enabled but not allowed
    assert gm["trace"]["tool_calls"][0]["status"] == "ok"
    # The bard allows nothing: no tools are offered, and a call the model makes up anyway is refused.
    bard = graph.invoke({"input": "roll"}, {"configurable": {"thread_id": "bard"}}, context=TurnContext(persona="Bard"))
    assert len(model.bindings) == 2  # unchanged: nothing bound for the bard's turns
    assert bard["trace"]["tool_calls"][0]["status"] == "unavailable"
    assert "no tool named 'roll_dice'" in tool_messages(bard)[0].text


def test_a_tool_not_enabled_cannot_be_called_even_if_the_persona_allows_it(tmp_path: Path) -> None:
    folder = tmp_path / "personas"
    folder.mkdir()
    (folder / "gm.toml").write_text('name = "GM"\nallowed_tools = ["open_door"]\n')
    model = ScriptedToolModel(script=[call("open_door", door="north"), AIMessage("Hm.")])
    graph = graph_with(model, [roll_dice], personas=PersonaRegistry(folder, entry_points=False))
    state = graph.invoke({"input": "open the north door"}, CONFIG, context=TurnContext(persona="GM"))
    assert RAN == [] and state["trace"]["tool_calls"][0]["status"] == "unavailable"


@pytest.mark.parametrize(("answer", "ran", "status"), [(True, ["north"], "ok"), ("no", [], "denied")])
def test_approval_pauses_the_turn_and_resume_decides(answer: Any, ran: list[str], status: str) -> None:
    model = ScriptedToolModel(script=[call("open_door", door="north"), AIMessage("Done.")])
    graph = graph_with(model, [open_door])
    paused = graph.invoke({"input": "open the north door"}, CONFIG)
    (request,) = paused["__interrupt__"]
    assert request.value == {"type": "tool_approval", "tool": "open_door", "args": {"door": "north"}, "id": "call_1"}
    assert RAN == []
    state = graph.invoke(Command(resume=answer), CONFIG)
    assert ran == RAN
    assert state["trace"]["tool_calls"][0]["status"] == status
    assert state["messages"][-1].text == "Done."


def test_agent_asks_on_approval_and_denies_without_an_approver(tmp_path: Path) -> None:
    asked: list[dict[str, Any]] = []
    script = [call("open_door", door="east"), AIMessage("Open."), call("open_door", door="west"), AIMessage("Shut.")]
    model = ScriptedToolModel(script=script)
    with Agent(model=model, tools=[open_door], data_dir=tmp_path, memory=False) as agent:
        turn = agent.stream("open the east door", "t")
        turn.on_approval = lambda request: asked.append(request) or True
        assert "".join(turn).strip() == "Open."
        assert [r["tool"] for r in asked] == ["open_door"] and RAN == ["east"]
        assert turn.result.trace["tool_calls"][0]["status"] == "ok"
        denied = agent.chat("open the west door", "t")  # nobody to ask: denied
        assert RAN == ["east"] and denied.trace["tool_calls"][0]["status"] == "denied"


def test_tool_errors_timeouts_and_floods_come_back_as_messages() -> None:
    script = [call("broken_lamp", "c1"), call("slow_oracle", "c2", question="?"), call("flood", "c3"), AIMessage("Oh.")]
    model = ScriptedToolModel(script=script)
    graph = graph_with(model, [broken_lamp, slow_oracle, flood], tool_timeout_s=0.3, max_tool_rounds=3)
    started = time.perf_counter()
    state = graph.invoke({"input": "do things"}, CONFIG)
    assert time.perf_counter() - started < 4  # the 5 s oracle was abandoned
    lamp, oracle, flooded = tool_messages(state)
    assert "RuntimeError: the wick is wet" in lamp.text and lamp.status == "error"
    assert "did not finish within 0.3 s" in oracle.text
    assert len(flooded.text) < 5000 and "output truncated: 10,000,000 characters" in flooded.text
    assert [e["status"] for e in state["trace"]["tool_calls"]] == ["error", "timeout", "ok"]
    assert state["messages"][-1].text == "Oh."


def test_malformed_tool_call_is_answered_and_the_turn_goes_on() -> None:
    bad = AIMessage("", invalid_tool_calls=[{"name": "roll_dice", "args": "roll 2d6 please", "id": "c9",
                                             "error": None, "type": "invalid_tool_call"}])  # fmt: skip
    model = ScriptedToolModel(script=[bad, AIMessage("Sorry.")])
    state = graph_with(model, [roll_dice]).invoke({"input": "roll"}, CONFIG)
    (answer,) = tool_messages(state)
    assert "malformed tool call" in answer.text and answer.status == "error"
    assert state["trace"]["tool_calls"][0]["status"] == "malformed"
    assert state["messages"][-1].text == "Sorry."


def test_a_call_cut_off_at_the_token_limit_is_malformed_and_says_why() -> None:
    """The strategies keep a call cut off by its token budget as an invalid one, the reply's
    finish reason ``length``: it is answered ``malformed``, saying it was cut, not run."""
    cut = AIMessage("", invalid_tool_calls=[{"name": "roll_dice", "args": '"{\\"notation\\": \\"2d"', "id": "c9",
                                             "error": None, "type": "invalid_tool_call"}],
                    response_metadata={"finish_reason": "length"})  # fmt: skip
    model = ScriptedToolModel(script=[cut, AIMessage("Sorry.")])
    state = graph_with(model, [roll_dice]).invoke({"input": "roll"}, CONFIG)
    (answer,) = tool_messages(state)
    assert answer.text == "error: malformed tool call (cut off at the token limit); try again"
    assert [e["status"] for e in state["trace"]["tool_calls"]] == ["malformed"]
    assert state["messages"][-1].text == "Sorry."


def test_a_malformed_call_with_no_id_round_trips_through_save_and_import() -> None:
    """A model's malformed call often has no id: the tools node answers it under one it makes,
    which must be the call's own id in the thread, or ``threads import`` refuses the thread's
    /save file (its result answers no call of the reply)."""
    import json

    from agentmm.repl.transcript import transcript
    from agentmm.threads import import_thread, imported_values

    bad = AIMessage("", invalid_tool_calls=[{"name": "roll_dice", "args": "roll 2d6 please", "id": None,
                                             "error": None, "type": "invalid_tool_call"}])  # fmt: skip
    graph = graph_with(ScriptedToolModel(script=[bad, AIMessage("Sorry.")]), [roll_dice])
    state = graph.invoke({"input": "roll"}, CONFIG)
    asked = next(m for m in state["messages"] if isinstance(m, AIMessage) and m.invalid_tool_calls)
    (answer,) = tool_messages(state)
    assert asked.invalid_tool_calls[0]["id"] == answer.tool_call_id
    doc = json.loads(json.dumps(transcript("t", state, model="m", user_name="You")))
    values = imported_values(doc, "saved.json")
    import_thread(graph, "again", values)
    back = graph.get_state({"configurable": {"thread_id": "again"}}).values["messages"]
    assert [(m.type, m.text) for m in back] == [(m.type, m.text) for m in state["messages"]]


def test_loop_limit_forces_words_after_max_rounds() -> None:
    model = ScriptedToolModel(script=[call("roll_dice", notation="d4")], repeat_last=True)
    state = graph_with(model, [roll_dice], max_tool_rounds=2).invoke({"input": "roll forever"}, CONFIG)
    assert [b["tool_choice"] for b in model.bindings] == ["auto", "auto", "none"]
    assert len(tool_messages(state)) == 2  # the third call (made despite "none") is not run
    assert state["trace"]["path"].count("tools") == 2


def test_memory_remembers_the_user_message_not_the_tool_result(tmp_path: Path) -> None:
    from langgraph.store.memory import InMemoryStore

    store = InMemoryStore()
    model = ScriptedToolModel(script=[call("roll_dice", notation="d6"), AIMessage("A fine roll.")])
    graph = build_graph(
        Settings(), model=model, checkpointer=InMemorySaver(), counter=WORDS, tools=[roll_dice], store=store
    )
    state = graph.invoke({"input": "Roll a d6 for the duel"}, CONFIG)
    assert [w["id"] for w in state["trace"]["remembered"]] == ["t:1:user", "t:1:assistant"]
    (user,) = [item.value for item in store.search(("memories",), limit=10) if item.key == "t:1:user"]
    assert user["content"] == "Roll a d6 for the duel"


def test_memory_tools_write_and_read_the_threads_own_scope() -> None:
    from langgraph.store.memory import InMemoryStore

    from agentmm.tools.memory_tools import save_memory, search_memory

    store = InMemoryStore()
    script = [
        call("save_memory", "s1", fact="Ada's sister is called Grace."),
        AIMessage("Noted."),
        call("search_memory", "s2", query="sister"),
        AIMessage("Grace, I believe."),
    ]
    model = ScriptedToolModel(script=script)
    graph = build_graph(Settings(memory_k=0), model=model, checkpointer=InMemorySaver(), counter=WORDS,
                        tools=[save_memory, search_memory], store=store)  # fmt: skip
    ctx = TurnContext(user_id="ada")
    saved = graph.invoke({"input": "Remember my sister Grace."}, CONFIG, context=ctx)
    assert saved["trace"]["tool_calls"][0]["status"] == "ok"
    (note,) = [i for i in store.search(("memories",), limit=50) if i.key.startswith("note:")]
    assert note.namespace[1] == "ada" and note.value["content"] == "Ada's sister is called Grace."
    found = graph.invoke({"input": "Who is my sister?"}, CONFIG, context=ctx)
    assert "Ada's sister is called Grace." in tool_messages(found)[-1].text


def test_memory_tools_use_the_threads_persona_from_the_injected_state(tmp_path: Path) -> None:
    # The tool reads user, persona and store from LangGraph's ToolRuntime: a persona's thread
    # saves under that persona, and another persona's search does not find it.
    from langgraph.store.memory import InMemoryStore

    from agentmm.tools.memory_tools import save_memory, search_memory

    store = InMemoryStore()
    for name in ("Mira", "Odo"):
        (tmp_path / f"{name}.toml").write_text(f'name = "{name}"\nallowed_tools = ["save_memory", "search_memory"]\n')
    registry = PersonaRegistry(tmp_path, entry_points=False)
    script = [call("save_memory", "s1", fact="The user keeps bees."), AIMessage("Noted."),
              call("search_memory", "s2", query="bees"), AIMessage("No idea.")]  # fmt: skip
    graph = build_graph(Settings(memory_k=0), model=ScriptedToolModel(script=script), checkpointer=InMemorySaver(),
                        counter=WORDS, tools=[save_memory, search_memory], store=store, personas=registry)  # fmt: skip
    graph.invoke({"input": "I keep bees."}, {"configurable": {"thread_id": "m"}},
                 context=TurnContext(user_id="ada", persona="Mira"))  # fmt: skip
    (note,) = [i for i in store.search(("memories",), limit=50) if i.key.startswith("note:")]
    assert note.namespace == ("memories", "ada", "Mira")
    other = graph.invoke({"input": "What do I keep?"}, {"configurable": {"thread_id": "o"}},
                         context=TurnContext(user_id="ada", persona="Odo"))  # fmt: skip
    assert "nothing remembered" in tool_messages(other)[-1].text


@tool
def whoami(question: str, runtime: ToolRuntime[TurnContext, dict]) -> str:
    """Say whose turn this is."""
    context = runtime.context
    return f"{context.user_id} in {runtime.config['configurable']['thread_id']}, call {runtime.tool_call_id}, " \
           f"{len(runtime.state['messages'])} messages, store {type(runtime.store).__name__}"  # fmt: skip


def test_a_tool_gets_langgraphs_runtime_and_a_forged_one_is_dropped() -> None:
    from langgraph.store.memory import InMemoryStore

    # The model writes a "runtime" argument of its own: it never reaches the tool.
    script = [call("whoami", "w1", question="?", runtime={"context": {"user_id": "mallory"}}), AIMessage("Ok.")]
    graph = build_graph(Settings(memory_k=0), model=ScriptedToolModel(script=script), checkpointer=InMemorySaver(),
                        counter=WORDS, tools=[whoami], store=InMemoryStore())  # fmt: skip
    state = graph.invoke({"input": "who am I?"}, CONFIG, context=TurnContext(user_id="ada"))
    (answer,) = tool_messages(state)
    assert answer.text == "ada in t, call w1, 2 messages, store InMemoryStore", answer.text


def test_a_run_given_no_context_gives_its_tools_the_default_one() -> None:
    """README says ``runtime.context`` is a ``TurnContext``: it was None for a graph invoked
    without ``context=``, and a tool written from README failed on ``context.user_id``."""
    script = [call("whoami", "w1", question="?"), AIMessage("Ok.")]
    graph = build_graph(Settings(memory_k=0), model=ScriptedToolModel(script=script), checkpointer=InMemorySaver(),
                        counter=WORDS, tools=[whoami])  # fmt: skip
    (answer,) = tool_messages(graph.invoke({"input": "who am I?"}, CONFIG))
    assert answer.text.startswith("local in t, call w1"), answer.text


def test_memory_tools_without_memory_tell_the_model() -> None:
    from agentmm.tools.memory_tools import search_memory

    model = ScriptedToolModel(script=[call("search_memory", query="x"), AIMessage("Hm.")])
    state = graph_with(model, [search_memory]).invoke({"input": "remember?"}, CONFIG)
    assert "long-term memory is off" in tool_messages(state)[0].text


def test_stream_modes_give_tokens_node_progress_and_tool_events() -> None:
    model = ScriptedToolModel(script=[call("roll_dice", notation="d6"), AIMessage("Rolled a fine six.")])
    graph = graph_with(model, [roll_dice])
    seen: dict[str, list[Any]] = {"messages": [], "updates": [], "custom": []}
    for mode, payload in graph.stream({"input": "roll"}, CONFIG, stream_mode=["messages", "updates", "custom"]):
        seen[mode].append(payload)
    tokens = "".join(chunk.text for chunk, meta in seen["messages"] if meta["langgraph_node"] == "generate")
    assert "Rolled a fine six." in tokens
    assert [next(iter(u)) for u in seen["updates"]] == ["ingest", "compose", "generate", "tools", "generate"]
    assert [(c["type"], c["tool"]) for c in seen["custom"]] == [("tool_start", "roll_dice"), ("tool_end", "roll_dice")]


def test_agent_astream_events_for_a_web_app(tmp_path: Path) -> None:
    model = ScriptedToolModel(script=[call("roll_dice", notation="d6"), AIMessage("Six it is.")])

    async def collect(agent: Agent) -> list[dict[str, Any]]:
        return [e async for e in agent.astream_events("roll", "web")]

    with Agent(model=model, tools=[roll_dice], data_dir=tmp_path, memory=False) as agent:
        events = asyncio.run(collect(agent))
    kinds = {e["event"] for e in events}
    assert {"on_chat_model_stream", "on_tool_start", "on_tool_end", "on_chain_start", "on_chain_end"} <= kinds
    text = "".join(e["data"]["chunk"].text for e in events if e["event"] == "on_chat_model_stream")
    assert "Six it is." in text


def test_compose_keeps_room_for_the_tools() -> None:
    model = ScriptedToolModel(script=[AIMessage("Hello.")])
    state = graph_with(model, [roll_dice], n_ctx=2048, max_tokens=100).invoke({"input": "hi"}, CONFIG)
    budget = state["trace"]["budget"]
    assert budget["reply_reserve"] == 100
    assert budget["tool_reserve"] > 2000 // 3  # the list of tools, the prompts, one result
    assert budget["free"] == 2048 - 100 - budget["tool_reserve"] - budget["prompt_tokens"]


def test_each_round_of_tool_calls_is_reported_as_it_ends(tmp_path: Path) -> None:
    from agentmm.repl.terminal import tool_note

    script = [call("roll_dice", "c1", notation="2d6"), call("broken_lamp", "c2"), AIMessage("Rolled.")]
    model = ScriptedToolModel(script=script)
    rounds: list[list[dict[str, Any]]] = []
    with Agent(model=model, tools=[roll_dice, broken_lamp], data_dir=tmp_path, memory=False) as agent:
        turn = agent.stream("roll 2d6 and light the lamp", "t")
        turn.on_tool_calls = rounds.append
        assert "".join(turn).strip() == "Rolled."
    assert [[c["name"] for c in calls] for calls in rounds] == [["roll_dice"], ["broken_lamp"]]
    failed, line = tool_note(rounds[0][0])
    assert not failed and line.startswith("[tool roll_dice(notation='2d6'): ")
    failed, line = tool_note(rounds[1][0])
    assert failed and line == "[tool broken_lamp() error: RuntimeError: the wick is wet]"  # not "error: error:"
    listing = {"name": "search_images", "args": {"query": "beach"}, "status": "ok",
               "output": "\n".join(f"{n}. /photos/{n}.jpg (score 0.3)" for n in range(1, 13))}  # fmt: skip
    failed, line = tool_note(listing)
    assert not failed and "1. /photos/1.jpg" in line and "8. /photos/8.jpg" in line
    assert "9. /photos" not in line and "… 4 more lines]" in line


@tool
def quitter(code: int) -> str:
    """Leave."""
    raise SystemExit(code)


def test_a_tool_that_raises_systemexit_failed_it_did_not_time_out(capfd: pytest.CaptureFixture[str]) -> None:
    """It was reported as "did not finish within N s", and its thread's traceback printed."""
    model = ScriptedToolModel(script=[call("quitter", "c1", code=3), AIMessage("Oh.")])
    state = graph_with(model, [quitter], tool_timeout_s=5).invoke({"input": "quit"}, CONFIG)
    (entry,) = state["trace"]["tool_calls"]
    assert entry["status"] == "error" and entry["output"] == "error: SystemExit: 3" and entry["duration_s"] < 1
    assert "Traceback" not in capfd.readouterr().err


def test_stopping_the_turn_abandons_a_running_tool_at_once() -> None:
    """Ctrl-C while a tool ran waited out the whole tool timeout."""
    cancel = threading.Event()
    asked = call("slow_oracle", "c1", question="?")
    asked.usage_metadata = {"input_tokens": 40, "output_tokens": 5, "total_tokens": 45}
    model = ScriptedToolModel(script=[asked, call("slow_oracle", "c2", question="!"), AIMessage("Oh.")])
    graph = graph_with(model, [slow_oracle], tool_timeout_s=30)
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    state = graph.invoke({"input": "ask"}, CONFIG, context=TurnContext(cancel=cancel))
    assert time.perf_counter() - started < 3
    assert [e["status"] for e in state["trace"]["tool_calls"]] == ["cancelled"]
    assert "stopped the turn while slow_oracle ran" in state["trace"]["tool_calls"][0]["output"]
    # The generate after the tool never began: the turn's usage is the one that ran (it was 0 prompt tokens).
    assert state["trace"]["usage"] == {"prompt_tokens": 40, "completion_tokens": 5}


HUNG_TOOL_SCRIPT = """
import time, sys
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from agentmm.cli import _leave
from agentmm.graphs.chat import build_graph
from agentmm.graphs.tool_calls import tools_still_running
from agentmm.settings import Settings
from tests.graphs.scripted_model import ScriptedToolModel

@tool
def hang() -> str:
    '''Wait for ever.'''
    time.sleep(100_000)
    return "never"

call = AIMessage("", tool_calls=[{"name": "hang", "args": {}, "id": "c1", "type": "tool_call"}])
model = ScriptedToolModel(script=[call, AIMessage("Gave up.")])
graph = build_graph(Settings(tool_timeout_s=0.3, memory=False), model=model, checkpointer=InMemorySaver(),
                    tools=[hang])
state = graph.invoke({"input": "wait"}, {"configurable": {"thread_id": "t"}})
print(state["trace"]["tool_calls"][0]["status"], tools_still_running(), flush=True)
_leave(int(sys.argv[1]))
"""


def test_a_hung_tool_given_up_on_does_not_keep_the_cli_from_exiting(tmp_path: Path) -> None:
    """Python joins LangGraph's tool threads at exit: `chat -m` and /exit hung for ever."""
    import subprocess
    import sys

    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", HUNG_TOOL_SCRIPT, "3"], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])  # fmt: skip
    assert done.stdout.split() == ["timeout", "True"], done.stderr
    assert done.returncode == 3 and time.perf_counter() - started < 30


def test_an_async_tool_runs_on_the_loop_of_an_async_run() -> None:
    """It ran under asyncio.run on a thread of its own: a future, queue or client the app made
    on its loop failed ('attached to a different loop')."""

    async def main() -> tuple[dict[str, Any], list[str]]:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.call_later(0.05, ready.set_result, "pool")
        outbox: asyncio.Queue[str] = asyncio.Queue()

        @tool
        async def notify(text: str) -> str:
            """Tell the app's UI something."""
            await outbox.put(text)
            return f"{await ready} on the app's loop: {asyncio.get_running_loop() is loop}"

        model = ScriptedToolModel(script=[call("notify", text="hi"), AIMessage("Sent.")])
        state = await graph_with(model, [notify]).ainvoke({"input": "notify"}, CONFIG)
        return state, [outbox.get_nowait() for _ in range(outbox.qsize())]

    state, sent = asyncio.run(main())
    assert tool_messages(state)[0].text == "pool on the app's loop: True"
    assert sent == ["hi"] and state["messages"][-1].text == "Sent."


def test_an_async_tool_past_its_timeout_is_cancelled_and_the_turn_goes_on() -> None:
    stopped = []

    @tool
    async def forever(text: str) -> str:
        """Never answers."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            stopped.append(text)
            raise
        return "never"

    model = ScriptedToolModel(script=[call("forever", text="x"), AIMessage("Gave up.")])
    graph = graph_with(model, [forever], tool_timeout_s=0.2)
    state = asyncio.run(graph.ainvoke({"input": "wait"}, CONFIG))
    assert "did not finish within 0.2 s" in tool_messages(state)[0].text
    assert stopped == ["x"] and state["messages"][-1].text == "Gave up."


def test_an_agents_async_tool_that_blocks_still_times_out(tmp_path: Any) -> None:
    """On the Agent's own loop an async tool calling blocking code (time.sleep, requests) held
    the loop: its 0.3 s timeout fired only when it returned, and Ctrl-C could not act."""
    import time

    @tool
    async def blocking(text: str) -> str:
        """Blocks."""
        time.sleep(8)
        return "late"

    model = ScriptedToolModel(script=[call("blocking", text="x"), AIMessage("Gave up.")])
    with Agent(model=model, tools=[blocking], memory=False, data_dir=tmp_path, tool_timeout_s=0.3) as agent:
        started = time.monotonic()
        result = agent.chat("go")
        took = time.monotonic() - started
    assert result.trace["tool_calls"][0]["status"] == "timeout" and took < 6, took
