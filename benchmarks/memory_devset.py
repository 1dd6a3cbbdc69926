"""A development set for memory recall: long multi-session conversations with known evidence, in
the public LoCoMo format, made deterministically from a seed (issue 17, item 1).

Tune recall on this set, not on LoCoMo itself. Each conversation is two friends talking over many
dated sessions; facts are planted in known turns among small talk made from templates (so the
filler is varied, not one repeated line), and near-miss distractors (the same kind of fact about
someone else) make retrieval work for it. Questions use LoCoMo's categories:

1. multi-hop: the answer joins two facts said in different sessions ("What does the cousin who
   lives in Oslo do?": one session says where the cousin lives, another what she does);
2. temporal: when something happened, said relative to a session's date ("yesterday", "last
   week"), answered with the date; and the other way round, what happened on a day or in a
   month the question names ("Where did Ada go on 23 July 2023?", the memory saying
   "yesterday" on the 24th), which only recall by date finds;
3. open-domain: an inference from two or three facts about a habit or a taste;
4. single-hop: one fact, said once (some inside a shared photo's caption, as LoCoMo's
   ``blip_caption``).

Every question's evidence is the dia_ids of the turns that state it.

Run: ``python benchmarks/memory_devset.py --out devset.json [--conversations 10] [--sessions 12]
[--seed 17]``, then ``agentmm eval memory devset.json``.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

FIRST = ["Maya", "Jonas", "Priya", "Tomas", "Lena", "Omar", "Sofia", "Kenji", "Alba", "Ravi", "Nadia", "Felix",
         "Ines", "Malik", "Greta", "Hugo", "Yara", "Emil", "Zoe", "Arjun"]  # fmt: skip
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Tallinn", "Porto", "Dublin", "Hanoi", "Quito", "Bergen", "Seville",
          "Krakow", "Nairobi", "Ghent", "Valencia", "Dakar"]  # fmt: skip
JOBS = ["nurse", "architect", "baker", "pilot", "translator", "carpenter", "vet", "geologist", "librarian",
        "chef", "electrician", "journalist"]  # fmt: skip
RELATIVES = ["sister", "brother", "cousin", "aunt", "uncle", "neighbour", "old roommate", "colleague"]
PETS = [("cat", ["Pickle", "Miso", "Juniper", "Biscuit"]), ("dog", ["Rufus", "Pepper", "Olive", "Bruno"]),
        ("parrot", ["Kiwi", "Mango"]), ("rabbit", ["Clover", "Hazel"])]  # fmt: skip
HOBBIES = ["pottery", "bouldering", "the cello", "sourdough baking", "birdwatching", "salsa dancing", "chess",
           "woodworking", "kayaking", "watercolour painting"]  # fmt: skip
EVENTS = ["the jazz festival", "a cooking class", "the science museum", "my friend's wedding", "a pub quiz",
          "the climbing gym", "a pottery fair", "the film premiere", "the farmers' market",
          "a charity run"]  # fmt: skip
COLOURS = ["red", "yellow", "green", "blue", "orange", "purple"]
THINGS = ["kayak", "bicycle", "scooter", "tent", "guitar", "armchair"]
HABITS = [  # (facts that imply it, the question, the answer)
    (["I've been running every morning before work.", "I signed up for the autumn marathon."],
     "Would {a} likely enjoy a long-distance race?", "yes, {a} runs every morning and signed up for a marathon"),
    (["I cook a new vegetarian recipe every Sunday.", "I haven't eaten meat in three years."],
     "Would {a} order the steak at a restaurant?", "no, {a} has been vegetarian for years"),
    (["I read on the train every day, mostly history books.", "I just joined a book club at the library."],
     "Would a history book be a good present for {a}?", "yes, {a} reads history books daily"),
    (["I get seasick even on the ferry.", "Boats make me dizzy, honestly."],
     "Would {a} enjoy a sailing holiday?", "no, {a} gets seasick"),
    (["I practise the piano for an hour every evening.", "I'm saving up for a better keyboard."],
     "Is {a} likely to go to a piano concert?", "yes, {a} plays the piano daily"),
]  # fmt: skip
FILLER_OPEN = ["Honestly,", "Ha,", "Oh,", "You know,", "Well,", "To be fair,", "Funny enough,", "Anyway,"]
FILLER_BODY = [
    "work has been {mood} this week", "the weather keeps changing every hour", "I made {food} again tonight",
    "my commute was {mood} today", "I watched a documentary about {animal}", "I need more coffee",
    "the neighbours are renovating again", "I finally cleaned the kitchen", "the train was late again",
    "I fell asleep on the sofa", "I tried a new {food} recipe", "my phone battery died at lunch",
    "I've been listening to old {music} records", "the shop ran out of {food}",
]  # fmt: skip
FILLER_CLOSE = ["How about you?", "What's new with you?", "Anyway, how are things?", "", "Ugh.", "Not bad overall."]
FILL = {"mood": ["hectic", "slow", "strange", "fine", "long"], "food": ["pasta", "curry", "soup", "tacos", "risotto"],
        "animal": ["octopuses", "crows", "whales", "ants"], "music": ["jazz", "soul", "punk", "folk"]}  # fmt: skip


@dataclass
class Conversation:
    """One sample being written: its sessions' turns, and the questions with their evidence."""

    rng: random.Random
    speakers: tuple[str, str]
    dates: list[datetime]
    sessions: list[list[dict[str, Any]]] = field(default_factory=list)
    qa: list[dict[str, Any]] = field(default_factory=list)

    def say(self, session: int, speaker: int, text: str, caption: str | None = None) -> str:
        turns = self.sessions[session]
        dia_id = f"D{session + 1}:{len(turns) + 1}"
        turn: dict[str, Any] = {"speaker": self.speakers[speaker], "dia_id": dia_id, "text": text}
        if caption is not None:
            turn["blip_caption"] = caption
        turns.append(turn)
        return dia_id

    def filler(self, session: int, count: int) -> None:
        for _ in range(count):
            body = self.rng.choice(FILLER_BODY)
            body = body.format(**{k: self.rng.choice(v) for k, v in FILL.items()})
            text = f"{self.rng.choice(FILLER_OPEN)} {body}. {self.rng.choice(FILLER_CLOSE)}".strip()
            self.say(session, len(self.sessions[session]) % 2, text)

    def ask(self, question: str, answer: str, evidence: list[str], category: int) -> None:
        self.qa.append({"question": question, "answer": answer, "evidence": evidence, "category": category})


def _date(when: datetime) -> str:
    return f"{when.strftime('%-I:%M %p')} on {when.day} {when.strftime('%B, %Y')}"


def conversation(rng: random.Random, index: int, sessions: int, turns: int) -> dict[str, Any]:
    a, b = rng.sample(FIRST, 2)
    start = datetime(2023, 1, 5, 18, 0) + timedelta(days=rng.randrange(300))
    dates = [start]
    for _ in range(sessions - 1):
        dates.append(dates[-1] + timedelta(days=rng.randrange(3, 16), hours=rng.randrange(-3, 4)))
    conv = Conversation(rng, (a, b), dates, [[] for _ in range(sessions)])
    planted = _plant(conv, sessions)
    for session in range(sessions):  # facts interleaved with small talk at random places
        mine = [p for p in planted if p[0] == session]
        length = max(turns, len(mine) + 4)  # a session holds all its facts, with talk between
        slots = sorted(rng.sample(range(length), len(mine)))
        pending = dict(zip(slots, mine, strict=True))
        for slot in range(length):
            if slot in pending:
                _, speaker, text, caption, hook = pending[slot]
                hook.append(conv.say(session, speaker, text, caption))
            else:
                conv.filler(session, 1)
    for ask in conv.qa:  # evidence ids were filled in as the facts were said
        ask["evidence"] = [e for hook in ask["evidence"] for e in hook]
    sample: dict[str, Any] = {"sample_id": f"dev-{index}", "conversation": {"speaker_a": a, "speaker_b": b}}
    for number, (when, said) in enumerate(zip(dates, conv.sessions, strict=True), 1):
        sample["conversation"][f"session_{number}_date_time"] = _date(when)
        sample["conversation"][f"session_{number}"] = said
    sample["qa"] = conv.qa
    return sample


def _plant(conv: Conversation, sessions: int) -> list[tuple[int, int, str, str | None, list[str]]]:
    """Facts to say, as (session, speaker, text, photo caption, hook); each question's evidence
    holds the hooks, which receive the dia_ids when the turns are written."""
    rng, planted = conv.rng, []
    names = conv.speakers

    def plant(session: int, speaker: int, text: str, caption: str | None = None) -> list[str]:
        hook: list[str] = []
        planted.append((session, speaker, text, caption, hook))
        return hook

    for speaker in (0, 1):
        who = names[speaker]
        # single-hop: relatives' cities and jobs, a pet, a hobby; distractors about friends
        relatives = rng.sample(RELATIVES, 3)
        cities = rng.sample(CITIES, 6)
        jobs = rng.sample(JOBS, 6)
        others = [n for n in FIRST if n not in names]
        for i, relative in enumerate(relatives):
            person = rng.choice(others)
            s1, s2 = sorted(rng.sample(range(sessions), 2))
            lives = plant(s1, speaker, f"My {relative} {person} lives in {cities[i]} now.")
            works = plant(s2, speaker, f"{person} just started a new job as a {jobs[i]}.")
            plant(rng.randrange(sessions), speaker, f"My friend's {relative} moved to {cities[i + 3]} last year.")
            conv.ask(f"Where does {who}'s {relative} live?", cities[i], [lives], 4)
            conv.ask(f"What does {who}'s {relative} who lives in {cities[i]} do for work?", jobs[i], [lives, works], 1)
        kind, pet_names = rng.choice(PETS)
        pet = rng.choice(pet_names)
        said = plant(rng.randrange(sessions), speaker, f"We adopted a {kind} called {pet} from the shelter!")
        conv.ask(f"What is the name of {who}'s {kind}?", pet, [said], 4)
        colour, thing = rng.choice(COLOURS), rng.choice(THINGS)
        photo = plant(rng.randrange(sessions), speaker, "Look what I bought this weekend!",
                      caption=f"a photo of a {colour} {thing} in a garage")  # fmt: skip
        conv.ask(f"What colour is the {thing} {who} bought?", colour, [photo], 4)
        hobby = rng.choice(HOBBIES)
        s_hobby = rng.randrange(sessions)
        took_up = plant(s_hobby, speaker, f"I've taken up {hobby}, a class every Thursday.")
        conv.ask(f"Which hobby did {who} take up?", hobby, [took_up], 4)
        conv.ask(f"What did {who} take up in {conv.dates[s_hobby]:%B %Y}?", hobby, [took_up], 2)
        # temporal: events said relative to the session's date
        for event in rng.sample(EVENTS, 3):
            session = rng.randrange(sessions)
            ago, phrase = rng.choice([(1, "yesterday"), (7, "last week"), (2, "two days ago"), (0, "today")])
            went = plant(session, speaker, f"I went to {event} {phrase}, it was lovely.")
            day = conv.dates[session] - timedelta(days=ago)
            answer = day.strftime("%-d %B %Y") if ago != 7 else f"the week before {conv.dates[session]:%-d %B %Y}"
            conv.ask(
                f"When did {who} go to {event.replace('my friend', who + chr(39) + 's friend')}?", answer, [went], 2
            )
            if ago != 7:  # the other way round: the day is asked, the memory says "yesterday"
                conv.ask(f"Where did {who} go on {day:%-d %B %Y}?", event.replace("my friend", "a friend"), [went], 2)
        # open-domain: two habits, each told in pieces over sessions
        for facts, question, answer in rng.sample(HABITS, 2):
            spread = rng.sample(range(sessions), len(facts))
            hooks = [plant(s, speaker, text) for s, text in zip(spread, facts, strict=True)]
            conv.ask(question.format(a=who), answer.format(a=who), hooks, 3)
    return planted


def devset(conversations: int = 10, sessions: int = 12, turns: int = 24, seed: int = 17) -> list[dict[str, Any]]:
    """The whole set; the same arguments always give the same set."""
    rng = random.Random(seed)
    return [conversation(rng, i, sessions, turns) for i in range(conversations)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--conversations", type=int, default=10)
    parser.add_argument("--sessions", type=int, default=12)
    parser.add_argument("--turns", type=int, default=24, help="turns per session, facts included")
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()
    data = devset(args.conversations, args.sessions, args.turns, args.seed)
    args.out.write_text(json.dumps(data, indent=1))
    counts: dict[int, int] = {}
    for sample in data:
        for q in sample["qa"]:
            counts[q["category"]] = counts.get(q["category"], 0) + 1
    turns = sum(len(v) for s in data for k, v in s["conversation"].items() if k.startswith("session_") and
                isinstance(v, list))  # fmt: skip
    print(json.dumps({"conversations": len(data), "turns": turns, "questions_per_category": counts}))


if __name__ == "__main__":
    main()
