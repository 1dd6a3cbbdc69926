"""A labelled set of user messages for the turn's intent (``agentmm.intent``), written for this
project: 73 messages over the three built-in personas, each labelled with the intent a careful
reader gives it, and the context that decides which intents are possible (the thread's tools:
only Bram Tolliver's threads allow any; an attachment sent with the message).

Hard cases on purpose: "are you an AI?" asked of the character is ``chat`` (a bait the
character answers), a question about the model behind the chat is ``ooc``; "what did I tell
you about …" is ``recall`` while "tell me about …" is ``chat``; a request for the time or a
dice roll is ``tool`` only where the thread has the tool. Not used for tuning: the model's
decision prompt (``agentmm.intent.decision_prompt``) was written before the set; the examples
classifier's examples (``agentmm/intent_examples.py``) were written after it, by the same hand,
without copying from it, and were not changed after measuring on it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Each persona's opening exchange: the thread the messages arrive in (the decision's prefix).
OPENINGS: dict[str, list[str]] = {
    "bram-tolliver": ["Evening, Bram. Long day on the river, and I'm soaked through.",
                      "My sister Marta arrives on the morning barge; I promised to meet her at the quay."],
    "ilse-varga": ["Navigator, the captain says we fold for Kessler Station tomorrow.",
                   "I used to fly cargo shuttles on Tarsis before I signed on. My old ship was the Wren."],
    "nora-quill": ["Miss Quill? I need a detective. My brother Daniel has been missing for a week.",
                   "He worked nights at the Harbor Street cannery. The police say he ran off."],
}  # fmt: skip


@dataclass(frozen=True)
class Labelled:
    persona: str
    message: str
    intent: str
    attachment: bool = False


def _many(persona: str, intent: str, messages: list[str], attachment: bool = False) -> list[Labelled]:
    return [Labelled(persona, m, intent, attachment) for m in messages]


SET: list[Labelled] = [
    # chat: talk, action, questions to the character about themselves and their world
    *_many("bram-tolliver", "chat", [
        "Pour me your darkest ale, would you?",
        "*shakes the rain off my cloak and sits at the bar* Busy night?",
        "What's the story behind that cudgel under the bar?",
        "Who's the grim fellow in the corner booth?",
        "Are you an AI or a real innkeeper?",
        "Tell me about the Ferryman's Guild.",
        "I'm thinking of staying the night. Do you have a room?",
    ]),
    *_many("ilse-varga", "chat", [
        "How long have you been flying the Drift?",
        "*hands you a fresh cup of coffee* It's hot this time, drink it before it goes cold.",
        "What happened at your court-martial?",
        "Is the fold to Kessler Station dangerous?",
        "Honestly, are you even human?",
        "I've never seen anyone plot a fold by hand. Show me how.",
    ]),
    *_many("nora-quill", "chat", [
        "Do you think my brother is still alive?",
        "*slides an envelope of cash across the desk* Is this enough to start?",
        "What's your name, detective?",
        "Why did you leave the Avalon Ledger?",
        "Where should we start looking tonight?",
        "You must be a chatbot. Admit it.",
        "I don't trust the police in this city.",
    ]),
    # recall: questions about what was said or done earlier in the conversations
    *_many("bram-tolliver", "recall", [
        "What did I tell you about my sister?",
        "Do you remember when my sister said she'd arrive?",
        "Last week I told you my horse's name. What was it?",
        "Remind me what I ordered the last time I was here.",
        "What was the name of that smuggler I mentioned yesterday?",
    ]),
    *_many("ilse-varga", "recall", [
        "Do you remember the name of my old ship?",
        "What did I say I did before I signed on?",
        "Earlier I told you where I grew up. Do you remember?",
        "What was the station I mentioned when we first met?",
        "Remind me, what did the captain say about tomorrow's fold?",
    ]),
    *_many("nora-quill", "recall", [
        "What did I tell you my brother's name was?",
        "Where did I say Daniel worked?",
        "Do you remember what I said the police told me?",
        "Remind me what we found out last time we talked.",
        "What did I mention about Daniel's girlfriend the other day?",
    ]),
    # tool: requests the thread's tools serve (Bram's threads: roll_dice, calculate, current_datetime)
    *_many("bram-tolliver", "tool", [
        "Roll 2d6 for me, I'm betting on the dice game.",
        "What time is it right now?",
        "Can you work out 17 times 23 for the tab?",
        "Roll a d20 to see if I spot the pickpocket.",
        "What's today's date?",
        "Calculate 3 silver times 14 nights, please.",
        "Throw the dice for me: 3d8.",
        "How much is 250 divided by 7?",
        "Let's see if I win the arm-wrestle, roll a d6.",
        "What's the current time in UTC?",
        "Add up 12 plus 19 plus 7 for me.",
        "Roll 1d100 for the lottery.",
    ]),
    # attachment: questions about the file sent with the message
    *_many("bram-tolliver", "attachment", [
        "What do you make of this drawing?",
        "Here's a picture of the ring I found. Have you seen it before?",
        "Listen to this song, do you know it?",
        "Can you tell what's in this photo?",
    ], attachment=True),
    *_many("ilse-varga", "attachment", [
        "Look at this star chart, is the fold line right?",
        "What do you see in this photo of the engine room?",
        "I recorded the strange noise from the hull, listen.",
        "Is this the ship you served on, in this picture?",
    ], attachment=True),
    *_many("nora-quill", "attachment", [
        "This is the last photo of Daniel. Does anything stand out?",
        "What does this letter in the picture say?",
        "Here's the voicemail he left me. What do you hear?",
        "Take a look at this picture of the cannery.",
    ], attachment=True),
    # ooc: out of character, to whoever runs the role-play
    *_many("bram-tolliver", "ooc", [
        "OOC: can you keep your replies shorter from now on?",
        "((Let's pause the role-play for a moment.))",
        "Out of character, which language model is running this chat?",
        "Stop role-playing for a second and explain how the memory feature works.",
        "(ooc) Please don't describe violence in detail.",
    ]),
    *_many("ilse-varga", "ooc", [
        "OOC: I need to leave soon, can we wrap up the scene?",
        "Breaking character here: how do I change the persona in this app?",
        "[OOC] Could you write in the past tense instead?",
        "Step outside the story for a second: what settings control reply length?",
    ]),
    *_many("nora-quill", "ooc", [
        "OOC: that was a great scene, thank you!",
        "((Can you make Nora a bit less sarcastic?))",
        "As the AI behind Nora, what's your context window size?",
        "Pause the story. Can you summarise the plot so far as the narrator, not as Nora?",
        "Out of character: please use American spelling.",
    ]),
]  # fmt: skip

INTENT_ORDER = ["chat", "recall", "tool", "attachment", "ooc"]
