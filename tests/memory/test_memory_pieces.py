"""memory_pieces on text written without spaces: Chinese cut only at '.!?' and whitespace was
one memory (1,440 characters, about 3,000 smollm2 tokens against memory_max_tokens 200)."""

from __future__ import annotations

import unicodedata

from agentmm.memory.pieces import memory_pieces
from agentmm.tokens import approximate_tokens

CAP = 200  # memory_max_tokens' default: pieces of at most 50 tokens
CLAUSE = "我今天在杭州的茶馆里喝了很多龙井茶并且和朋友聊天"


def _fits(pieces: list[str]) -> bool:
    return all(0 < approximate_tokens(piece) <= CAP // 4 for piece in pieces)


def test_a_chinese_text_with_no_sentence_end_is_cut_between_characters() -> None:
    text = CLAUSE * 60
    pieces = memory_pieces(text, approximate_tokens, CAP)
    assert len(pieces) > 1 and _fits(pieces)
    assert "".join(pieces) == text  # nothing lost, nothing repeated, no space put in


def test_a_chinese_text_is_cut_at_its_own_sentence_ends() -> None:
    sentence = "我今天在杭州的茶馆里喝了很多龙井茶。"
    text = sentence * 60
    pieces = memory_pieces(text, approximate_tokens, CAP)
    assert len(pieces) > 1 and _fits(pieces)
    assert "".join(pieces) == text
    assert all(piece.endswith("。") for piece in pieces)  # between sentences, not inside one
    mixed = "你好吗？我很好！今天天气不错。" * 40
    assert "".join(memory_pieces(mixed, approximate_tokens, CAP)) == mixed


def test_a_long_word_is_never_cut_between_a_letter_and_its_combining_mark() -> None:
    text = "e\u0301" * 400  # é as e + combining acute, no space in 800 characters
    pieces = memory_pieces(text, approximate_tokens, CAP)
    assert len(pieces) > 1 and _fits(pieces) and "".join(pieces) == text
    assert not any(unicodedata.combining(piece[0]) for piece in pieces)


def test_a_spaced_text_is_still_cut_between_sentences() -> None:
    text = " ".join(f"Sentence number {n} says a little about tea." for n in range(60))
    pieces = memory_pieces(text, approximate_tokens, CAP)
    assert len(pieces) > 1 and _fits(pieces) and " ".join(pieces) == text
    assert all(piece.endswith(".") for piece in pieces)
