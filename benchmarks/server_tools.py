"""Tool calls on a model server: agentmm's constrained steps through the server's JSON-schema
support, against the server's own tool calling and against the same steps in-process.

One model (default: the shipped 135M smollm2), the labelled messages and tools of
``benchmarks/tool_strategies.py`` (dice, arithmetic, the date, and chat that wants no tool),
the same sampling and seed per message, three ways:

- **in-process constrained**: ``ChatLlamaCpp(tool_calling="constrained")`` (grammar-bound steps);
- **server constrained**: ``ChatModelServer(tool_calling="constrained")`` on llama-cpp-python's
  server (``python -m llama_cpp.server``, started here on a free loopback port), each step's
  answer bound by ``response_format`` (what ``tool_calling="auto"`` picks on that server);
- **server native**: the same server given the tools with ``tool_choice="auto"`` (what a plain
  ``ChatOpenAI`` does there).

Per way: calls made, well-formed, right tool (or rightly none), correct arguments, and the
median seconds a reply. The two constrained ways ask the same questions with the decision
greedy, so their right-tool counts should match, up to the server's own sampling of arguments.

Run: ``python benchmarks/server_tools.py [--model smollm2] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tool_strategies: its messages, tools and scoring
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.llama_server

from tool_strategies import LABELLED, TOOLS, answer_labelled, summary

from agentmm.llm import ChatLlamaCpp
from agentmm.model_server import server_chat_model
from agentmm.models import resolve_model
from agentmm.settings import load_settings
from tests.llama_server import LlamaServer

N_CTX = 2048


def run(model: Any) -> list[dict[str, Any]]:
    return answer_labelled(model.bind_tools(list(TOOLS.values()), tool_choice="auto"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = resolve_model(args.model).path
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": 1}
    rows: dict[str, list[dict[str, Any]]] = {}
    local = ChatLlamaCpp(model_path=str(path), n_ctx=N_CTX, n_gpu_layers=0, tool_calling="constrained", **sampling)
    local.invoke("Hello.")  # loaded outside the timed replies
    rows["in-process constrained"] = run(local)
    local.close()
    with LlamaServer(path, n_ctx=N_CTX) as server:
        for way, setting in (("server constrained", "constrained"), ("server native", "native")):
            model = server_chat_model(load_settings(model_url=server.url, memory=False, tool_calling=setting,
                                                    **sampling))  # fmt: skip
            model.invoke("Hello.")
            rows[way] = run(model)
    report = {
        "model": path.name,
        "messages": len(LABELLED),
        "summary": {way: summary(found) for way, found in rows.items()},
        "rows": rows,
    }
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
