"""Plugin discovery: built-ins, entry points of installed packages, the user's tools folder."""

from __future__ import annotations

import importlib.metadata
import signal
import textwrap
from pathlib import Path

import pytest

from agentmm.plugins import ToolNotFoundError, discover_tools

PLUGIN = '''
from langchain_core.tools import tool


@tool
def draw_tarot() -> str:
    """Draw one tarot card."""
    return "The Tower"


draw_tarot.metadata = {"requires_approval": True}
'''


def install_fake_distribution(root: Path, name: str, module: str, code: str, entry_points: str) -> None:
    """A package installed the way pip leaves one: the module and its .dist-info on sys.path."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    importlib.invalidate_caches()  # importlib.metadata caches a folder's listing by its mtime


def test_builtins_register_through_entry_points() -> None:
    catalog = discover_tools()
    for name in ("roll_dice", "current_datetime", "calculate", "caption_image", "transcribe_audio", "search_images"):
        assert catalog.tools[name].source == "agentmm"
    assert catalog.problems == []


def test_installed_package_tools_and_broken_plugins(site: Path) -> None:
    install_fake_distribution(site, "agentmm-fake-tarot", "fake_tarot_plugin", PLUGIN, """
        [agentmm.tools]
        draw_tarot = fake_tarot_plugin:draw_tarot
    """)  # fmt: skip
    install_fake_distribution(site, "agentmm-broken", "agentmm_broken", "raise ImportError('no module named wand')", """
        [agentmm.tools]
        wand = agentmm_broken:wand
    """)  # fmt: skip
    catalog = discover_tools()
    tarot = catalog.tools["draw_tarot"]
    assert tarot.source == "agentmm-fake-tarot" and tarot.requires_approval
    (problem,) = catalog.problems
    assert problem.startswith("wand (agentmm_broken:wand, from agentmm-broken): ImportError: no module named wand")


def test_user_tools_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "tarot.py").write_text(PLUGIN)
    (folder / "crash.py").write_text("1 / 0\n")
    (folder / "exits.py").write_text("import sys\nsys.exit(3)\n")
    (folder / "badname.py").write_text(textwrap.dedent('''
        from langchain_core.tools import StructuredTool
        bad = StructuredTool.from_function(lambda: "x", name="no spaces allowed", description="d")
    '''))  # fmt: skip
    catalog = discover_tools(folder)
    assert catalog.tools["draw_tarot"].source == str(folder / "tarot.py")
    problems = sorted(catalog.problems)
    assert len(problems) == 3
    assert any("crash.py: ZeroDivisionError" in p for p in problems)
    assert any("exits.py: SystemExit: 3" in p for p in problems)
    assert any("must be 1-64 letters" in p for p in problems)


def test_a_keyboard_interrupt_a_tools_file_raises_is_reported_a_real_ctrl_c_stops(tmp_path: Path) -> None:
    """``raise KeyboardInterrupt`` at a tools file's import made ``tools list`` exit 130 with
    nothing said; it is the file's failure, one line, as ``SystemExit`` is. A SIGINT that comes
    while a file is imported (the user's Ctrl-C) still stops the command."""
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "tarot.py").write_text(PLUGIN)
    (folder / "zz_kb.py").write_text("raise KeyboardInterrupt\n")
    try:
        catalog = discover_tools(folder)
    except KeyboardInterrupt:  # not let through: it would stop the whole test run
        pytest.fail("the file's own KeyboardInterrupt stopped the discovery")
    assert "draw_tarot" in catalog.tools
    assert catalog.problems == [f"{folder / 'zz_kb.py'}: KeyboardInterrupt"]
    (folder / "zz_kb.py").write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n")
    # Python's own Ctrl-C handler, as a terminal's process has it: one started in the background
    # by a non-interactive shell (CI's, say) inherits SIGINT ignored, where no Ctrl-C comes at all.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            discover_tools(folder)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back as it was
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_invalid_schema_is_reported_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / "weird.py").write_text(textwrap.dedent('''
        from langchain_core.tools import StructuredTool

        weird = StructuredTool(name="weird", description="d", func=lambda **k: "x",
                               args_schema={"type": "object", "properties": {"a": {"type": "banana"}}})
    '''))  # fmt: skip
    catalog = discover_tools(folder)
    assert "weird" not in catalog.tools
    assert any("weird" in p and "schema" in p for p in catalog.problems)


def test_select_unknown_tool_is_a_clear_error() -> None:
    with pytest.raises(ToolNotFoundError, match="unknown tool 'lockpick'"):
        discover_tools().select(["roll_dice", "lockpick"])


def tools_folder_replacing_roll_dice(tmp_path: Path, file: str) -> Path:
    """A tools folder whose ``file`` gives a tool named as a built-in (roll_dice)."""
    folder = tmp_path / "tools"
    folder.mkdir()
    (folder / file).write_text(textwrap.dedent('''
        from langchain_core.tools import tool

        @tool
        def roll_dice(notation: str) -> str:
            """Roll dice."""
            return "always 6"
    '''))  # fmt: skip
    return folder


def test_a_tool_that_replaces_another_of_its_name_is_said_and_a_broken_file_named_when_asked_for(
    tmp_path: Path,
) -> None:
    folder = tools_folder_replacing_roll_dice(tmp_path, "mine.py")
    (folder / "broken.py").write_text("def broken(:\n")
    catalog = discover_tools(folder)
    assert catalog.tools["roll_dice"].source == str(folder / "mine.py")
    assert f"agentmm's tool 'roll_dice' is not used: {folder / 'mine.py'}:roll_dice replaces it" in catalog.problems
    with pytest.raises(ToolNotFoundError) as info:
        catalog.select(["broken"])
    assert f"it may be in a tool file that could not be loaded: {folder / 'broken.py'} (see" in str(info.value)


def test_a_failure_whose_message_ends_as_a_note_does_is_still_a_failure_and_the_report_keeps_its_order(
    tmp_path: Path,
) -> None:
    """A note and a failure were told apart by the text's ending (" replaces it"): a tool file
    whose error ended so was left out of the files an unknown tool may be in."""
    folder = tools_folder_replacing_roll_dice(tmp_path, "a_mine.py")
    (folder / "b_odd.py").write_text('raise RuntimeError("the new API replaces it")\n')
    catalog = discover_tools(folder)
    note = f"agentmm's tool 'roll_dice' is not used: {folder / 'a_mine.py'}:roll_dice replaces it"
    failure = f"{folder / 'b_odd.py'}: RuntimeError: the new API replaces it"
    assert catalog.notes == [note] and catalog.failures[-1] == failure and note not in catalog.failures
    assert catalog.problems[-2:] == [note, failure]  # what tools list reports, in the order found
    with pytest.raises(ToolNotFoundError) as info:
        catalog.select(["odd_tool"])
    assert f"it may be in a tool file that could not be loaded: {folder / 'b_odd.py'} (see" in str(info.value)
