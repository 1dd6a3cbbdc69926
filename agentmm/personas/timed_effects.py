"""Lore's timed effects that outlast a turn: SillyTavern's "sticky" and "cooldown", as plain data a
thread keeps (its ``lore_timers`` state, checkpointed with each turn, so an undo or a rolled-back
turn takes back what the turn set).

Semantics follow SillyTavern's ``WorldInfoTimedEffects`` (public/scripts/world-info.js), which
keeps them per chat in ``chat_metadata.timedWorldInfo``, keyed by entry, each with the chat
length (``chat.length``: messages, this turn's included) at which it started and ends:

- an entry that fires with ``sticky: N`` stays active, keys or not, while the chat holds fewer
  than its length then plus N messages (its probability is not rolled again, and a sticky entry
  goes into the budget before the others of its pass); with ``cooldown: N`` it cannot fire
  while the chat holds fewer than its length then plus N messages;
- when a sticky period ends and the entry has a cooldown, the cooldown starts then (and holds
  the entry that very turn), "protected": it stands even if the chat is cut back;
- an effect that is not protected is dropped when the chat holds no more messages than when it
  started: the turn that set it is being answered again (a retry, SillyTavern's swipe), or was
  taken out, and fires or not afresh;
- an effect is set only when the entry has none of that kind running (firing again does not
  extend it); an effect whose entry is gone (the book was edited: the key is a hash of the
  entry, as SillyTavern's) stays until its end passes; one whose entry no longer has that
  effect is dropped.

``delay``, the third timed effect, needs no state (``lorebook.activate`` reads it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from agentmm.personas.model import Lorebook, LoreEntry

Kind = Literal["sticky", "cooldown"]
KINDS: tuple[Kind, ...] = ("sticky", "cooldown")


def entry_key(entry: LoreEntry) -> str:
    """The key an entry's effects are kept under: a hash of the entry as read (SillyTavern keys
    them by a hash of the entry too), so an edited entry does not inherit an old one's timers."""
    data = json.dumps(entry.model_dump(mode="json", exclude={"raw"}), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass
class TimedEffects:
    """One turn's view of a thread's sticky and cooldown timers.

    ``check`` reads the timers the thread kept (``found``) at this turn's chat length: which
    entries (by index in the book) are sticky and cooling down now, and the timers that still
    run. ``lorebook.activate`` reads ``sticky`` and ``cooldown`` and hands the entries it fired
    to ``record``; ``state`` is what the thread keeps for its next turn."""

    book: Lorebook
    chat_length: int
    timers: dict[Kind, dict[str, dict[str, Any]]]
    sticky: dict[int, dict[str, Any]] = field(default_factory=dict)
    cooldown: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def check(cls, book: Lorebook, found: Mapping[str, Any] | None, chat_length: int) -> TimedEffects:
        """SillyTavern's ``checkTimedEffects``: the timers in ``found`` at ``chat_length``."""
        by_key = {entry_key(e): i for i, e in enumerate(book.entries) if e.sticky or e.cooldown}
        timed = cls(book, chat_length, {"sticky": {}, "cooldown": {}})
        for kind in KINDS:
            kept = found.get(kind) if isinstance(found, Mapping) else None
            for key, effect in kept.items() if isinstance(kept, Mapping) else ():
                if kind == "cooldown" and key in timed.timers["cooldown"]:
                    continue  # a sticky period that ended this turn started a new cooldown
                if (read := _effect(effect)) is not None:
                    timed._check_one(kind, key, read, by_key.get(key))
        return timed

    def _check_one(self, kind: Kind, key: str, effect: dict[str, Any], index: int | None) -> None:
        length = self.chat_length
        if length <= effect["start"] and not effect["protected"]:
            return  # the chat has not gone past the turn that set it: that turn is answered again
        if index is None:  # an entry no longer in the book: kept until its time is up
            if length < effect["end"]:
                self.timers[kind][key] = effect
            return
        entry = self.book.entries[index]
        if not getattr(entry, kind):
            return
        if length >= effect["end"]:
            if kind == "sticky" and entry.cooldown:  # SillyTavern's onEnded.sticky
                cooldown = self._new(entry, "cooldown", protected=True)
                self.timers["cooldown"][key] = cooldown
                self.cooldown[index] = cooldown
            return
        self.timers[kind][key] = effect
        (self.sticky if kind == "sticky" else self.cooldown)[index] = effect

    def _new(self, entry: LoreEntry, kind: Kind, *, protected: bool = False) -> dict[str, Any]:
        start = self.chat_length
        return {"entry": entry.label, "start": start, "end": start + getattr(entry, kind), "protected": protected}

    def record(self, fired: Iterable[tuple[int, LoreEntry]]) -> dict[int, str]:
        """SillyTavern's ``setTimedEffects`` for the entries that fired this turn (by index):
        each effect an entry has and is not running yet starts now. Returns, per index, the
        words the trace adds to its ``why`` for the timers it started."""
        started: dict[int, str] = {}
        for index, entry in fired:
            key = entry_key(entry)
            said = []
            for kind in KINDS:
                if getattr(entry, kind) and key not in self.timers[kind]:
                    effect = self.timers[kind][key] = self._new(entry, kind)
                    if kind == "sticky":
                        said.append(f"sticky until the chat has {effect['end']} messages")
                    elif entry.sticky:
                        said.append(f"then cooling down for {entry.cooldown} messages")
                    else:
                        said.append(f"cooling down until the chat has {effect['end']} messages")
            if said:
                started[index] = ", ".join(said)
        return started

    def state(self) -> dict[str, Any]:
        """The timers as plain data, for the thread's checkpoint (empty when none run)."""
        return {kind: dict(effects) for kind, effects in self.timers.items() if effects}


def _effect(value: Any) -> dict[str, Any] | None:
    """One kept timer, checked (a thread's state may come from anywhere: an import, a client)."""
    if not isinstance(value, Mapping):
        return None
    start, end = value.get("start"), value.get("end")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (start, end)):
        return None
    protected = value.get("protected") is True
    return {"entry": str(value.get("entry", "")), "start": start, "end": end, "protected": protected}
