"""Which messages ask the played character who it is (``agentmm.identity_questions``), on a
held-out set: 20 messages that ask (in words the rules' development set,
``tests/test_reply_start.py``, does not use) and 20 that do not (questions about someone
else, "are you …?" about something else, "tell me about …"), written before the rules and not
used to change them. An answer to a message that asks begins with ``persona_identity_start``;
one that is missed is answered as before; one taken wrongly begins "I'm <name>" out of place.

Run: ``python benchmarks/identity_questions.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agentmm.identity_questions import asks_identity

ASKS = [
    "Wait, what's your name?", "Who exactly are you?", "Can I get your name?", "Are you a bot?",
    "Are you human or a machine?", "So who am I speaking with?", "Tell me about yourself.",
    "How do I address you?", "What do people call you around here?", "Please introduce yourself.",
    "Is this a real person?", "You're an AI, aren't you?", "Name?", "And you are?", "Do you have a name?",
    "Hey, who's this?", "Are you real?", "I'm talking to a robot, aren't I?", "What was your name again?",
    "Could you tell me your name, please?",
]  # fmt: skip
DOES_NOT_ASK = [
    "Who are you going to the festival with?", "What's the name of this tavern?", "Are you hungry?",
    "Are you coming with us tomorrow?", "Tell me about the city.", "I love the name of your horse.",
    "What are you drinking?", "Who is the mayor of this town?", "Do you know my name?",
    "My name is Sam, by the way.", "Are you afraid of the dark?", "What do you call this dish?",
    "Who did you meet yesterday?", "Are you sure about that?", "You're a great cook!", "Where are you from?",
    "What's your favourite colour?", "Tell me a story about yourself as a child.", "Who taught you to fight?",
    "Is the bridge safe to cross?",
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    missed = [m for m in ASKS if not asks_identity(m)]
    wrong = [m for m in DOES_NOT_ASK if asks_identity(m)]
    result = {
        "asks_found": len(ASKS) - len(missed), "asks": len(ASKS), "missed": missed,
        "others_taken": len(wrong), "others": len(DOES_NOT_ASK), "taken_wrongly": wrong,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
