"""Fit a turn's prompt into the model's context window, keeping the prompt append-only.

The prompt is ``head`` (system prompt, persona) + the thread's history + this turn (its
context: lore, memories, observations; then the user's message) + ``tail`` (post-history
instructions). A turn's context is stored with its message, so the next turn's prompt starts
with this turn's prompt and llama.cpp re-uses its KV cache.

For the same reason the window must not slide one message per turn (that changes the head of
the prompt every turn). It stays put while the history fits; when it overflows it jumps
forward to a turn boundary that leaves the history at most ``fold_to`` of its budget, so many
turns go at once and the following turns are cheap again (where no boundary leaves that much,
the last exchange alone). When even this turn does not fit, the lowest-priority parts are
dropped first, and the plan says which; this turn's recalled lore and memories go before the
last exchange does (``YIELDS_TO_HISTORY``).

What an earlier turn recalled (its memories and lore) stays with it in the prompt while the
history fits. When it overflows, those blocks leave the prompt before any turn is folded away:
this turn recalls what matters to it, and the exchange itself (message, reply, what the user
sent) is what the model needs of an old turn. The prompt changes from the first such turn on
(a prefill, not a summary generation), and only on an overflow, so it stays append-only in
between. A fold that still has to happen keeps its exchanges without them too: the prompt
changes there anyway. They leave the same way, the history fitting, when this turn's recall
needs the window's memory budget they hold (``clear_recalled``; agentmm's recall node decides,
only where that lets in a memory it would drop): this turn's recall wins over earlier turns'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from langchain_core.messages import BaseMessage, HumanMessage

from agentmm.errors import InputTooLongError
from agentmm.state import PromptPart
from agentmm.tokens import PER_MESSAGE_OVERHEAD, TokenCounter

# Where a turn's context (lore, memories, observations) is stored on its HumanMessage.
CONTEXT_KEY = "agentmm_context"
# The tokens of the recalled-memory block in that context: recall bounds what all the turns in
# the window hold together (agentmm.memory.selection).
MEMORY_TOKENS_KEY = "agentmm_memory_tokens"
# What of that context stays once its recalled part (memories, lore) leaves the prompt: what
# the user sent (observations), or "". Written only when the context holds a recalled part; a
# turn saved before it existed keeps its whole context.
CONTEXT_KEPT_KEY = "agentmm_context_kept"
# Set on a stored turn whose recalled memories and lore have left the prompt (``plan_window``'s
# ``stripped``): from then on it is shown with ``CONTEXT_KEPT_KEY``'s text only.
RECALLED_DROPPED_KEY = "agentmm_recalled_dropped"

Parts = Sequence[tuple[str, str]]
# This turn's parts that go before the last exchange does: what was recalled for it. What the
# user sent (``observations``) never goes for an older exchange: the model would answer a
# picture or voice note it was not shown.
YIELDS_TO_HISTORY = ("lore", "memories")


def stored_context(message: BaseMessage) -> str:
    """The context stored with a user turn when it was composed, whether or not the prompt
    still shows all of it."""
    return str(message.additional_kwargs.get(CONTEXT_KEY, "")) if isinstance(message, HumanMessage) else ""


def recalled_shown(message: BaseMessage) -> bool:
    """Whether the prompt still shows what ``message``'s turn recalled (memories, lore) and
    could leave it out: its context has a recalled part, said apart when it was stored."""
    kwargs = message.additional_kwargs
    return (isinstance(message, HumanMessage) and CONTEXT_KEPT_KEY in kwargs
            and kwargs[CONTEXT_KEPT_KEY] != kwargs.get(CONTEXT_KEY, "")
            and not kwargs.get(RECALLED_DROPPED_KEY))  # fmt: skip


def turn_context(message: BaseMessage) -> str:
    """A user turn's context as the prompt shows it: all of it, or what the user sent alone
    once its recalled memories and lore have left the prompt."""
    if isinstance(message, HumanMessage) and message.additional_kwargs.get(RECALLED_DROPPED_KEY):
        return str(message.additional_kwargs.get(CONTEXT_KEPT_KEY, ""))
    return stored_context(message)


def memory_tokens(message: BaseMessage) -> int:
    """The tokens of recalled memories ``message`` holds in the prompt (0: none, they left it,
    or a turn saved before they were counted)."""
    if not isinstance(message, HumanMessage) or message.additional_kwargs.get(RECALLED_DROPPED_KEY):
        return 0
    return int(message.additional_kwargs.get(MEMORY_TOKENS_KEY, 0))


def without_recalled(message: BaseMessage) -> BaseMessage:
    """``message`` marked so the prompt shows it without what its turn recalled."""
    return message.model_copy(update={"additional_kwargs": {**message.additional_kwargs, RECALLED_DROPPED_KEY: True}})


def render(message: BaseMessage, *, recalled: bool = True) -> str:
    """A message's text as the model sees it: a user turn's context first, then its words;
    with ``recalled`` False, as it will be once its recalled memories and lore leave."""
    context = turn_context(message)
    if not recalled and recalled_shown(message):
        context = str(message.additional_kwargs.get(CONTEXT_KEPT_KEY, ""))
    return f"{context}\n\n{message.text}" if context else message.text


@dataclass(frozen=True)
class WindowPlan:
    window_start: int
    parts: list[PromptPart]
    budget: dict[str, int]
    folded_messages: int  # messages that left the window this turn
    kept: dict[str, str] = field(default_factory=dict)  # the parts that fit, by name
    dropped: list[str] = field(default_factory=list)  # parts left out to fit, lowest priority first
    # parts cut short to fit: {"part", "tokens" (kept), "full_tokens"}
    truncated: list[dict[str, object]] = field(default_factory=list)
    # earlier user messages (indexes) whose recalled memories and lore leave the prompt this turn
    stripped: list[int] = field(default_factory=list)


def plan_window(
    messages: Sequence[BaseMessage],
    window_start: int,
    counter: TokenCounter,
    *,
    n_ctx: int,
    reply_tokens: int,
    head: Parts,
    turn: Parts = (),
    tail: Parts = (),
    droppable: Sequence[str] = (),
    truncatable: Sequence[str] = (),
    fold_to: float = 0.5,
    clear_recalled: bool = False,
) -> WindowPlan:
    """Choose the window for a turn whose user message is ``messages[-1]``.

    ``head`` and ``tail`` are named text parts placed before and after the history; ``turn``
    is this turn's context placed with its message. ``droppable`` names parts that may be
    left out, lowest priority first, when the turn would not fit otherwise. Parts dropped on
    the way that fit again once a bigger one is gone come back (highest priority first), and
    the highest-priority part still out, if ``truncatable``, comes back cut to half the room
    the other head and tail parts leave (the other half stays for the turn and the history).
    ``clear_recalled``: the earlier turns' recalled blocks leave the prompt even though the
    history fits (recall placed this turn's memories in the window's memory budget they held).
    """
    full = {name: text for name, text in (*head, *turn, *tail) if text}
    full_sizes = {name: counter.text(text) for name, text in full.items()}
    named, sizes_of = dict(full), dict(full_sizes)  # what is kept: parts leave on the way
    message_tokens = counter.text(messages[-1].text) + PER_MESSAGE_OVERHEAD if messages else 0
    available = n_ctx - reply_tokens

    def template() -> int:
        # What the chat template adds beyond the messages counted: the system message's role
        # markers, the reply's opening, and a separator between parts joined in one message.
        # Left out, /why's "free" overstated the room by 8-21 tokens, and at a small n_ctx the
        # context cut replies short of their reserve.
        return 2 * PER_MESSAGE_OVERHEAD + len(sizes_of)

    def fixed() -> int:
        return sum(sizes_of.values()) + message_tokens + template()

    dropped = []
    for name in droppable:
        if fixed() <= available:
            break
        if name in named:
            del named[name], sizes_of[name]
            dropped.append(name)
    for name in reversed(list(dropped)):  # a small part dropped before a big one may fit again
        if fixed() + full_sizes[name] <= available:
            named[name], sizes_of[name] = full[name], full_sizes[name]
            dropped.remove(name)
    truncated = []
    if dropped and dropped[-1] in truncatable and fixed() <= available:
        name = dropped[-1]
        # Half the room the head and tail leave, which does not change from turn to turn (the
        # prompt's head stays the same, and llama.cpp's cache with it), unless this turn's
        # message and context leave less.
        frame = {part for part, _ in (*head, *tail)}
        framed = sum(size for part, size in sizes_of.items() if part in frame)
        cut = clip_to_tokens(full[name], min((available - framed) // 2, available - fixed()), counter)
        if cut:
            named[name], sizes_of[name] = cut, counter.text(cut)
            dropped.remove(name)
            truncated.append({"part": name, "tokens": sizes_of[name], "full_tokens": full_sizes[name]})
    if fixed() > available:
        # Where the reply's reserve takes half the context or more, it is the reserve to change
        # (--n-ctx 512 with the default 512-token max_tokens refused "hi").
        fix = "lower max_tokens or raise n_ctx" if reply_tokens * 2 >= n_ctx else "shorten it or raise n_ctx"
        raise InputTooLongError(
            f"the message is {message_tokens} tokens but only {max(available - fixed() + message_tokens, 0)} "
            f"fit in the context (n_ctx={n_ctx}, {reply_tokens} kept for the reply"
            f"{_beside(sizes_of, dict(turn))}); {fix}"
        )
    sizes = [counter.message_text(render(m)) for m in messages[:-1]]
    # Each one as it will be once what its turn recalled leaves the prompt.
    bare = [counter.message_text(render(m, recalled=False)) if recalled_shown(m) else size
            for m, size in zip(messages[:-1], sizes, strict=True)]  # fmt: skip
    start = min(max(window_start, 0), len(sizes))
    # The last exchange is kept before this turn's recalled memories and lore (its own go
    # first): an exchange stored with its own memories and lore outgrew the room such a turn
    # left, and the model answered having seen no earlier exchange at all.
    last = _last_exchange(messages, start, len(sizes))
    if last is not None:
        need = sum(bare[last:])
        spare = [name for name in YIELDS_TO_HISTORY if name in dict(turn) and name in named]
        if available - fixed() < need <= available - fixed() + sum(sizes_of[name] for name in spare):
            for name in spare:
                if need <= available - fixed():
                    break
                del named[name], sizes_of[name]
                dropped.append(name)
    history_budget = available - fixed()
    new_start, strip_from = start, len(sizes)
    overflow = sum(sizes[start:]) > history_budget
    if overflow or clear_recalled:
        # The earlier turns' recalled memories and lore leave first, all at once (the prompt
        # changes from the first of them, whatever the number); a fold only where the exchanges
        # alone do not fit, and what it keeps is kept without them too. At n_ctx 1024 with a
        # persona and memory an exchange with its blocks was 250-400 tokens, about the whole
        # room, and the window folded every turn or two (23 folds in 40 turns). They leave the
        # same way when this turn's recall needs the window's memory budget they hold.
        strip_from = start
        if sum(bare[start:]) > history_budget:
            new_start = strip_from = _fold_point(messages, bare, start, history_budget, fold_to)
    stripped = [i for i in range(strip_from, len(sizes)) if recalled_shown(messages[i])]
    history = sum(sizes[new_start:strip_from]) + sum(bare[strip_from:])

    def part(name: str) -> list[PromptPart]:
        return [PromptPart(part=name, tokens=sizes_of[name])] if name in named else []

    parts = [
        *(p for name, _ in head for p in part(name)),
        PromptPart(part="history", tokens=history),
        *(p for name, _ in turn for p in part(name)),
        PromptPart(part="message", tokens=message_tokens),
        *(p for name, _ in tail for p in part(name)),
    ]
    used = fixed() + history
    budget = {
        "n_ctx": n_ctx,
        "reply_reserve": reply_tokens,
        "prompt_tokens": used,  # the parts' tokens and the template's
        "template_tokens": template(),
        "free": available - used,
        "history_messages": len(sizes) - new_start,
        "folded_messages_total": new_start,
        "recalled_dropped_this_turn": len(stripped),
        # those of them whose room this turn's recalled memories took (the history may have
        # overflowed too: this turn's bigger block counts in that)
        "recalled_dropped_for_memories": len(stripped) if clear_recalled else 0,
    }
    return WindowPlan(new_start, parts, budget, new_start - start, kept=named, dropped=dropped, truncated=truncated,
                      stripped=stripped)  # fmt: skip


def _beside(sizes_of: dict[str, int], turn: dict[str, str]) -> str:
    """What else this turn brings that takes room (its observations, memories, lore), said."""
    beside = [f"{name} {size}" for name, size in sizes_of.items() if name in turn]
    return f", this turn's {', '.join(beside)} tokens" if beside else ""


MIN_CLIP_TOKENS = 32


def clip_to_tokens(text: str, tokens: int, counter: TokenCounter) -> str:
    """The longest start of ``text`` within ``tokens`` (found by bisection, the counter being
    the model's tokenizer), ended at a sentence or word and marked with "…"; "" where fewer
    than ``MIN_CLIP_TOKENS`` would be left, too little to carry a character."""
    if tokens < MIN_CLIP_TOKENS:
        return ""
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if counter.text(text[:mid] + "…") <= tokens:
            low = mid
        else:
            high = mid - 1
    head = text[:low]
    for ends in (". ", "\n", " "):
        at = head.rfind(ends)
        if at > len(head) // 2:
            head = head[: at + 1]
            break
    return head.rstrip() + "…"


def _fold_point(messages: Sequence[BaseMessage], sizes: list[int], start: int, budget: int, fold_to: float) -> int:
    """Where the window moves to: the earliest turn boundary after ``start`` whose remaining
    history fits in ``fold_to`` of the budget, so the next turns have room to grow unfolded.
    Failing that, the last exchange alone when it fits: the earliest boundary that fitted the
    budget kept the window all but full, and it folded again on the next turn, by one exchange
    (17 folds in 37 turns at n_ctx 1024). Else no history."""
    boundaries = [i for i in range(start + 1, len(sizes)) if isinstance(messages[i], HumanMessage)]
    suffix = [*list(accumulate(reversed(sizes)))[::-1], 0]
    for i in boundaries:
        if suffix[i] <= budget * fold_to:
            return i
    if boundaries and suffix[boundaries[-1]] <= budget:
        return boundaries[-1]
    return len(sizes)


def _last_exchange(messages: Sequence[BaseMessage], start: int, end: int) -> int | None:
    """Where the last exchange in ``messages[start:end]`` begins (its user message), if any."""
    return next((i for i in range(end - 1, start - 1, -1) if isinstance(messages[i], HumanMessage)), None)
