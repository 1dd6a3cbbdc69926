"""Sample cards and images for the persona tests, built here so every field is known."""

from __future__ import annotations

import copy
import io
from typing import Any

import pytest


def _entry(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "keys": [f"key{i}", f"alias{i}"],
        "content": f"Lore number {i} about {{{{char}}}}.",
        "extensions": {"depth": 4, "other_app": {"weight": i}},
        "enabled": True,
        "insertion_order": 100 + i,
        "case_sensitive": False,
        "name": f"entry {i}",
        "priority": i,
        "id": i,
        "comment": f"comment {i}",
        "selective": i % 2 == 0,
        "secondary_keys": [f"second{i}"],
        "constant": False,
        "position": "before_char" if i % 2 else "after_char",
        "unknown_entry_field": {"nested": [1, 2.5, None, "x"]},
        **extra,
    }


def make_v2_card() -> dict[str, Any]:
    """A V2 card with SillyTavern-style root mirrors, unknown fields and a lorebook."""
    data = {
        "name": "Testa Rossa",
        "description": '{{char}} is a test card. Ünïcödé ✓ and "quotes".',
        "personality": "curious",
        "scenario": "A lab.",
        "first_mes": "Hello {{user}}!",
        "mes_example": "<START>\n{{user}}: hi\n{{char}}: hello",
        "creator_notes": "notes",
        "system_prompt": "{{original}} Extra rules.",
        "post_history_instructions": "Stay brief.",
        "alternate_greetings": ["Alt one", "Alt two"],
        "tags": ["test", "sample"],
        "creator": "someone",
        "character_version": 3,
        "extensions": {
            "talkativeness": "0.5",
            "fav": False,
            "world": "Lab World",
            "depth_prompt": {"prompt": "x", "depth": 4, "role": "system"},
            "agentmm": {"tools": ["dice"], "model": "tiny.gguf", "sampling": {"temperature": 0.7}},
        },
        "character_book": {
            "name": "Lab book",
            "scan_depth": 3,
            "token_budget": 500,
            "recursive_scanning": False,
            "extensions": {"book_ext": True},
            "unknown_book_field": 42,
            "entries": [_entry(0), _entry(1), _entry(2, extensions={"selectiveLogic": 3})],
        },
        "unknown_data_field": {"keep": "me"},
    }
    return {
        "name": "Testa Rossa",
        "description": data["description"],
        "personality": "curious",
        "scenario": "A lab.",
        "first_mes": "Hello {{user}}!",
        "mes_example": data["mes_example"],
        "creatorcomment": "notes",
        "avatar": "none",
        "chat": "Testa Rossa - 2024-01-01",
        "talkativeness": "0.5",
        "fav": False,
        "tags": ["test", "sample"],
        "create_date": "2024-01-01T00:00:00.000Z",
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": data,
        "unknown_root_field": [1, 2, 3],
    }


def make_v3_card() -> dict[str, Any]:
    card = make_v2_card()
    card["spec"] = "chara_card_v3"
    card["spec_version"] = "3.0"
    data = card["data"]
    data["nickname"] = "Testy"
    data["group_only_greetings"] = ["Group hello"]
    data["assets"] = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    data["creation_date"] = 1700000000
    data["creator_notes_multilingual"] = {"fr": "notes en français"}
    for entry in data["character_book"]["entries"]:
        entry["use_regex"] = False
    return card


def make_v1_card() -> dict[str, Any]:
    return {
        "name": "Old Timer",
        "description": "An old card.",
        "personality": "grumpy",
        "scenario": "A porch.",
        "first_mes": "Get off my lawn, {{user}}.",
        "mes_example": "",
        "avatar": "old.png",
        "create_date": "2023-01-01",
    }


def make_png(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 90)) -> bytes:
    """A small real PNG from Pillow, with an extra text chunk that must survive."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "keep this chunk")
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.fixture
def v2_card() -> dict[str, Any]:
    return copy.deepcopy(make_v2_card())


@pytest.fixture
def v3_card() -> dict[str, Any]:
    return copy.deepcopy(make_v3_card())


@pytest.fixture
def v1_card() -> dict[str, Any]:
    return copy.deepcopy(make_v1_card())


@pytest.fixture
def png_bytes() -> bytes:
    return make_png()
