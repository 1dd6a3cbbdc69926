"""kill -9 soak: real ``agentmm`` commands killed with SIGKILL at a random moment of a chosen phase, then checked.

Phases: a chat turn's prefill, decode, remember (writing long-term memory) and rolling-summary fold,
``memory import``, ``images index`` and ``personas import``. Each command is the installed console
script in its own process, with its own data dir (``AGENTMM_DATA_DIR``), config, personas folder and
thread. The moment of each kill is chosen from the process's own trace: a small ``sitecustomize``
(put on the child's ``PYTHONPATH``, changing nothing but stderr) writes a stamped line as each phase
starts and ends (``Llama.generate`` and its first token, ``fold_into_summary``, the ``Remember`` node,
``import_jsonl`` and its store writes, ``ImageIndex.index_dir``, ``PersonaRegistry.install`` and
``atomic_write``). Un-killed calibration runs first measure each phase's window; a killed run waits
for its phase to start, then kills at a uniformly random offset inside the measured window. The
phase a kill landed in is read from the last stamps the dead process wrote (they are written
synchronously), so a kill aimed at decode that came after the reply ended is counted where it
landed, not where it was aimed.

After each kill: ``threads show ID --json`` holds no half-written turn and every earlier turn;
``memory stats --json`` matches ``memory list --json``, neither is refused by a stale "in use by
PID" lock; SQLite integrity of the thread and Chroma databases; every memory item has its vectors
and a listed namespace; the memory of the thread matches the turns it holds; then ``chat -m ...
--thread ID --json`` on the same thread works and adds exactly one complete turn. Imports and
indexing are re-run to completion and must then hold everything (nothing lost).

Run: ``python benchmarks/soak.py [--runs 105] [--seed 1] [--json /tmp/soak.json] [--max-minutes 150]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PHASES = ("prefill", "decode", "remember", "fold", "memory_import", "images_index", "personas_import")
CHAT_PHASES = ("prefill", "decode", "remember", "fold")
COMMAND_TIMEOUT_S = 600
STALE_LOCK = "in use by"

# Stamps each phase's start and end on stderr; imported by the child through PYTHONPATH. It only
# wraps functions (same arguments, same results, signatures kept for LangGraph's injection).
PROBE = r"""
import functools, importlib.abc, os, sys, time

def _mark(name):
    os.write(2, ("@@soak %s %.6f\n" % (name, time.monotonic())).encode())

def _around(owner, attr, label, when=None):
    original = getattr(owner, attr)
    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        on = when is None or when(*args, **kwargs)
        if on:
            _mark(label + "_start")
        try:
            return original(*args, **kwargs)
        finally:
            if on:
                _mark(label + "_end")
    setattr(owner, attr, wrapper)

def _llama(module):
    original = module.Llama.generate
    @functools.wraps(original)
    def generate(self, *args, **kwargs):
        _mark("gen_start")
        first = True
        try:
            for token in original(self, *args, **kwargs):
                if first:
                    _mark("first_token")
                    first = False
                yield token
        finally:
            _mark("gen_end")
    module.Llama.generate = generate

PATCHES = {
    "llama_cpp.llama": _llama,
    "agentmm.summary": lambda m: _around(m, "fold_into_summary", "fold"),
    "agentmm.graphs.memory": lambda m: _around(m.Remember, "__call__", "remember"),
    "agentmm.memory.manage": lambda m: _around(m, "import_jsonl", "import"),
    "agentmm.memory.chroma_store": lambda m: (
        _around(m.ChromaStore, "_execute", "store_write", when=lambda self, plan, *a, **k: bool(plan.puts)),
        _around(m.ChromaStore, "restore_timestamps", "restore"),
    ),
    "agentmm.tools.clip_search": lambda m: (
        _around(m.ImageIndex, "index_dir", "index"),
        _around(m.ImageIndex, "_embed_and_write", "index_batch"),
    ),
    "agentmm.personas.registry": lambda m: _around(m.PersonaRegistry, "install", "install"),
    "agentmm.fileio": lambda m: _around(m, "atomic_write", "atomic_write"),
}

class _Loader(importlib.abc.Loader):
    def __init__(self, inner, patch):
        self.inner, self.patch = inner, patch
    def create_module(self, spec):
        return self.inner.create_module(spec)
    def exec_module(self, module):
        self.inner.exec_module(module)
        self.patch(module)

class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        patch = PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _Loader(spec.loader, patch)
                return spec
        return None

sys.meta_path.insert(0, _Finder())
"""

# fmt: off
WORDS = [
    "garden", "river", "morning", "letter", "window", "train", "bread", "violin", "harbour",
    "winter", "lantern", "cousin", "market", "bridge", "notebook", "orchard", "kettle", "painting",
    "ferry", "mountain", "festival", "recipe", "bicycle", "library", "candle", "meadow", "compass",
    "ribbon", "teacup", "meteor", "island", "museum", "workshop", "balcony", "accordion", "lighthouse",
]
# fmt: on
NAMES = ["Ana", "Bruno", "Chiara", "Dmitri", "Esme", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Tunis", "Porto", "Quebec", "Riga", "Sofia", "Turin"]


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One ``agentmm`` process: its stdout, stderr and the probe's stamps, as they arrive."""

    argv: list[str]
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ended: float | None = None
    rc: int | None = None
    out: bytearray = field(default_factory=bytearray)
    err: list[str] = field(default_factory=list)
    events: list[tuple[str, float]] = field(default_factory=list)
    first_stdout: float | None = None
    killed_at: float | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _readers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Proc:
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._readers = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        return self

    def _read_out(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        while chunk := self.popen.stdout.read1(65536):
            with self._cond:
                if self.first_stdout is None:
                    self.first_stdout = time.monotonic()
                self.out += chunk
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.popen is not None and self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.decode("utf-8", "replace")
            with self._cond:
                if "@@soak " in line:
                    _, _, rest = line.partition("@@soak ")
                    name, _, stamp = rest.strip().partition(" ")
                    self.events.append((name, float(stamp)))
                else:
                    self.err.append(line)
                self._cond.notify_all()

    def wait_until(self, predicate: Any, deadline: float) -> bool:
        """Wait until ``predicate(events)`` holds; False if the process ended or time ran out first."""
        with self._cond:
            while True:
                if predicate(self.events):
                    return True
                if self.popen is not None and self.popen.poll() is not None:
                    self._cond.wait(0.05)  # let the readers drain
                    return bool(predicate(self.events))
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    def kill(self) -> None:
        assert self.popen is not None
        self.killed_at = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.finish()

    def finish(self, timeout: float = COMMAND_TIMEOUT_S) -> Proc:
        assert self.popen is not None
        try:
            self.rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.killed_at = self.killed_at or time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.rc = self.popen.wait()
            self.err.append(f"soak: timed out after {timeout}s\n")
        self.ended = time.monotonic()
        for reader in self._readers:
            reader.join(5)
        return self

    @property
    def stdout(self) -> str:
        return self.out.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def stamp(self, name: str, nth: int = 0) -> float | None:
        found = [t for n, t in self.events if n == name]
        return found[nth] if len(found) > nth else None


# --------------------------------------------------------------------------- phases from stamps


def chat_reply_events(events: list[tuple[str, float]]) -> dict[str, float]:
    """Stamps of the reply's own generation (not the fold's), of the fold and of remember."""
    found: dict[str, float] = {}
    folding = False
    for name, t in events:
        if name == "fold_start":
            folding = True
            found.setdefault("fold_start", t)
        elif name == "fold_end":
            folding = False
            found.setdefault("fold_end", t)
        elif (not folding and name in ("gen_start", "first_token", "gen_end")) or name in (
            "remember_start",
            "remember_end",
        ):
            found.setdefault(name, t)
    return found


def landed_phase(kind: str, events: list[tuple[str, float]], exited: bool) -> str:
    """Where a process was when it died, from the last stamps it wrote."""
    if kind == "chat":
        state = "startup"
        folding = False
        for name, _ in events:
            if name == "fold_start":
                folding, state = True, "fold"
            elif name == "fold_end":
                folding, state = False, "after_fold"
            elif folding:
                continue
            elif name == "gen_start":
                state = "prefill"
            elif name == "first_token":
                state = "decode"
            elif name == "gen_end":
                state = "after_generate"
            elif name == "remember_start":
                state = "remember"
            elif name == "remember_end":
                state = "after_remember"
        return "exited" if exited else state
    order = {
        "memory_import": {"import_start": "import_read_embed", "store_write_start": "memory_import",
                          "store_write_end": "import_between", "restore_start": "memory_import",
                          "restore_end": "import_after", "import_end": "import_after"},
        "images_index": {"index_start": "images_index", "index_batch_start": "images_index",
                         "index_end": "index_after"},
        "personas_import": {"install_start": "install_validate", "atomic_write_start": "personas_import",
                            "atomic_write_end": "install_reload", "install_end": "install_after"},
    }[kind]  # fmt: skip
    state = "startup"
    for name, _ in events:
        state = order.get(name, state)
    return "exited" if exited else state


# Where each phase's window starts and ends, read from a process's stamps.
def window(phase: str, proc: Proc) -> tuple[float | None, float | None]:
    if phase in CHAT_PHASES:
        e = chat_reply_events(proc.events)
        return {
            "prefill": (e.get("gen_start"), e.get("first_token")),
            "decode": (e.get("first_token"), e.get("gen_end")),
            "remember": (e.get("remember_start"), e.get("remember_end")),
            "fold": (e.get("fold_start"), e.get("fold_end")),
        }[phase]
    if phase == "memory_import":
        return proc.stamp("store_write_start"), proc.stamp("import_end")
    if phase == "images_index":
        return proc.stamp("index_start"), proc.stamp("index_end")
    return proc.stamp("install_start"), proc.stamp("install_end")


def window_started(phase: str) -> Any:
    def started(events: list[tuple[str, float]]) -> bool:
        if phase in CHAT_PHASES:
            key = {"prefill": "gen_start", "decode": "first_token", "remember": "remember_start",
                   "fold": "fold_start"}[phase]  # fmt: skip
            return key in chat_reply_events(events)
        key = {"memory_import": "store_write_start", "images_index": "index_start",
               "personas_import": "install_start"}[phase]  # fmt: skip
        return any(name == key for name, _ in events)

    return started


# --------------------------------------------------------------------------- the soak


@dataclass
class Family:
    """A data dir, its config and one standing thread, with what it is known to hold."""

    name: str
    root: Path
    env: dict[str, str]
    thread: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.tmp = Path(tempfile.mkdtemp(prefix="agentmm-soak-"))
        self.agentmm = str(Path(sys.executable).with_name("agentmm"))
        if not Path(self.agentmm).exists():
            self.agentmm = shutil.which("agentmm") or "agentmm"
        (self.tmp / "probe").mkdir()
        (self.tmp / "probe" / "sitecustomize.py").write_text(PROBE)
        self.paths = [str(self.tmp / "probe")]
        self.commit = _git("rev-parse", "--short", args.commit) if args.commit else "working tree"
        if args.commit:
            self.paths.append(str(snapshot(args.commit, self.tmp / "tree")))
        self.families: dict[str, Family] = {}
        self.results: list[dict[str, Any]] = []
        self.windows: dict[str, list[float]] = defaultdict(list)
        self.timings: dict[str, list[float]] = defaultdict(list)  # command -> wall seconds (un-killed)
        self.commands = 0
        self.started = time.monotonic()

    # --- setup -----------------------------------------------------------------------------

    def base_env(self, root: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMM_")}
        env.update(
            AGENTMM_CONFIG=str(root / "config.toml"), AGENTMM_DATA_DIR=str(root / "data"),
            AGENTMM_PERSONAS_DIR=str(root / "personas"), AGENTMM_TOOLS_DIR=str(root / "tools"),
            AGENTMM_CLIP_PRETRAINED="random", AGENTMM_MAX_TOKENS=str(self.args.max_tokens),
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=os.pathsep.join(self.paths),
            OMP_NUM_THREADS="2", TOKENIZERS_PARALLELISM="false",
        )  # fmt: skip
        return env

    def family(self, name: str, n_ctx: int) -> Family:
        root = self.tmp / name
        (root / "data").mkdir(parents=True)
        env = self.base_env(root)
        env["AGENTMM_N_CTX"] = str(n_ctx)
        fam = Family(name, root, env)
        warm = self.tmp / "warm" / "data" / "embedders"
        if warm.is_dir():  # exported embedders are a cache: copying spares each family the export
            shutil.copytree(warm, root / "data" / "embedders")
        self.families[name] = fam
        return fam

    def run(self, fam: Family, *argv: str, timeout: float = COMMAND_TIMEOUT_S) -> Proc:
        self.commands += 1
        proc = Proc([self.agentmm, *argv], fam.env).start().finish(timeout)
        self.timings[" ".join(argv[:2]) if argv[0] != "chat" else "chat"].append((proc.ended or 0) - proc.started)
        return proc

    def warm_up(self) -> None:
        """One process exports the embedders (memory MiniLM, CLIP text tower) into a data dir
        that every family copies; nothing of it is measured."""
        root = self.tmp / "warm"
        (root / "data").mkdir(parents=True)
        fam = Family("warm", root, self.base_env(root))
        self.run(fam, "memory", "add", "warming up the embedder")
        images = root / "images"
        make_images(images, 2, self.rng)
        self.run(fam, "images", "index", str(images), "--json")
        self.run(fam, "images", "search", "a red square", "--json")

    # --- words -----------------------------------------------------------------------------

    def message(self, words: int) -> str:
        rng = self.rng
        name, city = rng.choice(NAMES), rng.choice(CITIES)
        body = " ".join(rng.choice(WORDS) for _ in range(words))
        return f"My friend {name} moved to {city} last spring. {body.capitalize()}. What do you think?"

    # --- one kill ----------------------------------------------------------------------------

    def chat_argv(self, fam: Family, text: str, *, json_out: bool = False) -> list[str]:
        argv = ["chat", "-m", text, "--thread", fam.thread, "--seed", str(self.rng.randrange(1 << 30))]
        return [*argv, "--json"] if json_out else argv

    def chat_words(self, phase: str) -> int:
        return self.rng.randint(180, 240) if phase == "fold" else self.rng.randint(30, 90)

    def killed_run(self, phase: str, fam: Family) -> dict[str, Any]:
        """Start the phase's command, wait for the phase, kill inside its window."""
        if phase in CHAT_PHASES:
            argv, kind = self.chat_argv(fam, self.message(self.chat_words(phase))), "chat"
        elif phase == "memory_import":
            argv, kind = ["memory", "import", str(self.next_import_file(fam))], phase
        elif phase == "images_index":
            self.add_images(fam)
            argv, kind = ["images", "index", str(fam.extra["images"]), "--json"], phase
        else:
            argv, kind = ["personas", "import", str(self.next_card(fam)), "--force", "--json"], phase
        measured = self.windows.get(phase) or [1.0]
        width = statistics.median(measured)
        offset = self.rng.uniform(0.0, width)
        proc = Proc([self.agentmm, *argv], fam.env)
        self.commands += 1
        proc.start()
        began = proc.wait_until(window_started(phase), time.monotonic() + COMMAND_TIMEOUT_S)
        start, _ = window(phase, proc)
        if began and start is not None:
            delay = start + offset - time.monotonic()
            if delay > 0 and proc.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(delay)
            if proc.popen is not None and proc.popen.poll() is None:
                proc.kill()
        if proc.killed_at is None:
            proc.finish()
        killed = proc.killed_at is not None
        return {
            "phase": phase,
            "argv": argv[:2],
            "killed": killed,
            "landed": landed_phase(kind, proc.events, exited=not killed),
            "aimed_offset_s": round(offset, 4),
            "window_s": round(width, 4),
            "kill_after_start_s": round(proc.killed_at - start, 4) if killed and start else None,
            "rc": proc.rc,
            "stderr_tail": proc.stderr[-300:] if not killed else "",
        }

    # --- calibration ---------------------------------------------------------------------------

    def calibrate(self, phase: str, fam: Family) -> dict[str, Any]:
        """An un-killed run of the phase's command: measures its window, then is checked like a kill."""
        if phase in CHAT_PHASES:
            proc = self.run(fam, *self.chat_argv(fam, self.message(self.chat_words(phase))))
        elif phase == "memory_import":
            proc = self.run(fam, "memory", "import", str(self.next_import_file(fam)))
        elif phase == "images_index":
            self.add_images(fam)
            proc = self.run(fam, "images", "index", str(fam.extra["images"]), "--json")
        else:
            proc = self.run(fam, "personas", "import", str(self.next_card(fam)), "--force", "--json")
        start, end = window(phase, proc)
        if proc.rc == 0 and start is not None and end is not None:
            self.windows[phase].append(end - start)
        return {"phase": phase, "argv": proc.argv[1:3], "killed": False, "landed": "calibration", "rc": proc.rc,
                "window_s": round(end - start, 4) if start and end else None,
                "stderr_tail": proc.stderr[-300:] if proc.rc else ""}  # fmt: skip

    # --- inputs ----------------------------------------------------------------------------------

    def next_import_file(self, fam: Family) -> Path:
        """A fresh export file of ``--import-rows`` memories (new keys), remembered as expected."""
        index = fam.extra.setdefault("imports", 0)
        fam.extra["imports"] = index + 1
        path = fam.root / f"import-{index}.jsonl"
        rows = []
        for i in range(self.args.import_rows):
            when = f"2026-0{1 + i % 9}-1{i % 10}T10:00:00+00:00"
            text = self.message(self.rng.randint(8, 20))
            value = {"text": f"[import {index}] User: {text}", "content": text, "speaker": "User", "role": "note",
                     "when": when}  # fmt: skip
            rows.append({"format": "agentmm-memory/1", "id": f"soak:{index}:{i}", "scope": f"local/soak{index}",
                         "namespace": ["memories", "local", f"soak{index}"], "value": value,
                         "created_at": when, "updated_at": when})  # fmt: skip
        path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        fam.extra.setdefault("expected_ids", set()).update(r["id"] for r in rows)
        fam.extra["last_import"] = path
        return path

    def add_images(self, fam: Family) -> None:
        index = fam.extra.setdefault("image_batches", 0)
        fam.extra["image_batches"] = index + 1
        folder = fam.extra["images"] / f"batch-{index:03d}"
        make_images(folder, self.args.images_per_run, self.rng)
        fam.extra["image_count"] = fam.extra.get("image_count", 0) + self.args.images_per_run

    def next_card(self, fam: Family) -> Path:
        """A V2 card: every other run a new name, else a changed card of an existing one (--force)."""
        index = fam.extra.setdefault("cards", 0)
        fam.extra["cards"] = index + 1
        names = fam.extra.setdefault("persona_names", [])
        name = f"Soak {NAMES[index % len(NAMES)]} {index}" if index % 2 == 0 or not names else self.rng.choice(names)
        if name not in names:
            names.append(name)
        desc = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(200, 2000)))
        card = {"spec": "chara_card_v2", "spec_version": "2.0",
                "data": {"name": name, "description": f"{{{{char}}}} keeps a {desc}.", "personality": "calm",
                         "scenario": "A quiet harbour town.", "first_mes": "Hello {{user}}.", "mes_example": "",
                         "creator_notes": str(index), "system_prompt": "", "post_history_instructions": "",
                         "alternate_greetings": [], "tags": ["soak"], "creator": "soak",
                         "character_version": str(index), "extensions": {}}}  # fmt: skip
        path = fam.root / f"card-{index}.json"
        path.write_text(json.dumps(card))
        fam.extra["last_card"] = (name, path)
        return path

    # --- checks ------------------------------------------------------------------------------------

    def check(self, phase: str, fam: Family) -> dict[str, Any]:
        """Everything that must hold after a kill (or a calibration run) in ``fam``."""
        problems: list[str] = []
        lost = corrupt = 0
        details: dict[str, Any] = {}

        def refused(proc: Proc, what: str) -> bool:
            if proc.rc == 0:
                return False
            if STALE_LOCK in proc.stderr:
                problems.append(f"{what}: stale lock: {proc.stderr.strip()[-200:]}")
            else:
                problems.append(f"{what}: exit {proc.rc}: {proc.stderr.strip()[-300:]}")
            return True

        # The thread right after the kill: every earlier turn, no half-written one.
        shown = self.run(fam, "threads", "show", fam.thread, "--json")
        if refused(shown, "threads show"):
            corrupt += 1
            after_kill: list[dict[str, Any]] = []
        else:
            after_kill = json.loads(shown.stdout)["messages"]
            bad = turn_problems(fam.messages, after_kill)
            problems += [f"after kill: {p}" for p in bad]
            lost += sum("lost" in p for p in bad)
            corrupt += sum("lost" not in p for p in bad)
        details["turns_after_kill"] = count_turns(after_kill)
        details["killed_turn_kept"] = count_turns(after_kill) > count_turns(fam.messages)  # else rolled back

        # The memory store opens in the next process, and its two views agree.
        stats = self.run(fam, "memory", "stats", "--json")
        listed = self.run(fam, "memory", "list", "--json", "-n", "10000000")
        memories: list[dict[str, Any]] = []
        if not refused(stats, "memory stats") and not refused(listed, "memory list"):
            report = json.loads(stats.stdout)
            memories = json.loads(listed.stdout)["memories"]
            per_scope = Counter(m["scope"] for m in memories)
            if report["total"] != len(memories) or {k: v for k, v in report["scopes"].items() if v} != dict(per_scope):
                problems.append(f"memory stats {report} != memory list {dict(per_scope)}")
                corrupt += 1
        else:
            corrupt += 1
        deep = self.deep_check(fam)
        problems += deep["problems"]
        corrupt += len(deep["problems"])
        details["memory_items"] = deep.get("items")
        details["orphan_vectors"] = deep.get("orphan_vectors", 0)
        # A turn killed while remembering is whole in the thread; its memories are written when
        # the thread's next turn finishes its run (checked after the next chat, below).
        orphans, pending = memory_vs_thread(memories, fam.thread, after_kill)
        details["orphan_memories"] = orphans  # memories of a turn the thread does not hold
        details["memory_pending_turns"] = pending

        # Re-run what was killed, to completion: then nothing may be missing.
        if phase == "memory_import":
            again = self.run(fam, "memory", "import", str(fam.extra["last_import"]))
            if not refused(again, "memory import (again)"):
                exported = fam.root / "export.jsonl"
                dump = self.run(fam, "memory", "export", str(exported), "--user", "local")
                if not refused(dump, "memory export"):
                    have = {json.loads(line)["id"] for line in exported.read_text().splitlines() if line}
                    gone = fam.extra["expected_ids"] - have
                    if gone:
                        problems.append(f"{len(gone)} imported memories missing after a full re-import")
                        lost += len(gone)
        elif phase == "images_index":
            again = self.run(fam, "images", "index", str(fam.extra["images"]), "--json")
            if not refused(again, "images index (again)"):
                count = self.image_count(fam)
                if count != fam.extra["image_count"]:
                    problems.append(f"image index holds {count} of {fam.extra['image_count']} images")
                    lost += abs(fam.extra["image_count"] - (count or 0))
                found = self.run(fam, "images", "search", "a blue circle", "-k", "3", "--json")
                refused(found, "images search")
        elif phase == "personas_import":
            name, card = fam.extra["last_card"]
            leftovers = sorted(p.name for p in (fam.root / "personas").glob(".*.tmp"))
            details["leftover_temp_files"] = leftovers
            listed_personas = self.run(fam, "personas", "list", "--json")
            if not refused(listed_personas, "personas list"):
                problems += [f"personas: {p}" for p in json.loads(listed_personas.stdout).get("problems", [])]
            again = self.run(fam, "personas", "import", str(card), "--force", "--json")
            if not refused(again, "personas import (again)"):
                shown_persona = self.run(fam, "personas", "show", name, "--json")
                refused(shown_persona, "personas show")

        # The next turn on the thread works and adds exactly one complete turn.
        words = self.chat_words(phase if phase == "fold" else "plain")
        turn = self.run(fam, *self.chat_argv(fam, self.message(words), json_out=True))
        if refused(turn, "next chat"):
            corrupt += 1
        else:
            result = json.loads(turn.stdout)
            details["next_turn_folded"] = bool((result.get("trace") or {}).get("summary", {}).get("updated"))
        shown = self.run(fam, "threads", "show", fam.thread, "--json")
        if not refused(shown, "threads show (after next chat)"):
            after_next = json.loads(shown.stdout)["messages"]
            bad = turn_problems(after_kill, after_next, exactly_one=True)
            problems += [f"after next chat: {p}" for p in bad]
            corrupt += len(bad)
            fam.messages = after_next
            listed = self.run(fam, "memory", "list", "--json", "-n", "10000000")
            if not refused(listed, "memory list (after next chat)"):
                orphans, missing = memory_vs_thread(json.loads(listed.stdout)["memories"], fam.thread, after_next)
                if missing:
                    problems.append(f"memory lost for turns of the thread: {missing}")
                    lost += len(missing)
                if orphans:
                    problems.append(f"{orphans} memories of turns the thread does not hold")
                    corrupt += 1
        details["problems"] = problems
        return {"lost": lost, "corrupt": corrupt, **details}

    def deep_check(self, fam: Family) -> dict[str, Any]:
        """What the CLI does not show: SQLite integrity, items vs their vectors and namespaces."""
        self.commands += 1
        proc = subprocess.run(
            [sys.executable, "-c", DEEP_CHECK, str(fam.root / "data")], env=fam.env, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT_S,
        )  # fmt: skip
        if proc.returncode != 0:
            return {"problems": [f"deep check failed: {proc.stderr.strip()[-300:]}"]}
        return json.loads(proc.stdout)

    def image_count(self, fam: Family) -> int | None:
        self.commands += 1
        proc = subprocess.run([sys.executable, "-c", IMAGE_COUNT, str(fam.root / "data")], env=fam.env,
                              capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)  # fmt: skip
        return int(proc.stdout) if proc.returncode == 0 else None

    # --- the whole soak ---------------------------------------------------------------------------

    def new_thread(self, fam: Family, words: int) -> None:
        proc = self.run(fam, "chat", "-m", self.message(words), "--json", "--seed", "1")
        if proc.rc != 0:
            raise SystemExit(f"soak: the first chat in {fam.name} failed: {proc.stderr[-500:]}")
        fam.thread = json.loads(proc.stdout)["thread_id"]
        fam.messages = json.loads(self.run(fam, "threads", "show", fam.thread, "--json").stdout)["messages"]

    def setup(self) -> None:
        self.warm_up()
        self.family("chat", self.args.n_ctx)
        self.family("fold", self.args.fold_n_ctx)
        self.family("import", self.args.n_ctx)
        images = self.family("images", self.args.n_ctx)
        images.extra["images"] = images.root / "pictures"
        self.family("personas", self.args.n_ctx)
        for fam in self.families.values():
            self.new_thread(fam, 220 if fam.name == "fold" else 40)

    def family_of(self, phase: str) -> Family:
        name = {"fold": "fold", "memory_import": "import", "images_index": "images",
                "personas_import": "personas"}.get(phase, "chat")  # fmt: skip
        fam = self.families[name]
        if name == "chat" and count_turns(fam.messages) >= self.args.thread_turns:
            self.new_thread(fam, 40)  # keep the plain thread short of a fold
        return fam

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > self.args.max_minutes * 60

    def soak(self) -> None:
        self.setup()
        for phase in PHASES:
            for _ in range(self.args.calibration):
                fam = self.family_of(phase)
                result = self.calibrate(phase, fam)
                result.update(self.check(phase, fam))
                self.record(result)
        schedule = [PHASES[i % len(PHASES)] for i in range(self.args.runs)]
        self.rng.shuffle(schedule)
        for phase in schedule:
            if self.out_of_time():
                print(f"soak: stopping at {self.args.max_minutes} minutes", file=sys.stderr)
                break
            fam = self.family_of(phase)
            result = self.killed_run(phase, fam)
            result.update(self.check(phase, fam))
            self.record(result)

    def record(self, result: dict[str, Any]) -> None:
        result["t_s"] = round(time.monotonic() - self.started, 1)
        self.results.append(result)
        flag = " PROBLEMS: " + "; ".join(result["problems"]) if result["problems"] else ""
        print(f"[{len(self.results):3d} {result['t_s']:7.1f}s] {result['phase']:15s} -> {result['landed']:17s} "
              f"lost {result['lost']} corrupt {result['corrupt']}{flag}", file=sys.stderr, flush=True)  # fmt: skip

    def cleanup(self) -> None:
        if self.args.keep:
            print(f"soak: kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- thread and memory rules


def count_turns(messages: list[dict[str, Any]]) -> int:
    return sum(m["role"] == "user" for m in messages)


def turn_problems(before: list[dict[str, Any]], after: list[dict[str, Any]], *, exactly_one: bool = False) -> list[str]:
    """What is wrong with ``after``, a later view of a thread that held ``before``.

    Every earlier message must still be there, unchanged; what came after is whole turns (a
    user message answered by the assistant: a reply, possibly empty only if marked interrupted);
    ``exactly_one``: one such turn was added (the next chat's), else none or one (the killed one).
    """

    def key(m: dict[str, Any]) -> tuple[str, str]:
        return m["role"], m["content"]

    problems = []
    if [key(m) for m in after[: len(before)]] != [key(m) for m in before]:
        return [f"lost or changed earlier messages ({len(before)} before, {len(after)} now)"]
    added = after[len(before) :]
    turns = 0
    i = 0
    while i < len(added):
        if added[i]["role"] != "user":
            problems.append(f"message {len(before) + i} is {added[i]['role']} where a user message should start a turn")
            i += 1
            continue
        if i + 1 >= len(added) or added[i + 1]["role"] != "assistant":
            problems.append(f"half-written turn: user message {len(before) + i} has no reply")
            i += 1
            continue
        reply = added[i + 1]
        if not reply["content"].strip() and not reply.get("interrupted"):
            problems.append(f"empty reply at {len(before) + i + 1} not marked interrupted")
        turns += 1
        i += 2
    allowed = (1,) if exactly_one else (0, 1)
    if not problems and turns not in allowed:
        problems.append(f"{turns} turns added, expected {' or '.join(map(str, allowed))}")
    return problems


def memory_vs_thread(
    memories: list[dict[str, Any]], thread: str, messages: list[dict[str, Any]]
) -> tuple[int, list[int]]:
    """(memories of turns the thread does not hold, turns of the thread whose memory is missing)."""
    turns: dict[int, set[str]] = defaultdict(set)
    for m in memories:
        value = m["value"]
        if value.get("thread") == thread:
            turns[int(value["turn"])].add(value["role"])
    held = count_turns(messages)
    orphans = sum(len(roles) for turn, roles in turns.items() if turn > held)
    missing = []
    user_turn = 0
    for i, m in enumerate(messages):
        if m["role"] != "user":
            continue
        user_turn += 1
        reply = messages[i + 1] if i + 1 < len(messages) else None
        want = {"user"} | (
            {"assistant"} if reply and reply["content"].strip() and not reply.get("interrupted") else set()
        )
        if not want <= turns.get(user_turn, set()):
            missing.append(user_turn)
    return orphans, missing


DEEP_CHECK = r"""
import json, sqlite3, sys
from pathlib import Path
data = Path(sys.argv[1])
problems = []
for db in (data / "threads.sqlite", data / "memory" / "chroma.sqlite3", data / "images" / "chroma.sqlite3"):
    if db.exists():
        con = sqlite3.connect(db)
        verdict = con.execute("PRAGMA integrity_check").fetchone()[0]
        con.close()
        if verdict != "ok":
            problems.append(f"{db.name}: integrity_check: {verdict}")
out = {"problems": problems, "items": None}
if (data / "memory").is_dir():
    from agentmm.memory import _records as rec
    from agentmm.memory.chroma_store import ChromaStore
    store = ChromaStore.from_path(data / "memory")
    try:
        items = {i: m for i, m, _ in store._scan(store._items, None)}
        vectors = {}
        for vid, meta, _ in store._scan(store._vectors, None):
            vectors[meta[rec.ITEM]] = vectors.get(meta[rec.ITEM], 0) + 1
        listed = {rec.namespace_of(m) for _, m, _ in store._scan(store._namespaces, None)}
        wrong = [i for i, m in items.items() if int(m.get(rec.VECTOR_COUNT) or 0) != vectors.get(i, 0)]
        unlisted = [i for i, m in items.items() if rec.namespace_of(m) not in listed]
        orphan_vectors = [i for i in vectors if i not in items]
        for i, doc in ((i, d) for i, _, d in store._scan(store._items, None, documents=True)):
            try:
                json.loads(doc)
            except ValueError:
                problems.append(f"item {i}: unreadable document")
        if wrong:
            problems.append(f"{len(wrong)} memory items without all their vectors")
        if unlisted:
            problems.append(f"{len(unlisted)} memory items in a namespace that is not listed")
        out["items"] = len(items)
        out["orphan_vectors"] = len(orphan_vectors)  # match nothing; rewritten with their key
    finally:
        store.close()
print(json.dumps(out))
"""

IMAGE_COUNT = r"""
import sys
from agentmm.settings import load_settings
from agentmm.tools.clip_search import default_image_index
print(len(default_image_index(load_settings())))
"""


def make_images(folder: Path, count: int, rng: random.Random) -> None:
    """Tiny PNGs of coloured shapes, each different (so each is new content to embed)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = Image.new("RGB", (64, 48), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        box = sorted(rng.sample(range(4, 44), 2))
        draw.ellipse((box[0], box[0], box[1] + 16, box[1]), fill=tuple(rng.randrange(256) for _ in range(3)))
        image.save(folder / f"img-{i:03d}.png")


# --------------------------------------------------------------------------- report


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    kills = [r for r in results if r["killed"]]
    by_landed: dict[str, dict[str, int]] = defaultdict(lambda: {"kills": 0, "lost": 0, "corrupt": 0, "orphans": 0})
    for r in kills:
        row = by_landed[r["landed"]]
        row["kills"] += 1
        row["lost"] += r["lost"]
        row["corrupt"] += r["corrupt"]
        row["orphans"] += r.get("orphan_memories") or 0
    aimed = Counter(r["phase"] for r in results if r["landed"] != "calibration")
    calib = [r for r in results if r["landed"] == "calibration"]
    return {
        "kills": len(kills),
        "missed": sum(1 for r in results if not r["killed"] and r["landed"] != "calibration"),
        "by_landed": dict(by_landed),
        "aimed": dict(aimed),
        "calibration_runs": len(calib),
        "calibration_problems": sum(r["lost"] + r["corrupt"] for r in calib),
        "lost": sum(r["lost"] for r in kills),
        "corrupt": sum(r["corrupt"] for r in kills),
    }


def print_table(summary: dict[str, Any], windows: dict[str, list[float]]) -> None:
    print(f"{'landed in':18s} {'kills':>5s} {'lost':>5s} {'corrupt':>7s} {'orphan mem':>10s}")
    for phase, row in sorted(summary["by_landed"].items(), key=lambda kv: -kv[1]["kills"]):
        print(f"{phase:18s} {row['kills']:5d} {row['lost']:5d} {row['corrupt']:7d} {row['orphans']:10d}")
    print(f"{'total':18s} {summary['kills']:5d} {summary['lost']:5d} {summary['corrupt']:7d}")
    print(f"missed (exited before the kill): {summary['missed']}; aimed: {summary['aimed']}")
    print("phase windows (median s of calibration runs): "
          + ", ".join(f"{p} {statistics.median(w):.2f}" for p, w in windows.items() if w))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=105, help="killed runs (phases in turn, shuffled)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="results file (default: /tmp/agentmm-soak-SEED.json)")
    parser.add_argument("--calibration", type=int, default=2, help="un-killed runs per phase that measure windows")
    parser.add_argument("--max-minutes", type=float, default=150.0, help="stop starting runs after this long")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--fold-n-ctx", type=int, default=1024, help="small, so nearly every turn folds")
    parser.add_argument("--thread-turns", type=int, default=6, help="start a new plain thread after this many turns")
    parser.add_argument("--import-rows", type=int, default=400)
    parser.add_argument("--images-per-run", type=int, default=24)
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    parser.add_argument(
        "--commit", default="HEAD", help="run the library as of this commit ('': the checkout as it is)"
    )
    args = parser.parse_args()
    out = args.json or Path(tempfile.gettempdir()) / f"agentmm-soak-{args.seed}.json"
    soak = Soak(args)
    try:
        soak.soak()
    finally:
        summary = summarize(soak.results)
        print_table(summary, soak.windows)
        report = {
            "summary": summary, "windows": {k: [round(x, 4) for x in v] for k, v in soak.windows.items()},
            "runs": soak.results, "args": {k: str(v) for k, v in vars(args).items()},
            "commit": soak.commit, "checkout_head": _git("rev-parse", "--short", "HEAD"),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "host": socket.gethostname(),
            "cpus": os.cpu_count(), "load_avg": os.getloadavg(), "commands": soak.commands,
            "command_s_median": {k: round(statistics.median(v), 2) for k, v in soak.timings.items()},
            "runtime_s": round(time.monotonic() - soak.started, 1),
        }  # fmt: skip
        out.write_text(json.dumps(report, indent=1, default=str))
        print(f"results: {out}")
        soak.cleanup()


def snapshot(commit: str, root: Path) -> Path:
    """The library as of ``commit`` (``git archive``), laid out as the installed package imports
    it (``agentmm``, with ``graphs`` and ``tools`` inside): a directory to put first on the
    children's ``PYTHONPATH``, so edits made in the checkout during a long soak change nothing."""
    root.mkdir(parents=True)
    repo = Path(__file__).resolve().parents[1]
    archive = subprocess.run(["git", "archive", commit], cwd=repo, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    overlay = root / "overlay" / "agentmm"
    overlay.mkdir(parents=True)
    for entry in (root / "agentmm").iterdir():
        (overlay / entry.name).symlink_to(entry)
    (overlay / "graphs").symlink_to(root / "graphs")
    (overlay / "tools").symlink_to(root / "tools")
    return overlay.parent


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
