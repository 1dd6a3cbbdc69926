"""Messages that ask the played character who it is: its name, whether it is human or a
machine, who the user is talking to, an introduction.

Why this matters: asked "What is your name?", a small model playing a persona answers as
whoever its chat tuning made it ("I'm an AI assistant", "I don't have a name") or as someone
new, because the name sits far back in the system prompt. For such a message the reply is
started with the character saying its name (the ``persona_identity_start`` setting, "I'm
{{char}}"): the model writes the rest. ``agentmm eval persona`` measures what it is worth
(BENCHMARKS.md, "Staying in character").

Rules, not a classifier: they are English, read in a line each, and cheap enough to run on
every turn (a few µs). A question about someone else ("Who are you going with?", "What's the
name of this inn?") does not match; a message marked out of character never does (the user
asked the person behind the character, not the character).
"""

from __future__ import annotations

import re

from agentmm.intent import ruled_intent

_YOU = r"(?:you|u|ya|yourself)"
_YOUR = r"(?:your|ur|yer|thy)"
_END = r"\s*(?:[?!.…]|$)"  # the question ends here: "Who are you?", not "Who are you going with?"
# What the character may be asked to be or not be: "an AI", "a real person", "human".
_MACHINE = (
    r"(?:an? |the |some )?(?:real |actual |living |flesh-and-blood )?(?:ai|a\.i\.|bot|robot|chat ?bot|machine|"
    r"computer(?: program)?|program|human(?: being)?|person|people|language model|llm|(?:ai |virtual )?assistant|"
    r"android|npc|script)\b"
)
_BOT = r"(?:an? )?(?:ai|a\.i\.|bot|robot|chat ?bot|machine|computer|program)\b"
_ASKS = [
    # the name: "What's your name?", "Your name, again?", "Could you tell me your name?"
    r"\b(?:what|tell|told|forgot|forget|remind|know|say|give|spell|repeat|get|have|share|catch|learn)\b"
    r"[^.?!]{0,40}\b" + _YOUR + r" (?:\w+ )?name\b",
    r"\b" + _YOUR + r" (?:full |real |first |proper )?name\b[^.?!]{0,20}\?",
    r"^\W*name\s*\?",
    r"\b(?:what|how) (?:should|do|can|shall|may|might|could|would|will) (?:i|we) (?:call|address|name) " + _YOU,
    r"\bwhat (?:do|does|did) (?:people|folks|they|everyone|others) call " + _YOU,
    # who: "Who are you, really?", "who am I talking to?", "And you are?"
    r"\bwho (?:are|r|were) " + _YOU + r"(?:\s*,?\s*(?:really|exactly|anyway|again|then|now|actually))?" + _END,
    r"\bwho (?:exactly |really )?(?:are|r) " + _YOU + _END,
    r"\bwho (?:am i|i'm|i am|are we|is this|'s this) (?:\w+ )?(?:talking|speaking|chatting|writing) (?:to|with)\b",
    r"\bwho(?:'s| is) (?:this|that)\s*\?",
    r"^\W*(?:and|so) (?:you are|you're|who are you)\W*$",
    r"\bintroduce (?:yourself|you)\b",
    r"\btell (?:me|us|her|him|them) (?:a (?:little|bit|little bit) )?about yourself\s*[.!?]?\s*$",
    # human or machine: "Are you an AI?", "Are you a real person or a computer program?"
    r"\bare (?:you|u) (?:" + _MACHINE + r"|real\b)",  # "Are you real?" but not "Are you really ...?"
    r"\bis (?:this|that) (?:a |an )?(?:real |actual )?(?:person|human|bot|robot|ai|machine|computer)\b",
    r"\byou(?:'re| are) (?:just |only |really |actually |clearly |obviously )?" + _MACHINE,
    r"\b(?:talking|speaking|chatting) (?:to|with) " + _BOT,
]
_ASK = re.compile("|".join(f"(?:{p})" for p in _ASKS), re.IGNORECASE | re.MULTILINE)


def asks_identity(message: str) -> bool:
    """Whether ``message`` asks the character who it is (see the module's docstring)."""
    if not message or ruled_intent(message) == "ooc":
        return False
    said = re.sub(r"\*[^*]*\*", " ", message)  # "*leans in* Who are you?": the action is not asked
    return _ASK.search(said) is not None
