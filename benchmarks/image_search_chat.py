"""How the shipped model uses image search in a chat: does it call it, with what, and what it says after.

    python benchmarks/image_search_chat.py [--seeds 8] [--max-tokens 60]

A data dir with three generated photos (beach, forest, night), indexed by ViT-B-32 with random
weights (no CLIP weights offline: the ranking means nothing, the calls and replies are real);
then one new thread per seed, the same request, ``search_images`` enabled, memory off. Counts:
how often the model called the tool, how many calls ran, how many queries were words
(``QUERY_PATTERN``) and mentioned the beach, and how many replies held a call or a result of
the model's own making ("[calling ...", "... result:"), text that looks like a call nobody ran
or paths nobody found. Prints one line per seed, then a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REQUEST = "Find the picture of the beach from last summer in my photos."
COLORS = {"beach": (240, 210, 120), "forest": (20, 120, 30), "night": (10, 10, 40)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from PIL import Image

    from agentmm.graphs.agent import Agent
    from agentmm.settings import load_settings
    from agentmm.tools.clip_search import QUERY_PATTERN, close_default_image_indexes, default_image_index

    counts = {"seeds": args.seeds, "called": 0, "ran_ok": 0, "word_queries": 0, "beach_queries": 0, "fake": 0}
    with tempfile.TemporaryDirectory(prefix="agentmm-bench-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for name, color in COLORS.items():
            Image.new("RGB", (320, 200), color).save(photos / f"{name}.jpg")
        base = {"data_dir": Path(tmp) / "data", "clip_pretrained": "random", "memory": False}
        default_image_index(load_settings(**base)).index_dir(photos)
        for seed in range(1, args.seeds + 1):
            settings = load_settings(**base, tools=["search_images"], seed=seed, max_tokens=args.max_tokens)
            with Agent(settings) as agent:
                turn = agent.chat(REQUEST)
            calls = turn.trace.get("tool_calls") or []
            queries = [str(c["args"].get("query", "")) for c in calls]
            fake = "[calling" in turn.reply or "result:" in turn.reply
            counts["called"] += bool(calls)
            counts["ran_ok"] += any(c["status"] == "ok" for c in calls)
            counts["word_queries"] += sum(bool(re.match(QUERY_PATTERN, q)) for q in queries)
            counts["beach_queries"] += sum("beach" in q.lower() for q in queries)
            counts["fake"] += fake
            print(f"seed {seed}: queries {queries!r}, fake call/result in reply: {fake}; {turn.reply[:70]!r}",
                  file=sys.stderr)  # fmt: skip
        close_default_image_indexes()
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
