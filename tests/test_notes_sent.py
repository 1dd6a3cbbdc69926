"""``notes_as_sent``: what of each voice note compose let through, for the chat's lines."""

from __future__ import annotations

from langchain_core.messages import HumanMessage

from agentmm.context import CONTEXT_KEY
from agentmm.notes_sent import notes_as_sent
from agentmm.repl.terminal import user_note


def note(name: str, text: str, **more: object) -> dict[str, object]:
    return {"kind": "audio", "file": f"/x/{name}", "text": text, **more}


def test_a_note_past_the_cut_of_joined_notes_shows_none_of_its_words() -> None:
    notes = [note("a.wav", "One two. Three four.", as_message=True), note("b.wav", "Five six.", as_message=True)]
    composed = {"messages": [HumanMessage("One two…")], "trace": {"truncated_parts": [{"part": "message"}]}}
    a, b = notes_as_sent(notes, composed)
    assert (a["sent_text"], b["sent_text"]) == ("One two…", "")
    assert user_note(b)[1] == "[you said (b.wav): (cut to fit: 0 of 2 words)]"
    assert user_note(a)[1] == "[you said (a.wav): One two… (cut to fit: 2 of 4 words)]"


def test_notes_told_as_context_are_cut_where_the_observations_part_was() -> None:
    notes = [note("a.wav", "Alpha beta."), note("b.wav", "Gamma delta. Epsilon zeta."), note("c.wav", "Eta.")]
    context = "[memory] x\n\n[a.wav: Alpha beta.]\n[b.wav: Gamma delta.…"
    composed = {"messages": [HumanMessage("hm", additional_kwargs={CONTEXT_KEY: context})],
                "trace": {"truncated_parts": [{"part": "observations"}]}}  # fmt: skip
    a, b, c = notes_as_sent(notes, composed)
    assert "sent_text" not in a and (b["sent_text"], c["sent_text"]) == ("Gamma delta.…", "")
    dropped = {**composed, "trace": {"dropped_parts": ["observations"]}}
    assert [o["sent_text"] for o in notes_as_sent(notes, dropped)] == ["", "", ""]
    assert notes_as_sent(notes, {**composed, "trace": {}}) == notes  # nothing cut: shown as heard
