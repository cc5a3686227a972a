"""CharTokenizer: nanoGPT's tiny-Shakespeare alphabet, round trips, save/load."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.tokenizers.char import CharTokenizer


def test_tinyshakespeare_alphabet(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    # nanoGPT's data/shakespeare_char/prepare.py reports 65 characters, newline first.
    assert tok.n_vocab == tok.vocab_size == 65
    assert tok.chars[:3] == ["\n", " ", "!"]
    assert tok.encode("hii there") == [46, 47, 47, 1, 58, 46, 43, 56, 43]
    assert tok.decode(tok.encode(text)) == text


@given(st.text(min_size=1, max_size=50))
def test_round_trip_any_text(text):
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text


def test_unknown_characters_and_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")
    with pytest.raises(ValueError, match="outside"):
        tok.decode([3])
    with pytest.raises(ValueError, match="twice"):
        CharTokenizer(["a", "a"])


def test_save_load(tmp_path):
    tok = CharTokenizer.from_text("hello, world\n\u00e9\U0001F600")
    path = tmp_path / "chars.json"
    tok.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["format"] == "numpy_gpt-char"
    loaded = CharTokenizer.load(path)
    assert loaded.chars == tok.chars
    path.write_text('{"format": "something"}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a CharTokenizer file"):
        CharTokenizer.load(path)
    path.write_text('{"format": "numpy_gpt-char", "version": 1, "chars": ["ab"]}', encoding="utf-8")
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer.load(path)
