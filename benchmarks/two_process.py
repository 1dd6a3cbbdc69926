"""Two processes, one data dir: an interactive ``agentmm chat`` holds the data dir while another
process runs ``agentmm chat -m``, ``agentmm memory add`` or ``agentmm images index`` against it.

The contract (issue 13, item 6; MODELS.md "Chroma: one process per persistent directory"): each
second command either shares the data dir safely (it succeeds and nothing is lost) or is refused
with one line, ``agentmm: error: ... is in use by PID N`` naming the real holder; never a traceback,
never a corrupt store, and the REPL goes on working.

The REPL runs in a pseudo-terminal (pexpect) on the shipped model with long-term memory on and
``search_images`` enabled, exactly as a person uses it. Each try picks, with the seeded random
generator, when the second command starts:

- ``idle``: the REPL waits at its prompt;
- ``mid-reply``: a message was just sent, the second command starts 0-3 s later (prefill, decode,
  a search_images call, or the remember step); every other such message asks for a picture, so
  the REPL opens the image index itself;
- ``startup``: the REPL is restarted (resuming its thread) and the second command starts 0-2 s
  or 0-9 s later (half each): before the REPL opened its stores, or while it loads the model in
  the background. If the second command wins, the REPL must be refused with the one line instead.

Outcomes per try: ``ok`` (exit 0), ``refused-in-use`` (exit non-zero, exactly one line on stderr
naming the PID of the process that held the directory), ``other-error`` (any other failure,
a timeout, a refusal naming the wrong PID or not as one line), ``traceback`` (a Python traceback
or a death by signal), ``corruption`` (the try succeeded but what it wrote is missing or broken
in the final checks). After all tries: the REPL answers a message; then, with every process gone,
``memory stats`` matches ``memory list``, every memory's vector reads back and finds itself as
its nearest neighbour (the corruption MODELS.md measured), the thread database passes SQLite's
integrity check and holds only whole turns, and the image index holds every image an ``ok`` try
indexed, each vector readable and its own nearest neighbour.

With ``--memory off`` the REPL and the chats keep no long-term memory, so no store lock keeps a
second chat out: it shares the data dir, and only a turn on the very thread the REPL is answering
in must be refused (every ``chat -m`` continues the REPL's thread; ``--reply-tokens 400`` makes
the REPL's replies long enough for the two turns to overlap).

Run: ``python benchmarks/two_process.py [--tries 50] [--seed 13] [--memory on|off] [--json PATH]``.
Everything lives in a temporary folder that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pexpect

COMMANDS = ("chat -m", "memory add", "images index")
PHASES = ("idle", "mid-reply", "startup")
OUTCOMES = ("ok", "refused-in-use", "other-error", "traceback", "corruption")
PROMPT_READY, LINE_ACCEPTED = "\x1b[?2004h", "\x1b[?2004l"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
IN_USE = re.compile(r"^agentmm: error: .* is in use by PID (\d+)\b")
REPL_IN_USE = re.compile(r"error: .* is in use by PID (\d+)")
MESSAGES = ("Tell me a long story about a lighthouse keeper and her cat.",
            "Find the picture of the beach from last summer in my photos.")  # fmt: skip
COMMAND_TIMEOUT_S = 240.0
REPL_TIMEOUT_S = 240.0


def plain(text: str) -> str:
    return ANSI.sub("", text)


@dataclass
class Try:
    """One second command against the data dir the REPL holds (or is about to)."""

    number: int
    command: str
    phase: str
    delay_s: float
    argv: list[str] = field(default_factory=list)
    repl_pid: int | None = None
    pid: int | None = None
    rc: int | None = None
    seconds: float = 0.0
    outcome: str = ""
    detail: str = ""
    stderr_tail: str = ""
    repl: str = ""  # what happened to the REPL in this try: up, refused at start, failed
    repl_tail: str = ""  # the end of what the REPL wrote during the try
    wrote: dict[str, Any] = field(default_factory=dict)  # what an ok try wrote, for the final checks


class Repl:
    """``agentmm chat`` in a pseudo-terminal; everything it writes is kept in ``text``."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.child = pexpect.spawn(sys.executable, ["-m", "agentmm.cli", "chat", *args], env=env,
                                   dimensions=(40, 120), encoding="utf-8", timeout=5)  # fmt: skip
        self.child.delaybeforesend = None
        self.text = ""
        self.alive = True

    @property
    def pid(self) -> int:
        return int(self.child.pid)

    def pump(self, timeout: float = 0.1) -> None:
        if not self.alive:
            time.sleep(timeout)
            return
        try:
            self.text += self.child.read_nonblocking(65536, timeout=timeout)
        except pexpect.TIMEOUT:
            pass
        except pexpect.EOF:
            self.alive = False

    def wait(self, marker: str, start: int, timeout: float) -> int | None:
        """Index of ``marker`` after ``start`` once it is written; None at EOF or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.text.find(marker, start)
            if found >= 0:
                return found
            if not self.alive or time.monotonic() > deadline:
                return None
            self.pump(0.2)

    def send_line(self, line: str) -> int:
        start = len(self.text)
        self.child.send(line + "\r")
        return start

    def turn(self, line: str, timeout: float = REPL_TIMEOUT_S) -> str | None:
        """Send a line and wait for the next prompt: what was written in between, or None."""
        start = self.send_line(line)
        accepted = self.wait(LINE_ACCEPTED, start, timeout)
        if accepted is None:
            return None
        ready = self.wait(PROMPT_READY, accepted, timeout)
        return None if ready is None else plain(self.text[accepted:ready])

    def close(self) -> str:
        """Leave with /exit (killed if it will not); the thread id it printed, if any."""
        if self.alive:
            with contextlib.suppress(OSError):
                self.child.send("/exit\r")
            deadline = time.monotonic() + 60
            while self.alive and time.monotonic() < deadline:
                self.pump(0.2)
        if self.alive or self.child.isalive():
            self.child.terminate(force=True)
        self.child.close()
        found = re.findall(r"\[thread (\w+)\]", plain(self.text))
        return found[-1] if found else ""


class Bench:
    def __init__(
        self, root: Path, rng: random.Random, time_limit_s: float, memory: bool = True, reply_tokens: int = 96
    ) -> None:
        self.root = root
        self.memory = memory
        self.reply_tokens = reply_tokens
        self.rng = rng
        self.deadline = time.monotonic() + time_limit_s
        self.data = root / "data"
        self.images = root / "images"
        self.images.mkdir(parents=True)
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGENTMM_")},
            "AGENTMM_DATA_DIR": str(self.data),
            "AGENTMM_CONFIG": str(root / "config.toml"),
            "AGENTMM_PERSONAS_DIR": str(root / "personas"),
            "AGENTMM_TOOLS_DIR": str(root / "tools"),
            "AGENTMM_CACHE_DIR": str(root / "cache"),
            "AGENTMM_CLIP_PRETRAINED": "random",  # no CLIP weights offline: random ones, real code
            "AGENTMM_SEED": "13",
            "AGENTMM_MEMORY": "true" if memory else "false",
            "HF_HUB_OFFLINE": "1",
            "TERM": "xterm-256color",
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "PYTHONFAULTHANDLER": "1",
        }
        self.env.pop("NO_COLOR", None)
        self.repl: Repl | None = None
        self.running: subprocess.Popen[bytes] | None = None  # the second command, while it runs
        self.thread = ""  # the REPL's thread once it holds a turn; a restarted REPL resumes it
        self.repl_turns = 0
        self.repl_events: Counter[str] = Counter()
        self.repl_tracebacks: list[str] = []
        self.image_count = 0
        self._add_image()

    # --- the REPL -------------------------------------------------------------------------

    def start_repl(self) -> Repl:
        args = ["--tool", "search_images", "--max-tokens", str(self.reply_tokens)]
        if self.thread:
            args += ["--thread", self.thread]
        self.repl = Repl(args, self.env)
        return self.repl

    def ready_repl(self) -> Repl:
        """A REPL at its prompt (a new one if the last one is gone)."""
        for _ in range(3):
            repl = self.repl if self.repl is not None and self.repl.alive else self.start_repl()
            if repl.wait(PROMPT_READY, 0, REPL_TIMEOUT_S) is not None:
                return repl
            self.repl_events["did not start"] += 1
            self.stop_repl()
        raise RuntimeError("the REPL does not start")

    def stop_repl(self) -> None:
        if self.repl is None:
            return
        repl, self.repl = self.repl, None
        thread = repl.close()
        self._scan_repl(repl.text)
        if thread and self.repl_turns:
            self.thread = thread

    def _scan_repl(self, text: str) -> None:
        shown = plain(text)
        if "Traceback (most recent call last)" in shown:
            self.repl_tracebacks.append(shown[shown.index("Traceback") :][:2000])

    # --- one try --------------------------------------------------------------------------

    def run_try(self, number: int, command: str, phase: str) -> Try:
        # At startup half the tries start within 2 s, where the two processes race for the lock.
        span = {"idle": 0.5, "mid-reply": 3.0, "startup": self.rng.choice((2.0, 9.0))}[phase]
        delay = span * self.rng.random()
        t = Try(number, command, phase, round(delay, 3))
        t.argv, t.wrote = self._command(command, number)
        if phase == "startup":
            self.stop_repl()
            repl = self.start_repl()
            mark = 0
        else:
            repl = self.ready_repl()
            mark = len(repl.text)
            if phase == "mid-reply":
                message = MESSAGES[number % len(MESSAGES)]
                start = repl.send_line(message)
                if repl.wait(LINE_ACCEPTED, start, REPL_TIMEOUT_S) is None:
                    self.repl_events["lost a line"] += 1
        t.repl_pid = repl.pid
        waited = time.monotonic() + delay
        while time.monotonic() < waited:
            repl.pump(0.05)
        self._run_command(t, repl)
        self._settle_repl(t, repl, mark)
        self._classify(t)
        return t

    def _command(self, command: str, number: int) -> tuple[list[str], dict[str, Any]]:
        if command == "chat -m":
            text = f"Try {number}: what is the capital of France?"
            argv = ["chat", "-m", text, "--max-tokens", "16", "--json"]
            # Memory off, nothing but the thread lock keeps two turns on one thread apart: always aim there.
            if self.thread and (not self.memory or self.rng.random() < 0.5):
                argv += ["--thread", self.thread]  # the very thread the REPL has open
            return argv, {"text": text}
        if command == "memory add":
            text = f"two-process note {number} {uuid.uuid4().hex[:8]}"
            return ["memory", "add", text, "--json"], {"text": text}
        image = self._add_image()
        return ["images", "index", str(self.images), "--json"], {"image": str(image)}

    def _add_image(self) -> Path:
        from PIL import Image

        self.image_count += 1
        path = self.images / f"img-{self.image_count:03d}.png"
        colour = tuple(self.rng.randrange(256) for _ in range(3))
        Image.new("RGB", (48, 48), colour).save(path)
        return path

    def _run_command(self, t: Try, repl: Repl) -> None:
        out, err = self.root / "out.txt", self.root / "err.txt"
        started = time.monotonic()
        with out.open("w") as stdout, err.open("w") as stderr:
            proc = subprocess.Popen([sys.executable, "-m", "agentmm.cli", *t.argv], env=self.env, stdout=stdout,
                                    stderr=stderr, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            t.pid = proc.pid
            self.running = proc
            while proc.poll() is None:
                repl.pump(0.1)
                if time.monotonic() - started > COMMAND_TIMEOUT_S:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    t.detail = f"timed out after {COMMAND_TIMEOUT_S:.0f} s"
        self.running = None
        t.seconds = round(time.monotonic() - started, 2)
        t.rc = proc.returncode
        t.stderr_tail = err.read_text(errors="replace")[-3000:]
        if t.rc == 0:
            try:
                t.wrote["reply"] = json.loads(out.read_text().strip().splitlines()[-1])
            except (ValueError, IndexError):
                t.detail = "exit 0 but no JSON on stdout"

    def _settle_repl(self, t: Try, repl: Repl, mark: int) -> None:
        """Wait for the REPL to be back at its prompt (or gone), and say what happened to it."""
        if t.phase == "startup":
            ready = repl.wait(PROMPT_READY, 0, REPL_TIMEOUT_S)
        elif t.phase == "mid-reply":
            ready = repl.wait(PROMPT_READY, max(repl.text.rfind(LINE_ACCEPTED), mark), REPL_TIMEOUT_S)
        else:  # idle: it stays at the prompt it showed before the try
            repl.pump(0.2)
            ready = 0 if repl.alive else None
        shown = plain(repl.text[mark:])
        t.repl_tail = shown[-1500:]
        if "Traceback (most recent call last)" in shown:
            t.repl = "traceback"
        elif ready is not None:
            t.repl = "up"
            if t.phase == "mid-reply":
                self.repl_turns += 1
            # A resumed REPL shows the thread's last turns before its prompt: only what came after counts.
            fresh = plain(repl.text[ready:]) if t.phase == "startup" else shown
            if REPL_IN_USE.search(fresh):
                t.repl = "up, a tool call was refused (in use)"
        elif not repl.alive:
            found = REPL_IN_USE.search(shown)
            lines = [line for line in shown.splitlines() if line.strip()]
            if found and len(lines) == 1 and int(found.group(1)) == t.pid:
                t.repl = f"refused at start (in use by PID {found.group(1)})"
            else:
                t.repl = "died: " + " | ".join(lines[-3:])[:300]
            self.stop_repl()
        else:
            t.repl = "no prompt within the timeout"
            self.stop_repl()
        self.repl_events[t.repl.split(" (")[0]] += 1

    def _classify(self, t: Try) -> None:
        err = plain(t.stderr_tail)
        lines = [line for line in err.splitlines() if line.strip()]
        if "Traceback (most recent call last)" in err or (t.rc is not None and t.rc < 0 and not t.detail):
            t.outcome = "traceback"
            t.detail = t.detail or (f"killed by signal {-t.rc}" if t.rc and t.rc < 0 else "traceback")
        elif t.detail:
            t.outcome = "other-error"
        elif t.rc == 0:
            t.outcome = "ok"
        else:
            found = IN_USE.match(lines[0]) if lines else None
            holder = t.repl_pid
            if found and len(lines) == 1 and int(found.group(1)) == holder:
                t.outcome = "refused-in-use"
            elif found:
                t.outcome = "other-error"
                t.detail = f"refusal names PID {found.group(1)}, holder was {holder}; {len(lines)} stderr lines"
            else:
                t.outcome = "other-error"
                t.detail = " | ".join(lines[-2:])[:300]

    def out_of_time(self) -> bool:
        return time.monotonic() > self.deadline

    # --- after all tries ------------------------------------------------------------------

    def repl_still_works(self) -> dict[str, Any]:
        repl = self.ready_repl()
        reply = repl.turn("Say hello to me in one short sentence.")
        lines = [line.strip() for line in (reply or "").splitlines() if line.strip()]
        ok = bool(lines) and not any(line.startswith(("error:", "Traceback")) for line in lines)
        if ok:
            self.repl_turns += 1
        self.stop_repl()
        return {"replied": ok, "reply": (reply or "").strip()[-1000:]}

    def cli_json(self, *argv: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "agentmm.cli", *argv, "--json"], env=self.env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"agentmm {' '.join(argv)}: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)


def check_memory(bench: Bench, tries: list[Try]) -> dict[str, Any]:
    stats = bench.cli_json("memory", "stats")
    listed = bench.cli_json("memory", "list", "--limit", "100000")["memories"]
    ids = {row["id"] for row in listed}
    total = sum(n for scope, n in stats["scopes"].items() if scope.split("/")[0] == "local")
    lost = [t for t in tries if t.command == "memory add" and t.outcome == "ok"
            and (t.wrote.get("reply") or {}).get("id") not in ids]  # fmt: skip
    for t in lost:
        t.outcome, t.detail = "corruption", "the memory it added is not in memory list"
    broken = _self_nearest(_memory_collections(bench))
    return {"stats_total": stats["total"], "stats_local": total, "listed": len(listed),
            "stats_match_list": total == len(listed), "lost_adds": len(lost),
            "unreadable_or_unfindable": broken}  # fmt: skip


def _memory_collections(bench: Bench) -> list[Any]:
    from agentmm.memory.chroma_store import ChromaStore

    store = ChromaStore.from_path(bench.data / "memory")
    try:
        return [store._items, store._vectors, store]  # closed by _self_nearest
    except BaseException:
        store.close()
        raise


def _self_nearest(handles: list[Any]) -> list[str]:
    """Ids whose vector cannot be read back or is not among its own nearest neighbours.

    Identical vectors (the same message remembered in many turns) tie at distance 0, so each
    record is looked for among as many neighbours as it has twins, plus ten.
    """
    *collections, owner = handles
    broken: list[str] = []
    try:
        for collection in collections:
            got = collection.get(include=["embeddings"])
            keys = [tuple(round(float(x), 5) for x in vector) for vector in got["embeddings"]]
            twins = Counter(keys)
            for record, vector, key in zip(got["ids"], got["embeddings"], keys, strict=True):
                wanted = min(len(keys), twins[key] + 10)
                found = collection.query(query_embeddings=[list(vector)], n_results=wanted)
                if record not in found["ids"][0]:
                    broken.append(record)
    except Exception as exc:  # Chroma's "Error getting embedding" is the corruption measured in MODELS.md
        broken.append(f"{type(exc).__name__}: {exc}")
    finally:
        owner.close()
    return broken


def check_threads(bench: Bench, tries: list[Try]) -> dict[str, Any]:
    db = bench.data / "threads.sqlite"
    with sqlite3.connect(db) as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    from agentmm.threads import open_checkpointer, thread_ids, thread_values

    saver = open_checkpointer(bench.data)
    bad: dict[str, str] = {}
    texts: dict[str, list[str]] = {}
    try:
        for thread in thread_ids(saver):
            messages = thread_values(saver, thread)[0].get("messages", [])
            texts[thread] = [m.text for m in messages if m.type in ("human", "ai") and not _calls(m)]
            problem = _not_whole(messages)
            if problem:
                bad[thread] = problem
    finally:
        saver.conn.close()
    for t in tries:
        if t.command != "chat -m" or t.outcome != "ok":
            continue
        thread = (t.wrote.get("reply") or {}).get("thread_id", "")
        said = texts.get(thread, [])
        if t.wrote["text"] not in said or said.index(t.wrote["text"]) + 1 >= len(said):
            t.outcome, t.detail = "corruption", f"its turn is not whole in thread {thread}"
    return {"integrity_check": integrity, "threads": len(texts), "threads_not_whole": bad}


def _calls(message: Any) -> bool:
    return bool(getattr(message, "tool_calls", None))


def _not_whole(messages: list[Any]) -> str:
    """Why a thread's messages are not a run of whole turns (user, tool calls and results, reply)."""
    turn: list[str] = []
    for m in [*messages, None]:
        if m is None or m.type == "human":
            if turn and (turn[-1] != "ai" or any(r not in ("ai+calls", "tool") for r in turn[1:-1])):
                return f"a turn of {turn}"
            turn = ["human"]
        elif not turn:
            return f"starts with {m.type}"
        else:
            turn.append("ai+calls" if _calls(m) else m.type)
    return ""


def check_images(bench: Bench, tries: list[Try]) -> dict[str, Any]:
    from agentmm.settings import load_settings
    from agentmm.tools.clip_search import close_default_image_indexes, default_image_index

    previous = dict(os.environ)
    os.environ.update({k: v for k, v in bench.env.items() if k.startswith(("AGENTMM_", "HF_"))})
    try:
        index = default_image_index(load_settings())
        got = index.collection.get(include=["metadatas"])
        indexed = {str((meta or {}).get("path", "")) for meta in got["metadatas"]} | set(got["ids"])
        count = len(got["ids"])
        broken = _self_nearest([index.collection, _Closer(close_default_image_indexes)])
    finally:
        os.environ.clear()
        os.environ.update(previous)
    for t in tries:
        if t.command == "images index" and t.outcome == "ok" and t.wrote["image"] not in indexed:
            t.outcome, t.detail = "corruption", f"{Path(t.wrote['image']).name} is not in the index"
    final = bench.cli_json("images", "index", str(bench.images))
    files = len(list(bench.images.glob("*.png")))
    return {"indexed_before_final_run": count, "unreadable_or_unfindable": broken, "final_run": final,
            "files": files, "consistent": not broken and not final["failed"]}  # fmt: skip


class _Closer:
    def __init__(self, close: Any) -> None:
        self.close = close


def tables(tries: list[Try]) -> str:
    width = max(len(o) for o in OUTCOMES) + 2
    head = f"{'command':<14}" + "".join(f"{o:>{width}}" for o in OUTCOMES) + f"{'tries':>8}"
    lines = [head]
    for command in COMMANDS:
        counts = Counter(t.outcome for t in tries if t.command == command)
        lines.append(f"{command:<14}" + "".join(f"{counts[o]:>{width}}" for o in OUTCOMES)
                     + f"{sum(counts.values()):>8}")  # fmt: skip
    lines += ["", f"{'command':<14}{'phase':<11}" + "".join(f"{o:>{width}}" for o in OUTCOMES)]
    for command in COMMANDS:
        for phase in PHASES:
            counts = Counter(t.outcome for t in tries if t.command == command and t.phase == phase)
            lines.append(f"{command:<14}{phase:<11}" + "".join(f"{counts[o]:>{width}}" for o in OUTCOMES))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=50, help="tries per command")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--json", type=Path, default=Path(tempfile.gettempdir()) / "agentmm-two-process.json")
    parser.add_argument("--time-limit", type=float, default=5400.0, help="stop starting tries after this many s")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument("--memory", choices=("on", "off"), default="on",
                        help="long-term memory (off: no store lock to keep a second chat out)")  # fmt: skip
    parser.add_argument("--reply-tokens", type=int, default=96, help="the REPL's longest reply (longer: more overlap)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="agentmm-two-process-")).resolve()
    bench = Bench(root, rng, args.time_limit, memory=args.memory == "on", reply_tokens=args.reply_tokens)
    plan = [(command, rng.choice(PHASES)) for command in COMMANDS for _ in range(args.tries)]
    rng.shuffle(plan)
    tries: list[Try] = []
    report: dict[str, Any] = {}
    started = time.monotonic()
    try:
        if not bench.memory:  # a thread for the REPL from the start, for the chats to aim at
            bench.ready_repl().turn("Hello!")
            bench.repl_turns += 1
            bench.stop_repl()
        for number, (command, phase) in enumerate(plan, 1):
            if bench.out_of_time():
                break
            t = bench.run_try(number, command, phase)
            tries.append(t)
            print(f"{number:4d} {command:<13} {phase:<10} delay {t.delay_s:5.2f}s  {t.outcome:<15} "
                  f"{t.seconds:6.1f}s  repl: {t.repl}  {t.detail}", flush=True)  # fmt: skip
        report["repl_after_tries"] = bench.repl_still_works()
        report["memory"] = check_memory(bench, tries)
        report["threads"] = check_threads(bench, tries)
        report["images"] = check_images(bench, tries)
    finally:
        if bench.running is not None and bench.running.poll() is None:
            os.killpg(bench.running.pid, signal.SIGKILL)
            bench.running.wait()
        if bench.repl is not None:
            bench.repl.child.terminate(force=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    complete = len(tries) == len(plan)
    summary = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": args.seed, "tries_per_command": args.tries, "memory": args.memory, "complete": complete,
        "reply_tokens": args.reply_tokens,
        "wall_s": round(time.monotonic() - started, 1),
        "outcomes": {c: dict(Counter(t.outcome for t in tries if t.command == c)) for c in COMMANDS},
        "by_phase": {f"{c} / {p}": dict(Counter(t.outcome for t in tries if t.command == c and t.phase == p))
                     for c in COMMANDS for p in PHASES},
        "repl_events": dict(bench.repl_events), "repl_tracebacks": bench.repl_tracebacks,
        **report, "tries": [asdict(t) for t in tries],
    }  # fmt: skip
    args.json.write_text(json.dumps(summary, indent=1))
    print()
    print(tables(tries))
    print(f"\nREPL: {dict(bench.repl_events)}; tracebacks in the REPL: {len(bench.repl_tracebacks)}")
    for key in ("repl_after_tries", "memory", "threads", "images"):
        print(f"{key}: {json.dumps(report.get(key), default=str)[:600]}")
    print(f"{'complete' if complete else 'STOPPED AT THE TIME LIMIT'}; JSON: {args.json}")
    bad = sum(t.outcome in ("other-error", "traceback", "corruption") for t in tries) + len(bench.repl_tracebacks)
    return 1 if bad or not complete else 0


if __name__ == "__main__":
    sys.exit(main())
