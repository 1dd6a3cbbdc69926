"""``/memories`` on a note stored in pieces: ``DELETE`` forgets them all, a note over the cap is
400 (the app and its echoing agent are test_http_api's ``client``)."""

from __future__ import annotations

from starlette.testclient import TestClient

from agentmm.memory.manage import MAX_NOTE_CHARS
from tests.test_http_api import client  # noqa: F401  (the fixture)


def test_deleting_a_note_deletes_every_piece(client: TestClient) -> None:  # noqa: F811
    """``DELETE /memories/note:ID`` answered 200 and left 34 of a 3.5 KB note's 35 pieces, still
    found by search."""
    text = " ".join(f"Mira keeps bees on the roof of the old mill, hive {n}." for n in range(12))
    added = client.post("/memories", json={"text": text})
    assert added.status_code == 201 and len(added.json()["pieces"]) > 1
    pieces = added.json()["pieces"]
    forgot = client.delete(f"/memories/{pieces[0]}")
    assert forgot.status_code == 200
    assert forgot.json()["pieces"] == pieces and forgot.json()["forgotten"]["pieces"] == pieces
    assert client.get("/memories").json()["memories"] == []
    assert client.get("/memories/search", params={"q": "bees hive"}).json()["results"] == []


def test_a_note_over_the_cap_is_400(client: TestClient) -> None:  # noqa: F811
    """A 1 MB note was stored as 6,364 memories."""
    refused = client.post("/memories", json={"text": "a" * (MAX_NOTE_CHARS + 1)})
    assert refused.status_code == 400 and refused.json()["error"].startswith(f"the note is {MAX_NOTE_CHARS + 1:,}")
    assert client.get("/memories").json()["memories"] == []
