"""Writing a file all at once or not at all: a crash or a full disk never leaves half a file;
and the ways the OS refuses to read one, each told apart as its caller's one-line error."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agentmm.errors import AgentmmError


def atomic_write(path: Path, data: bytes, error: type[AgentmmError] = AgentmmError) -> None:
    """Write ``data`` to a temporary file beside ``path``, sync it, then rename it over ``path``.

    An ``OSError`` (unwritable folder, full disk) becomes ``error`` with one line naming the
    path, so the CLI reports it without a traceback.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise error(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise error(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def folder_problem(path: Path, what: str) -> str | None:
    """Why ``path`` cannot be the folder ``what`` names ("data dir", "cache dir"), made if need
    be and written to, in one line; None when it can."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except (FileExistsError, NotADirectoryError):  # a file where a folder must be, here or above
        blocker = next((p for p in (path, *path.parents) if p.is_file()), path)
        return f"{what} {path} cannot be made: {blocker} is a file, not a folder"
    except OSError as exc:
        return f"{what} {path} is not writable: {exc.strerror or exc}"
    return None


@contextmanager
def os_errors(
    *,
    missing: Callable[[], Exception],
    folder: Callable[[], Exception],
    other: Callable[[str], Exception],
    denied: Callable[[], Exception] | None = None,
) -> Iterator[None]:
    """An ``OSError`` from reading a file as the caller's own error (its type, its words): a
    file that is not there (``missing``), a folder where a file must be (``folder``), one this
    user may not read (``denied``, where a caller says it apart) and any other (``other``, given
    the OS's reason: "Permission denied", "File name too long"). Each reader had its own copy of
    these four ``except`` clauses; the OS's error stays the new one's cause."""
    try:
        yield
    except FileNotFoundError as exc:
        raise missing() from exc
    except IsADirectoryError as exc:
        raise folder() from exc
    except PermissionError as exc:
        raise (denied() if denied is not None else other(str(exc.strerror or exc))) from exc
    except OSError as exc:
        raise other(str(exc.strerror or exc)) from exc
