"""naive_bpe: hand-worked examples, and the oracle for the fast trainer (train_bpe.py) and GPT-2's encoder.

The naive file is checked by hand on small cases; on real text it must give exactly the merges and
ids of ``BPETokenizer.train`` and of ``GPT2Tokenizer`` (itself equal to tiktoken, also checked here).
"""

from __future__ import annotations

import json

import pytest
from helpers import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.tokenizers import naive_bpe
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer, bytes_to_unicode
from numpy_gpt.tokenizers.train_bpe import BPETokenizer
from numpy_gpt.tokenizers.unicode16 import has_unicode_17_letters

tiktoken = reference("tiktoken")
data_gym_to_mergeable_bpe_ranks = reference("tiktoken.load", "data_gym_to_mergeable_bpe_ranks")
openai_public = reference("tiktoken_ext.openai_public")

A, B, C, D = (ord(ch) for ch in "abcd")


# ------------------------------------------------------------------------ by hand
def test_get_stats_counts_adjacent_pairs():
    assert naive_bpe.get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert naive_bpe.get_stats([7, 7, 7]) == {(7, 7): 2}  # overlapping occurrences both count
    counts = {(1, 2): 5}
    assert naive_bpe.get_stats([1, 2], counts) is counts and counts == {(1, 2): 6}
    assert naive_bpe.get_stats([4]) == {}


def test_merge_replaces_left_to_right():
    assert naive_bpe.merge([1, 2, 3, 1, 2], (1, 2), 99) == [99, 3, 99]
    assert naive_bpe.merge([7, 7, 7], (7, 7), 99) == [99, 7]  # "aaa" -> "Za", not "aZ"
    assert naive_bpe.merge([1, 3], (1, 2), 99) == [1, 3]


def test_wikipedia_example():
    # en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac. "aa" occurs 4 times -> Z (256):
    # ZabdZabac. Now "Za" = (256, 97) and "ab" = (97, 98) both occur twice; the smaller pair, "ab",
    # becomes Y (257): ZYdZYac. Then "ZY" (twice) becomes X (258): XdXac.
    merges = naive_bpe.train("aaabdaaabac", vocab_size=259)
    assert list(merges.items()) == [((A, A), 256), ((A, B), 257), ((256, 257), 258)]
    ids = naive_bpe.encode("aaabdaaabac", merges)
    assert ids == [258, D, 258, A, C]
    vocab = naive_bpe.build_vocab(merges)
    assert vocab[256] == b"aa" and vocab[257] == b"ab" and vocab[258] == b"aaab"
    assert naive_bpe.decode(ids, vocab) == "aaabdaaabac"


def test_ties_go_to_the_smallest_pair():
    # "az ba" -> chunks "az", " ba": pairs (97, 122), (32, 98), (98, 97), once each; (32, 98) is smallest.
    assert naive_bpe.train("az ba", vocab_size=257) == {(32, B): 256}


def test_merges_stay_inside_chunks():
    # Chunks "ab", " ab", " ab": "ab" x3 first, then " ab" = (32, 256) x2; "b " spans two chunks.
    merges = naive_bpe.train("ab ab ab", vocab_size=258)
    assert list(merges.items()) == [((A, B), 256), ((32, 256), 257)]
    assert naive_bpe.encode("ab ab ab", merges) == [256, 257, 257]
    with pytest.raises(ValueError, match="ran out of pairs"):
        naive_bpe.train("ab ab ab", vocab_size=259)


def test_decode_replaces_a_cut_character():
    vocab = naive_bpe.build_vocab({})
    assert naive_bpe.decode(list("é".encode())[:1], vocab) == "\ufffd"


# ------------------------------------------------------------------------ oracle for train_bpe.py
def _fast_train(text: str, vocab_size: int) -> BPETokenizer:
    return BPETokenizer.train(text, vocab_size, special_tokens=())


def test_fast_trainer_matches_on_the_verdict(verdict_path, shakespeare_path):
    text = verdict_path.read_text(encoding="utf-8")
    merges = naive_bpe.train(text, vocab_size=512)
    fast = _fast_train(text, 512)
    assert fast.merges == list(merges)  # same pairs, same order
    assert list(merges.values()) == list(range(256, 512))
    assert fast.encode(text) == naive_bpe.encode(text, merges)
    unseen = shakespeare_path.read_text(encoding="utf-8")[:20_000]
    assert fast.encode(unseen) == naive_bpe.encode(unseen, merges)


# Few, short pieces make many equal counts, so the tie-breaking rule is exercised at most steps.
_PIECES = st.lists(st.sampled_from(["ab", " ab", "ba", " c", "cc", "'s", "!!", " é1", "\n", "a", "b"]),
                   max_size=40).map("".join)


@settings(max_examples=60)
@given(_PIECES, _PIECES)
def test_fast_trainer_matches_on_random_text(text, other):
    try:
        merges = naive_bpe.train(text, vocab_size=266)
    except ValueError:
        with pytest.raises(ValueError, match="ran out of pairs"):
            _fast_train(text, 266)
        return
    fast = _fast_train(text, 266)
    assert fast.merges == list(merges)
    for sample in (text, other):
        assert fast.encode(sample) == naive_bpe.encode(sample, merges)


# ------------------------------------------------------------------------ oracle for GPT-2's encoder
@pytest.fixture(scope="module")
def gpt2_merges(gpt2_vocab_dir):
    """GPT-2's merges read straight from OpenAI's files: line i of vocab.bpe is "left right", and
    encoder.json gives the ids of left, right and their concatenation (tokens are spelled in
    ``bytes_to_unicode``'s characters). Returns ({pair: new id}, byte_ids)."""
    encoder = json.loads((gpt2_vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    lines = (gpt2_vocab_dir / "vocab.bpe").read_text(encoding="utf-8").split("\n")[1:]
    merges = {}
    for line in filter(None, lines):
        left, right = line.split(" ")
        merges[(encoder[left], encoder[right])] = encoder[left + right]
    char_of_byte = bytes_to_unicode()
    byte_ids = [encoder[char_of_byte[b]] for b in range(256)]
    return merges, byte_ids


@pytest.fixture(scope="module")
def gpt2(gpt2_vocab_dir):
    return GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")


@pytest.fixture(scope="module")
def tiktoken_gpt2(gpt2_vocab_dir):
    ranks = data_gym_to_mergeable_bpe_ranks(str(gpt2_vocab_dir / "vocab.bpe"),
                                            str(gpt2_vocab_dir / "encoder.json"))
    return tiktoken.Encoding("gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def test_gpt2_merges_give_the_books_ids(gpt2_merges):
    merges, byte_ids = gpt2_merges
    assert len(merges) == 50_000 and sorted(byte_ids) == list(range(256))
    ids = naive_bpe.encode("Hello, do you like tea?", merges, byte_ids=byte_ids)
    assert ids == [15496, 11, 466, 345, 588, 8887, 30]  # chapter 2.5, printed by tiktoken


def test_gpt2_encoder_matches_on_the_verdict(verdict_path, gpt2_merges, gpt2, tiktoken_gpt2):
    merges, byte_ids = gpt2_merges
    text = verdict_path.read_text(encoding="utf-8")
    ids = naive_bpe.encode(text, merges, byte_ids=byte_ids)
    assert ids == gpt2.encode(text) == tiktoken_gpt2.encode(text)
    assert naive_bpe.decode(ids, naive_bpe.build_vocab(merges, byte_ids)) == text


# Any text, except lone surrogates and Unicode-17 letters, which bpe.py handles as tiktoken does and
# the naive file does not (see its docstring).
@settings(max_examples=200)
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
       .filter(lambda s: not has_unicode_17_letters(s)))
def test_gpt2_encoder_matches_on_random_text(gpt2_merges, gpt2, tiktoken_gpt2, text):
    merges, byte_ids = gpt2_merges
    ids = naive_bpe.encode(text, merges, byte_ids=byte_ids)
    assert ids == gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
