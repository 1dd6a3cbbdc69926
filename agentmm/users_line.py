"""A played reply that begins with the user's name and a colon ("Ada: Where were we?") is the
model writing the user's turn, not the character's: a small model does it on its first token.

The user's-name stop (``"\\nAda:"``, ``graphs/chat._name_stops``) needs a line break before the
name, so it cannot stop such a reply at its start; a stop without the line break would cut a
reply that names the user mid-line ("I'll tell you this, Ada: the lamp is old"). So the start
is judged on its own: the turn's generate node ends a reply as soon as its text begins so (and
generates it again), and :class:`UsersLineFilter` holds back the first characters of each
streamed reply while they may still begin so, so the user never sees the copy. A reply that
begins with the character's own name ("Tamsin: Aye.") is left alone.
"""

from __future__ import annotations


def users_line_start(user_name: str, persona: str | None) -> str:
    """What a played reply must not begin with (``"Ada:"``); "" when there is no such start to
    watch for: no persona played, no user name, or the user shares the character's name."""
    user = (user_name or "").strip()
    if not persona or not user or user.casefold() == persona.strip().casefold():
        return ""
    return f"{user}:"


def begins_with(text: str, start: str) -> bool | None:
    """Whether ``text`` (leading white space aside) begins with ``start``; ``None`` while it is
    too short to tell."""
    head = text.lstrip()
    if head.startswith(start):
        return True
    return None if start.startswith(head) else False


class UsersLineFilter:
    """The streamed text of each reply (by message id), less a start that is the user's line.

    :meth:`feed` returns what may be shown now: nothing while a reply's start may still be
    ``start``, nothing at all of a reply that begins with it, everything of one that does not.
    :meth:`flush` returns what is held of replies that ended before it could be told (a reply
    that was only "Ad")."""

    def __init__(self, start: str) -> None:
        self.start = start
        self._held: dict[str, str] = {}
        self._shown: dict[str, bool] = {}

    def feed(self, key: str, text: str) -> str:
        if not self.start:
            return text
        shown = self._shown.get(key)
        if shown is not None:
            return text if shown else ""
        out = self.flush() if key not in self._held else ""  # another reply began: the last ended
        held = self._held.pop(key, "") + text
        verdict = begins_with(held, self.start)
        if verdict is None:
            self._held[key] = held
            return out
        self._shown[key] = not verdict
        return out + ("" if verdict else held)

    def flush(self) -> str:
        out = "".join(self._held.values())
        for key in self._held:
            self._shown[key] = True
        self._held.clear()
        return out

    def off(self) -> str:
        """Stop filtering (a turn said out of character); what was held, to show now."""
        out = self.flush()
        self.start = ""
        return out
