"""A command line click cannot read is one line, ``agentmm: error: ...``, and exit 2, as every
other user error is: typer drew a box of four or five lines (usage, a "Try --help" line, a
panel around the message)."""

from __future__ import annotations

from collections.abc import Callable
from subprocess import CompletedProcess

import pytest

from tests.test_cli import agentmm, assert_one_line_error

Run = Callable[..., CompletedProcess[str]]


@pytest.mark.parametrize(
    ("args", "said", "command"),
    [
        (["chat", "--n-ctx", "abc", "-m", "hi"], "Invalid value for '--n-ctx': ", "agentmm chat"),
        (["threads", "show"], "Missing argument", "agentmm threads show"),
        (["threads", "exprot", "x"], "No such command 'exprot'", "agentmm threads"),
        (["bogus"], "No such command 'bogus'", "agentmm"),
        (["--bogus"], "No such option: --bogus", "agentmm"),
        (["chat", "--nope"], "No such option: --nope", "agentmm chat"),
        (["memory", "list", "-n", "0"], "--limit", "agentmm memory list"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: list[str], said: str, command: str, agentmm_here: Run) -> None:
    done = agentmm_here(*args)
    assert_one_line_error(done, said)
    assert done.returncode == 2 and done.stderr.rstrip().endswith(f"(see {command} --help)")


def test_the_entry_point_says_a_usage_error_in_one_line() -> None:
    """In a subprocess, as a shell runs it: the program is named agentmm whatever it ran as."""
    done = agentmm("threads", "show", "--json")
    assert_one_line_error(done, "Missing argument")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.rstrip().endswith("(see agentmm threads show --help)")


def test_no_arguments_still_print_the_help(agentmm_here: Run) -> None:
    done = agentmm_here("threads")
    assert "Usage:" in done.stdout + done.stderr and "agentmm: error" not in done.stderr
