"""The personas commands and a persona chat, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import Run, agentmm, assert_one_line_error, ok_json

pytestmark = pytest.mark.e2e

CARD_V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Captain Rell",
        "description": "{{char}} commands the airship Halcyon and distrusts {{user}}.",
        "personality": "gruff",
        "scenario": "A storm over the Saltflats.",
        "first_mes": "*{{char}} squints at {{user}}.* Who let you aboard?",
        "mes_example": "<START>\n{{user}}: Hi\n{{char}}: Hmph.",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": ["Back again, {{user}}?"],
        "tags": ["airship"],
        "creator": "tester",
        "character_version": "1",
        "extensions": {"talkativeness": "0.5", "custom_tool": {"x": 1}},
        "character_book": {
            "entries": [
                {
                    "keys": ["Halcyon"],
                    "content": "The Halcyon is a brass-hulled airship.",
                    "enabled": True,
                    "insertion_order": 10,
                    "extensions": {"depth": 4},
                }
            ],
            "extensions": {},
        },
    },
}


def test_personas_commands_round_trip(tmp_path: Path, isolated_env: Path, agentmm_here: Run) -> None:
    names = [p["name"] for p in ok_json("personas", "list", "--json", via=agentmm_here)["personas"]]
    assert {"Ilse Varga", "Bram Tolliver", "Nora Quill"} <= set(names)

    card = tmp_path / "rell.json"
    card.write_text(json.dumps(CARD_V2))
    assert ok_json("personas", "validate", str(card), "--json", via=agentmm_here)["ok"] is True
    assert ok_json("personas", "import", str(card), "--json", via=agentmm_here)["name"] == "Captain Rell"
    shown = ok_json("personas", "show", "captain rell", "--json", via=agentmm_here)
    assert shown["greetings"][1] == "Back again, {{user}}?"

    out = tmp_path / "out.json"
    ok_json("personas", "export", "Captain Rell", "--format", "card-v2", "-o", str(out), "--json", via=agentmm_here)
    assert json.loads(out.read_text()) == CARD_V2  # every field kept, extensions included
    png = tmp_path / "rell.png"
    ok_json("personas", "export", "Captain Rell", "--format", "png", "-o", str(png), "--json", via=agentmm_here)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    created = ok_json("personas", "new", "Wren", "--json", via=agentmm_here)
    assert Path(created["path"]).read_text().startswith("#")
    assert "Wren" in [p["name"] for p in ok_json("personas", "list", "--json", via=agentmm_here)["personas"]]


def test_validate_warns_of_what_sillytavern_reads_too_and_fails_on_problems(tmp_path: Path, agentmm_here: Run) -> None:
    """validate exited 1 for a card that works: an entry with enabled "yes" (read as true, as
    SillyTavern reads it) or a macro agentmm sends as written. Those are warnings now (shown,
    exit 0, --json "warnings"); a problem still exits 1, and stays in "problems"."""
    data = json.loads(json.dumps(CARD_V2["data"]))
    data["character_book"]["entries"][0]["enabled"] = "yes"
    data["scenario"] += " {{setvar::storm::1}}"
    card = tmp_path / "lenient.json"
    card.write_text(json.dumps({**CARD_V2, "data": data}))
    plain = agentmm_here("personas", "validate", str(card))
    assert plain.returncode == 0, plain.stdout
    lines = plain.stdout.splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["warning", "warning", str(card)]
    assert "'enabled' is \"yes\"" in lines[0] and "{{setvar}} is not supported" in lines[1]
    assert lines[2] == f"{card}: ok"
    found = ok_json("personas", "validate", str(card), "--json", via=agentmm_here)
    assert (found["ok"], found["problems"], len(found["warnings"])) == (True, [], 2)

    data["character_book"]["entries"][0]["content"] = " "  # a problem: an entry with no content
    card.write_text(json.dumps({**CARD_V2, "data": data}))
    done = agentmm_here("personas", "validate", str(card), "--json")
    found = json.loads(done.stdout)
    assert done.returncode == 1 and found["ok"] is False
    assert found["problems"] == [f"{card}: lorebook entry 'Halcyon' has no content"] and len(found["warnings"]) == 2


def test_bad_persona_input_is_one_line(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process (``agentmm_here``): the lines and exit codes are the point, not processes."""
    fake_png = tmp_path / "card.png"
    fake_png.write_bytes(b"PK\x03\x04 not a png at all")
    bad_spec = tmp_path / "bad.json"
    bad_spec.write_text(json.dumps({"spec": "chara_card_v9", "data": {"name": "x"}}))
    assert_one_line_error(agentmm_here("personas", "import", str(fake_png)), "")
    assert_one_line_error(agentmm_here("personas", "import", str(bad_spec)), "spec")
    assert_one_line_error(agentmm_here("personas", "show", "Nobody At All"), "no persona named 'Nobody At All'")
    assert_one_line_error(
        agentmm_here("chat", "-m", "hi", "--persona", "Nobody At All"), "no persona named 'Nobody At All'"
    )
    assert_one_line_error(agentmm_here("chat", "-m", "hi", "--persona", "Ilse Varga", "--greeting", "9"), "greeting 9")
    invalid = agentmm_here("personas", "validate", str(bad_spec), "--json")
    assert invalid.returncode == 1 and json.loads(invalid.stdout)["ok"] is False
    assert ok_json("threads", "list", "--json", via=agentmm_here)["threads"] == []  # nothing was saved


def test_chat_as_a_card_persona_on_the_shipped_model(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process (``agentmm_here``), each command a fresh ``cli.main``: the turns on the
    shipped model are the point, not the process (a subprocess pays Python's start and the imports)."""
    card = tmp_path / "rell.json"
    card.write_text(json.dumps(CARD_V2))
    ok_json("personas", "import", str(card), "--json", via=agentmm_here)
    first = ok_json("chat", "-p", "Captain Rell", "--greeting", "1", "-m", "Is the Halcyon safe in this storm?",
                    "--json", "--max-tokens", "40", "--seed", "4", via=agentmm_here)  # fmt: skip
    trace = first["trace"]
    assert trace["persona"] == "Captain Rell"
    assert trace["greeting"] == "Back again, User?"
    (lore,) = trace["lore"]  # the card's one entry, fired by its key in the message
    assert (lore["entry"], lore["why"]) == ("Halcyon", "key 'Halcyon' in chat")
    assert lore["content"] == "The Halcyon is a brass-hulled airship." and lore["tokens"] > 0
    parts = [p["part"] for p in trace["prompt_parts"]]
    assert parts[:2] == ["system_prompt", "description"] and "lore" in parts
    assert first["reply"].strip()
    shown = ok_json("threads", "show", first["thread_id"], "--json", via=agentmm_here)
    assert shown["messages"][0] == {"role": "assistant", "content": "Back again, User?"}
    # The thread keeps its persona in a second run, which reads it back from the data dir.
    second = ok_json(
        "chat", "-m", "Who are you?", "--thread", first["thread_id"], "--json", "--max-tokens", "20", via=agentmm_here
    )
    assert second["trace"]["persona"] == "Captain Rell"


@pytest.mark.slow
def test_a_personas_model_and_sampling_are_used_unless_the_run_names_its_own(tmp_path: Path, agentmm_here: Run) -> None:
    """In this process: what is checked is which model and sampling a run takes, not processes. Still
    slow: four turns of the shipped model (~12 s CPU on a loaded 2-core machine, ~28 s in subprocesses)."""
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    missing = tmp_path / "missing.gguf"
    (personas / "mo.toml").write_text(f'name = "Model Mo"\ndescription = "A tester."\nmodel = "{missing}"\n'
                                      "[sampling]\ntemperature = 0.1\nmax_tokens = 3\n")  # fmt: skip
    assert_one_line_error(agentmm_here("chat", "-p", "Model Mo", "-m", "hi", "--json"), str(missing))

    flagged = ok_json("chat", "-p", "Model Mo", "-m", "hi", "--json", "--model", "smollm2", via=agentmm_here)
    assert flagged["model"] == "smollm2" and flagged["usage"]["completion_tokens"] <= 3
    assert flagged["trace"]["persona_sampling"] == {"temperature": 0.1, "max_tokens": 3}
    by_env = ok_json("chat", "-p", "Model Mo", "-m", "hi", "--json", env={"AGENTMM_MODEL": "smollm2"}, via=agentmm_here)
    assert by_env["model"] == "smollm2"
    longer = ok_json(
        "chat", "-p", "Model Mo", "-m", "hi", "--json", "--model", "smollm2", "--max-tokens", "9", via=agentmm_here
    )
    assert longer["trace"]["persona_sampling"] == {"temperature": 0.1}

    # The persona's own model wins over the config file's, and the chat says which it runs.
    (personas / "mo.toml").write_text('name = "Model Mo"\nmodel = "smollm2"\n')
    (tmp_path / "config.toml").write_text(f'model = "{missing}"\n')
    done = agentmm_here("chat", "-p", "Model Mo", "-m", "hi", "--max-tokens", "3")
    assert done.returncode == 0, done.stderr
    assert "Model Mo plays on its own model: smollm2" in done.stderr
    assert_one_line_error(agentmm_here("chat", "-m", "hi"), str(missing))


def test_new_suggests_a_command_a_shell_can_run_and_export_names_the_persona(tmp_path: Path) -> None:
    import shlex

    made = agentmm("personas", "new", 'O\'Brien "Q"')
    assert made.returncode == 0, made.stderr
    suggested = made.stdout.split("then: ", 1)[1].strip()
    assert shlex.split(suggested)[-2:] == ["--persona", 'O\'Brien "Q"']  # was Python's repr: 'O\'Brien "Q"'
    out = tmp_path / "nora.json"
    exported = ok_json("personas", "export", "nora quill", "-o", str(out), "--json")
    assert exported["name"] == "Nora Quill"  # was the name as typed


def test_export_takes_its_format_from_the_file_name_and_refuses_one_that_disagrees(
    tmp_path: Path, agentmm_here: Run
) -> None:
    """`-o gus.png` without --format wrote card JSON under a .png name."""
    picture = ok_json("personas", "export", "Nora Quill", "-o", str(tmp_path / "nora.png"), "--json", via=agentmm_here)
    assert picture["format"] == "png" and (tmp_path / "nora.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_toml = ok_json("personas", "export", "Nora Quill", "-o", str(tmp_path / "nora.toml"), "--json", via=agentmm_here)
    assert as_toml["format"] == "toml"
    into_folder = ok_json("personas", "export", "Nora Quill", "-o", str(tmp_path), "--json", via=agentmm_here)
    assert into_folder["format"] == "card-v2"
    assert_one_line_error(agentmm_here("personas", "export", "Nora Quill", "-o", str(tmp_path / "x.png"), "-f", "toml"),
                          "ends in .png but --format is toml")  # fmt: skip


def test_a_toml_export_says_in_one_line_what_of_the_card_it_does_not_keep(tmp_path: Path, agentmm_here: Run) -> None:
    card = json.loads(json.dumps(CARD_V2))
    card["data"]["extensions"]["depth_prompt"] = {"prompt": "Rell is tired.", "depth": 4, "role": "system"}
    (tmp_path / "rell.json").write_text(json.dumps(card))
    assert agentmm_here("personas", "import", str(tmp_path / "rell.json")).returncode == 0
    done = agentmm_here("personas", "export", "Captain Rell", "-o", str(tmp_path / "rell.toml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {tmp_path / 'rell.toml'}\n"
    assert done.stderr == (
        "note: TOML does not keep the card's extensions.talkativeness, extensions.custom_tool, "
        "extensions.depth_prompt and lore entries' depth; a card (JSON or PNG) export keeps them\n"
    )
    exported = ok_json(
        "personas", "export", "Captain Rell", "-o", str(tmp_path / "rell.toml"), "--json", via=agentmm_here
    )
    assert exported["not_kept"][-2:] == ["extensions.depth_prompt", "lore entries' depth"]
    native = ok_json("personas", "export", "Nora Quill", "-o", str(tmp_path / "nora.toml"), "--json", via=agentmm_here)
    assert native["not_kept"] == []
    assert agentmm_here("personas", "export", "Nora Quill", "-o", str(tmp_path / "nora.toml")).stderr == ""


def test_a_v3_card_exported_to_json_without_a_format_stays_v3(tmp_path: Path, agentmm_here: Run) -> None:
    card = json.loads(json.dumps(CARD_V2))
    card.update(spec="chara_card_v3", spec_version="3.0")
    card["data"].update(group_only_greetings=[], assets=[{"type": "icon", "uri": "ccdefault:", "name": "main"}])
    (tmp_path / "rell.json").write_text(json.dumps(card))
    assert agentmm_here("personas", "import", str(tmp_path / "rell.json")).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    for target in (out / "rell.json", out):
        exported = ok_json("personas", "export", "Captain Rell", "-o", str(target), "--json", via=agentmm_here)
        assert exported["format"] == "card-v3"
        written = json.loads(Path(exported["path"]).read_text())
        assert written["spec"] == "chara_card_v3" and written["data"]["assets"] == card["data"]["assets"]
    v2 = ok_json(
        "personas", "export", "Captain Rell", "-o", str(out / "v2.json"), "-f", "card-v2", "--json", via=agentmm_here
    )
    assert json.loads(Path(v2["path"]).read_text())["spec"] == "chara_card_v2"
    native = ok_json("personas", "export", "Nora Quill", "-o", str(out / "nora.json"), "--json", via=agentmm_here)
    assert native["format"] == "card-v2"


def test_a_world_info_file_is_attached_with_import_world_as_the_error_says(tmp_path: Path, agentmm_here: Run) -> None:
    world = tmp_path / "harbor.json"
    world.write_text(json.dumps({"entries": {"0": {"key": ["harbor"], "content": "The harbor froze.", "uid": 0}}}))
    done = agentmm_here("personas", "import", str(world))
    assert_one_line_error(done, "this is a lorebook (world info) file, not a character card")
    assert "agentmm personas import CARD --world" in done.stderr
    (tmp_path / "rell.json").write_text(json.dumps(CARD_V2))
    imported = ok_json(
        "personas", "import", str(tmp_path / "rell.json"), "--world", str(world), "--json", via=agentmm_here
    )
    assert imported["lore_entries"] == 2 and imported["not_kept"] == []
    shown = agentmm_here("personas", "show", "Captain Rell")
    assert "The harbor froze." in shown.stdout and "brass-hulled" in shown.stdout
    again = agentmm_here("personas", "import", str(tmp_path / "rell.json"), "--world", str(world))
    assert_one_line_error(again, "already installed")
    missing = agentmm_here("personas", "import", str(tmp_path / "rell.json"), "--world", str(tmp_path / "none.json"))
    assert_one_line_error(missing, "none.json")


def test_show_lists_each_lore_entry_with_what_decides_it_and_its_content(tmp_path: Path, agentmm_here: Run) -> None:
    card = json.loads(json.dumps(CARD_V2))
    card["data"]["character_book"]["entries"] += [
        {"keys": ["rain"], "content": "It rains.\n\nOften " + "and long " * 20, "enabled": False,
         "insertion_order": 1, "constant": True, "extensions": {}},
        {"keys": ["bell"], "secondary_keys": ["night", "fog"], "selective": True, "content": "The bell tolls.",
         "enabled": True, "insertion_order": 2, "extensions": {"probability": 30, "useProbability": True,
                                                                 "selectiveLogic": 3}},
    ]  # fmt: skip
    (tmp_path / "rell.json").write_text(json.dumps(card))
    assert agentmm_here("personas", "import", str(tmp_path / "rell.json")).returncode == 0
    done = agentmm_here("personas", "show", "Captain Rell")
    assert done.returncode == 0, done.stderr
    lore = done.stdout.split("\n[lore: ", 1)[1]
    assert lore.startswith("Halcyon] keys: Halcyon\nThe Halcyon is a brass-hulled airship.\n")
    assert "\n[lore: rain] keys: rain  (constant; disabled)\nIt rains. Often and long and long" in lore
    preview = lore.split("\n")[4]
    assert preview.endswith("…") and len(preview) == 100  # one line, cut short
    assert "\n[lore: bell] keys: bell  (selective: and all of night, fog; 30% chance)\nThe bell tolls.\n" in lore


def test_import_with_a_world_says_what_validate_finds_and_numbers_every_entry(
    tmp_path: Path, agentmm_here: Run
) -> None:
    """A world's entry with no keys (never fires) and a '/[bad/' regex key were installed with
    nothing said, and ids 'abc', none, -3 and 1.5 were kept as they were."""
    world = tmp_path / "wl.json"
    world.write_text(json.dumps({"entries": [
        {"uid": "abc", "key": ["fox"], "content": "A fox."}, {"key": [], "content": "never"},
        {"uid": -3, "key": ["owl"], "content": "An owl."}, {"uid": 1.5, "key": ["/[bad/"], "content": "x"},
    ]}))  # fmt: skip
    (tmp_path / "rell.json").write_text(json.dumps(CARD_V2))
    done = agentmm_here("personas", "import", str(tmp_path / "rell.json"), "--world", str(world))
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: ")]
    assert any("has no keys and is not constant: it never fires" in line for line in notes), done.stderr
    assert any("key /[bad/ is not a regex agentmm can run" in line for line in notes), done.stderr
    card = json.loads(Path(done.stdout.split("(user:", 1)[1].rstrip(")\n")).read_text())
    ids = [entry.get("id") for entry in card["data"]["character_book"]["entries"]][-4:]  # the world's
    assert all(isinstance(i, int) and i >= 0 for i in ids) and len(set(ids)) == 4, ids
    again = ok_json(
        "personas", "import", str(tmp_path / "rell.json"), "--world", str(world), "--json", "--force", via=agentmm_here
    )
    assert len(again["problems"]) == 2 and again["warnings"] == []
