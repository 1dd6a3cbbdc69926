"""``/memories`` on a note stored in pieces: ``DELETE`` forgets them all (the app and its echoing
agent are test_http_api's ``client``)."""

from __future__ import annotations

from starlette.testclient import TestClient

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
