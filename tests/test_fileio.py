"""``fileio.os_errors``: the one place that tells apart the ways the OS refuses to read a file;
each reader (threads import, a persona file, a GGUF header, a media file) keeps its own words."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agentmm.errors import AgentmmError, ModelNotFoundError, NotAGGUFError
from agentmm.fileio import os_errors
from agentmm.gguf import read_gguf
from agentmm.personas.errors import PersonaError, PersonaNotFoundError
from agentmm.personas.files import read_limited
from agentmm.threads import ThreadImportError, read_saved_thread
from agentmm.tools import media
from agentmm.tools.errors import MediaNotFoundError, MediaUnreadableError, NotAFileError


def read_media(path: Path) -> None:
    with media._reading(path), path.open("rb"):
        pass


# Each reader, and its (error type, words) for a missing file, a folder, and a path through a file.
READERS: list[tuple[Callable[[Path], Any], list[tuple[type[Exception], str]]]] = [
    (read_saved_thread, [(ThreadImportError, "{p}: no such file"),
                         (ThreadImportError, "{p} is a folder, not a /save FILE.json"),
                         (ThreadImportError, "{p}: cannot read (Not a directory)")]),
    (read_limited, [(PersonaNotFoundError, "{p}: no such file"),
                    (PersonaError, "{p}: is a directory, not a persona file"),
                    (PersonaError, "{p}: cannot read (Not a directory)")]),
    (read_gguf, [(ModelNotFoundError, "model file not found: {p}"),
                 (NotAGGUFError, "{p} is a directory, not a GGUF model file"),
                 (ModelNotFoundError, "cannot read model file {p}: Not a directory")]),
    (read_media, [(MediaNotFoundError, "{p} disappeared while it was being read"),
                  (NotAFileError, "{p} is a directory, not a file"),
                  (MediaUnreadableError, "cannot read {p}: Not a directory")]),
]  # fmt: skip


@pytest.mark.parametrize(("read", "expected"), READERS, ids=["threads", "personas", "gguf", "media"])
def test_each_reader_says_its_own_words_for_each_refusal(
    tmp_path: Path, read: Callable[[Path], Any], expected: list[tuple[type[Exception], str]]
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    paths = [tmp_path / "missing", tmp_path / "folder", tmp_path / "file" / "inside"]
    for path, (kind, words) in zip(paths, expected, strict=True):
        with pytest.raises(kind) as caught:
            read(path)
        assert str(caught.value) == words.format(p=path)
        assert isinstance(caught.value.__cause__, OSError)  # the OS's own error kept as the cause


def test_os_errors_maps_each_kind_and_lets_other_errors_through() -> None:
    def refusing(exc: BaseException) -> str:
        try:
            with os_errors(missing=lambda: AgentmmError("missing"), folder=lambda: AgentmmError("folder"),
                           other=lambda why: AgentmmError(f"other: {why}"),
                           denied=lambda: AgentmmError("denied")):  # fmt: skip
                raise exc
        except AgentmmError as mapped:
            return str(mapped)
        return "not reached"

    assert refusing(FileNotFoundError(2, "No such file or directory")) == "missing"
    assert refusing(IsADirectoryError(21, "Is a directory")) == "folder"
    assert refusing(PermissionError(13, "Permission denied")) == "denied"
    assert refusing(OSError(36, "File name too long")) == "other: File name too long"
    assert refusing(OSError("no errno")) == "other: no errno"
    with pytest.raises(UnicodeDecodeError):
        refusing(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"))
    plain = os_errors(missing=lambda: AgentmmError("m"), folder=lambda: AgentmmError("f"),
                      other=lambda why: AgentmmError(f"other: {why}"))  # fmt: skip
    with pytest.raises(AgentmmError, match="other: Permission denied"), plain:  # no denied: told as any other
        raise PermissionError(13, "Permission denied")
