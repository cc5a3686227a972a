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


def test_special_tokens_follow_the_alphabet_and_unknown_characters_become_unk():
    from numpy_gpt.tokenizers.char import CHAR_SPECIALS
    tok = CharTokenizer.from_text("abc \n", CHAR_SPECIALS)
    assert tok.chars == ["\n", " ", "a", "b", "c"] and tok.n_vocab == 7
    assert (tok.eot_token, tok.unk_token) == (5, 6)
    # the instruction format's '#' is not in the alphabet: each unknown character is one <|unk|>
    assert tok.encode("### a") == [6, 6, 6, 1, 2]
    assert tok.encode("<|endoftext|>") == [6] * 13            # special tokens are made by id only
    assert tok.decode([2, 6, 5]) == "a\ufffd<|endoftext|>"
    plain = CharTokenizer.from_text("abc")
    assert plain.eot_token is None and plain.unk_token is None
    with pytest.raises(ValueError, match="'#'"):
        plain.encode("#")
    with pytest.raises(ValueError, match="distinct non-empty"):
        CharTokenizer("ab", ["<|x|>", "<|x|>"])


def test_special_tokens_survive_save_load_and_the_checkpoint_spec(tmp_path):
    from numpy_gpt.tokenizers.char import CHAR_SPECIALS
    from numpy_gpt.tokenizers.spec import TokenizerSpecError, tokenizer_from_spec, tokenizer_spec
    tok = CharTokenizer.from_text("hello", CHAR_SPECIALS)
    tok.save(tmp_path / "chars.json")
    loaded = CharTokenizer.load(tmp_path / "chars.json")
    assert loaded.special_tokens == list(CHAR_SPECIALS) and loaded.encode("he#") == tok.encode("he#")
    spec = tokenizer_spec(tok)
    assert spec == {"kind": "char", "chars": tok.chars, "special_tokens": list(CHAR_SPECIALS)}
    assert tokenizer_from_spec(json.loads(json.dumps(spec))).eot_token == len(tok.chars)
    old = {"kind": "char", "chars": ["a", "b"]}                     # written before special tokens
    assert tokenizer_spec(tokenizer_from_spec(old)) == old
    with pytest.raises(TokenizerSpecError, match="special_tokens"):
        tokenizer_from_spec({**old, "special_tokens": "<|endoftext|>"})
