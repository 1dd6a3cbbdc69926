"""Benchmark the perception tools (ASR, CLIP image index, CoCa captions) on this machine.

    python benchmarks/perception.py [--images 200] [--entries 10000] [--queries 50] [--captions 3]
                                    [--parts asr,index,caption,concurrency]

What it measures, and how:

- ASR: speech synthesised with espeak-ng from known sentences, transcribed by the shipped
  Whisper tiny.en (int8, CPU, VAD on). Real-time factor = transcription seconds / audio
  seconds with the model already loaded; WER over all words (case and punctuation ignored).
- Image index: ``--images`` generated 640x480 JPEGs indexed from scratch by ``ImageIndex``
  (ViT-B-32, random weights: the same network, so the same cost as real weights), model
  loaded beforehand; then the no-op re-index of the unchanged folder.
- Search: the collection is topped up to ``--entries`` vectors with *synthetic* unit vectors
  inserted directly (embedding 10k images would take most of an hour here); each query is
  ``search_text``, text embedding included (the exported int8 text tower), side by side with
  the raw libraries on the same query (open_clip's ``encode_text`` on torch's default threads,
  then Chroma's query), alternating which goes first; plus how many of the raw top 5 agentmm
  also returned, and Chroma's query alone.
- Captions: CoCa ViT-B-32 with random weights, greedy decoding, side by side with the same
  greedy loop over open_clip's own ``CoCa.forward`` (one full forward per token), alternating
  which goes first. Random weights never emit the end token, so every caption runs to
  ``max_tokens`` (30): an upper bound for real weights, which stop at the end of the sentence.
- Concurrency: ``Perception.perceive`` on one image and a ~30 s voice note (all the sentences
  above), a fresh ``Perception`` each run so nothing is cached, divided by the caption and the
  transcription run alone one after the other with the libraries' default thread counts (goal
  <= 0.7; ``best_possible_ratio`` = longer job / both, the bound for perfect overlap at
  unchanged speed). Together, perceive gives each job its share of the cores (``cpu_share``).
  Once with a 12-token caption, about the length real weights stop at, and once with 30.

Prints a table, then a JSON summary on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentmm.tools.asr import default_cpu_threads, load_speech_model, transcribe, word_error_rate
from agentmm.tools.caption import CocaCaptioner, caption_file
from agentmm.tools.clip_search import ImageIndex
from agentmm.tools.coca_decoding import END_OF_TEXT, START_OF_TEXT
from agentmm.tools.cpu_share import threads_per_job
from agentmm.tools.perception import Perception

SPEECH = [
    [
        "The weather is lovely today, so we will walk to the market.",
        "Please bring me a cup of coffee with milk and sugar.",
        "My brother plays the piano every evening after dinner.",
    ],
    [
        "The train to the city leaves at half past seven in the morning.",
        "She opened the window and listened to the birds in the garden.",
        "We need to buy bread, eggs and apples before the shop closes.",
    ],
    [
        "The old captain told a long story about a storm at sea.",
        "Turn left at the church and the library is on your right.",
        "It was so cold last night that the lake froze over.",
    ],
]
CAPTION_TOKENS = 30
# MS-COCO reference captions average about 10.5 words; a CoCa fine-tuned on them stops near
# there, so 12 tokens stands in for a real caption's length (an assumption, not a measurement).
TYPICAL_CAPTION_TOKENS = 12


def speak(text: str, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def audio_seconds(path: Path) -> float:
    import wave

    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def bench_asr(workdir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    load_speech_model()
    load_s = time.perf_counter() - started
    clips = [speak(" ".join(lines), workdir / f"speech{i}.wav") for i, lines in enumerate(SPEECH)]
    audio = sum(audio_seconds(clip) for clip in clips)
    spent, errors, words = 0.0, 0.0, 0
    for clip, lines in zip(clips, SPEECH, strict=True):
        reference = " ".join(lines)
        result = transcribe(clip)
        spent += result.seconds
        n = len(reference.split())
        errors += word_error_rate(reference, result.text) * n
        words += n
    return {
        "model": "tiny.en (shipped, int8)",
        "load_s": round(load_s, 2),
        "audio_s": round(audio, 1),
        "transcribe_s": round(spent, 2),
        "rtf": round(spent / audio, 3),
        "wer": round(errors / words, 3),
        "words": words,
    }


def make_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image, ImageDraw

    rng = random.Random(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.new("RGB", (640, 480), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(600), rng.randrange(440)
            box = (x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        path = folder / f"img{i:04d}.jpg"
        image.save(path, quality=85)
        paths.append(path)
    return paths


def bench_index(index: ImageIndex, folder: Path, count: int) -> dict[str, Any]:
    paths = make_images(folder, count)
    index.embedder.load()  # model load is not part of the throughput
    index.search_image(paths[0], k=1)  # warm the image path once (first call allocates)
    started = time.perf_counter()
    report = index.index_dir(folder)
    spent = time.perf_counter() - started
    started = time.perf_counter()
    again = index.index_dir(folder)
    noop = time.perf_counter() - started
    assert report.added == count and again.unchanged == count, (report, again)
    return {
        "images": count,
        "index_s": round(spent, 2),
        "images_per_s": round(count / spent, 2),
        "reindex_unchanged_s": round(noop, 3),
        "batch_size": index.batch_size,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_search(index: ImageIndex, entries: int, queries: int) -> dict[str, Any]:
    """agentmm's ``search_text`` and the raw libraries (open_clip's ``encode_text`` + Chroma's
    query) side by side on the same queries, alternating which goes first."""
    import numpy as np
    import open_clip
    import torch

    rng = np.random.default_rng(3)
    missing = entries - len(index)
    batch = index._client.get_max_batch_size()
    for start in range(0, missing, batch):
        n = min(batch, missing - start)
        vectors = rng.normal(size=(n, 512)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = [f"synthetic-{start + i}" for i in range(n)]
        metadatas = [{"path": f"/synthetic/{i}.jpg", "size": 0, "mtime_ns": "0", "sha256": i} for i in ids]
        index.collection.add(ids=ids, embeddings=vectors.tolist(), metadatas=metadatas)  # type: ignore[arg-type]
    words = ["red", "blue", "green", "circle", "sunset", "a dog", "beach", "mountains", "a car", "two people"]
    texts = [f"a photo of {random.Random(i).choice(words)} number {i}" for i in range(queries)]
    model, tokenizer = index.embedder.load()[0], open_clip.get_tokenizer(index.embedder.model_name)

    def top5(vector: list[float]) -> list[str]:
        return index.collection.query(query_embeddings=[vector], n_results=5, include=[])["ids"][0]  # type: ignore[arg-type]

    def raw(text: str) -> list[str]:
        with torch.inference_mode():
            return top5(model.encode_text(tokenizer([text]), normalize=True)[0].tolist())

    started = time.perf_counter()
    index.search_text("warm up", k=5)  # exports the text tower on first use (or loads it)
    first_search_s = time.perf_counter() - started
    raw("warm up")
    ours_ms, raw_ms, overlap = [], [], []
    for i, text in enumerate(texts):
        sides = [("ours", lambda text=text: index.search_text(text, k=5)), ("raw", lambda text=text: raw(text))]
        results: dict[str, Any] = {}
        for name, job in sides if i % 2 == 0 else sides[::-1]:
            started = time.perf_counter()
            results[name] = job()
            (ours_ms if name == "ours" else raw_ms).append((time.perf_counter() - started) * 1000)
        # search_text drops paths that no longer exist (the synthetic ones): compare Chroma's ids
        ours = top5(index.embedder.embed_texts([text])[0])
        overlap.append(len(set(ours) & set(results["raw"])) / 5)
    vector = index.embedder.embed_texts(["a red circle"])[0]
    query_only = [
        timed(lambda: index.collection.query(query_embeddings=[vector], n_results=5)) * 1000  # type: ignore[arg-type]
        for _ in range(queries)
    ]
    encoder = index.embedder.text_encoder()
    return {
        "entries": len(index),
        "synthetic_entries": max(0, missing),
        "queries": queries,
        "text_tower": ("onnxruntime int8" if encoder.quantized else "onnxruntime fp32") if encoder else "torch",
        "first_search_s": round(first_search_s, 2),
        "p50_ms": round(statistics.median(ours_ms), 1),
        "p95_ms": round(percentile(ours_ms, 0.95), 1),
        "raw_p50_ms": round(statistics.median(raw_ms), 1),
        "raw_p95_ms": round(percentile(raw_ms, 0.95), 1),
        "top5_overlap_with_raw": round(statistics.mean(overlap), 3),
        "torch_threads": torch.get_num_threads(),
        "query_only_p50_ms": round(statistics.median(query_only), 2),
    }


def bench_caption(images: list[Path], count: int) -> dict[str, Any]:
    """agentmm's caption of a file, side by side with the same greedy decoding through open_clip's
    own CoCa forward (one full forward per token), alternating which goes first."""
    captioner = CocaCaptioner(pretrained=None, max_tokens=CAPTION_TOKENS)
    started = time.perf_counter()
    model, preprocess = captioner.load()
    load_s = time.perf_counter() - started
    caption_file(images[0], captioner)  # warm-up
    ours, raw = [], []
    for turn, path in enumerate(images[1 : count + 1]):
        ours_first = turn % 2 == 0
        if ours_first:
            ours.append(caption_file(path, captioner).seconds)
        raw.append(timed(lambda path=path: raw_coca_caption(model, preprocess, path, captioner.min_tokens)))
        if not ours_first:
            ours.append(caption_file(path, captioner).seconds)
    return {
        "model": "coca_ViT-B-32, random weights",
        "tokens": CAPTION_TOKENS,
        "load_s": round(load_s, 2),
        "p50_s": round(statistics.median(ours), 2),
        "per_token_ms": round(statistics.median(ours) / CAPTION_TOKENS * 1000, 1),
        "raw_p50_s": round(statistics.median(raw), 2),
        "raw_per_token_ms": round(statistics.median(raw) / CAPTION_TOKENS * 1000, 1),
        "images": len(ours),
    }


def raw_coca_caption(model: Any, preprocess: Any, path: Path, min_tokens: int) -> str:
    """Greedy decoding the way open_clip's own CoCa forward allows it: the image encoded once,
    then the whole model run over all tokens so far for each new token."""
    import open_clip
    import torch
    from PIL import Image

    with Image.open(path) as image:
        pixels = preprocess(image.convert("RGB")).unsqueeze(0)
    with torch.inference_mode():
        encoded = model(pixels)
        tokens = torch.full((1, 1), START_OF_TEXT, dtype=torch.long)
        for step in range(CAPTION_TOKENS):
            logits = model(pixels, tokens, image_latent=encoded["image_features"], image_embs=encoded["image_embs"],
                           output_labels=False)["logits"][:, -1]  # fmt: skip
            if step < min_tokens:
                logits[:, END_OF_TEXT] = float("-inf")
            tokens = torch.cat([tokens, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return open_clip.decode(tokens[0])


def timed(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def bench_concurrency(image: Path, audio: Path, tokens: int = CAPTION_TOKENS, repeats: int = 3) -> dict[str, Any]:
    """An image + audio turn's ``Perception.perceive`` ÷ the two tools run alone, one after
    the other, each with its library's default threads (a fresh Perception per run: no cache)."""
    captioner = CocaCaptioner(pretrained=None, max_tokens=tokens, min_tokens=min(5, tokens - 1))

    def hear(path: Path) -> tuple[str, str, str]:
        result = transcribe(path)
        return result.text, result.language, result.model

    caption_s, asr_s, together_s, ratios, cores_used = [], [], [], [], []
    load_before = os.getloadavg()[0]
    caption_file(image, captioner), hear(audio), Perception(captioner, hear).perceive([image, audio])  # warm all
    for _ in range(repeats):
        one, two = timed(lambda: caption_file(image, captioner)), timed(lambda: hear(audio))
        perception = Perception(captioner, hear)
        cpu_before, started = cpu_seconds(), time.perf_counter()
        observations = perception.perceive([image, audio])
        together = time.perf_counter() - started
        assert not any(o.error for o in observations), observations
        cores_used.append((cpu_seconds() - cpu_before) / together)
        caption_s.append(one)
        asr_s.append(two)
        together_s.append(together)
        ratios.append(together / (one + two))
    one, two = statistics.median(caption_s), statistics.median(asr_s)
    share = threads_per_job(2)
    return {
        "threads_alone": {"torch": default_torch_threads(), "ctranslate2": default_cpu_threads()},
        "threads_together": {"torch": share, "ctranslate2": share},
        "caption_tokens": tokens,
        "audio_s": round(audio_seconds(audio), 1),
        "caption_s": round(one, 2),
        "asr_s": round(two, 2),
        "sequential_s": round(one + two, 2),
        "concurrent_s": round(statistics.median(together_s), 2),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "best_possible_ratio": round(max(one, two) / (one + two), 3),
        # CPU seconds this process got per wall second while both ran: near 1 means the two
        # jobs did not overlap (another process had the other core, or they serialised).
        "cores_used_concurrent": round(statistics.median(cores_used), 2),
        "load_avg_1m_before": round(load_before, 2),
    }


def default_torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


PARTS = ("asr", "index", "caption", "concurrency")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--captions", type=int, default=3)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    summary: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        }
    }
    with tempfile.TemporaryDirectory(prefix="agentmm-bench-") as tmp:
        work = Path(tmp)
        if "asr" in parts:
            summary["asr"] = bench_asr(work)
            print(f"asr done: {summary['asr']}", file=sys.stderr)
        if "index" in parts:
            with ImageIndex(work / "data", pretrained=None) as index:
                summary["index"] = bench_index(index, work / "images", args.images)
                print(f"index done: {summary['index']}", file=sys.stderr)
                summary["search"] = bench_search(index, args.entries, args.queries)
                print(f"search done: {summary['search']}", file=sys.stderr)
        images = sorted((work / "images").glob("*.jpg")) or make_images(work / "images", args.captions + 1)
        if "caption" in parts:
            summary["caption"] = bench_caption(images, args.captions)
            print(f"caption done: {summary['caption']}", file=sys.stderr)
        if "concurrency" in parts:
            audio = speak(" ".join(line for lines in SPEECH for line in lines), work / "voice-note.wav")
            summary["concurrency"] = [
                bench_concurrency(images[0], audio, tokens=TYPICAL_CAPTION_TOKENS),
                bench_concurrency(images[0], audio, tokens=CAPTION_TOKENS),
            ]
    summary["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    print_table(summary)
    print(json.dumps(summary))
    return 0


def print_table(s: dict[str, Any]) -> None:
    rows: list[tuple[str, str, str]] = []
    if "asr" in s:
        a = s["asr"]
        rows += [
            ("ASR real-time factor (tiny.en, warm)", f"{a['rtf']}", f"{a['transcribe_s']} s / {a['audio_s']} s audio"),
            ("ASR word error rate (espeak-ng)", f"{a['wer']}", f"{a['words']} words; model load {a['load_s']} s"),
        ]
    if "index" in s:
        i, q = s["index"], s["search"]
        rows += [
            ("Index throughput (ViT-B-32)", f"{i['images_per_s']} img/s", f"{i['images']} JPEGs, {i['index_s']} s"),
            ("Re-index, nothing changed", f"{i['reindex_unchanged_s']} s", f"{i['images']} files, stat only"),
            (
                f"Text search p50 / p95, {q['entries']:,} entries",
                f"{q['p50_ms']} / {q['p95_ms']} ms",
                f"text embedding included ({q['text_tower']}); {q['synthetic_entries']:,} synthetic vectors; "
                f"first search {q['first_search_s']} s",
            ),
            (
                "  raw open_clip encode_text + Chroma",
                f"{q['raw_p50_ms']} / {q['raw_p95_ms']} ms",
                f"torch on {q['torch_threads']} threads; top-5 overlap with agentmm {q['top5_overlap_with_raw']}",
            ),
            ("  Chroma query alone p50", f"{q['query_only_p50_ms']} ms", "no embedding"),
        ]
    if "caption" in s:
        c = s["caption"]
        note = f"{c['tokens']} tokens, {c['per_token_ms']} ms/token"
        rows.append(("Caption latency p50 (CoCa)", f"{c['p50_s']} s", note))
        raw_note = f"one full forward per token, {c['raw_per_token_ms']} ms/token"
        rows.append(("  raw open_clip CoCa forward, same greedy decoding", f"{c['raw_p50_s']} s", raw_note))
    for run in s.get("concurrency", []):
        t = run["threads_together"]
        rows.append(
            (
                f"perceive(image + audio) / both alone, caption {run['caption_tokens']} tok, "
                f"{t['torch']}+{t['ctranslate2']} threads",
                f"{run['ratio']}",
                f"{run['concurrent_s']} s vs {run['sequential_s']} s sequential (caption {run['caption_s']} s, "
                f"ASR {run['asr_s']} s of {run['audio_s']} s audio; best possible {run['best_possible_ratio']}; "
                f"runs {run['ratios']}; cores used {run['cores_used_concurrent']})",
            )
        )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<{vwidth}}  notes")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<{vwidth}}  {note}")
    m = s["machine"]
    print(f"({m['cpus']} CPUs, load average {m['load_avg_1m_at_start']} -> {m['load_avg_1m_at_end']})")


if __name__ == "__main__":
    sys.exit(main())
