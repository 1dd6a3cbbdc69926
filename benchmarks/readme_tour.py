"""Regenerate README's "A short tour" from a real session, so the tour shows what the code prints.

Runs, in a fresh data dir and on the configured (by default the shipped) model:
1. ``agentmm chat`` in a real terminal (a detached tmux session, ``--width`` columns), types one
   message and ``/exit``, and captures the screen (``tmux capture-pane``: text only, colours lost);
2. ``agentmm chat -m "What is my name?" --thread ID`` on the thread the first step saved;
3. ``agentmm chat -m "Tell me a joke" --json | jq -c .trace.prompt_parts``.
Each command's output goes into README.md between ``<!-- tour -->`` and ``<!-- /tour -->`` as it
was printed (``--dry-run`` prints the block instead). Needs tmux and jq.

Run: ``python benchmarks/readme_tour.py [--width 100] [--dry-run]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- tour -->", "<!-- /tour -->"
FIRST_MESSAGE = "Hi! I'm Mira."
PROMPT = "you>"


class Tmux:
    """One detached tmux session running a command; its screen read as text."""

    def __init__(self, command: list[str], env: dict[str, str], width: int, height: int) -> None:
        self.name = f"agentmm-tour-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={_quote(v)}" for k, v in env.items())
        shell = f"env {exports} {' '.join(_quote(c) for c in command)}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), shell],
                       check=True)  # fmt: skip
        subprocess.run(["tmux", "set-option", "-t", self.name, "remain-on-exit", "on"], check=True)

    def screen(self) -> str:
        # -S -: from the start of the scrollback, so a line the exit scrolled off is kept.
        out = subprocess.run(["tmux", "capture-pane", "-p", "-S", "-", "-t", self.name], capture_output=True,
                             text=True)  # fmt: skip
        return out.stdout

    def type(self, text: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, "-l", text], check=True)
        subprocess.run(["tmux", "send-keys", "-t", self.name, "Enter"], check=True)

    def wait_for(self, done: object, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if done(screen):  # type: ignore[operator]
                return screen
            time.sleep(0.5)
        raise TimeoutError(f"the chat did not get there in {timeout:.0f} s; the screen:\n{self.screen()}")

    def dead(self) -> bool:
        out = subprocess.run(["tmux", "display-message", "-p", "-t", self.name, "#{pane_dead}"],
                             capture_output=True, text=True)  # fmt: skip
        return out.stdout.strip() == "1"

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _prompts(screen: str) -> int:
    return sum(1 for line in screen.splitlines() if line.startswith(PROMPT))


def interactive(agentmm: str, env: dict[str, str], width: int) -> tuple[str, str]:
    """The screen of a one-message chat after ``/exit``, and the thread it saved."""
    tmux = Tmux([agentmm, "chat"], env, width, 40)
    try:
        tmux.wait_for(lambda s: _prompts(s) >= 1)
        tmux.type(FIRST_MESSAGE)
        tmux.wait_for(lambda s: _prompts(s) >= 2)  # the reply is done when the prompt is back
        tmux.type("/exit")
        deadline = time.monotonic() + 60
        while not tmux.dead() and time.monotonic() < deadline:
            time.sleep(0.3)
        screen = tmux.screen()
    finally:
        tmux.close()
    found = re.search(r"\[thread ([0-9a-f]+)\]", screen)
    if found is None:
        raise RuntimeError(f"no thread id on the screen:\n{screen}")
    lines = [line.rstrip() for line in screen.splitlines() if not line.startswith("Pane is dead")]
    lines = lines[: max(i for i, line in enumerate(lines) if line) + 1]
    return "\n".join(_squeeze_blank_runs(lines)), found.group(1)


def _squeeze_blank_runs(lines: list[str]) -> list[str]:
    """The screen's empty rows (before the output, and between it and where the status bar
    was) as none and one."""
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return out


def shell(command: str, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.rstrip()


def record(width: int) -> str:
    agentmm = shutil.which("agentmm", path=str(Path(sys.executable).parent)) or "agentmm"
    with tempfile.TemporaryDirectory(prefix="agentmm-tour-") as data_dir:
        env = {"AGENTMM_DATA_DIR": data_dir}
        screen, thread = interactive(agentmm, env, width)
        full_env = {**os.environ, **env, "COLUMNS": str(width)}
        second = f'agentmm chat -m "What is my name?" --thread {thread}'
        third = 'agentmm chat -m "Tell me a joke" --json | jq -c .trace.prompt_parts'
        second_out = shell(second.replace("agentmm", _quote(agentmm), 1), full_env)
        third_out = shell(third.replace("agentmm", _quote(agentmm), 1), full_env)
    return "\n".join(["```console", "$ agentmm chat", screen, "", f"$ {second}", second_out, "",
                      f"$ {third}", third_out, "```"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--dry-run", action="store_true", help="print the block, leave README.md alone")
    args = parser.parse_args()
    for tool in ("tmux", "jq"):
        if shutil.which(tool) is None:
            sys.exit(f"readme_tour needs {tool}: apt-get install {tool}")
    block = record(args.width)
    if args.dry_run:
        print(block)
        return
    text = README.read_text()
    if START not in text or END not in text:
        sys.exit(f"README.md has no {START} … {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    print(block)


if __name__ == "__main__":
    main()
