"""V3 lorebook decorators: ``@@name ...`` lines at the start of an entry's content.

SillyTavern reads them in ``parseDecorators`` (public/scripts/world-info.js) and acts on two,
its ``KNOWN_DECORATORS``: ``@@activate`` (the entry fires whatever its keys) and
``@@dont_activate`` (it never fires by its keys). The decorator lines are taken off the text
that goes into the prompt, known or not; the entry's own ``content`` keeps them, so an export
writes the card back as it came. One difference: where every line is a decorator, SillyTavern
keeps the whole content as the text, here the text is empty, so no ``@@`` line reaches the model.
"""

from __future__ import annotations

from dataclasses import dataclass

KNOWN_DECORATORS = ("@@activate", "@@dont_activate")


@dataclass(frozen=True, slots=True)
class Decorated:
    decorators: tuple[str, ...]
    """The known decorators, by name (``@@activate``)."""
    unknown: tuple[str, ...]
    """The names of the other decorator lines (left out of the text, not acted on)."""
    text: str
    """The content without its decorator lines."""


def parse_decorators(content: str) -> Decorated:
    """The decorator lines at the start of ``content`` and the text after them.

    As SillyTavern: only a content that starts with ``@@`` has any; they run up to the first
    line that does not start with ``@@``; ``@@@name`` is a fallback, read as ``@@name`` only
    right after a decorator that was not known (else it is passed over).
    """
    if not content.startswith("@@"):
        return Decorated((), (), content)
    lines = content.split("\n")
    known: list[str] = []
    unknown: list[str] = []
    fallback = False
    body = len(lines)
    for index, line in enumerate(lines):
        if not line.startswith("@@"):
            body = index
            break
        if line.startswith("@@@") and not fallback:
            continue
        words = (line[1:] if line.startswith("@@@") else line).split(maxsplit=1)
        name = words[0] if words else "@@"
        if name in KNOWN_DECORATORS:
            known.append(name)
            fallback = False
        else:
            unknown.append(name)
            fallback = True
    return Decorated(tuple(known), tuple(unknown), "\n".join(lines[body:]))
