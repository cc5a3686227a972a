"""tokenizers/spec.py: a tokenizer description is data only: the pattern is a name, every field checked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.tokenizers.bpe import GPT2_PATTERN
from numpy_gpt.tokenizers.char import CharTokenizer
from numpy_gpt.tokenizers.spec import TokenizerSpecError, tokenizer_from_spec, tokenizer_spec
from numpy_gpt.tokenizers.train_bpe import BPETokenizer

TEXT = "the cat sat on the mat; the rat sat on the hat. " * 20


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TEXT, 270)


def test_round_trips_store_the_pattern_by_name(bpe):
    spec = tokenizer_spec(bpe)
    assert spec["pattern"] == "gpt2"
    again = tokenizer_from_spec(spec)
    assert again.encode(TEXT) == bpe.encode(TEXT) and again.pattern == GPT2_PATTERN
    chars = CharTokenizer.from_text(TEXT)
    assert tokenizer_from_spec(tokenizer_spec(chars)).encode(TEXT) == chars.encode(TEXT)


def test_an_old_spec_holding_the_pattern_text_still_loads(bpe):
    spec = {**tokenizer_spec(bpe), "pattern": GPT2_PATTERN}
    assert tokenizer_from_spec(spec).encode(TEXT) == bpe.encode(TEXT)


@pytest.mark.parametrize("pattern", ["(a+)+$", r"(\w+\s?)*$", "custom"])
def test_unknown_patterns_are_refused_and_never_compiled(bpe, pattern):
    """A catastrophic-backtracking regex from a file would hang generate: refused by name."""
    with pytest.raises(TokenizerSpecError, match="checkpoint.npz: .*pattern .*not one numpy_gpt knows"):
        tokenizer_from_spec({**tokenizer_spec(bpe), "pattern": pattern}, where="checkpoint.npz")


def test_a_tokenizer_with_an_unknown_pattern_cannot_be_recorded():
    with pytest.raises(TokenizerSpecError, match="not one numpy_gpt knows"):
        tokenizer_spec(BPETokenizer([], pattern=r"\S+"))


@pytest.mark.parametrize("change", [
    {"kind": "regex"}, {"merges": "oops"}, {"merges": [[1, 2, 3]]}, {"merges": [[0, 256]]},
    {"merges": [[True, 1]]}, {"byte_ids": list(range(255))}, {"byte_ids": [0] * 256},
    {"special_tokens": {"<|endoftext|>": 3}}, {"special_tokens": ["<|endoftext|>"]}, {"pattern": 5},
    {"extra_field": 1},
])
def test_malformed_bpe_fields_are_one_clear_error(bpe, change):
    spec = {**tokenizer_spec(bpe), **change}
    with pytest.raises(TokenizerSpecError, match="model.npz: "):
        tokenizer_from_spec(spec, where="model.npz")


def test_merges_that_double_a_token_are_refused_before_building_it():
    """Merge i joins token i-1 with itself: 2**60 bytes if built. Refused by the length bound."""
    merges = [[97, 97]] + [[256 + i, 256 + i] for i in range(60)]
    spec = {"kind": "bpe", "pattern": "gpt2", "byte_ids": list(range(256)), "merges": merges,
            "special_tokens": {}}
    with pytest.raises(TokenizerSpecError, match="merge #12 makes a token of 8,192 bytes"):
        tokenizer_from_spec(spec)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.sampled_from(["kind", "chars", "merges", "byte_ids", "pattern",
                                                       "special_tokens"]), children, max_size=5),
                    max_leaves=20))
def test_any_json_is_a_tokenizer_or_a_spec_error(spec):
    """No KeyError, TypeError or AttributeError, whatever JSON a file holds."""
    try:
        tokenizer_from_spec(spec)
    except TokenizerSpecError:
        pass


def test_wordpiece_is_one_more_kind_of_the_same_schema():
    """The encoder's vocabulary is recorded like every other tokenizer (it had its own schema before)."""
    from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
    tok = WordPieceTokenizer([*SPECIAL_TOKENS, "the", "cat", "##s", "sat"], lowercase=False,
                             strip_accents=True)
    spec = tokenizer_spec(tok)
    assert spec == {"kind": "wordpiece", "vocab": tok.inverse, "lowercase": False, "strip_accents": True}
    again = tokenizer_from_spec(spec)
    assert again.encode("the cats sat") == tok.encode("the cats sat") and not again.lowercase
    assert tokenizer_from_spec({k: v for k, v in spec.items() if k != "strip_accents"}).strip_accents is None
    for change, match in (({"vocab": "the cat"}, "'vocab' must be a list"),
                          ({"vocab": ["the", ""]}, "'vocab'"),
                          ({"lowercase": "yes"}, "'lowercase' must be true or false"),
                          ({"vocab": ["the", "cat"]}, "the WordPiece vocabulary is invalid: .*\\[UNK\\]"),
                          ({"merges": []}, "a 'wordpiece' tokenizer has the fields")):
        with pytest.raises(TokenizerSpecError, match=f"mlm.npz: {match}"):
            tokenizer_from_spec({**spec, **change}, where="mlm.npz")
