"""SimpleTokenizerV1/V2 against the outputs printed in chapter 2 of the book."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.tokenizers.simple import SimpleTokenizerV1, SimpleTokenizerV2, build_vocab, tokenize

PASSAGE = """"It's the last he painted, you know,"
       Mrs. Gisburn said with pardonable pride."""


@pytest.fixture(scope="module")
def verdict(verdict_path):
    return verdict_path.read_text(encoding="utf-8")


def test_tokenize_splits_like_the_book():
    assert tokenize("Hello, world. Is this-- a test?") == \
        ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]


def test_vocabulary_sizes_of_the_verdict(verdict):
    assert len(tokenize(verdict)) == 4690  # book, section 2.2
    assert SimpleTokenizerV1.from_text(verdict).n_vocab == 1130  # section 2.3
    assert SimpleTokenizerV2.from_text(verdict).n_vocab == 1132  # section 2.4


def test_v1_book_example(verdict):
    tokenizer = SimpleTokenizerV1.from_text(verdict)
    ids = tokenizer.encode(PASSAGE)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    assert tokenizer.decode(ids) == \
        '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    with pytest.raises(KeyError, match="Hello"):
        tokenizer.encode("Hello, do you like tea?")


def test_v2_book_example(verdict):
    tokenizer = SimpleTokenizerV2.from_text(verdict)
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tokenizer.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tokenizer.decode(ids) == \
        "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."
    assert tokenizer.eot_token == 1130 and tokenizer.unk_token == 1131


def test_round_trip_on_text_in_canonical_spacing(verdict):
    tokenizer = SimpleTokenizerV1.from_text(verdict)
    text = "I had always thought Jack Gisburn rather a cheap genius, though a good fellow enough."
    assert tokenizer.decode(tokenizer.encode(text)) == text


@given(st.data())
def test_encode_of_decode_is_identity(verdict, data):
    tokenizer = SimpleTokenizerV2.from_text(verdict)
    ids = data.draw(st.lists(st.integers(0, tokenizer.n_vocab - 1), max_size=40))
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


def test_bad_input():
    with pytest.raises(ValueError, match="needs"):
        SimpleTokenizerV2(build_vocab("just words"))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        SimpleTokenizerV1.from_text("a b").decode([7])
    with pytest.raises(ValueError, match="same id"):
        SimpleTokenizerV1({"a": 0, "b": 0})
