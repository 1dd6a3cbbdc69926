"""Where a played reply stops being the character's: told from its streamed text.

A small model playing a character runs on into lines that are not the character's: the user's
next line ("Ada: Is it old?", "ada: hi", "**Ada:** hi", "Ada : hi") and lines in the form of
the recalled-memory block it was shown ("- (7 December 2026) Odom: Hello", "*(7 December
2026)", "... happy. (12 January 2027) Oma: How's it going"), the speaker misspelt or made up.
Stop strings match exact text only, so the reply's text is read as it comes: :func:`find`
says where such a line starts (the reply ends there, and is generated again when nothing came
before it), and :class:`ReplyCutFilter` holds back the streamed text from a place where one
may still be starting, so the user never sees it.

The shapes, each on a line's start (leading spaces and ``*`` aside): the user's name (any
case, in ``**`` or not) and a colon, or the name in square brackets as a speaker tag ("[ADA]",
"[Ada]:"); a day in parentheses as the memory block writes it, after a ``- `` too ("(7 December
2026)", or in square brackets: "[5 January 2027] Ada:"). Mid-line only a dated speaker's line is
one ("(7 December 2026) Oma:"). The user's name behind a list dash ("- Ada: likes tea", "- [Ada]")
is left to the character: it may be a list of its own about the user, and smollm2 was not seen
writing the user's turn so (its lists were its own; the user's turns it wrote were "Ada:",
"*User:" and the memory block's dated lines).
A reply that names the user ("Ada, come here", "I'll tell you this, Ada: it's old"), brackets
other words ("[laughs]", "[1]") or says a date in words ("I was born on 7 December 1990.") is
the character's own.

A reply may also open with the character's own name on a line of its own, a script's speaker
tag ("Odo Finch:\\n*He looks up.* Hello.", "**Odo Finch:**\\nHello"): that line is not the
reply's text; :meth:`ReplyCut.opening` says how much of the start it takes (the cut is read
after it), and a reply that is only that has nothing of its own. The name said with words on
its line ("Odo Finch: Hello") is the character's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")  # fmt: skip
_DAY = rf"[(\[]\d{{1,2}} (?:{'|'.join(MONTHS)}) \d{{4}}[)\]]"
_LINE_DAY = re.compile(rf"^[ \t]*(?:[-*][ \t]*)?{_DAY}", re.MULTILINE)
_MID_DAY = re.compile(rf"{_DAY}[ \t]+[^:\n()\[\]]{{1,60}}:")
_DAY_FORMS = tuple(f"{o}{d} {m} 9999{c}" for o, c in ("()", "[]") for d in ("9", "99") for m in MONTHS)
_SPEAKER = 60
# The character's name on a line of its own at the reply's start: in ``**`` or not, a colon.
_OWN_TAG = re.compile(r"[ \t]*\**[ \t]*(?P<name>[^*:\n]+?)[ \t]*\**[ \t]*:[ \t]*\**[ \t]*")
_SPACE = re.compile(r"\s*")
_OWN_TAG_END = re.compile(r"[ \t]*\**[ \t]*(?::[ \t]*\**[ \t]*)?")  # what may follow the name before the line ends

USERS_LINE = "user"
MEMORY_LINE = "memory"


class ReplyCut:
    """The places in a played reply where it stops being the character's; ``user``: the name
    whose line ends it ("" when none is watched for); ``own``: the names the character goes by
    (casefolded, ``users_line.character_names``), whose line of its own may open the reply."""

    def __init__(self, user: str = "", own: Iterable[str] = ()) -> None:
        self.user = user.strip()
        self.own = frozenset(own)
        name = re.escape(self.user)
        line = rf"^[ \t]*\**[ \t]*(?:{name}[ \t]*\**[ \t]*:|\[[ \t]*{name}[ \t]*\])"  # "Ada:", "[Ada]"
        self._user_line = re.compile(line, re.MULTILINE | re.IGNORECASE) if self.user else None

    def opening(self, text: str, ended: bool = False) -> int | None:
        """How many of ``text``'s first characters are the character's own name on a line of its
        own ("Odo Finch:\\n", "**Odo:**\\n") and the white space after it: not the reply's text;
        0 when it does not open so; None while it may still (``ended``: the reply ends with
        ``text``, and a name line there is all of it)."""
        if not self.own:
            return 0
        start = _SPACE.match(text).end()  # type: ignore[union-attr]
        end = text.find("\n", start)
        line = text[start:] if end < 0 else text[start:end]
        if end < 0 and not ended:
            return None if self._own_tag_may_start(line) else 0
        tag = _OWN_TAG.fullmatch(line.rstrip())
        if tag is None or tag["name"].casefold() not in self.own:
            return 0
        return _SPACE.match(text, start + len(line)).end()  # type: ignore[union-attr]

    def _own_tag_may_start(self, line: str) -> bool:
        """Whether ``line`` (the reply's first, unfinished line) may still become the
        character's name on a line of its own."""
        name = line.lstrip(" \t*")
        for own in self.own:
            if len(name) < len(own) and own.startswith(name.casefold()):
                return True
            if name[: len(own)].casefold() == own and _OWN_TAG_END.fullmatch(name[len(own) :].rstrip()):
                return True
        return False

    def find(self, text: str) -> tuple[int, str] | None:
        """Where the first such line starts in ``text`` and what it is (``USERS_LINE`` or
        ``MEMORY_LINE``); ``None`` when there is none. The reply is ``text[:at].rstrip()``."""
        found = [(m.start(), MEMORY_LINE) for m in (_LINE_DAY.search(text), _MID_DAY.search(text)) if m]
        if self._user_line is not None and (m := self._user_line.search(text)):
            found.append((m.start(), USERS_LINE))
        return min(found) if found else None

    def shown(self, text: str) -> int:
        """How much of ``text`` (which :meth:`find` finds nothing in) may be shown now: all of
        it but from where such a line may still be starting and the white space before (a reply
        cut there ends without it), or at its end."""
        line = text.rfind("\n") + 1
        starts = [line] if self._line_may_start(text[line:]) else []
        starts += [i for i in range(line, len(text)) if text[i] in "([" and _mid_may_start(text[i:])]
        at = min(starts, default=len(text))
        while at > 0 and text[at - 1].isspace():
            at -= 1
        return at

    def _line_may_start(self, line: str) -> bool:
        """Whether ``line`` (the text's last, unfinished line) may still become a cut line."""
        head = line.lstrip(" \t")
        if self.user:
            name = head.lstrip("*").lstrip(" \t")
            tagged = name[:1] == "["
            if tagged:  # "[Ada]", the name in brackets as a speaker tag
                name = name[1:].lstrip(" \t")
            size = len(self.user)
            if len(name) < size and self.user.casefold().startswith(name.casefold()):
                return True
            if name[:size].casefold() == self.user.casefold() and not name[size:].strip(" \t" if tagged else " \t*"):
                return True
        dated = head[1:].lstrip(" \t") if head[:1] in ("-", "*") else head
        return not dated or (dated[0] in "([" and _day_may_start(dated))


def _day_may_start(text: str) -> bool:
    """Whether ``text`` is the start of a day as the memory block writes it, "(7 December 2026)"."""
    form = re.sub(r"\d", "9", text)
    return any(day.startswith(form) for day in _DAY_FORMS)


def _mid_may_start(text: str) -> bool:
    """Whether ``text`` (from a "(" to the end, on one line) may still become a dated speaker's line."""
    close = min((i for i in (text.find(")"), text.find("]")) if i >= 0), default=-1)
    if close < 0:
        return _day_may_start(text)
    if not re.fullmatch(_DAY, text[: close + 1]):
        return False
    after = text[close + 1 :]
    if not after:
        return True
    speaker = after.lstrip(" \t")
    return after[0] in " \t" and len(speaker) <= _SPEAKER and not any(c in speaker for c in "()[]:\n")


class ReplyCutFilter:
    """The streamed text of each reply (by message id), less what is not the character's.

    :meth:`feed` returns what may be shown now: the text after the character's own name line
    that may open it (:meth:`ReplyCut.opening`) up to where a cut line may be starting, nothing
    more of a reply once one was found. :meth:`flush` returns what is held of replies that
    ended without one."""

    def __init__(self, cut: ReplyCut | None) -> None:
        self.cut = cut
        self._text: dict[str, str] = {}
        self._shown: dict[str, int] = {}
        self._ended: set[str] = set()

    def feed(self, key: str, text: str) -> str:
        if self.cut is None:
            return text
        if key in self._ended:
            return ""
        out = self.flush() if key not in self._text else ""  # another reply began: the last ended
        whole = self._text.get(key, "") + text
        self._text[key] = whole
        lead = self.cut.opening(whole)
        if lead is None:  # it may still open with the character's name line: nothing to show yet
            return out
        found = self.cut.find(whole[lead:])
        if found is not None:
            self._ended.add(key)
            upto = lead + len(whole[lead : lead + found[0]].rstrip())
        else:
            upto = lead + self.cut.shown(whole[lead:])
        done = max(self._shown.get(key, 0), lead)
        if upto > done:
            self._shown[key] = upto
            out += whole[done:upto]
        if found is not None:
            del self._text[key]
        return out

    def flush(self) -> str:
        out = ""
        for key, whole in self._text.items():
            lead = self.cut.opening(whole, ended=True) if self.cut is not None else 0
            out += whole[max(self._shown.get(key, 0), lead or 0) :]
            self._ended.add(key)
        self._text.clear()
        return out
