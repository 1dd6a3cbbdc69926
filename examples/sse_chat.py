"""A chat service that streams agentmm's replies as server-sent events (Starlette + uvicorn).

    python examples/sse_chat.py --port 8000
    curl -N -X POST localhost:8000/chat -H 'content-type: application/json' -d '{"message": "Hello!"}'

``POST /chat`` takes ``{"message": ..., "thread_id": ...?, "persona": ...?}`` and answers with
``event: token`` (one per streamed piece, ``data`` a JSON string), then ``event: done`` whose
``data`` is the turn as ``agentmm chat --json`` prints it (reply, thread_id, usage, trace).
A bad request gets ``event: error`` with one line. ``GET /health`` says the service is up.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentmm import Agent
from agentmm.errors import AgentmmError


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def make_app(agent: Agent) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()

        async def events() -> AsyncIterator[str]:
            try:
                # The turn runs on the agent's own loop thread; a client that goes away cancels
                # this iteration, which stops generation and keeps the partial reply.
                turn = agent.stream(body.get("message", ""), body.get("thread_id"), persona=body.get("persona"))
                async for piece in turn.astream():
                    yield sse("token", piece)
            except AgentmmError as exc:
                yield sse("error", str(exc))
                return
            yield sse("done", turn.result.to_json())

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "model": agent.settings.model})

    return Starlette(routes=[Route("/chat", chat, methods=["POST"]), Route("/health", health)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with Agent() as agent:
        uvicorn.run(make_app(agent), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
