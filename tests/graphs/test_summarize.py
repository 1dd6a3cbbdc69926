"""The rolling summary is its own node after the reply: a folding turn streams its first token
before the summary is written, the next turn's prompt starts with the new summary, and the
trace shows the node."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph.state import CompiledStateGraph

from agentmm.graphs.chat import build_graph
from agentmm.settings import Settings
from agentmm.state import TurnContext
from agentmm.summary import INSTRUCTIONS
from agentmm.tokens import TokenCounter

WORDS = TokenCounter(lambda text: len(text.split()))
CONFIG = {"configurable": {"thread_id": "t"}}


def is_summary_call(messages: list[BaseMessage]) -> bool:
    return bool(messages) and messages[0].content == INSTRUCTIONS


class CallLog(FakeListChatModel):
    """Replies from ``responses``; writes ``summaries`` in turn when asked to fold. Every call is
    logged in order ("reply" or "summary"), with the system message of each reply's prompt."""

    log: list[str]
    heads: list[str]
    summaries: list[str]
    fail_summaries: int = 0

    def _summary(self) -> str:
        self.log.append("summary")
        if self.fail_summaries:
            self.fail_summaries -= 1
            raise RuntimeError("the model fell over")
        return self.summaries.pop(0)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if is_summary_call(messages):
            return ChatResult(generations=[ChatGeneration(message=AIMessage(self._summary()))])
        return super()._generate(messages, *args, **kwargs)

    def _stream(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if is_summary_call(messages):
            yield ChatGenerationChunk(message=AIMessageChunk(content=self._summary()))
            return
        self.log.append("reply")
        self.heads.append(str(messages[0].content))
        yield from super()._stream(messages, *args, **kwargs)


def call_log(**fields: Any) -> CallLog:
    return CallLog(responses=["word " * 30], log=[], heads=[], summaries=["Ada likes boats.", "Ada rows at dawn."],
                   **fields)  # fmt: skip


def graph_over(model: CallLog) -> CompiledStateGraph:
    return build_graph(Settings(n_ctx=260, max_tokens=40), model=model, checkpointer=InMemorySaver(), counter=WORDS)


def streamed_turn(graph: CompiledStateGraph, model: CallLog, text: str) -> dict[str, Any]:
    """One turn streamed as a chat shows it; the log gets "first token shown" when it arrives."""
    shown = False
    for chunk, meta in graph.stream({"input": text}, CONFIG, context=TurnContext(user_name="Ada"),
                                    stream_mode="messages"):  # fmt: skip
        if meta["langgraph_node"] == "generate" and chunk.content and not shown:
            model.log.append("first token shown")
            shown = True
    return graph.get_state(CONFIG).values


def turns_until_fold(graph: CompiledStateGraph, model: CallLog) -> tuple[dict[str, Any], list[str]]:
    """Turns until one folds; that turn's state and the calls it made."""
    for i in range(12):
        before = len(model.log)
        state = streamed_turn(graph, model, f"message {i} " + "pad " * 12)
        if "summarize" in state["trace"]["path"]:
            return state, model.log[before:]
        assert "summary" not in model.log
    raise AssertionError("no turn folded")


def test_a_folding_turn_streams_its_reply_before_the_summary_is_written() -> None:
    model = call_log()
    graph = graph_over(model)
    state, calls = turns_until_fold(graph, model)
    assert calls == ["reply", "first token shown", "summary"]
    trace = state["trace"]
    assert trace["path"] == ["ingest", "compose", "generate", "summarize"]
    assert trace["summary"]["updated"] is True and trace["summary"]["text"] == "Ada likes boats."
    assert trace["summary"]["folded_messages"] == state["window_start"] > 0
    assert "summarize_s" in trace["timings"] and "generate_s" in trace["timings"]
    assert state["summary"] == "Ada likes boats." and state["summary_through"] == state["window_start"]
    # The folding turn's own prompt had no summary yet: the fold did not wait for it.
    assert "summary" not in [p["part"] for p in trace["prompt_parts"]]
    assert "Ada likes boats." not in model.heads[-1]


def test_the_next_turn_starts_with_the_new_summary_and_keeps_it() -> None:
    model = call_log()
    graph = graph_over(model)
    folded, _ = turns_until_fold(graph, model)
    after = [streamed_turn(graph, model, f"later {i}") for i in range(2)]
    assert "Summary of the conversation so far:\nAda likes boats." in model.heads[-2]
    assert model.heads[-1] == model.heads[-2]  # append-only again: the head changes once per fold
    assert [p["part"] for p in after[0]["trace"]["prompt_parts"]][:2] == ["system", "summary"]
    assert all("summarize" not in s["trace"]["path"] for s in after)
    assert all(s["trace"]["summary"] == {"updated": False, "text": "Ada likes boats.", "to_fold": 0} for s in after)
    assert folded["window_start"] == after[-1]["window_start"]


def test_a_summary_that_fails_costs_no_turn_and_is_folded_next_time() -> None:
    model = call_log(fail_summaries=1)
    graph = graph_over(model)
    state, calls = turns_until_fold(graph, model)
    assert calls == ["reply", "first token shown", "summary"]
    assert state["messages"][-1].content == "word " * 30  # the reply stands
    assert "RuntimeError: the model fell over" in state["trace"]["summary"]["deferred"]
    assert not state.get("summary") and state["summary_through"] < state["window_start"]
    again = streamed_turn(graph, model, "and now?")
    assert again["trace"]["path"][-1] == "summarize" and again["summary"] == "Ada likes boats."
    assert again["summary_through"] == again["window_start"]


def test_a_stopped_turn_leaves_the_fold_for_the_next_one() -> None:
    model = call_log()
    graph = graph_over(model)
    for i in range(30):
        stopped = TurnContext(user_name="Ada")
        stopped.cancel.set()  # Ctrl-C before the reply: no model call at all
        state = graph.invoke({"input": f"message {i} " + "pad " * 12}, CONFIG, context=stopped)
        if "deferred" in (state["trace"].get("summary") or {}):
            break
    else:
        raise AssertionError("no turn folded")
    trace = state["trace"]
    assert trace["summary"]["deferred"] == "the turn was stopped" and model.log == []
    # The summarize node did nothing: the path and timings do not say it ran ("summarize",
    # summarize_s 0.0 beside a deferred summary), and the messages that left the window are
    # said to wait for the summary.
    assert "summarize" not in trace["path"] and "summarize_s" not in trace["timings"]
    assert trace["summary"]["to_fold"] == trace["budget"]["folded_this_turn"] > 0
    again = graph.invoke({"input": "go on"}, CONFIG, context=TurnContext(user_name="Ada"))
    assert model.log == ["reply", "summary"] and again["summary"] == "Ada likes boats."
    assert again["summary_through"] == again["window_start"] > 0


def test_the_summary_is_sized_to_the_context() -> None:
    """A fixed 200 tokens filled 40% of a 512-token context, and every turn folded again."""
    from agentmm.summary import summary_tokens

    assert [summary_tokens(n) for n in (256, 512, 2048, 4096, 32768)] == [32, 32, 128, 200, 200]

    class Sized(CallLog):
        max_tokens: int | None = None
        asked: list[Any]

        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            if is_summary_call(messages):
                self.asked.append(kwargs.get("max_tokens"))
            return super()._generate(messages, *args, **kwargs)

        def _stream(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
            if is_summary_call(messages):  # a graph streamed in "messages" mode streams the summary call too
                self.asked.append(kwargs.get("max_tokens"))
            yield from super()._stream(messages, *args, **kwargs)

    model = Sized(responses=["word " * 30], log=[], heads=[], summaries=["Ada likes boats."] * 3, asked=[])
    graph = build_graph(Settings(n_ctx=512, max_tokens=40), model=model, checkpointer=InMemorySaver(), counter=WORDS)
    for i in range(12):
        streamed_turn(graph, model, f"message {i} " + "pad " * 30)
        if model.asked:
            break
    assert model.asked and set(model.asked) == {32}


def test_a_summary_cut_mid_sentence_keeps_its_whole_sentences_and_was_told_its_length() -> None:
    from langchain_core.messages import HumanMessage

    from agentmm.summary import fold_into_summary, whole_sentences

    assert whole_sentences("Mira has a dog, Biscuit. Yara is the girl you're referring") == "Mira has a dog, Biscuit."
    assert whole_sentences('Ada said "no." Then (10) The sea is a') == 'Ada said "no."'
    assert whole_sentences("Ada keeps bees.") == "Ada keeps bees."
    assert whole_sentences("no sentence end at all") == "no sentence end at all"
    # A full stop after a title, a time or an initial ends no sentence.
    assert whole_sentences("Mira met Dr. Patel at the docks and") == "Mira met Dr. Patel at the docks and"
    assert whole_sentences("Ada rows. The ship leaves at 6 p.m. from bay 4 and") == "Ada rows."
    assert whole_sentences("J. R. Hartley wrote. He left the") == "J. R. Hartley wrote."

    seen: list[list[BaseMessage]] = []

    class Cut(FakeListChatModel):
        """Its reply ends where max_tokens cut it, as llama.cpp and OpenAI servers say."""

        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            seen.append(messages)
            text = self._call(messages, *args, **kwargs)
            return ChatResult(generations=[ChatGeneration(message=AIMessage(text, response_metadata={
                "finish_reason": "length" if text.endswith("the") else "stop"}))])  # fmt: skip

    model = Cut(responses=["Ada keeps bees. She sells honey at the", "Ada keeps bees. Bo likes tea"])
    folded = [HumanMessage("I keep bees.")]
    assert fold_into_summary(model, "", folded, user_name="Ada", char_name="Bo", max_tokens=64) == "Ada keeps bees."
    assert "at most 40 words" in seen[0][-1].text
    # A whole summary may end without a stop: nothing is cut from it.
    assert fold_into_summary(model, "", folded, user_name="Ada", char_name="Bo") == "Ada keeps bees. Bo likes tea"


def test_threads_show_gives_the_rolling_summary() -> None:
    """README says the summary is kept with the thread (``threads show``): neither the text nor
    the JSON showed it (only inside system_prompt)."""
    from agentmm.threads import thread_dict

    model = call_log()
    graph = graph_over(model)
    state, _ = turns_until_fold(graph, model)
    shown = thread_dict(graph.checkpointer, "t")  # type: ignore[arg-type]
    assert shown["summary"] == "Ada likes boats." and shown["summary_through"] == state["window_start"] > 0


def test_a_no_reply_line_is_not_folded_into_the_summary_as_the_characters_words() -> None:
    """A reply that was cut twice becomes ``NO_REPLY``'s bracketed line to the user (marked
    ``no_reply``): the summary node folded it in as the character's words ("Bo: (no reply: ...")."""
    from langchain_core.messages import HumanMessage

    from agentmm.graphs.chat import COPIED_MEMORY, NO_REPLY, _no_reply
    from agentmm.summary import fold_into_summary

    seen: list[list[BaseMessage]] = []

    class Seen(FakeListChatModel):
        def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
            seen.append(messages)
            return super()._generate(messages, *args, **kwargs)

    model = Seen(responses=["Ada keeps bees.", "never asked"])
    cut = _no_reply(AIMessage(""), COPIED_MEMORY)
    folded = [HumanMessage("I keep bees."), cut, HumanMessage("Honey?"), AIMessage("Lots of it.")]
    assert fold_into_summary(model, "", folded, user_name="Ada", char_name="Bo") == "Ada keeps bees."
    asked = seen[0][-1].text
    assert "Ada: I keep bees.\nAda: Honey?\nBo: Lots of it." in asked and NO_REPLY[COPIED_MEMORY] not in asked
    # Nothing but such lines to fold: the summary stays as it was, and the model is not asked.
    assert fold_into_summary(model, "Ada keeps bees.", [cut], user_name="Ada", char_name="Bo") == "Ada keeps bees."
    assert len(seen) == 1
