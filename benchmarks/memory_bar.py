"""The relevance bar: which recalled memories enter the prompt, for questions and for chat that
asks nothing of memory, with the shipped MiniLM.

    python benchmarks/memory_bar.py [--conversations 4] [--sessions 8] [--filler 60] [--users 6] [--seed 1]

``agentmm eval memory`` scores recall's ranking; what a turn places in the prompt is further cut
by the relevance bar (``agentmm.memory.selection``). Each question here goes through what the
graph's recall node does (``conversation.recall`` with k=5, then ``select_memories`` at
``Settings.memory_min_similarity``, the token cap left out so only the bar acts), over three
sets:

- ``devset``: the development set's conversations (``memory_devset.py``, third person: "What is
  the name of Maya's cat?"), one scope each, questions of categories 1-4;
- ``short facts``: each of ``--users`` users' own short statements ("My dog is Rex.", each with a reply that
  repeats none of it) among small talk, written as chat turns are (``remember_turn``), then asked
  in the user's words ("What is my dog called?"), each user on other dates (the date is part of
  a memory's indexed text, and moves a short one's similarity by a few hundredths);
- ``off-topic``: twelve chat messages, sent by each of those users, that ask nothing of them
  (role-play prompts, a greeting, a joke): every memory placed for them is noise.

Printed per set: evidence recall (evidence memories placed / evidence memories), questions with
any evidence placed, other memories placed per question; for off-topic messages, memories placed
and messages that got any.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_devset import FILL, FILLER_BODY, FILLER_CLOSE, FILLER_OPEN, devset

from agentmm.memory.chroma_store import ChromaStore
from agentmm.memory.conversation import recall, remember_turn
from agentmm.memory.embeddings import SentenceTransformerEmbeddings
from agentmm.memory.evaluate import asked_on, ingest
from agentmm.memory.locomo import load_locomo
from agentmm.memory.selection import select_memories
from agentmm.settings import Settings

SHORT_FACTS = [  # (what the user says, how they ask for it later)
    ("My dog is Rex.", "What is my dog called?"),
    ("My sister lives in Lisbon.", "Where does my sister live?"),
    ("I work as a nurse.", "What is my job?"),
    ("My favourite colour is green.", "What's my favourite colour?"),
    ("I was born in Oslo.", "Where was I born?"),
    ("My cat is called Miso.", "What's the name of my cat?"),
    ("I play the cello.", "Which instrument do I play?"),
    ("My brother Tom is a pilot.", "What does my brother do?"),
    ("I'm allergic to peanuts.", "What am I allergic to?"),
    ("My car is a blue Volvo.", "What car do I drive?"),
    ("My birthday is on 3 March.", "When is my birthday?"),
    ("I drink my coffee black.", "How do I take my coffee?"),
    ("My neighbour's dog Bruno barks all night.", "What is my neighbour's dog called?"),
    ("I grew up near the harbour in Bergen.", "Where did I grow up?"),
]
REPLIES = ["Oh, nice! Tell me more.", "That's lovely to hear.", "Interesting, I didn't know that.", "Ha, good to know!"]
OFF_TOPIC = ["Describe a quiet harbour town at dawn.", "What would a lighthouse keeper write in a diary?",
             "Explain how sailors navigated by the stars.", "Tell me about a market that sells only maps.",
             "What does the sea smell like after a storm?", "Invent a folk song about a lost ship.",
             "How would you cook fish on a beach fire?", "Describe the captain of an old merchant ship.",
             "Hello, who are you?", "Tell me a joke.", "What is the capital of France?",
             "Write me a short poem about autumn leaves."]  # fmt: skip
K = 5
PREFILTER = 0.25  # the recall node's own floor for memories found by dense search alone


class Tally:
    """Placed memories per question, split into evidence and the rest."""

    def __init__(self) -> None:
        self.evidence = self.placed_evidence = self.answered = self.questions = self.others = 0
        self.off_placed = self.off_messages = self.off_total = 0

    def question(self, placed: list[str], evidence: set[str]) -> None:
        found = [key for key in placed if key in evidence]
        self.questions += 1
        self.evidence += len(evidence)
        self.placed_evidence += len(found)
        self.answered += bool(found)
        self.others += len(placed) - len(found)

    def off_topic(self, placed: list[str]) -> None:
        self.off_total += 1
        self.off_placed += len(placed)
        self.off_messages += bool(placed)

    def row(self, name: str) -> str:
        if not self.questions:
            return f"| {name} | | | | {self.off_placed} in {self.off_messages} of {self.off_total} |"
        return (f"| {name} | {100 * self.placed_evidence / self.evidence:.1f} | {self.answered}/{self.questions} "
                f"| {self.others / self.questions:.2f} | |")  # fmt: skip


def placed(
    store: ChromaStore, namespace: tuple[str, ...], question: str, bar: float, now: datetime | None
) -> list[str]:
    found = recall(store, [namespace], question, k=K, min_similarity=PREFILTER, now=now)
    chosen = select_memories([r.as_trace() for r in found], len, user_name="User", min_similarity=bar,
                             max_tokens=1 << 30)  # fmt: skip
    return [str(m["id"]) for m in chosen.kept]


def run_devset(store: ChromaStore, tmp: Path, conversations: int, sessions: int, bar: float) -> Tally:
    path = tmp / "devset.json"
    path.write_text(json.dumps(devset(conversations, sessions)))
    tally = Tally()
    for i, sample in enumerate(load_locomo(path)):
        namespace = ("memories", f"dev{i}", "_assistant")
        ingest(store, sample, namespace)
        for qa in sample.qa:
            if qa.category in (1, 2, 3, 4):
                tally.question(placed(store, namespace, qa.question, bar, asked_on(sample)), set(qa.evidence))
    return tally


def run_short_facts(store: ChromaStore, filler: int, seed: int, bar: float, facts: Tally, off: Tally) -> None:
    """One user's scope: the short facts among ``filler`` small-talk messages, said over days
    from a start the seed picks (the date is part of each memory's indexed text)."""
    rng = random.Random(seed)
    namespace = ("memories", f"user{seed}", "mira")
    small_talk = []
    for _ in range(filler):
        body = rng.choice(FILLER_BODY).format(**{k: rng.choice(v) for k, v in FILL.items()})
        small_talk.append(f"{rng.choice(FILLER_OPEN)} {body}. {rng.choice(FILLER_CLOSE)}".strip())
    said = [(text, True) for text, _ in SHORT_FACTS] + [(text, False) for text in small_talk]
    rng.shuffle(said)
    start = datetime(2025, 1, 1, 9, tzinfo=UTC) + timedelta(days=rng.randrange(700))
    keys: dict[str, str] = {}
    for turn, (text, fact) in enumerate(said, 1):
        thread = f"thread-{turn // 8}"
        remember_turn(store, namespace, thread_id=thread, turn=turn, when=start + timedelta(hours=5 * turn),
                      exchange=[("user", "Ada", text), ("assistant", "Mira", rng.choice(REPLIES))])  # fmt: skip
        if fact:
            keys[text] = f"{thread}:{turn}:user"
    now = start + timedelta(days=60)
    for text, question in SHORT_FACTS:
        facts.question(placed(store, namespace, question, bar, now), {keys[text]})
    for message in OFF_TOPIC:
        off.off_topic(placed(store, namespace, message, bar, now))


def commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "agentmm"], capture_output=True,
                               text=True, check=True).stdout.strip()  # fmt: skip
        return head.stdout.strip() + (" (+ uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=4, help="development-set conversations")
    parser.add_argument("--sessions", type=int, default=8, help="sessions per development-set conversation")
    parser.add_argument("--filler", type=int, default=60, help="small-talk messages around the short facts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--users", type=int, default=6, help="users who say the short facts (each at other dates)")
    parser.add_argument("--bar", type=float, default=Settings().memory_min_similarity)
    args = parser.parse_args()
    embedder = SentenceTransformerEmbeddings()
    with tempfile.TemporaryDirectory(prefix="agentmm-bar-") as tmp, \
            ChromaStore.from_path(Path(tmp) / "store", index=embedder.index_config()) as store:  # fmt: skip
        dev = run_devset(store, Path(tmp), args.conversations, args.sessions, args.bar)
        facts, off = Tally(), Tally()
        for seed in range(args.seed, args.seed + args.users):
            run_short_facts(store, args.filler, seed, args.bar, facts, off)
    print(f"commit {commit()}; bar {args.bar}; k={K}; devset {args.conversations}x{args.sessions} sessions; "
          f"{len(SHORT_FACTS)} short facts among {args.filler} small-talk messages, {args.users} users")  # fmt: skip
    print("\n| set | evidence recall % | questions answered | other memories placed per question "
          "| off-topic: memories placed in messages |")  # fmt: skip
    print("|---|---:|---:|---:|---|")
    for name, tally in (("devset", dev), ("short facts", facts), ("off-topic", off)):
        print(tally.row(name))
    embedder.close()


if __name__ == "__main__":
    main()
