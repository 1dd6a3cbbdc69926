"""Hostile GGUF headers: whatever the bytes, ``read_gguf`` answers with a header agentmm can use
or one typed ``ModelError`` line, never a traceback, and never lets through a header that
llama.cpp would abort on.

Headers are written here field by field (not with the ``gguf`` package), so a test can give any
key any GGUF type, nest arrays, lie about counts and cut the file anywhere.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmm.errors import CorruptModelError, ModelError
from agentmm.gguf import GGUFInfo, read_gguf
from agentmm.models import check_fits_in_memory

HOSTILE = settings(
    max_examples=120, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# GGUF value types (see agentmm/gguf.py): scalars by struct format, 8 = string, 9 = array.
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
ARCH = "llama"
KNOWN_KEYS = [
    "general.architecture",
    "general.name",
    "general.alignment",
    f"{ARCH}.block_count",
    f"{ARCH}.context_length",
    f"{ARCH}.embedding_length",
    f"{ARCH}.attention.head_count",
    f"{ARCH}.attention.head_count_kv",
    "tokenizer.chat_template",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
]


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def encode_value(kind: int, value: object) -> bytes:
    """The bytes of one value of GGUF type ``kind`` (``value`` as the strategies below make it)."""
    if kind in SCALAR_FORMATS:
        return struct.pack("<" + SCALAR_FORMATS[kind], value)
    if kind == STRING:
        return gguf_string(value)  # type: ignore[arg-type]
    item_kind, items = value  # type: ignore[misc]
    return struct.pack("<IQ", item_kind, len(items)) + b"".join(encode_value(item_kind, i) for i in items)


def scalar(kind: int) -> st.SearchStrategy[object]:
    fmt = SCALAR_FORMATS[kind]
    if fmt == "?":
        return st.booleans()
    if fmt in "fd":
        return st.floats(width=32 if fmt == "f" else 64)
    size = struct.calcsize(fmt)
    if fmt.isupper():
        return st.integers(0, 2 ** (8 * size) - 1)
    return st.integers(-(2 ** (8 * size - 1)), 2 ** (8 * size - 1) - 1)


def typed_value(kind: int, depth: int = 0) -> st.SearchStrategy[tuple[int, object]]:
    if kind in SCALAR_FORMATS:
        return scalar(kind).map(lambda v: (kind, v))
    if kind == STRING:
        return st.text(max_size=40).map(lambda v: (kind, v))
    item_kinds = [*SCALAR_FORMATS, STRING] + ([ARRAY] if depth < 2 else [])
    return (
        st.sampled_from(item_kinds)
        .flatmap(lambda ik: st.lists(typed_value(ik, depth + 1), max_size=4).map(lambda xs: (ik, [v for _, v in xs])))
        .map(lambda v: (ARRAY, v))
    )


any_value = st.sampled_from([*SCALAR_FORMATS, STRING, ARRAY]).flatmap(typed_value)


@st.composite
def kv_pairs(draw: st.DrawFn) -> list[tuple[str, int, object]]:
    """Metadata with the keys agentmm reads, each of a random type, plus some others."""
    pairs = []
    for _ in range(draw(st.integers(0, 8))):
        key = draw(st.sampled_from([*KNOWN_KEYS, None]).flatmap(lambda k: st.just(k) if k else st.text(max_size=20)))
        kind, value = draw(any_value)
        pairs.append((key, kind, value))
    if draw(st.booleans()):
        pairs.insert(0, ("general.architecture", STRING, ARCH))
    return pairs


@st.composite
def tensors(draw: st.DrawFn) -> list[bytes]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        dims = draw(st.lists(st.integers(0, 16) | st.integers(0, 2**64 - 1), max_size=5))
        n_dims = draw(st.sampled_from([len(dims)] * 8 + [9, 2**32 - 1]))
        ggml_type = draw(st.sampled_from([0, 1, 2, 8, 12, 30, 39, 99, 2**32 - 1]))
        offset = draw(st.integers(0, 64) | st.integers(0, 2**64 - 1))
        out.append(
            gguf_string(draw(st.text(max_size=10)))
            + struct.pack("<I", n_dims)
            + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", ggml_type, offset)
        )
    return out


@st.composite
def gguf_files(draw: st.DrawFn) -> bytes:
    """A GGUF header, often well-formed, then lied about, cut short or padded with junk."""
    pairs = draw(kv_pairs())
    infos = draw(tensors())
    version = draw(st.sampled_from([3] * 8 + [2, 1, 4, 2**32 - 1]))
    n_tensors = draw(st.sampled_from([len(infos)] * 12 + [len(infos) + 1, 1 << 24, 1 << 25, 2**64 - 1]))
    n_kv = draw(st.sampled_from([len(pairs)] * 12 + [len(pairs) + 1, 1 << 24, 1 << 25, 2**64 - 1]))
    body = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)
    body += b"".join(gguf_string(k) + struct.pack("<I", kind) + encode_value(kind, v) for k, kind, v in pairs)
    body += b"".join(infos)
    body += b"\0" * draw(st.integers(0, 64) | st.integers(0, 4096))
    ending = draw(st.sampled_from(["whole", "whole", "whole", "cut", "junk"]))
    if ending == "cut":
        body = body[: draw(st.integers(4, max(4, len(body))))]
    elif ending == "junk":
        body += draw(st.binary(max_size=64))
    return body


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield tmp_path_factory.mktemp("gguf") / "model.gguf"


def one_line(exc: BaseException) -> None:
    assert str(exc) and "\n" not in str(exc), repr(exc)


def use_header(info: GGUFInfo) -> None:
    """Everything doctor and the loader read from a header works on whatever was parsed."""
    assert isinstance(info.architecture, str) and isinstance(info.name, str)
    for value in (info.block_count, info.context_length):
        assert value is None or (isinstance(value, int) and value >= 0)
    assert info.chat_template is None or isinstance(info.chat_template, str)
    assert info.kv_cache_bytes(4096) >= 0
    try:
        check_fits_in_memory(info, 4096)
    except ModelError as exc:
        one_line(exc)


def read_or_typed_error(path: Path) -> GGUFInfo | None:
    try:
        info = read_gguf(path)
    except ModelError as exc:
        one_line(exc)
        return None
    use_header(info)
    return info


@settings(HOSTILE, max_examples=250)
@given(data=gguf_files())
def test_any_gguf_header_reads_or_is_one_typed_line(model_file: Path, data: bytes) -> None:
    model_file.write_bytes(data)
    read_or_typed_error(model_file)


@HOSTILE
@given(rest=st.binary(max_size=200))
def test_random_bytes_after_the_magic(model_file: Path, rest: bytes) -> None:
    model_file.write_bytes(b"GGUF" + rest)
    read_or_typed_error(model_file)


@HOSTILE
@given(data=st.binary(max_size=64))
def test_random_bytes(model_file: Path, data: bytes) -> None:
    model_file.write_bytes(data)
    read_or_typed_error(model_file)


def header(pairs: list[tuple[str, int, object]]) -> bytes:
    kvs = b"".join(gguf_string(k) + struct.pack("<I", kind) + encode_value(kind, v) for k, kind, v in pairs)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + kvs


@HOSTILE
@given(depth=st.integers(1, 5000))
def test_arrays_nested_deeply_are_refused_not_a_recursion_crash(model_file: Path, depth: int) -> None:
    # Each level is 12 bytes (item type, count 1): a 60 kB file nests 5000 deep.
    value = struct.pack("<IQ", 4, 1) + struct.pack("<I", 7)
    for _ in range(depth - 1):
        value = struct.pack("<IQ", ARRAY, 1) + value
    model_file.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gguf_string("x.nested") + struct.pack("<I", ARRAY)
                          + value)  # fmt: skip
    info = read_or_typed_error(model_file)
    if depth > 64:
        assert info is None


@HOSTILE
@given(kind_value=any_value)
def test_alignment_must_be_a_uint32_power_of_two(model_file: Path, kind_value: tuple[int, object]) -> None:
    """llama.cpp refuses an alignment that is not a uint32 power of two only as "failed to load
    model" (older builds assert on its type and abort); here it is a typed error naming the key."""
    kind, value = kind_value
    model_file.write_bytes(header([("general.alignment", kind, value)]))
    fits = kind == 4 and value > 0 and value & (value - 1) == 0  # type: ignore[operator]
    if fits:
        assert read_gguf(model_file).metadata["general.alignment"] == value
    else:
        with pytest.raises(CorruptModelError, match="alignment"):
            read_gguf(model_file)


@pytest.mark.parametrize(
    ("kind", "value"),
    [(STRING, "32"), (6, float("nan")), (6, float("inf")), (12, -1.5), (ARRAY, (4, [1, 2])), (7, True), (5, -3)],
)
def test_sizes_of_the_wrong_type_do_not_break_doctor(model_file: Path, kind: int, value: object) -> None:
    pairs = [("general.architecture", STRING, ARCH)]
    pairs += [(f"{ARCH}.{k}", kind, value) for k in ("block_count", "context_length", "embedding_length")]
    pairs += [(f"{ARCH}.attention.head_count", 4, 8)]
    model_file.write_bytes(header(pairs))
    info = read_gguf(model_file)
    use_header(info)


VOCAB = {"tokenizer.ggml.tokens": STRING, "tokenizer.ggml.scores": 6, "tokenizer.ggml.token_type": 5}


@HOSTILE
@given(
    arrays=st.dictionaries(
        st.sampled_from(sorted(VOCAB)),
        st.tuples(st.sampled_from([*SCALAR_FORMATS, STRING, ARRAY]), st.integers(0, 4)),
        min_size=1,
    ),
    scalar_instead=st.sampled_from([None, *sorted(VOCAB)]),
)
def test_vocab_arrays_llama_cpp_reads_raw_are_checked(
    model_file: Path, arrays: dict[str, tuple[int, int]], scalar_instead: str | None
) -> None:
    """llama.cpp reads the vocabulary arrays as raw C arrays; the pinned build refuses a wrong item
    type or a short scores/token_type array only as "failed to load model" (older builds abort or
    read past the end). Such a header is a typed error naming the key before llama.cpp sees it."""
    samples = {STRING: "t", 6: 0.5, 12: 0.5, 7: True}
    pairs: list[tuple[str, int, object]] = [
        (key, ARRAY, (item_kind, [] if item_kind == ARRAY else [samples.get(item_kind, 0)] * n))
        for key, (item_kind, n) in arrays.items()
    ]
    if scalar_instead in arrays:
        pairs = [(k, STRING, "x") if k == scalar_instead else (k, kind, v) for k, kind, v in pairs]
    model_file.write_bytes(header(pairs))
    n_tokens = arrays.get("tokenizer.ggml.tokens", (STRING, -1))[1]
    fits = scalar_instead not in arrays and all(
        item_kind == VOCAB[key] and (key == "tokenizer.ggml.tokens" or n_tokens < 0 or n == n_tokens)
        for key, (item_kind, n) in arrays.items()
    )
    if fits:
        read_gguf(model_file)
    else:
        with pytest.raises(CorruptModelError, match=r"tokenizer\.ggml"):
            read_gguf(model_file)


def test_a_vocabulary_cut_anywhere_or_with_a_huge_string_is_one_typed_line(model_file: Path) -> None:
    """The vocabulary's strings are stepped over unread (a chat start read them all, three times);
    a cut inside them, or a string claiming more bytes than the file, is still a typed error."""
    tokens = [f"tok{i}" for i in range(300)]
    whole = header([("general.architecture", STRING, ARCH), ("tokenizer.ggml.tokens", ARRAY, (STRING, tokens))])
    model_file.write_bytes(whole)
    assert read_gguf(model_file).metadata["general.architecture"] == ARCH
    start = whole.index(b"tok0") - 8
    for cut in (start + 3, start + 9, len(whole) // 2 + 5, len(whole) - 1):
        model_file.write_bytes(whole[:cut])
        with pytest.raises(CorruptModelError, match="truncated"):
            read_gguf(model_file)
    model_file.write_bytes(whole[:start] + struct.pack("<Q", 2**62) + whole[start + 8 :])
    with pytest.raises(CorruptModelError, match="damaged"):
        read_gguf(model_file)
