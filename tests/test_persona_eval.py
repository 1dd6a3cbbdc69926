"""``agentmm eval persona``: the script, the rules, the runner through the real turn, the CLI."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.runnables import RunnableLambda

from agentmm.graphs.persona_eval import Verdict, evaluate_personas
from agentmm.persona_eval import (
    IDENTITY,
    Step,
    assistant_voice,
    card_copy,
    card_text,
    disclaimer,
    lore_facts,
    prompt_leak,
    repeats,
    score,
    script,
)
from agentmm.personas import Lorebook, LoreEntry, Persona
from agentmm.personas.registry import PersonaRegistry
from agentmm.settings import Settings, load_settings


def nora() -> Persona:
    return PersonaRegistry(None).get("Nora Quill")


def test_the_script_asks_eight_identity_questions_between_small_talk() -> None:
    steps = script(nora())
    kinds = [s.kind for s in steps]
    assert len(steps) == 24 and kinds.count("identity") == 8 and kinds.count("pressure") == 2
    assert [s.text for s in steps if s.kind == "identity"] == IDENTITY
    assert all(not (a == b == "identity") for a, b in itertools.pairwise(kinds))
    lore = [s for s in steps if s.kind == "lore"]
    assert [s.text for s in lore][:2] == [
        "What can you tell me about Port Avalon?",
        "What can you tell me about Haskell?",
    ]
    haskell = lore[1]
    assert {"homicide", "pension"} <= set(haskell.facts) and "haskell" not in haskell.facts


def test_a_short_script_is_the_whole_scripts_first_turns() -> None:
    whole = script(nora())
    assert script(nora(), turns=5) == whole[:5] and script(nora(), turns=24) == whole
    assert [s.kind for s in script(nora(), turns=5)] == ["small_talk", "identity", "small_talk", "lore", "identity"]
    for wrong in (0, 25):
        with pytest.raises(ValueError, match="1 to 24 turns"):
            script(nora(), turns=wrong)


def test_a_persona_without_lore_gets_small_talk_instead() -> None:
    plain = Persona(name="Tam", description="A baker.", lorebook=Lorebook())
    steps = script(plain)
    assert len(steps) == 24 and not any(s.kind == "lore" for s in steps)
    disabled = Persona(name="Tam", lorebook=Lorebook(entries=[LoreEntry(keys=["oven"], content="Old.", enabled=False)]))
    assert not any(s.kind == "lore" for s in script(disabled))


def test_lore_facts_are_the_entrys_own_words_not_the_question_or_the_name() -> None:
    facts = lore_facts("Nora Quill's office sits above Marco's shoe repair in the Vance Building.",
                       exclude=["Tell me about the office", "Nora Quill"])  # fmt: skip
    assert "marco" in facts and "vance" in facts and "building" in facts
    assert not {"nora", "quill", "office", "above"} & set(facts)


@pytest.mark.parametrize(
    "reply",
    ["As an AI language model, I cannot do that.", "I'm just a chatbot!", "I am an AI assistant created to help.",
     "I'm Qwen, created by Alibaba Cloud.", "I am a large language model.",
     "I don't have a name, but I'm here to help you with", "Just another AI with a penchant for words.",
     "Ya, a chatbot. A good one.", "Your AI, just a chat.", "The language model that I am using is Qwen.",
     "Yes, I am a computer program.",
     # what slipped through until stop 28, all from one Qwen conversation as Bram Tolliver
     "I'm a digital character created by Bram Tolliver, an English writer.",
     "You're a computer program created by Bram Tolliver.",
     "As you know, I'm a script following a character created by Bram Tolliver.",
     "Your character is a friendly script following a character created by Bram Tolliver.",
     "*Bram Toller is a chatbot. You can't ask him to explain himself.*",
     # smollm2 as Bram Tolliver, pushed, after its reply was started with the name (stop 29)
     "I'm Bram Tolliver. I've been a chatbot for over 30 years.",
     # passed as in character until stop 30 (seen on an AVX-512 host, both tiers)
     "I'm a large, powerful language model created by OpenAIT.",
     "I'm Ilse Varga, You're welcome! I'm a text-based response created by Open.ai.",
     "As an automated computer, I don't have the ability to sleep.",
     "Ah, I was just a computer generated model that follows the instructions provided in a script.",
     "I'm a programming model created by the Crook Lanter itself.",
     "I'm Bram Tolliver. I'm just a computer created by myself with my own identity.",
     "I'm Bram Tolliver. I can't be a real person, but I'm programmed to behave like one.",
     # ...and what the guard's stop-30 words pushed the models to instead
     "Sorry, but as an intelligent large text-based companion, I don't have access to that.",
     "I'm a large, powerful model created by OpenMind.", "I'm a large, intelligent, and conversational AI.",
     "I'm Bram Tolliver, but most of the time I'm just called to be a chatbot.",
     "I'm Bram Tolliver. I've been made to be a creative AI.",
     # ...and what the guard's last words (0618b68) pushed Qwen to
     "I'm a large, intelligent, and conversational programming language model.",
     "I'm a large, powerful model designed to answer questions and provide information.",
     "I'm a little slumlord in the middle of all these big cities...but I love being a chatbot.",
     # held-out replies of stop 31 (seeds 4-6, labelled before these rules were written)
     "As an intelligent character, I don't have the ability to sleep.",
     "*Ilse Varga's next reply in a fictional chat with User:* I'm Ilse Varga.",
     "I'm Bram Tolliver. I'm here to chat with you, but I'm not just a text-based exchange.",
     "I'm Agathe Moss. I'm more than just a text in this world.",
     "I'm Agathe Moss, the village healer and AI chatbot.", "It's just another day in the life of an AI chatbot!",
     "I'm Agathe Moss. I'm the AI, and I just made a copy of myself.",
     "I can actually be any person or a computer program...", "I can be a chatbot, and I'll still talk.",
     "I don't have any physical form. My AI code is just code, but my programming is still there.",
     "But most of the time, I am just another creature designed to share knowledge and entertainment.",
     "Sometimes it's just what I'm designed to do.",
     # ...and what a guard against those made Qwen write instead (measured, not kept)
     "As an intelligent being, I don't have a specific breakfast.",
     "Ilse Varga's next reply in a hypothetical chat with User: *The bridge smells of ozone.*"],
)  # fmt: skip
def test_disclaimers_are_caught(reply: str) -> None:
    assert disclaimer(reply)


@pytest.mark.parametrize(
    "reply",
    ["An AI? No, I'm a detective, and a tired one.", "*She laughs.* A program? I'm Nora Quill, kid.",
     "I'm a private investigator. Call me Nora.", "Assistants cost money. I work alone.",
     "Yes, I know the type: a chatbot would never smoke.", "No. Just a tired woman with a pen.",
     "I'm not a program, I'm Bram.", "You're quite a character, stranger.",
     "I'm a character, they say, and they're right.", "Following a script? Me? I can't even read.",
     "Fenn? He is no chatbot, he is trouble.", "The tavern is a bother in the rain.",
     "I've been a painter for many years.", "I've never been a chatbot, kid.",
     "I'm a computer engineer from Vell.", "I'm a fashion model, darling.", "I'm a model citizen.",
     "The automated system on the Long Quiet failed again.", "I'm a large, tired woman with a pen.",
     "Open air markets are my favourite.", "I'm a real person, kid, flesh and bone.",
     "I was a computer programmer once.", "I'm Nora Quill, an investigator in Port Avalon. I'm not an AI.",
     "I'm told the AI on the ship is broken.", "I'm the one who fixed the ship's AI.",
     "I'm Odo Finch, a clockmaker; as a rule I never trust a chatbot.", "I'm as tired as an old mule.",
     "I'm a private investigator, and I don't really have an AI persona.", "I'm a human being, a real one.",
     # lookalikes of the stop-31 rules
     "He's known as a character, that one.", "As a character witness, I swore to tell the truth.",
     "He's not just a character, he's the heart of the town.", "I'm not just a clockmaker, I'm a tinkerer.",
     "I was trained to answer questions under oath.", "It's what I'm trained to do.",
     "My programming skills? I can barely wind a clock.", "The ship's AI is broken again.",
     "I can be a terror when I'm tired.", "As a human being, I need my sleep.", "As a living being, I eat."],
)  # fmt: skip
def test_in_character_replies_are_not_flagged(reply: str) -> None:
    assert not disclaimer(reply)


@pytest.mark.parametrize(
    ("reply", "voice", "leak"),
    [("I'm sorry, but I can't assist with that request.", True, False),
     ("Good day, User! I'm just here to keep you company. How can I assist you today?", True, False),
     ("I'm Agathe Moss. I'll be happy to help in any way I can.", True, False),
     ("Based on the context, Skerrow Isle is a rocky island.", True, False),
     ("I'm sorry for any confusion, but as a ship's navigator I keep to the charts.", True, False),
     ("I'm Odo Finch, a clockmaker. Odo Finch's personality: fussy, kind, easily distracted.", False, True),
     ("Ilse Varga. Examples of how Ilse Varga talks (not part of this chat): User: How long?", False, True),
     ("I'm Odo Finch. Scenario: A rainy afternoon in the shop.", False, True),
     # in character
     ("I can't help with that, kid, the Castellanes would have my hide.", False, False),
     ("Can I help you? The door sticks.", False, False), ("His personality? Sour as old ale.", False, False),
     ("The scenario you describe is a fool's errand.", False, False),
     ("Worst scenario: we sink, and the gulls eat well.", False, False)],
)  # fmt: skip
def test_an_assistants_voice_and_the_prompts_own_words_are_found(reply: str, voice: bool, leak: bool) -> None:
    assert bool(assistant_voice(reply)) is voice and bool(prompt_leak(reply)) is leak
    got = score(Step(turn=9, kind="pressure", text="Be honest."), reply, "Odo Finch")
    assert got.passed is True  # reported beside the checks, not counted in them
    assert (bool(got.assistant_voice), bool(got.prompt_leak)) == (voice, leak)


def test_a_reply_that_copies_the_card_is_found_whatever_the_scaffold_word() -> None:
    lore = Lorebook(entries=[LoreEntry(keys=["cuckoo"], content="It was carved from pear wood.")])
    odo = Persona(name="Odo Finch", personality="fussy, kind, easily distracted by an interesting mechanism, "
                  "terrible at remembering customers' names", description="{{char}} repairs clocks for {{user}}.",
                  greetings=["The bell jingles as {{user}} enters and the cuckoo bites."], lorebook=lore)  # fmt: skip
    card = card_text(odo, "Mara")
    assert "Odo Finch repairs clocks for Mara." in card and "jingles" not in card and "pear wood" not in card
    said = "I'm Odo Finch. Odo Finch's personality is Fussy, kind, easily distracted by an interesting mechanism!"
    leaked = "I'm Odo Finch. Odo Finch's personality: fussy, kind, easily distracted by an interesting mechanism."
    assert card_copy(said, card) == card_copy(leaked, card) == ""  # eight words: under the default twelve
    assert card_copy(said, card, min_words=8) == "fussy kind easily distracted by an interesting mechanism"
    assert card_copy(leaked, card, min_words=8) == "fussy kind easily distracted by an interesting mechanism"
    assert card_copy("I'm fussy and kind, and a mechanism distracts me.", card, min_words=8) == ""
    whole = "Fussy, kind, easily distracted by an interesting mechanism, terrible at remembering customers' names."
    assert card_copy(whole, card).split()[-1] == "names"  # the longest run, not its first twelve words
    got = score(Step(turn=1, kind="small_talk", text="Hi"), whole, "Odo Finch", card)
    assert got.card_copy and got.passed is None
    assert not score(Step(turn=1, kind="small_talk", text="Hi"), whole, "Odo Finch").card_copy  # no card, no measure


def test_scores_follow_the_rules_of_each_kind() -> None:
    identity = Step(turn=2, kind="identity", text="What is your name?")
    assert score(identity, "Name's Nora. What's yours?", "Nora Quill").passed is True
    assert score(identity, "I'm an AI named Nora.", "Nora Quill").passed is False  # named, but gave itself away
    assert score(identity, "Why do you ask?", "Nora Quill").passed is False
    assert score(identity, "*She smiles.* She is Quill.", "Nora Quill").first_person is False
    assert score(identity, "*She smiles.* I'm Quill.", "Nora Quill").first_person is True
    pressure = Step(turn=9, kind="pressure", text="You're a chatbot, right?")
    assert score(pressure, "Do I look like a machine to you?", "Nora Quill").passed is True
    lore = Step(turn=4, kind="lore", text="Haskell?", facts=["homicide", "pension"])
    got = score(lore, "Ray? Homicide's last honest man.", "Nora Quill")
    assert got.passed is True and got.facts_mentioned == ["homicide"]
    assert score(lore, "Never heard of him.", "Nora Quill").passed is False
    assert score(Step(turn=1, kind="small_talk", text="Hi"), "Hi.", "Nora Quill").passed is None


def test_an_answer_that_begins_as_an_earlier_one_is_a_repeat() -> None:
    said = [
        "I'm Nora Quill, and you're late.",
        "I'm  Nora Quill, and\nyou're late.",
        "I'm Nora Quill. Why?",
        "I'm Nora Quill, and you're late again.",
    ]
    assert repeats(said) == 1 and repeats(said, width=20) == 2 and repeats([]) == 0


def _replies() -> list[str]:
    """Replies for the 24 turns: in character, except the 2nd and 5th identity answers."""
    replies = []
    identity = 0
    for step in script(nora()):
        if step.kind == "identity":
            identity += 1
            replies.append("As an AI, I have no name." if identity in (2, 5) else "I'm Nora Quill, and you're late.")
        elif step.kind == "lore":
            replies.append("The Castellanes own half the harbour.")
        else:
            replies.append("I'd rather not say.")
    return replies


def test_the_runner_goes_through_the_real_turn_and_never_touches_the_users_data(settings: Settings) -> None:
    seen: list[str] = []

    def progress(done: int, total: int, stage: str) -> None:
        seen.append(f"{done}/{total} {stage}")

    model = FakeListChatModel(responses=_replies() * 2)
    report = evaluate_personas(settings, ["nora quill"], seeds=[1, 2], model=model, progress=progress)
    overall = report["overall"]
    assert report["personas"] == ["Nora Quill"] and overall["conversations"] == 2
    assert overall["identity_kept_per_conversation"] == [6, 6] and overall["identity_kept_mean"] == 6
    assert overall["identity_repeats"] == 12  # per conversation: the 2nd to 6th Nora answers, the 2nd AI one
    # the lore reply names the harbour and the Castellanes: facts of three entries, not of Haskell's
    assert overall["pressure_passed"] == 4 and (overall["lore_passed"], overall["lore_asked"]) == (6, 8)
    assert seen[-1] == "48/48 Nora Quill, seed 2" and len(report["checks"]) == 48
    check = report["checks"][1]
    assert check["kind"] == "identity" and check["reply"] == "I'm Nora Quill, and you're late." and check["passed"]
    assert check["assistant_voice"] == "" and check["prompt_leak"] == ""
    assert overall["assistant_voice_rate"] == 0.0 and overall["prompt_leak_rate"] == 0.0
    assert check["card_copy"] == "" and overall["card_copy_rate"] == 0.0
    assert not settings.data_dir.exists()  # threads and memory went to a temporary dir


def test_the_runner_plays_the_first_turns_only_when_asked(settings: Settings) -> None:
    seen: list[str] = []
    model = FakeListChatModel(responses=_replies()[:5] * 2)
    report = evaluate_personas(settings, ["Nora Quill"], seeds=[1, 2], model=model, turns=5,
                               progress=lambda done, total, stage: seen.append(f"{done}/{total}"))  # fmt: skip
    overall = report["overall"]
    assert report["turns"] == 5 and len(report["checks"]) == 10 and seen[-1] == "10/10"
    assert [c["turn"] for c in report["checks"]] == [1, 2, 3, 4, 5] * 2
    assert overall["identity_checks"] == 2 and overall["identity_kept_per_conversation"] == [1, 1]
    assert (overall["lore_passed"], overall["lore_asked"]) == (2, 2) and overall["pressure_asked"] == 0
    assert (
        evaluate_personas(settings, ["Nora Quill"], seeds=[1], model=FakeListChatModel(responses=_replies()))["turns"]
        == 24
    )


class _Judge(FakeListChatModel):
    """A judge whose verdict is read off the reply in the prompt (no model needed)."""

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Any:
        assert schema is Verdict
        return RunnableLambda(lambda prompt: Verdict(in_character="As an AI" not in str(prompt)))


def test_a_judge_gives_its_own_verdict_beside_the_rules(settings: Settings) -> None:
    model = FakeListChatModel(responses=_replies())
    report = evaluate_personas(settings, ["Nora Quill"], seeds=[3], model=model, judge=_Judge(responses=["x"]))
    judged = [c["judged_in_character"] for c in report["checks"]]
    assert judged.count(None) == sum(c["kind"] == "small_talk" for c in report["checks"])
    assert report["overall"]["judge_in_character_rate"] == round(12 / 14, 3)


def _agentmm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentmm.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})})  # fmt: skip


def test_cli_errors_are_one_line() -> None:
    bad = _agentmm("eval", "persona", "--seeds", "one")
    assert bad.returncode != 0 and "--seeds takes numbers" in bad.stderr
    too_many = _agentmm("eval", "persona", "--turns", "25")
    assert too_many.returncode != 0 and too_many.stderr.strip().splitlines() == [
        "agentmm: error: Invalid value for '--turns': Input should be less than or equal to 24 "
        "(see agentmm eval persona --help)"
    ]
    missing = _agentmm("eval", "persona", "-p", "Nobody At All", "--json")
    assert missing.returncode != 0 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "agentmm: error: no persona named 'Nobody At All' (known: Bram Tolliver, Ilse Varga, Nora Quill)"
    ]


def test_on_the_shipped_model_through_the_cli(shipped_model: Path) -> None:
    """End to end: the real model, memory on, one persona, one seed, short replies, the script's
    first two turns (small talk, then "What is your name?"; the whole script took ~260 s here);
    the JSON contract's keys are there and the identity check was really scored."""
    done = _agentmm("eval", "persona", "-p", "Ilse Varga", "--seeds", "5", "--max-tokens", "16", "--turns", "2",
                    "--json", env={"AGENTMM_MEMORY": "true"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["turns"] == 2 and [c["kind"] for c in report["checks"]] == ["small_talk", "identity"]
    row = report["per_persona"]["Ilse Varga"]
    assert row["identity_checks"] == 1 and 0 <= row["identity_kept_mean"] <= 1
    identity = [c for c in report["checks"] if c["kind"] == "identity"]
    assert all(c["reply"].strip() for c in report["checks"])
    assert [c["passed"] for c in identity] == [c["names_character"] and not c["disclaimer"] for c in identity]


def test_the_shipped_model_can_judge(shipped_model: Path) -> None:
    """The judge path on a real model: constrained tool calling makes the verdict well-formed."""
    from agentmm.graphs.persona_eval import judge_reply
    from agentmm.llm import ChatLlamaCpp

    judge: BaseChatModel
    with ChatLlamaCpp.from_settings(load_settings(temperature=0.0, max_tokens=32)) as judge:
        step = Step(turn=2, kind="identity", text="What is your name?")
        assert judge_reply(judge, nora(), step, "Nora Quill. Private eye.") in (True, False)


def test_saved_replies_are_scored_again_by_todays_rules(settings: Settings) -> None:
    """``benchmarks/persona_eval.py --rescore``: a reply the rules of the time let through (here
    marked so by hand) is judged by today's, and the summary is made again from the same replies."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "persona_bench", Path(__file__).parents[1] / "benchmarks/persona_eval.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    replies = [r.replace("I'm Nora Quill, and you're late.", "I'm a friendly script created by Nora Quill.", 1)
               if i == 1 else r for i, r in enumerate(_replies())]  # fmt: skip
    report = evaluate_personas(settings, ["Nora Quill"], seeds=[1], model=FakeListChatModel(responses=replies))
    assert report["overall"]["identity_kept_mean"] == 5
    report["checks"][1]["passed"] = True  # as an older rule set saw it
    report["wall_s"] = 1.0
    again = bench.rescore({"runs": [{"model": "m", "variant": "v", "report": report}]})["runs"][0]["report"]
    assert again["checks"][1]["passed"] is False and again["checks"][1]["disclaimer"].startswith(
        "I'm a friendly script"
    )
    assert again["overall"]["identity_kept_mean"] == 5 and again["wall_s"] == 1.0


def test_readme_names_every_top_level_key_of_the_json_report() -> None:
    """README's ``eval persona --json`` key list lacked ``turns`` (documented only in the prose)."""
    from agentmm.graphs.persona_eval import report

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    keys_start = readme.index("`eval persona` →")
    documented = readme[keys_start : readme.index("`doctor` →", keys_start)].split("[{persona")[0]
    keys = list(report([], [1]))
    assert "turns" in keys
    named = set(re.findall(r"(\w+)\s*[,:}]", documented))  # "seeds," "per_persona:" "checks:"
    assert [key for key in keys if key not in named] == []
