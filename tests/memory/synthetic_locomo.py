"""A small synthetic conversation set in the public LoCoMo format, with known evidence.

Two people talk over several dated sessions; facts are planted in known turns among filler
small talk, and questions ask for them: category 1 (a single fact), 2 (needs two turns),
3 (when something happened: the session date), 4 (open-ended about a planted topic).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

FILLER = [
    "Haha, that sounds like a typical Monday to me.",
    "I've been so busy lately, work just doesn't stop.",
    "Did you see the weather this week? Rain every single day.",
    "I made pasta again tonight, nothing special.",
    "Honestly I just want a quiet weekend at home.",
    "That's great to hear! Tell me more some time.",
    "I watched a documentary about octopuses, they are so clever.",
    "My commute was awful today, the train was late again.",
    "I need more coffee, I barely slept.",
    "Same here, it's been a long week.",
]

# (speaker index, fact text, question, answer, category, second fact for multi-hop or None)
FACTS: list[dict[str, Any]] = [
    {
        "text": "My sister is called Mira and she just moved to Lisbon.",
        "q": "What is {a}'s sister called?",
        "answer": "Mira",
        "category": 1,
    },
    {
        "text": "I adopted a grey cat named Pickle from the shelter.",
        "q": "What is the name of {a}'s cat?",
        "answer": "Pickle",
        "category": 1,
    },
    {
        "text": "I started learning the cello in a community class.",
        "q": "Which instrument is {a} learning?",
        "answer": "cello",
        "category": 1,
    },
    {
        "text": "We ran the Porto half marathon together last weekend.",
        "q": "When did {a} run the half marathon?",
        "answer": "session date",
        "category": 3,
    },
    {
        "text": "I finally got the job at the botanical garden as a greenhouse manager.",
        "q": "When did {a} get the greenhouse job?",
        "answer": "session date",
        "category": 3,
    },
    {
        "text": "My favourite book is The Left Hand of Darkness.",
        "q": "What might {a} like to read next?",
        "answer": "science fiction",
        "category": 4,
    },
    {
        "text": "I'm allergic to peanuts, so I always check labels.",
        "q": "What food should {a} avoid?",
        "answer": "peanuts",
        "category": 4,
    },
]
MULTI_HOP: list[dict[str, Any]] = [
    {
        "first": "Mira invited me to visit her in spring.",
        "second": "I booked a flight to Lisbon for April.",
        "q": "Which city is {a} flying to, and who will {a} visit there?",
        "answer": "Lisbon, Mira",
        "category": 2,
    },
]


def make_sample(index: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed * 100 + index)
    a, b = [("Caroline", "Melanie"), ("Jon", "Gina"), ("Ade", "Ravi")][index % 3]
    facts = list(FACTS)
    rng.shuffle(facts)
    conversation: dict[str, Any] = {"speaker_a": a, "speaker_b": b}
    qa: list[dict[str, Any]] = []
    sessions = 6
    planted = {s: [] for s in range(1, sessions + 1)}
    for i, fact in enumerate(facts):
        planted[1 + i % sessions].append(("fact", fact))
    for hop in MULTI_HOP:
        planted[2].append(("first", hop))
        planted[5].append(("second", hop))
    hop_evidence: dict[str, list[str]] = {}
    for s in range(1, sessions + 1):
        day = 3 + 4 * s
        conversation[f"session_{s}_date_time"] = f"{1 + s}:{10 + s} pm on {day} May, 2023"
        turns = []
        items = planted[s] + [("filler", None)] * 8
        rng.shuffle(items)
        for kind, payload in items:
            n = len(turns) + 1
            dia_id = f"D{s}:{n}"
            if kind == "fact":
                turns.append({"speaker": a, "dia_id": dia_id, "text": payload["text"]})
                answer = payload["answer"]
                if answer == "session date":
                    answer = f"{day} May 2023"
                qa.append({"question": payload["q"].format(a=a), "answer": answer, "evidence": [dia_id],
                           "category": payload["category"]})  # fmt: skip
            elif kind in ("first", "second"):
                turns.append({"speaker": a, "dia_id": dia_id, "text": payload[kind]})
                hop_evidence.setdefault(payload["q"], []).append(dia_id)
            else:
                turns.append({"speaker": rng.choice([a, b]), "dia_id": dia_id, "text": rng.choice(FILLER)})
            turns.append({"speaker": b, "dia_id": f"D{s}:{n + 1}", "text": rng.choice(FILLER)})
        conversation[f"session_{s}"] = turns
    for hop in MULTI_HOP:
        qa.append({"question": hop["q"].format(a=a), "answer": hop["answer"], "evidence": hop_evidence[hop["q"]],
                   "category": hop["category"]})  # fmt: skip
    qa.append({"question": f"What did {a} say about {b}'s dog?", "adversarial_answer": "nothing", "evidence": [],
               "category": 5})  # fmt: skip
    return {"sample_id": f"synthetic-{index}", "conversation": conversation, "qa": qa}


def write_synthetic(path: Path, samples: int = 2) -> Path:
    path.write_text(json.dumps([make_sample(i) for i in range(samples)], indent=1))
    return path


def write_short(path: Path) -> Path:
    """One conversation with small talk in its first session only: every planted fact and question
    (each category) and a session of distractors, about a fifth of the turns to embed. For tests of
    what a command does with recall, where the full set's embedding time buys nothing."""
    sample = make_sample(0)
    for key, turns in sample["conversation"].items():
        if key.startswith("session_") and isinstance(turns, list) and key != "session_1":
            turns[:] = [turn for turn in turns if turn["text"] not in FILLER]
    path.write_text(json.dumps([sample], indent=1))
    return path
