"""Word wrap for a reply as it streams onto a terminal.

Written as it came, a reply was broken wherever the terminal's edge fell, mid-word ("charac" at
the end of one row, "ter" at the start of the next). Here each word is held until it ends and
then goes whole onto the row it fits on, or onto the next one; only a word longer than a whole
row is broken, at the edge, by the terminal's own wrap (no line break is written inside it: a
URL copied or clicked stays whole). A 2-column character (CJK, most emoji) counts as two columns
and is a word of its own, as Chinese and Japanese have no spaces to break at (a closing mark, 。
or 」, stays with the character before it: a row never begins with one); Korean, written with
spaces, wraps as words.

The wrap also counts the rows the reply took, exactly as the terminal shows them (a 2-column
character never straddles the edge), which is what the Markdown redraw must erase.
"""

from __future__ import annotations

from rich.cells import cell_len

TAB = 8


class WordWrap:
    """The breaks one streamed text needs on a terminal ``width`` columns wide, given per call
    (a resize takes effect from the next piece). Text passed in comes out in the same order;
    only a blank where a row is broken becomes the line break, and blanks at the end are not
    written (they show nothing)."""

    def __init__(self) -> None:
        self.column = 0  # cells written on the current row
        self.rows = 1  # rows the text has taken, the current one included
        self._word = ""  # a word not ended yet: held, to go whole onto one row
        self._blanks = ""  # blanks since the last word on this row: written if a word follows on it
        self._long = False  # the word is longer than a row: written as it comes, broken at the edge
        self._unit = False  # the word is one CJK character (and closing marks): the next one is not part of it
        self._broken = False  # the current row was begun here, not by a line break of the text

    def feed(self, text: str, width: int) -> str:
        """What of ``text`` (and what was held) can be written now, with its line breaks."""
        width = max(width, 2)  # room for one 2-column character
        out: list[str] = []
        for ch in text:
            if ch == "\n":
                out.append(self._put_word(width))
                out.append("\n")
                self._new_row(broken=False)
            elif ch in " \t":
                out.append(self._put_word(width))
                self._blanks += ch
            elif ch in CLOSING and self._word and (self._unit or cell_len(ch) == 2):
                out.append(self._grow(ch, width))  # kinsoku: never first on a row, kept with what it closes
                self._unit = self._unit or not self._long  # a CJK mark ends the word: what follows may break
            elif cell_len(ch) == 2 and not _in_words(ch):  # an ideograph, kana, an emoji: a unit of its own
                out.append(self._put_word(width))
                self._word, self._unit = ch, True  # held until the next character: it may be a closing mark
            elif self._long:
                out.append(self._hard(ch, width))
            else:
                if self._unit:
                    out.append(self._put_word(width))
                out.append(self._grow(ch, width))
        return "".join(out)

    def _grow(self, ch: str, width: int) -> str:
        """Add ``ch`` to the word held; one that fits no row is from here on broken at the edge."""
        self._word += ch
        if cell_len(self._word) <= width:
            return ""
        word, self._word, self._long, self._unit = self._word, "", True, False
        return (self._break_row() if self.column else "") + "".join(self._hard(c, width) for c in word)

    def flush(self, width: int) -> str:
        """The end of the text: the word held back."""
        return self._put_word(max(width, 2))

    def end_row(self, width: int, *, keep_word: bool = False) -> str:
        """The held word, then a line break unless the row is empty: something else is written
        next (a notice, a question), and starts on a row of its own. ``keep_word``: the word is
        not over yet (a notice of a key pressed while it streams) and stays held, to be written
        whole after the notice (flushed, it was cut in two around it)."""
        text = "" if keep_word else self.flush(width)
        if self.column:
            text += self._break_row()
        self._blanks = ""
        return text

    def at_row_start(self) -> None:
        """Someone else moved the cursor to the start of a new row (a shell, after ``fg``)."""
        self.rows += 1
        self.column = 0
        self._blanks = ""
        self._broken = True

    def _put_word(self, width: int) -> str:
        word, self._word, self._unit = self._word, "", False
        if self._long:
            self._long = False
            return ""
        if not word:
            return ""
        size = cell_len(word)
        if self.column == 0 and self._broken:  # blanks where a row was broken: the break replaced them
            self._blanks = ""
        start = _after_blanks(self.column, self._blanks)
        if start + size <= width:
            text, self.column = self._blanks + word, start + size
        elif self.column == 0:  # blanks that open a row, too many for the word: the word first
            text, self.column = word, size
        else:
            text = self._break_row() + word
            self.column = size
        self._blanks = ""
        return text

    def _hard(self, ch: str, width: int) -> str:
        """One character of a word too long for a row, written at once. Where this row has no
        room for it the terminal's own wrap takes it to the next one: a line break written here
        would cut the word in two for a copy from the terminal or a click on a URL (the terminal
        joins rows it wrapped itself), and the rows it takes are counted all the same."""
        size = cell_len(ch)
        if self.column + size > width:
            self._new_row(broken=True)
        self.column += size
        return ch

    def _break_row(self) -> str:
        self._new_row(broken=True)
        return "\n"

    def _new_row(self, *, broken: bool) -> None:
        self.rows += 1
        self.column = 0
        self._blanks = ""
        self._broken = broken


# Marks that close (a sentence, a clause, a quote, brackets): a row never begins with one (the
# simple rule of Japanese and Chinese line breaking, kinsoku). The ASCII ones only after a CJK
# character: after a Latin letter they are the word's own (``https:``).
CLOSING = frozenset(
    "。、，．！？：；」』）］｝〕〉》】〙〗〟’”・ー々"  # punctuation, the prolonged sound and iteration marks
    "ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ"  # small kana
    ",.!?;:)]}"
)
# 2-column scripts written with spaces between words: Hangul syllables and jamo.
_HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7A3), (0xD7B0, 0xD7FF))


def _in_words(ch: str) -> bool:
    """Whether a 2-column ``ch`` is a letter of words separated by spaces (Korean), wrapped as a
    word; ideographs and kana are written without spaces and a row may end after any of them."""
    return any(low <= ord(ch) <= high for low, high in _HANGUL)


def _after_blanks(column: int, blanks: str) -> int:
    """The column after writing ``blanks`` from ``column`` (a tab goes to the next tab stop)."""
    for ch in blanks:
        column = (column // TAB + 1) * TAB if ch == "\t" else column + 1
    return column
