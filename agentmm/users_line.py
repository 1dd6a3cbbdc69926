"""Whose line a played reply must not run into: the user's, unless the user goes by one of the
character's own names.

A small model playing a character writes the user's next line ("Ada: Where were we?"), on its
first token or after a line of its own; ``agentmm.reply_cut`` ends the reply where that line
starts (and generates it again when it began so) and keeps the user from seeing it. A user who
goes by the character's name, or by its first name ("Odo" playing with "Odo Finch"), is not
watched for: the character's own "Odo:" would be taken for the user's line.
"""

from __future__ import annotations


def character_names(persona: str, nickname: str = "") -> set[str]:
    """The names a character goes by in its replies (casefolded): its name, its first name, and
    its V3 card's nickname (what ``{{char}}`` expands to) when it has one."""
    names = {persona.strip(), *persona.split()[:1], nickname.strip()}
    return {name.casefold() for name in names if name}


def users_line_start(user_name: str, persona: str | None, nickname: str = "") -> str:
    """The user's name, whose line a played reply must not run into; "" when there is none to
    watch for: no persona played, no user name, or the user goes by one of the character's names
    (``nickname``: the played persona's)."""
    user = (user_name or "").strip()
    if not persona or not user or user.casefold() in character_names(persona, nickname):
        return ""
    return user
