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
  ``search_text``, text embedding included, timed with torch's default thread count and with
  one thread (on a busy small CPU, torch's spinning threads can be many times slower), and
  Chroma's query alone.
- Captions: CoCa ViT-B-32 with random weights, greedy decoding. Random weights never emit the
  end token, so every caption runs to ``max_tokens`` (30): an upper bound for real weights,
  which stop at the end of the sentence.
- Concurrency: one caption and the transcription of a ~30 s voice note (all the sentences
  above) run concurrently in a thread pool, divided by the two run one after the other (goal
  <= 0.7; ``best_possible_ratio`` = longer job / both, the bound for perfect overlap). Measured
  with the libraries' default thread counts and with one thread each (torch and CTranslate2
  both release the GIL; on a small CPU two multi-threaded jobs fight for the same cores), and
  once more with a 12-token caption, about the length real weights stop at.

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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agentmm.tools.asr import default_cpu_threads, load_speech_model, transcribe, word_error_rate
from agentmm.tools.caption import CocaCaptioner, caption_file
from agentmm.tools.clip_search import ImageIndex

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
    import numpy as np

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
    texts = [f"{random.Random(i).choice(words)} {i}" for i in range(queries)]
    index.search_text("warm up", k=5)
    result: dict[str, Any] = {"entries": len(index), "synthetic_entries": max(0, missing), "queries": queries}
    for label, threads in (("", None), ("_1_thread", 1)):
        with torch_threads(threads):
            index.search_text("warm up", k=5)
            latencies = [timed(lambda text=text: index.search_text(text, k=5)) * 1000 for text in texts]
        result[f"p50_ms{label}"] = round(statistics.median(latencies), 1)
        result[f"p95_ms{label}"] = round(percentile(latencies, 0.95), 1)
    vector = index.embedder.embed_texts(["a red circle"])[0]
    query_only = [
        timed(lambda: index.collection.query(query_embeddings=[vector], n_results=5)) * 1000  # type: ignore[arg-type]
        for _ in range(queries)
    ]
    result["query_only_p50_ms"] = round(statistics.median(query_only), 2)
    return result


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_caption(images: list[Path], count: int) -> dict[str, Any]:
    captioner = CocaCaptioner(pretrained=None, max_tokens=CAPTION_TOKENS)
    started = time.perf_counter()
    captioner.load()
    load_s = time.perf_counter() - started
    caption_file(images[0], captioner)  # warm-up
    times = [caption_file(path, captioner).seconds for path in images[1 : count + 1]]
    return {
        "model": "coca_ViT-B-32, random weights",
        "tokens": CAPTION_TOKENS,
        "load_s": round(load_s, 2),
        "p50_s": round(statistics.median(times), 2),
        "per_token_ms": round(statistics.median(times) / CAPTION_TOKENS * 1000, 1),
        "images": len(times),
    }


def timed(job: Callable[[], object]) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def bench_concurrency(
    image: Path, audio: Path, threads: int | None, tokens: int = CAPTION_TOKENS, repeats: int = 3
) -> dict[str, Any]:
    captioner = CocaCaptioner(pretrained=None, max_tokens=tokens)
    load_speech_model(cpu_threads=threads)

    def run_caption() -> object:
        return caption_file(image, captioner)

    def run_asr() -> object:
        return transcribe(audio, cpu_threads=threads)

    caption_s, asr_s, together_s, ratios, cores_used = [], [], [], [], []
    load_before = os.getloadavg()[0]
    with torch_threads(threads):
        import torch

        torch_count = torch.get_num_threads()
        run_caption(), run_asr()  # warm both
        for _ in range(repeats):
            one, two = timed(run_caption), timed(run_asr)
            with ThreadPoolExecutor(max_workers=2) as pool:
                cpu_before, started = cpu_seconds(), time.perf_counter()
                for future in [pool.submit(run_caption), pool.submit(run_asr)]:
                    future.result()
                together = time.perf_counter() - started
                cores_used.append((cpu_seconds() - cpu_before) / together)
            caption_s.append(one)
            asr_s.append(two)
            together_s.append(together)
            ratios.append(together / (one + two))
    one, two = statistics.median(caption_s), statistics.median(asr_s)
    return {
        "threads": {"torch": torch_count, "ctranslate2": threads or default_cpu_threads()},
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
                bench_concurrency(images[0], audio, threads=None),
                bench_concurrency(images[0], audio, threads=1),
                bench_concurrency(images[0], audio, threads=1, tokens=TYPICAL_CAPTION_TOKENS),
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
                f"text embedding included (torch default threads); {q['synthetic_entries']:,} synthetic vectors",
            ),
            ("  same, torch on 1 thread", f"{q['p50_ms_1_thread']} / {q['p95_ms_1_thread']} ms", ""),
            ("  Chroma query alone p50", f"{q['query_only_p50_ms']} ms", "no embedding"),
        ]
    if "caption" in s:
        c = s["caption"]
        note = f"{c['tokens']} tokens, {c['per_token_ms']} ms/token"
        rows.append(("Caption latency p50 (CoCa)", f"{c['p50_s']} s", note))
    for run in s.get("concurrency", []):
        t = run["threads"]
        rows.append(
            (
                f"Caption({run['caption_tokens']} tok) || ASR ratio, torch {t['torch']} + CT2 {t['ctranslate2']}",
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
