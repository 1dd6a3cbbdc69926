"""Tab completion for the line editor: slash commands, then each command's argument (persona
names, file paths, thread ids, model names). Sources are callables, read when completing, so
a persona imported or a thread started during the session is offered at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from agentmm.repl.commands import BY_NAME, COMMANDS


def make_completer(sources: dict[str, Callable[[], Iterable[str]]]) -> Any:
    """A prompt_toolkit completer; ``sources`` maps "persona", "thread", "model" to name lists."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    paths = PathCompleter(expanduser=True)

    class SlashCompleter(Completer):
        def get_completions(self, document: Document, complete_event: Any) -> Iterable[Completion]:
            text = document.text_before_cursor
            if not text.startswith("/") or "\n" in text:
                return
            word, space, arg = text[1:].partition(" ")
            if not space:
                for command in COMMANDS:
                    if command.name.startswith(word.lower()):
                        yield Completion(f"/{command.name}", start_position=-len(text),
                                         display_meta=command.help[:50])  # fmt: skip
                return
            command = BY_NAME.get(word.lower())
            if command is None:
                return
            if command.completes == "path":
                yield from paths.get_completions(Document(arg, len(arg)), complete_event)
            elif command.completes in sources:
                needle = arg.casefold()
                for name in sources[command.completes]():
                    if name.casefold().startswith(needle):
                        yield Completion(name, start_position=-len(arg))

    return SlashCompleter()
