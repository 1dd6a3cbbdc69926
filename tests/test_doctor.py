"""``agentmm doctor``'s checks, one at a time."""

from __future__ import annotations

from pathlib import Path

from agentmm.doctor import cache_dir_problem


def test_a_cache_dir_is_made_and_a_file_in_its_place_is_a_problem(tmp_path: Path) -> None:
    """An unusable cache dir made every chat about 5x slower without a word (the embedder's export
    and the native probe redone each start); it is now said in the data dir's words."""
    fresh = tmp_path / "new" / "cache"
    assert cache_dir_problem(fresh) is None and fresh.is_dir() and list(fresh.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert cache_dir_problem(blocker) == f"cache dir {blocker} cannot be made: {blocker} is a file, not a folder"
    under = blocker / "cache"
    assert cache_dir_problem(under) == f"cache dir {under} cannot be made: {blocker} is a file, not a folder"
