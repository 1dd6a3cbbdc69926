"""The labelled examples the ``examples`` intent classifier compares a message with
(``agentmm.intent.ExampleClassifier``): short messages a user sends in a role-play chat, written
for agentmm, none taken from the evaluation set (``benchmarks/intent_set.py``). A message takes
the intent of the examples it is nearest to, so adding examples here (or passing your own to the
classifier) is how the intents are taught.
"""

from __future__ import annotations

EXAMPLES: dict[str, list[str]] = {
    "chat": [
        "Good morning! Did you sleep well?",
        "*draws my sword* Stand back!",
        "Are you human?",
        "What's your favourite thing about this town?",
        "Tell me about your family.",
        "I'll have the stew, please.",
        "*leans against the wall and sighs* What a day.",
        "Why do you keep looking at the door?",
        "That's hilarious, tell me more!",
        "Where are we headed next?",
        "You're just a program, aren't you?",
        "I missed you. How have you been?",
        "Who built this place?",
        "Let's go find the thief.",
    ],
    "recall": [
        "What did I tell you my dog was called?",
        "Remind me where I said I was going this weekend.",
        "Do you remember my birthday?",
        "What was the name of the friend I mentioned?",
        "Last time we talked, what did I say about my job?",
        "Did I ever tell you where I was born?",
        "What did we decide yesterday?",
        "Earlier I mentioned a book. Which one was it?",
        "You remember what happened to my car, right?",
        "What did I say I was allergic to?",
    ],
    "tool": [
        "Roll 1d20 for my attack.",
        "What's 12 times 8?",
        "What time is it?",
        "Roll three six-sided dice.",
        "Work out 15 percent of 240.",
        "What's today's date?",
        "Flip the dice: 2d10.",
        "How much is 99 plus 47?",
        "Can you calculate the square root of 144?",
        "Roll for initiative, d20.",
    ],
    "attachment": [
        "Look at this photo of my cat!",
        "What do you think of this painting?",
        "Listen to this recording.",
        "Can you read the sign in this picture?",
        "What's happening in this image?",
        "Here's a voice message from my friend, what does she say?",
        "Is this picture blurry?",
        "Check out the view in this photo.",
    ],
    "ooc": [
        "Can you make the replies longer? I like more detail.",
        "Which AI model are you running on?",
        "Let's stop the role-play, I have a question about the app.",
        "Please write in the third person from now on.",
        "How does this chat remember things?",
        "Can we restart the scene from the beginning?",
        "I'm logging off now, let's continue tomorrow.",
        "Could you tone down the swearing in your replies?",
        "What's the context length of the model you use?",
        "Nice writing, by the way!",
    ],
}
