"""How a turn's observations (captions, transcripts, unreadable files) read in its context.

The default phrasing is SillyTavern's ("[{{user}} sends {{char}} a picture that contains:
...]"), which role-play models and card authors know; each line is a setting, with the same
``{{macro}}`` syntax cards use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

IMAGE_NOTE = "[{{user}} sends {{char}} a picture that contains: {{text}}]"
NATIVE_IMAGE_NOTE = "[{{user}} sends {{char}} a picture]"
VOICE_NOTE = '[{{user}} sends {{char}} a voice note that says: "{{text}}"]'
UNREADABLE_NOTE = "[{{user}} tried to send {{file}}, but it could not be read: {{error}}]"
# A good file that no model here can perceive (no captioner offline): the reason is setup
# advice for the user, shown to them; the character only learns that it cannot see or hear it.
UNSEEN_IMAGE_NOTE = "[{{user}} sends {{char}} a picture, but {{char}} cannot see it]"
UNHEARD_AUDIO_NOTE = "[{{user}} sends {{char}} a voice note, but {{char}} cannot hear it]"
# A voice note the speech model found no words in (silence, noise, a clip too short to say
# anything): told as such, never as a quote of nothing.
SILENT_AUDIO_NOTE = "[{{user}} sends {{char}} a voice note with no words in it]"
MACROS = ("user", "char", "text", "file", "error")
_MACRO = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")


def check_note(value: str) -> str:
    """A note template may use only the known macros (a typo would reach the model verbatim)."""
    unknown = sorted({name for name in _MACRO.findall(value) if name.lower() not in MACROS})
    if unknown:
        known = ", ".join("{{" + name + "}}" for name in MACROS)
        raise ValueError(f"unknown macro {{{{{unknown[0]}}}}} (known: {known})")
    return value


class ObservationPhrasing(BaseModel):
    """One template per kind of observation. ``native_image``: a picture the chat model sees
    itself (no caption); ``unreadable``: a file that could not be perceived; ``unseen_image``
    and ``unheard_audio``: a good file whose model is not available here (``unavailable``);
    ``silent_audio``: a voice note in which no words were found."""

    model_config = ConfigDict(frozen=True)

    image: str = IMAGE_NOTE
    native_image: str = NATIVE_IMAGE_NOTE
    audio: str = VOICE_NOTE
    unreadable: str = UNREADABLE_NOTE
    unseen_image: str = UNSEEN_IMAGE_NOTE
    unheard_audio: str = UNHEARD_AUDIO_NOTE
    silent_audio: str = SILENT_AUDIO_NOTE

    @field_validator("image", "native_image", "audio", "unreadable", "unseen_image", "unheard_audio", "silent_audio")
    @classmethod
    def _known_macros(cls, value: str) -> str:
        return check_note(value)

    @classmethod
    def from_settings(cls, settings: Any) -> ObservationPhrasing:
        return cls(
            image=settings.image_note,
            native_image=settings.native_image_note,
            audio=settings.voice_note,
            unreadable=settings.unreadable_note,
            unseen_image=settings.unseen_image_note,
            unheard_audio=settings.unheard_audio_note,
            silent_audio=settings.silent_audio_note,
        )

    def line(self, observation: Mapping[str, Any], user_name: str, char_name: str) -> str:
        """One observation (a trace dict) as a line of context; "" for one with nothing to say
        (a voice note whose transcript is the user's message, ``as_message``, is said there)."""
        if observation.get("as_message"):
            return ""
        if observation.get("unavailable"):
            template = self.unseen_image if observation.get("kind") == "image" else self.unheard_audio
        elif observation.get("error"):
            template = self.unreadable
        elif observation.get("native"):
            template = self.native_image
        elif observation.get("kind") == "image":
            template = self.image
        elif observation.get("kind") == "audio":
            template = self.audio if str(observation.get("text") or "").strip() else self.silent_audio
        else:
            return ""
        values = {
            "user": user_name,
            "char": char_name,
            "text": str(observation.get("text") or ""),
            "file": Path(str(observation.get("file") or "")).name,
            "error": str(observation.get("error") or ""),
        }
        return _MACRO.sub(lambda m: values.get(m.group(1).lower(), m.group(0)), template)


def describe_observations(
    observations: Sequence[Mapping[str, Any]],
    user_name: str,
    char_name: str,
    phrasing: ObservationPhrasing | None = None,
) -> str:
    """The turn's observations as its context, one line each."""
    phrasing = phrasing or ObservationPhrasing()
    return "\n".join(line for o in observations if (line := phrasing.line(o, user_name, char_name)))
