"""CLIP's BPE tokenizer without torch (``clip_tokenizer``): the ids open_clip's own tokenizer
gives, token for token, so a text search need not import open_clip and torch (~5 s) for them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agentmm.tools.clip_tokenizer import ClipBpeTokenizer, simple_tokenizer

TEXTS = [
    "a dog",
    "",
    "   A   Photo of the BEACH at sunset!!!   ",
    "it's what they'd've done, isn't it? I'll say we're here",
    "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve co\u00f6perate, \u00dcbermensch",
    "caf\u00c3\u00a9 (mojibake that ftfy mends) &amp;amp; &lt;b&gt; &quot;quoted&quot;",
    "\u6771\u4eac\u306e\u591c\u666f \u2014 "
    "\u043d\u043e\u0447\u043d\u043e\u0439 \u0433\u043e\u0440\u043e\u0434 \u2014 \u0645\u062f\u064a\u0646\u0629",
    "emoji \U0001f436\U0001f3d6\ufe0f and symbols \u00a9\u00ae\u2122 \u00bd \u2460 \u00b2",
    "numbers 1234567890 3.14159 2nd 21st 1,000,000",
    "<start_of_text> and <end_of_text> typed by a user, <|endoftext|>",
    "snake_case and kebab-case and CamelCase and https://example.com/a?b=c#d",
    "tabs\tand\nnew\nlines\r\nand\u00a0no-break\u2003spaces",
    " ".join(["far too long for the seventy-seven tokens CLIP reads"] * 10),
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "\x00\x1b[31m control \x7f characters",
]


@pytest.mark.parametrize("model", ["ViT-B-32", "ViT-L-14", "RN50"])
def test_the_ids_are_open_clips_token_for_token(model: str) -> None:
    import open_clip

    ours = simple_tokenizer(model)
    assert isinstance(ours, ClipBpeTokenizer)
    theirs = open_clip.get_tokenizer(model)
    got = ours(TEXTS)
    assert got.dtype == np.int64 and got.shape == (len(TEXTS), 77)
    assert np.array_equal(got, theirs(TEXTS).numpy())
    assert np.array_equal(ours("a dog"), theirs("a dog").numpy())  # one text, as open_clip takes it
    assert np.array_equal(ours(TEXTS[:3], context_length=8), theirs(TEXTS[:3], context_length=8).numpy())


def test_a_model_with_another_tokenizer_is_left_to_open_clip() -> None:
    package = Path(__import__("importlib.util").util.find_spec("open_clip").submodule_search_locations[0])
    hf = next(p.stem for p in sorted((package / "model_configs").glob("*.json"))
              if '"hf_tokenizer_name"' in p.read_text() and "siglip" not in p.stem.lower())  # fmt: skip
    for model in (hf, "ViT-B-16-SigLIP", "hf-hub:org/repo", "local-dir:/x", "no-such-model"):
        assert simple_tokenizer(model) is None, model


def test_a_text_search_on_the_exported_tower_imports_no_torch(tmp_path: Path) -> None:
    """With the text tower exported once (that needs torch), a new process embeds a query
    without importing torch or open_clip: their import took ~5 s of every CLI text search."""
    from agentmm.tools.clip_search import ClipEmbedder
    from agentmm.tools.shared_runtime import close_process_runtime

    expected = ClipEmbedder(pretrained=None, export_dir=tmp_path).embed_texts(["a dog on the beach"])[0]
    close_process_runtime()
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from agentmm.tools.clip_search import ClipEmbedder\n"
        f"embedder = ClipEmbedder(pretrained=None, export_dir=Path({str(tmp_path)!r}))\n"
        "vector = embedder.embed_texts(['a dog on the beach'])[0]\n"
        "print(json.dumps({'vector': vector, 'heavy': sorted({'torch', 'open_clip'} & set(sys.modules))}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["heavy"] == []
    assert np.abs(np.array(found["vector"]) - np.array(expected)).max() < 1e-6
