"""``agentmm serve``'s HTTP API: in-process over a scripted model for every route, and as real
``agentmm serve --workers 2`` processes on Postgres threads and the shipped model."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from agentmm.graphs.agent import Agent
from agentmm.http_api import make_app
from agentmm.memory.chroma_store import ChromaStore
from agentmm.settings import load_settings
from agentmm.thread_lock import ThreadInUseError
from tests.memory.conftest import CharacterEmbeddings
from tests.test_crash_safety import EchoModel
from tests.test_examples import free_port, server


class SlowEcho(EchoModel):
    """Echo, a word every ``pause`` seconds: a turn that is still answering when asked again."""

    pause: float = 0.15

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        for chunk in super()._stream(messages, stop, run_manager, **kw):
            time.sleep(self.pause)
            yield chunk


def echo_client(isolated_env: Path) -> TestClient:
    """An app over an echoing model and a memory store in ``isolated_env`` (enter it to start)."""

    def open_agent() -> Agent:
        store = ChromaStore.from_path(
            isolated_env / "memory", index={"dims": 64, "embed": CharacterEmbeddings(dims=64), "fields": ["text"]}
        )
        return Agent(load_settings(memory=True), model=SlowEcho(pause=0.0), store=store)

    return TestClient(make_app(open_agent))


@pytest.fixture
def client(isolated_env: Path) -> Iterator[TestClient]:
    with echo_client(isolated_env) as test_client:
        yield test_client


def events_of(text: str) -> list[tuple[str, Any]]:
    """``(event, data)`` pairs of a server-sent event stream."""
    found: list[tuple[str, Any]] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_a_turn_answers_as_chat_json_does(client: TestClient) -> None:
    assert client.get("/health").json()["ok"] is True
    deadline = time.monotonic() + 60
    while (ready := client.get("/ready")).status_code != 200:  # 503 while the agent warms up
        assert ready.json()["ready"] is False and time.monotonic() < deadline
        time.sleep(0.05)
    assert ready.json()["ready"] is True
    turn = client.post("/chat", json={"message": "the red door", "thread_id": "t1"})
    assert turn.status_code == 200
    body = turn.json()
    assert body["reply"].strip() == "Reply to: the red door" and body["thread_id"] == "t1"
    assert {"reply", "thread_id", "model", "usage", "timings", "trace", "interrupted"} <= body.keys()
    again = client.post("/chat", json={"message": "and the blue one", "thread_id": "t1"}).json()
    assert again["trace"]["turn"] == 2


def test_a_streamed_turn_is_server_sent_events(client: TestClient) -> None:
    with client.stream("POST", "/chat", json={"message": "stream me", "stream": True}) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = events_of(reply.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds.count("token") >= 2 and kinds[-1] == "done"
    done = events[-1][1]
    assert done["reply"] == "".join(data for kind, data in events if kind == "token")
    by_header = client.post("/chat", json={"message": "again"}, headers={"accept": "text/event-stream"})
    assert events_of(by_header.text)[-1][0] == "done"


def test_bad_requests_are_one_line_errors(client: TestClient) -> None:
    assert client.post("/chat", content=b"not json").json()["error"].startswith("the request body is not JSON")
    for unreadable in (b"[" * 100_000 + b"]" * 100_000, b'{"message": "hi", "greeting": 1' + b"0" * 5000 + b"}"):
        refused = client.post("/chat", content=unreadable)  # was a 500 in text/plain
        assert refused.status_code == 400 and refused.json()["error"].startswith("the request body is not JSON")
    missing = client.post("/chat", json={})
    assert missing.status_code == 400 and missing.json() == {"error": "message is required"}
    assert client.post("/chat", json={"message": "  "}).status_code == 400  # an empty message
    unknown = client.post("/chat", json={"message": "hi", "persona": "Nobody At All"})
    assert unknown.status_code == 404 and "Nobody At All" in unknown.json()["error"]
    ignored = client.post("/chat", json={"message": "hi", "greeting": 1})  # no persona: it was taken and ignored
    assert ignored.status_code == 400 and ignored.json()["error"].startswith("greeting picks a persona's greeting")
    begun = client.post("/chat", json={"message": "hi", "persona": "Nora Quill"}).json()["thread_id"]
    again = client.post("/chat", json={"message": "hi", "thread_id": begun, "persona": "Nora Quill", "greeting": 1})
    assert again.status_code == 400 and "greeting opens a new thread" in again.json()["error"]
    thread = client.get("/threads/nope")
    assert thread.status_code == 404 and thread.json() == {"error": "unknown thread 'nope' (see: GET /threads)"}
    memory = client.delete("/memories/nope")
    assert memory.status_code == 404 and memory.json()["error"].endswith("(see: GET /memories)")
    assert not any("agentmm " in r.json()["error"] for r in (unknown, thread, memory))  # no terminal commands


def test_threads_memories_and_personas(client: TestClient) -> None:
    client.post("/chat", json={"message": "first", "thread_id": "a"})
    client.post("/chat", json={"message": "second", "thread_id": "b"})
    assert [t["thread_id"] for t in client.get("/threads").json()["threads"]] == ["b", "a"]
    shown = client.get("/threads/a").json()
    assert [m["content"].strip() for m in shown["messages"]] == ["first", "Reply to: first"]
    assert client.delete("/threads/a").json() == {"deleted": "a"}
    assert [t["thread_id"] for t in client.get("/threads").json()["threads"]] == ["b"]

    added = client.post("/memories", json={"text": "Mira keeps bees behind the mill"})
    assert added.status_code == 201
    memory_id = added.json()["id"]
    listed = client.get("/memories").json()["memories"]
    assert memory_id in [row["id"] for row in listed]
    found = client.get("/memories/search", params={"q": "who keeps bees?"}).json()["results"]
    assert found and "bees" in json.dumps(found)
    assert client.delete(f"/memories/{memory_id}").status_code == 200
    assert memory_id not in [row["id"] for row in client.get("/memories").json()["memories"]]

    names = [p["name"] for p in client.get("/personas").json()["personas"]]
    assert "Bram Tolliver" in names
    assert client.get("/personas/Bram Tolliver").json()["name"] == "Bram Tolliver"


def test_a_second_turn_on_a_busy_thread_is_refused_with_409(isolated_env: Path) -> None:
    with TestClient(make_app(lambda: Agent(model=SlowEcho(pause=0.2)))) as client:
        first: dict[str, Any] = {}
        running = threading.Thread(
            target=lambda: first.update(
                client.post("/chat", json={"message": "one two three", "thread_id": "x"}).json()
            )
        )
        running.start()
        time.sleep(0.4)
        refused = client.post("/chat", json={"message": "meanwhile", "thread_id": "x"})
        streamed = client.post("/chat", json={"message": "meanwhile", "thread_id": "x", "stream": True})
        other = client.post("/chat", json={"message": "elsewhere", "thread_id": "y"})
        running.join(30)
        after = client.get("/threads/x").json()["messages"]
    assert refused.status_code == 409 and "thread x is in use" in refused.json()["error"]
    assert streamed.status_code == 409  # refused before the stream starts: a plain JSON error
    assert other.status_code == 200
    assert first["reply"].strip() == "Reply to: one two three"
    assert [m["content"].strip() for m in after] == ["one two three", "Reply to: one two three"]


def test_one_agent_refuses_a_second_concurrent_turn_on_a_thread(isolated_env: Path) -> None:
    async def both() -> None:
        with Agent(model=SlowEcho(pause=0.2)) as agent:
            running = asyncio.create_task(agent.achat("one two", "t"))
            await asyncio.sleep(0.3)
            with pytest.raises(ThreadInUseError):
                await agent.achat("two", "t")
            assert (await agent.achat("elsewhere", "u")).reply.strip() == "Reply to: elsewhere"
            assert (await running).reply.strip() == "Reply to: one two"

    asyncio.run(both())


def test_several_workers_need_a_shared_memory_store(isolated_env: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agentmm.cli", "serve", "--workers", "2"], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "AGENTMM_MEMORY": "true"})  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("agentmm: error: several workers need a shared memory store")


@pytest.mark.slow
@pytest.mark.e2e
def test_two_serve_workers_share_postgres_threads(postgres_url: str, tmp_path: Path) -> None:
    """Real ``agentmm serve --workers 2`` on the shipped model: both workers answer, every turn of
    every thread is kept in order, and a turn on a thread that is answering is refused (409)."""
    port = free_port()
    env = {"AGENTMM_CHECKPOINTER_URL": postgres_url, "AGENTMM_MAX_TOKENS": "12", "AGENTMM_N_CTX": "1024",
           "AGENTMM_SEED": "3"}  # fmt: skip
    command = [sys.executable, "-m", "agentmm.cli", "serve", "--port", str(port), "--workers", "2",
               "--log-level", "warning"]  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    with server(command, f"{base}/health", tmp_path, env) as proc:
        deadline = time.monotonic() + 180
        pids: set[int] = set()
        while len(pids) < 2:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-1500:]
            assert time.monotonic() < deadline, f"two ready workers never answered: {pids}"
            pids |= _ready(base)
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=120) as http:
            for round_ in range(3):
                for thread in ("p", "q"):
                    reply = http.post("/chat", json={"message": f"{thread} message {round_}", "thread_id": thread})
                    assert reply.status_code == 200, reply.text
            for thread in ("p", "q"):
                messages = http.get(f"/threads/{thread}").json()["messages"]
                users = [m["content"] for m in messages if m["role"] == "user"]
                assert users == [f"{thread} message {n}" for n in range(3)]
                assert [m["role"] for m in messages] == ["user", "assistant"] * 3
            codes = _at_once(
                base, [{"message": "race one", "thread_id": "r"}, {"message": "race two", "thread_id": "r"}]
            )
            assert sorted(codes) in ([200, 409], [200, 200]), codes  # refused, or the first was done already
            kept = [m["content"] for m in http.get("/threads/r").json()["messages"] if m["role"] == "user"]
            assert len(kept) == codes.count(200)


def _ready(base: str) -> set[int]:
    """The PID of a worker that answered ready (empty if none did)."""
    try:
        answer = httpx.get(f"{base}/ready", timeout=5)
    except httpx.HTTPError:
        return set()
    return {answer.json()["pid"]} if answer.status_code == 200 else set()


def _at_once(base: str, bodies: list[dict[str, Any]]) -> list[int]:
    async def send() -> list[int]:
        async with httpx.AsyncClient(base_url=base, timeout=120) as http:
            replies = await asyncio.gather(*(http.post("/chat", json=body) for body in bodies))
        return [r.status_code for r in replies]

    return asyncio.run(send())


def test_a_dead_model_server_is_503(isolated_env: Path) -> None:
    """What the worker depends on failing is the service's trouble, not the client's (503)."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with TestClient(make_app(lambda: Agent(load_settings(model_url=dead)))) as client:
        answer = client.post("/chat", json={"message": "hello"})
    assert answer.status_code == 503
    assert answer.json()["error"].startswith("cannot reach the model server")


def test_new_thread_ids_must_be_reachable_and_text_must_be_unicode(client: TestClient) -> None:
    for bad in ["a/b", "../x", "..", "a\u0000b", "x" * 129, " padded"]:
        refused = client.post("/chat", json={"message": "hi", "thread_id": bad})
        assert refused.status_code == 400 and "cannot name a new thread" in refused.json()["error"], bad
    assert client.get("/threads").json()["threads"] == []
    assert client.post("/chat", json={"message": "hi", "thread_id": "user-42:chat@2026.1"}).status_code == 200
    assert client.get("/threads/user-42:chat@2026.1").status_code == 200
    for route, body in [("/chat", {"message": "caf\ud800"}), ("/memories", {"text": "caf\ud800"})]:
        refused = client.post(route, content=json.dumps(body).encode())  # "\ud800" escaped, as JSON allows
        assert refused.status_code == 400 and "not valid Unicode" in refused.json()["error"], route
    assert client.get("/memories/search", params={"q": "x"}).status_code == 200


def test_a_memory_store_held_by_another_process_is_503_as_ready_says() -> None:
    from agentmm.http_api import status_of
    from agentmm.memory.errors import StoreInUseError

    assert status_of(StoreInUseError(Path("/data/memory"), 4242)) == 503  # try again: not the request's fault


def test_a_note_is_said_by_the_user_and_limits_are_counts(client: TestClient) -> None:
    added = client.post("/memories", json={"text": "My sister lives in Oslo"}).json()
    assert added["value"]["speaker"] == "User" and added["value"]["text"].endswith("User: My sister lives in Oslo")
    for query in ({"limit": "-5"}, {"limit": "0"}):
        refused = client.get("/memories", params=query)
        assert (
            refused.status_code == 400 and refused.json()["error"] == f"limit must be at least 1, not {query['limit']}"
        )
    assert len(client.get("/memories", params={"limit": "1"}).json()["memories"]) == 1


def test_unknown_routes_and_methods_are_json_errors(client: TestClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found: GET /nope"}
    wrong = client.put("/threads")
    assert wrong.status_code == 405 and wrong.json()["error"].startswith("Method Not Allowed")
    assert client.post("/chat", json={"message": "hi", "greeting": "1"}).json() == {"error": "greeting must be an int"}


def test_a_note_for_a_persona_is_kept_under_its_own_name(client: TestClient) -> None:
    refused = client.post("/memories", json={"text": "likes tea", "persona": "Nobody At All"})
    assert refused.status_code == 404 and "Nobody At All" in refused.json()["error"]
    added = client.post("/memories", json={"text": "likes tea", "persona": "nora quill"}).json()
    assert added["scope"] == "local/Nora Quill"  # where Nora's turns recall from
    # Read back by the name as typed (it was an empty list for "nora quill"), and forgotten so.
    listed = client.get("/memories", params={"persona": "nora quill"}).json()["memories"]
    assert [m["id"] for m in listed] == [added["id"]]
    found = client.get("/memories/search", params={"q": "tea", "persona": "NORA QUILL"}).json()["results"]
    assert [r["id"] for r in found] == [added["id"]]
    forgot = client.delete(f"/memories/{added['id']}", params={"persona": "nora quill"})
    assert forgot.status_code == 200 and forgot.json()["forgotten"]["id"] == forgot.json()["id"] == added["id"]


SLOW_SERVER = """
import sys
import uvicorn
from agentmm.graphs.agent import Agent
from agentmm.http_api import make_app
from tests.test_http_api import SlowEcho

app = make_app(lambda: Agent(model=SlowEcho(pause=0.25), memory=False))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_a_json_client_that_goes_away_stops_its_turn(tmp_path: Path) -> None:
    """Only a streamed turn stopped when its client left: a JSON one ran to its end, the
    thread held (409) the whole time, its full reply stored as if read."""
    import socket

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    root = Path(__file__).resolve().parents[1]
    env = {"AGENTMM_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(root)}
    with server([sys.executable, "-c", SLOW_SERVER, str(port)], f"{base}/health", tmp_path, env):
        words = " ".join(f"w{i}" for i in range(40))  # echoed a word every 0.25 s: ~10 s in all
        body = json.dumps({"message": words, "thread_id": "gone"}).encode()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)  # fmt: skip
            time.sleep(1.5)
        started = time.monotonic()
        while (answer := httpx.post(f"{base}/chat", json={"message": "next", "thread_id": "gone"})).status_code == 409:
            assert time.monotonic() - started < 5, "the thread was held after its client left"
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        messages = httpx.get(f"{base}/threads/gone").json()["messages"]
    stopped = messages[1]
    assert stopped["interrupted"] is True and len(stopped["content"]) < len("Reply to: " + words)


def test_a_broken_thread_database_is_503_on_every_route(isolated_env: Path) -> None:
    """GET /threads was a 500 in text/plain, the other routes 400: the worker's database, not
    the request, is what failed."""
    data = isolated_env / "data"
    data.mkdir()
    (data / "threads.sqlite").write_text("not a database " * 100)
    with TestClient(make_app(lambda: Agent(model=SlowEcho(pause=0.0), memory=False))) as broken:
        for answer in (broken.get("/threads"), broken.get("/threads/x"), broken.post("/chat", json={"message": "hi"})):
            assert answer.status_code == 503 and answer.json()["error"], answer.text


def test_a_persona_whose_name_holds_a_slash_is_fetched(isolated_env: Path) -> None:
    (isolated_env / "personas").mkdir()
    (isolated_env / "personas" / "odd.toml").write_text('name = "a/b\\\\c"\ndescription = "odd"\n')
    with echo_client(isolated_env) as client:
        assert "a/b\\c" in [p["name"] for p in client.get("/personas").json()["personas"]]
        shown = client.get("/personas/a%2Fb%5Cc")  # Starlette decodes %2F before routing: the name spans two parts
        assert shown.status_code == 200 and shown.json()["name"] == "a/b\\c"


def test_a_persona_imported_or_edited_while_serving_is_seen(client: TestClient, isolated_env: Path) -> None:
    assert client.get("/personas/Nora Quill").status_code == 200  # the registry is read
    folder = isolated_env / "personas"
    folder.mkdir(exist_ok=True)
    (folder / "lumi.toml").write_text('name = "Lumi"\ndescription = "a lamp"\n')
    shown = client.get("/personas/Lumi")  # was 404 until a restart
    assert shown.status_code == 200 and shown.json()["description"] == "a lamp"
    assert client.post("/chat", json={"message": "hi", "persona": "Lumi"}).status_code == 200
    (folder / "lumi.toml").write_text('name = "Lumi"\ndescription = "a lantern, now"\n')  # edited in place
    assert client.get("/personas/Lumi").json()["description"] == "a lantern, now"
    (folder / "lumi.toml").unlink()
    assert client.get("/personas/Lumi").status_code == 404


def test_bad_parameters_and_bodies_are_named(client: TestClient) -> None:
    said = {
        ("/memories/search", "q=x&k=0"): "k must be at least 1, not 0",
        ("/memories", "limit=0"): "limit must be at least 1, not 0",
        ("/memories", "limit=x"): "limit must be a whole number, not 'x'",
    }
    for (route, query), error in said.items():
        refused = client.get(f"{route}?{query}")
        assert refused.status_code == 400 and refused.json() == {"error": error}
    bodies = {
        b"": "the request body is empty: send a JSON object",
        b"\xff\xfe{}": "the request body is not UTF-8 text (byte 0): send a JSON object",
        b'{"message": "hi", "greeting": 1' + b"0" * 5000 + b"}": "the request body is not JSON we can read: "
        "a number in it is too long",
    }
    for body, error in bodies.items():
        refused = client.post("/chat", content=body)
        assert refused.status_code == 400 and refused.json() == {"error": error}, body[:20]


def test_a_search_for_an_unknown_persona_is_404(client: TestClient, isolated_env: Path) -> None:
    refused = client.get("/memories/search", params={"q": "tea", "persona": "Nobody At All"})  # was 200 []
    assert refused.status_code == 404 and "Nobody At All" in refused.json()["error"]
    # A persona removed since keeps its memories, and they can still be searched.
    folder = isolated_env / "personas"
    folder.mkdir(exist_ok=True)
    (folder / "lumi.toml").write_text('name = "Lumi"\ndescription = "a lamp"\n')
    added = client.post("/memories", json={"text": "likes tea", "persona": "Lumi"}).json()
    (folder / "lumi.toml").unlink()
    found = client.get("/memories/search", params={"q": "tea", "persona": "Lumi"})
    assert found.status_code == 200 and [r["id"] for r in found.json()["results"]] == [added["id"]]


MAX_BODY_BYTES = 4 * 1024 * 1024  # README: "a body over 4 MB is refused unread"


def test_a_body_over_the_limit_is_413_unread(client: TestClient) -> None:
    big = b'{"message": "' + b"a" * MAX_BODY_BYTES + b'"}'
    refused = client.post("/chat", content=big)  # was read and parsed whole
    assert refused.status_code == 413 and refused.json()["error"].startswith("the request body is over 4 MB")

    def chunked() -> Iterator[bytes]:  # no Content-Length: refused while it is read
        for _ in range(2 * MAX_BODY_BYTES // 65536):
            yield b"a" * 65536

    refused = client.post("/chat", content=chunked())
    assert refused.status_code == 413 and refused.json() == {"error": "the request body is over 4 MB"}
    under = client.post("/chat", content=b"a" * (MAX_BODY_BYTES - 1))  # up to the limit: read, and said why not
    assert under.status_code == 400 and under.json()["error"].startswith("the request body is not JSON")


def test_a_chunked_body_is_read_no_further_than_the_limit() -> None:
    from starlette.requests import Request

    from agentmm.errors import AgentmmError
    from agentmm.http_api import _body, status_of

    received: list[int] = []

    async def receive() -> dict[str, Any]:  # a chunked body of twice the limit, as the ASGI server hands it on
        received.append(1)
        return {"type": "http.request", "body": b"a" * 65536, "more_body": len(received) < 2 * MAX_BODY_BYTES // 65536}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(AgentmmError) as refused:
        asyncio.run(_body(request))
    assert status_of(refused.value) == 413 and str(refused.value) == "the request body is over 4 MB"
    assert len(received) == MAX_BODY_BYTES // 65536 + 1  # the chunk that went over, and no more
