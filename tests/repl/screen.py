"""A small terminal emulator for tests: what a person sees after the chat wrote its bytes.

It does what xterm does with the part of VT100 the chat and prompt_toolkit write: automatic
wrap at the right edge (the cursor waits on the last column until the next character), a
2-column character that does not fit in the last column goes whole to the next row, a line
feed is also a carriage return (a terminal's ONLCR), cursor moves, erase in line and in display.
Every row is kept (the scrollback included); the cursor never moves above the top ``height``
rows. Colours and modes are read and ignored.
"""

from __future__ import annotations

import re

from rich.cells import cell_len

_SEQUENCE = re.compile(r"\x1b\[([0-?]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[^\[\]]")


class Screen:
    def __init__(self, width: int, height: int = 24) -> None:
        self.width, self.height = width, height
        self.rows: list[list[str]] = [[]]
        self.row = self.col = 0
        self.pending = False  # the last column was written: the next character wraps first

    def feed(self, data: str) -> Screen:
        at = 0
        while at < len(data):
            found = _SEQUENCE.match(data, at) if data[at] == "\x1b" else None
            if found:
                if found.group(2):
                    self._csi(found.group(1), found.group(2))
                at = found.end()
                continue
            self._char(data[at])
            at += 1
        return self

    @property
    def lines(self) -> list[str]:
        """Each row as text (a 2-column character once, blanks at the end taken off), the empty
        rows at the bottom left out."""
        lines = ["".join(cell for cell in row if cell is not None).rstrip() for row in self.rows]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    # ------------------------------------------------------------------ internals

    def _top(self) -> int:
        return max(0, len(self.rows) - self.height)

    def _goto_row(self, row: int) -> None:
        self.row = max(self._top(), row)
        while len(self.rows) <= self.row:
            self.rows.append([])
        self.pending = False

    def _put(self, col: int, cell: str | None) -> None:
        line = self.rows[self.row]
        while len(line) <= col:
            line.append(" ")
        line[col] = cell  # type: ignore[call-overload]

    def _char(self, ch: str) -> None:
        if ch == "\r":
            self.col, self.pending = 0, False
        elif ch == "\n":
            self._goto_row(self.row + 1)
            self.col = 0
        elif ch == "\b":
            self.col, self.pending = max(0, self.col - 1), False
        elif ch == "\t":
            self.col, self.pending = min(self.width - 1, (self.col // 8 + 1) * 8), False
        elif ch < " " or ch == "\x7f":
            return
        else:
            size = cell_len(ch)
            if size == 0:
                return
            if self.pending or self.col + size > self.width:
                self._goto_row(self.row + 1)
                self.col = 0
            self._put(self.col, ch)
            if size == 2:
                self._put(self.col + 1, None)
            self.col += size
            if self.col >= self.width:
                self.col, self.pending = self.width - 1, True

    def _csi(self, params: str, final: str) -> None:
        private = params[:1] in ("?", "<", "=", ">")
        numbers = [] if private or not params else [int(p) if p.isdigit() else 0 for p in params.split(";")]
        n = max(numbers[0] if numbers else 1, 1)
        if final == "A":
            self._goto_row(self.row - n)
        elif final == "B":
            self._goto_row(self.row + n)
        elif final == "C":
            self.col, self.pending = min(self.width - 1, self.col + n), False
        elif final == "D":
            self.col, self.pending = max(0, self.col - n), False
        elif final == "G":
            self.col, self.pending = min(self.width - 1, n - 1), False
        elif final == "H":
            self._goto_row(self._top() + n - 1)
            self.col = min(self.width - 1, max(numbers[1] if len(numbers) > 1 else 1, 1) - 1)
        elif final == "K":
            mode = numbers[0] if numbers else 0
            line = self.rows[self.row]
            if mode == 0:
                del line[self.col :]
            elif mode == 1:
                line[: self.col + 1] = [" "] * min(len(line), self.col + 1)
            else:
                line.clear()
        elif final == "J":
            mode = numbers[0] if numbers else 0
            if mode == 0:
                del self.rows[self.row][self.col :]
                del self.rows[self.row + 1 :]
            elif mode == 2:
                for line in self.rows[self._top() :]:
                    line.clear()
