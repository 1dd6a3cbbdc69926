"""Registry discovery (built-ins, user folder, entry points), import/export/validate."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from agentmm.personas import (
    PersonaError,
    PersonaNotFoundError,
    PersonaRegistry,
    UnknownFormatError,
    UnsupportedExportError,
    export,
    import_file,
    validate,
)
from agentmm.personas.png import embed_cards
from tests.personas.conftest import make_png, make_v2_card, make_v3_card


def test_builtins_load_cleanly():
    reg = PersonaRegistry(entry_points=False)
    assert reg.names() == ["Bram Tolliver", "Ilse Varga", "Nora Quill"]
    assert reg.problems == []
    for persona in reg:
        assert len(persona.greetings) >= 2 and persona.example_dialogue and persona.lorebook.entries
        assert persona.source.startswith("builtin:")
    assert reg.get("ILSE VARGA") is reg.get("ilse-varga")  # name, case-insensitive, and stem


def test_user_folder_with_a_broken_file(tmp_path: Path):
    (tmp_path / "mine.toml").write_text('name = "Ilse Varga"\ndescription = "my own Ilse"\n')
    (tmp_path / "card.json").write_text(json.dumps(make_v2_card()))
    (tmp_path / "pic.png").write_bytes(embed_cards(make_png(), {"chara": {"name": "Pic", "description": "d"}}))
    (tmp_path / "broken.json").write_text("{oops")
    (tmp_path / "fake.png").write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.toml").write_text("ignored")
    reg = PersonaRegistry(tmp_path, entry_points=False)
    assert reg.get("ilse varga").description == "my own Ilse"  # user overrides built-in
    assert reg.get("testa rossa").source.startswith("user:")
    assert reg.get("card") is reg.get("Testa Rossa")  # file stem
    assert reg.get("pic").image is not None
    assert len(reg.problems) == 2
    assert any("broken.json" in p and "not valid JSON" in p for p in reg.problems)
    assert any("fake.png" in p and "JPEG" in p for p in reg.problems)
    assert all("\n" not in p for p in reg.problems)
    assert all(p.count(str(tmp_path)) == 1 for p in reg.problems)  # the path once, not "path: path: ..."
    assert reg.notes == []
    with pytest.raises(PersonaNotFoundError, match="did you mean 'Testa Rossa'"):
        reg.get("Testa Rosa")


def test_duplicate_names_in_one_source(tmp_path: Path):
    (tmp_path / "a.toml").write_text('name = "Twin"\n')
    (tmp_path / "b.toml").write_text('name = "twin"\n')
    reg = PersonaRegistry(tmp_path, builtins=False, entry_points=False)
    assert reg.names() == ["Twin"] and "duplicate" in reg.problems[0]


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution with ``agentmm.personas`` entry points (real metadata
    on sys.path, so the registry runs the same discovery code as for real plugins)."""
    site = tmp_path / "site"
    dist = site / "fake_persona_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-persona-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [agentmm.personas]
            obj = fake_persona_plugin:PERSONA
            factory = fake_persona_plugin:make
            path = fake_persona_plugin:CARD_PATH
            boom = fake_persona_plugin:explode
            wrong = fake_persona_plugin:WRONG
            missing = fake_persona_plugin:NOPE
            """
        )
    )
    card = site / "plugin_card.json"
    card.write_text(json.dumps({"name": "From Path", "description": "d"}))
    (site / "fake_persona_plugin.py").write_text(
        textwrap.dedent(
            f"""\
            from agentmm.personas import Persona
            PERSONA = Persona(name="Plugged")
            CARD_PATH = {str(card)!r}
            WRONG = 42
            def make():
                return [Persona(name="Made One"), Persona(name="Made Two")]
            def explode():
                raise RuntimeError("plugin bug")
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_points(plugin_dist: Path):
    reg = PersonaRegistry(builtins=False)
    assert reg.names() == ["From Path", "Made One", "Made Two", "Plugged"]
    assert reg.get("obj").name == "Plugged" and reg.get("plugged").source == "entrypoint:obj"
    problems = " | ".join(reg.problems)
    assert len(reg.problems) == 3
    assert "entrypoint:boom" in problems and "RuntimeError: plugin bug" in problems
    assert "entrypoint:wrong" in problems and "expected a Persona" in problems
    assert "entrypoint:missing" in problems


def test_import_sniffs_content_not_extension(tmp_path: Path):
    card = tmp_path / "looks_like.toml"
    card.write_text(json.dumps(make_v2_card()))
    assert import_file(card).name == "Testa Rossa"
    png = tmp_path / "card.json"
    png.write_bytes(embed_cards(make_png(), {"chara": make_v2_card()}))
    assert import_file(png).image is not None
    toml = tmp_path / "persona.json"
    toml.write_text('name = "Tommy"\n')
    assert import_file(toml).name == "Tommy"
    binary = tmp_path / "x.bin"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(UnknownFormatError):
        import_file(binary)
    with pytest.raises(PersonaNotFoundError, match="no such file"):
        import_file(tmp_path / "absent.toml")


@pytest.mark.parametrize("fmt", ["toml", "card-v2", "card-v3", "png"])
def test_export_every_format_from_builtin(tmp_path: Path, fmt):
    persona = PersonaRegistry(entry_points=False).get("Nora Quill")
    out = export(persona, fmt, tmp_path)
    back = import_file(out)
    assert back.name == persona.name and back.greetings == persona.greetings
    assert [e.content for e in back.lorebook.entries] == [e.content for e in persona.lorebook.entries]
    assert back.sampling == persona.sampling
    assert validate(out) == []


def test_export_errors_and_atomic_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    persona = PersonaRegistry(entry_points=False).get("Bram Tolliver")
    with pytest.raises(UnsupportedExportError, match="choose one of"):
        export(persona, "yaml", tmp_path)  # type: ignore[arg-type]
    target = tmp_path / "bram.json"
    target.write_text("old")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(PersonaError, match="No space left"):
        export(persona, "card-v2", target)
    monkeypatch.undo()
    assert target.read_text() == "old"  # untouched, and no temp file left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bram.json"]


def test_validate_reports(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[lorebook.entries]]\ncontent = "never fires"\n')
    problems = validate(bad)
    assert any("no greeting" in p for p in problems)
    assert any("never fires" in p or "has no keys" in p for p in problems)
    bad.write_text('name = "x"\ngreetings = ["hi"]\ndescription = "d"\n[[lorebook.entries]]\nkeys = ["k"]\n'
                   'content = "c"\nprobability = 0\n')  # fmt: skip
    assert validate(bad) == [f"{bad}: lorebook entry 'k' has a 0% chance (probability = 0): it never goes in"]
    broken = tmp_path / "broken.png"
    broken.write_bytes(make_png())
    assert validate(broken) == [f"{broken}: PNG has no character card in it (no 'chara' or 'ccv3' chunk)"]


def test_validate_lists_every_problem_of_a_toml_file(tmp_path: Path):
    """README: "exit 1 and one line per problem", not only the first pydantic error."""
    bad = tmp_path / "lore.toml"
    bad.write_text(
        'name = "x"\ncard = {}\n[lorebook]\nscan_depth = -1\n[[lorebook.entries]]\nkeys = "dragon"\n'
        'content = "y"\nselective_logic = "AND_ANY"\nposition = "top"\n'
    )
    problems = validate(bad)
    assert [p.split(": ")[1] for p in problems] == [
        "unknown field 'card'",
        "lorebook.scan_depth",
        "lorebook.entries.0.keys",
        "lorebook.entries.0.selective_logic",
        "lorebook.entries.0.position",
    ]
    assert all(p.startswith(f"{bad}: ") and "\n" not in p for p in problems)
    with pytest.raises(PersonaError) as info:
        import_file(bad)
    assert str(info.value).endswith("(and 4 more)") and "\n" not in str(info.value)


def test_install_and_create(tmp_path: Path):
    user = tmp_path / "personas"
    reg = PersonaRegistry(user, entry_points=False)
    src = tmp_path / "download.png"
    src.write_bytes(embed_cards(make_png(), {"chara": make_v2_card()}))
    persona = reg.install(src)
    assert persona.name == "Testa Rossa" and (user / "testa-rossa.png").exists()
    with pytest.raises(PersonaError, match=r"'Testa Rossa' is already installed .*; --force replaces it"):
        reg.install(src)
    path = reg.create("New Friend")
    assert path == user / "new-friend.toml"
    assert reg.get("new friend").greetings


def test_async_forms(tmp_path: Path):
    import asyncio

    from agentmm.personas import aexport, aimport_file

    persona = PersonaRegistry(entry_points=False).get("Ilse Varga")
    out = asyncio.run(aexport(persona, "card-v3", tmp_path))
    assert asyncio.run(aimport_file(out)).name == "Ilse Varga"


def test_a_card_of_an_installed_name_in_another_format_replaces_it_only_with_force(tmp_path: Path):
    user = tmp_path / "personas"
    reg = PersonaRegistry(user, entry_points=False)
    first = tmp_path / "first.json"
    first.write_text(json.dumps(make_v2_card()))
    reg.install(first)
    second_card = make_v2_card()
    second_card["data"]["description"] = "the second one"
    second = tmp_path / "second.png"
    second.write_bytes(embed_cards(make_png(), {"chara": second_card}))
    with pytest.raises(PersonaError, match="already installed"):
        reg.install(second)
    assert sorted(p.name for p in user.iterdir()) == ["testa-rossa.json"]
    assert reg.install(second, overwrite=True).description == "the second one"
    assert sorted(p.name for p in user.iterdir()) == ["testa-rossa.png"]
    assert reg.problems == []
    with pytest.raises(PersonaError, match="already installed"):
        reg.create("testa rossa")
    reg.create("Testa Rossa", overwrite=True)
    assert sorted(p.name for p in user.iterdir()) == ["testa-rossa.toml"]


def test_names_without_letters_get_files_and_lookups_of_their_own(tmp_path: Path):
    reg = PersonaRegistry(tmp_path / "personas", builtins=False, entry_points=False)
    for name in ["🐉", "🔥", "???"]:
        reg.create(name)
    assert len({p.source for p in reg}) == 3 and reg.problems == []
    assert [reg.get(name).name for name in ["🐉", "🔥", "???"]] == ["🐉", "🔥", "???"]
    assert reg.find("😀") is None and reg.find("...") is None and reg.find("persona") is None


def test_utf16_and_utf32_cards_with_a_byte_order_mark(tmp_path: Path):
    text = json.dumps(make_v2_card(), ensure_ascii=False)
    for codec in ("utf-16", "utf-16-be", "utf-32", "utf-32-be"):
        bom = {"utf-16-be": b"\xfe\xff", "utf-32-be": b"\x00\x00\xfe\xff"}.get(codec, b"")
        path = tmp_path / f"{codec}.json"
        path.write_bytes(bom + text.encode(codec))
        assert import_file(path).name == "Testa Rossa", codec
    toml = tmp_path / "wide.toml"
    toml.write_bytes('name = "Wide Ünï"\n'.encode("utf-16"))
    assert import_file(toml).name == "Wide Ünï"
    reg = PersonaRegistry(tmp_path / "mine", builtins=False, entry_points=False)
    assert reg.install(tmp_path / "utf-16.json").name == "Testa Rossa"  # install sniffs the raw bytes too
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"\xff\xfe{\x00\x00\xd8")  # a lone surrogate
    with pytest.raises(UnknownFormatError, match="not valid UTF-16"):
        import_file(broken)


@pytest.mark.parametrize("name", ["empty.json", "blank.toml", "empty.png"])
def test_an_empty_file_is_called_empty(tmp_path: Path, name: str):
    path = tmp_path / name
    path.write_bytes(b"" if name != "blank.toml" else b"\xef\xbb\xbf \n\n")
    assert validate(path) == [f"{path}: the file is empty"]


def test_resolve_reads_a_first_word_or_the_start_of_a_name_and_refuses_a_shared_one(tmp_path: Path):
    """``chat -p Nora`` was refused while ``/persona Nora`` played Nora Quill: both read names here."""
    reg = PersonaRegistry(tmp_path / "personas", entry_points=False)
    assert reg.resolve("Nora").name == "Nora Quill"
    assert reg.resolve("quill").name == "Nora Quill" and reg.resolve("ils").name == "Ilse Varga"
    assert reg.resolve("nora-quill").name == "Nora Quill"  # the slug, as before
    reg.create("Nora Bell")
    with pytest.raises(PersonaNotFoundError, match=r"^'nora' could be Nora Bell or Nora Quill: give more of the name$"):
        reg.resolve("nora")
    with pytest.raises(PersonaNotFoundError, match="no persona named 'Nobody'"):
        reg.resolve("Nobody")
    with pytest.raises(PersonaNotFoundError, match="no persona named '  '"):
        reg.resolve("  ")


def test_a_utf16_card_is_decoded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Reading the format and then the card decoded a wide card twice (three times to install it)."""
    from agentmm.personas import files

    decoded: list[bytes] = []
    real = files.as_utf8
    monkeypatch.setattr(files, "as_utf8", lambda data, where="file": decoded.append(data) or real(data, where))
    path = tmp_path / "wide.json"
    path.write_bytes(json.dumps(make_v2_card(), ensure_ascii=False).encode("utf-16"))
    assert import_file(path).name == "Testa Rossa" and len(decoded) == 1
    decoded.clear()
    reg = PersonaRegistry(tmp_path / "mine", builtins=False, entry_points=False)
    assert reg.install(path).name == "Testa Rossa" and (tmp_path / "mine" / "testa-rossa.json").is_file()
    assert len(decoded) == 2  # the file it copies, then the copy as the registry loads its folder


def test_a_v3_nickname_finds_its_persona(tmp_path: Path) -> None:
    """A V3 card's nickname ("Trey") was no lookup name: 'no persona named Trey'."""
    card = make_v2_card()
    card["spec"], card["spec_version"] = "chara_card_v3", "3.0"
    card["data"]["name"], card["data"]["nickname"] = "Wren Tremaine", "Trey"
    card.pop("name", None)
    (tmp_path / "wren.json").write_text(json.dumps(card))
    registry = PersonaRegistry(tmp_path, builtins=False, entry_points=False)
    assert registry.get("trey").name == "Wren Tremaine" and registry.resolve("Trey").name == "Wren Tremaine"


def test_a_persona_built_in_python_is_played_without_a_file(tmp_path: Path) -> None:
    """There was no way to play a Persona object but to write it to a file first."""
    from agentmm.personas import Persona

    (tmp_path / "odo.toml").write_text('name = "Odo"\ndescription = "from the file"\n')
    registry = PersonaRegistry(tmp_path, builtins=False, entry_points=False,
                               personas=[Persona(name="Mira", description="from code")])  # fmt: skip
    assert registry.get("mira").description == "from code" and registry.get("Odo").source.startswith("user:")
    registry.add(Persona(name="Odo", description="from code too"))  # wins over the file's
    assert registry.get("odo").description == "from code too" and registry.names() == ["Mira", "Odo"]
    assert list(tmp_path.iterdir()) == [tmp_path / "odo.toml"]  # nothing written
    with pytest.raises(PersonaError, match="add takes a Persona, not dict"):
        registry.add({"name": "x"})  # type: ignore[arg-type]


def test_memory_reads_a_persona_name_as_chat_dash_p_does(tmp_path: Path) -> None:
    """memory list/search --persona nora found nothing while chat -p nora played Nora Quill."""
    registry = PersonaRegistry(tmp_path, entry_points=False)
    assert registry.known_as("nora") == "Nora Quill" and registry.known_as("nora quill") == "Nora Quill"
    assert registry.known_as("Someone Deleted") == "Someone Deleted"  # its memories keep its name
    (tmp_path / "bell.toml").write_text('name = "Nora Bell"\n')
    registry.reload()
    with pytest.raises(PersonaNotFoundError, match="could be Nora Bell or Nora Quill"):
        registry.known_as("nora")


def test_validate_names_each_macro_agentmm_sends_as_written(tmp_path: Path):
    """{{setvar}} or {{lastMessage}} in a card reached the model raw while validate said ok."""
    card = tmp_path / "vars.toml"
    card.write_text(
        'name = "x"\ngreetings = ["Hi {{user}}. {{lastMessage}}"]\n'
        'description = "{{setvar::mood::calm}}{{char}} is {{getvar::mood}}; {{setvar::mood::calm}}"\n'
        '[[lorebook.entries]]\nkeys = ["k"]\ncontent = "{{random:a,b}} {{getglobalvar::x}}"\n'
    )
    assert validate(card) == [
        f"{card}: description: macro {{{{setvar}}}} is not supported (the model reads it as written)",
        f"{card}: description: macro {{{{getvar}}}} is not supported (the model reads it as written)",
        f"{card}: greeting 0: macro {{{{lastMessage}}}} is not supported (the model reads it as written)",
        f"{card}: lorebook entry 'k': macro {{{{getglobalvar}}}} is not supported (the model reads it as written)",
    ]


def _world(tmp_path: Path, name: str, entries: dict[str, dict]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"entries": entries}))
    return path


def test_install_with_worlds_keeps_the_cards_format_image_and_spec_and_gives_each_entry_its_own_id(tmp_path: Path):
    user = tmp_path / "user"
    user.mkdir()
    card = make_v3_card()
    own_ids = [entry["id"] for entry in card["data"]["character_book"]["entries"]]
    src = tmp_path / "rossa.png"
    src.write_bytes(embed_cards(make_png(), {"ccv3": card}))
    harbor = _world(tmp_path, "harbor", {"0": {"uid": own_ids[0], "key": ["harbor"], "content": "The harbor froze.",
                                               "order": 7, "depth": 2}})  # fmt: skip
    bells = _world(tmp_path, "bells", {"0": {"uid": "b", "key": ["bell"], "content": "Bells ring at dusk."}})
    reg = PersonaRegistry(user, entry_points=False)
    persona, lost = reg.install_with_worlds(src, [harbor, bells])
    assert lost == [] and persona.source.endswith(".png") and persona.image is not None
    contents = [entry.content for entry in persona.lorebook.entries]
    assert contents[-2:] == ["The harbor froze.", "Bells ring at dusk."]
    ids = [entry.id for entry in persona.lorebook.entries]
    assert len(ids) == len(set(ids)) and ids[-2] == max(own_ids) + 1 and ids[-1] == max(own_ids) + 2  # "b": no number
    assert persona.lorebook.entries[-2].insertion_order == 7
    written = import_file(persona.source.removeprefix("user:"))
    assert written.card is not None and written.card["spec"] == "chara_card_v3"
    assert written.card["data"]["character_book"]["entries"][-2]["extensions"]["depth"] == 2


def test_install_with_worlds_into_a_toml_persona_says_what_toml_cannot_keep(tmp_path: Path):
    user = tmp_path / "user"
    user.mkdir()
    src = tmp_path / "mine.toml"
    src.write_text('name = "Mine"\ndescription = "a persona of my own"\n')
    world = _world(tmp_path, "w", {"0": {"uid": 0, "key": ["harbor"], "content": "The harbor froze.", "depth": 2}})
    persona, lost = PersonaRegistry(user, entry_points=False).install_with_worlds(src, [world])
    assert [entry.content for entry in persona.lorebook.entries] == ["The harbor froze."]
    assert persona.source.endswith(".toml") and "lore entries' depth" in lost


def _card_named(tmp_path: Path, name: str, description: str = "d") -> Path:
    """A V2 card file of the persona ``name``."""
    card = make_v2_card()
    card["name"] = card["data"]["name"] = name
    card["description"] = card["data"]["description"] = description
    path = tmp_path / f"card-{len(list(tmp_path.glob('card-*')))}.json"
    path.write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("first", ["a/b\\c", "a-b-c"])
def test_two_names_of_one_slug_never_share_a_file(tmp_path: Path, first: str):
    """``a/b\\c`` and ``a-b-c`` both slug to ``a-b-c``: importing the second was refused over the
    first's file ("a-b-c.json: already exists"), and with --force wrote over it, so the first
    persona was gone. Each now has a file of its own, whichever came first, and --force (or
    ``personas new``, or an export to the folder) replaces only a persona of the same name."""
    other = "a-b-c" if first == "a/b\\c" else "a/b\\c"
    user = tmp_path / "personas"
    reg = PersonaRegistry(user, builtins=False, entry_points=False)
    reg.install(_card_named(tmp_path, first, "the first"))
    assert (user / "a-b-c.json").exists()
    reg.install(_card_named(tmp_path, other, "the other"))
    reg.install(_card_named(tmp_path, other.upper(), "the other again"), overwrite=True)
    assert reg.get(first).description == "the first" and reg.get(other.upper()).description == "the other again"
    assert reg.get(first).source == f"user:{user / 'a-b-c.json'}" and len(list(user.iterdir())) == 2
    reg.create(first.upper(), overwrite=True)  # the TOML template replaces the first's card, not the other
    assert reg.names() == sorted([first.upper(), other.upper()], key=str.casefold)
    made = reg.create("A B C")  # a third name of the slug gets a file of its own too
    assert len({p.source for p in reg}) == 3 and len(list(user.iterdir())) == 3 and made.stem != "a-b-c"
    export(reg.get(other.upper()), "toml", user)  # to its own file, not over the first's
    assert len({p.source for p in PersonaRegistry(user, builtins=False, entry_points=False)}) == 3
    assert reg.get(first).name == first.upper() and reg.problems == []


def test_a_persona_file_never_goes_over_another_persona_or_a_file_that_is_none(tmp_path: Path):
    from agentmm.personas.files import persona_file

    user = tmp_path / "personas"
    user.mkdir()
    (user / "x-y.toml").write_text('name = "x/y"\n')
    assert persona_file(user, "X/Y", ".json") == user / "x-y.json"  # the same persona: it is replaced
    taken = persona_file(user, "x y", ".png")
    assert taken.parent == user and taken.stem.startswith("x-y-") and taken.suffix == ".png"
    (user / "X-Y.JSON").write_text("{not a card")  # read under the stem "x-y" too
    own = persona_file(user, "X/Y", ".json")  # not over a file that holds no persona either
    assert own.stem.startswith("x-y-") and own.stem != taken.stem and own.suffix == ".json"
    (taken.with_suffix(".toml")).write_text('name = "x_y"\n')  # both names of "x y" are taken
    with pytest.raises(PersonaError) as info:
        persona_file(user, "x y", ".png")
    assert str(info.value).startswith("no file name is free for 'x y': ")
    assert "holds 'x/y'" in str(info.value) and "holds 'x_y'" in str(info.value)
    assert "a file that is no persona" in str(info.value)


def test_messages_quote_a_persona_name_as_it_is_written(tmp_path: Path):
    """``personas show 'a/b\\c'`` said "no persona named 'a/b\\\\c'": the name's ``repr``."""
    reg = PersonaRegistry(tmp_path / "personas", builtins=False, entry_points=False)
    reg.create("a/b\\c")
    with pytest.raises(PersonaNotFoundError, match=r"^no persona named 'a/b\\d'; did you mean 'a/b\\c'\?$"):
        reg.get("a/b\\d")
    with pytest.raises(PersonaError, match=r"^'a/b\\c' is already installed \(.*\); --force replaces it$"):
        reg.create("a/b\\c")
    reg.create("a/b\\cd")
    with pytest.raises(PersonaNotFoundError, match=r"^'a/b\\' could be"):
        reg.resolve("a/b\\")
