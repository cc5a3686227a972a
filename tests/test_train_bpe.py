"""BPETokenizer: training on hand-worked examples, save/load. test_naive_bpe.py compares it with naive_bpe."""

from __future__ import annotations

import pytest
from helpers import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.tokenizers.train_bpe import BPETokenizer

tiktoken = reference("tiktoken")
data_gym_to_mergeable_bpe_ranks = reference("tiktoken.load", "data_gym_to_mergeable_bpe_ranks")
openai_public = reference("tiktoken_ext.openai_public")

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def verdict_tok(verdict_path):
    return BPETokenizer.train(verdict_path.read_text(encoding="utf-8"), 400)


def test_wikipedia_example():
    # en.wikipedia.org/wiki/Byte_pair_encoding: aaabdaaabac -> ZabdZabac (Z=aa) -> ZYdZYac (Y=ab)
    # -> XdXac (X=ZY). "aa" occurs 4 times; then "Za" and "ab" tie at 2 and the smaller ids win.
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=())
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tok.decode_bytes([258]) == b"aaab"


def test_merges_stay_inside_pretokenized_chunks():
    # Chunks: "ab", " ab", " ab". Pairs: ab x3, " a" x2; "b " never counts (it spans two chunks).
    tok = BPETokenizer.train("ab ab ab", vocab_size=258, special_tokens=())
    assert tok.merges == [(97, 98), (32, 256)]
    assert tok.encode("ab ab ab") == [256, 257, 257]
    with pytest.raises(ValueError, match="ran out of pairs"):
        BPETokenizer.train("ab ab ab", vocab_size=259, special_tokens=())


def test_special_tokens_are_cut_out_before_counting():
    text = EOT * 50 + "ab ab"
    tok = BPETokenizer.train(text, vocab_size=256 + 1 + 1)
    assert tok.merges == [(97, 98)]  # "<|" would win by far if special tokens were counted
    assert tok.special_tokens == {EOT: 257} and tok.eot_token == 257 and tok.n_vocab == 258
    assert tok.encode("ab" + EOT, allowed_special="all") == [256, 257]
    with pytest.raises(ValueError, match="disallowed special token"):
        tok.encode(EOT)


def test_vocab_size_too_small():
    with pytest.raises(ValueError, match="too small"):
        BPETokenizer.train("hello", vocab_size=256)


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_trained_tokenizer_is_lossless(verdict_tok, text):
    # Any text, "<|endoftext|>" included (Hypothesis draws string literals from the source), is
    # encoded as plain text here; how special tokens are handled is tested in test_bpe.py.
    ids = verdict_tok.encode(text, disallowed_special=())
    assert all(0 <= i < verdict_tok.n_vocab for i in ids)
    assert verdict_tok.decode(ids) == text


def test_training_compresses_shakespeare(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    tok = BPETokenizer.train(text, 512)
    assert tok.n_vocab == 512 and len(tok.merges) == 255
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) < len(text.encode()) / 1.8  # 255 merges roughly halve the length


def test_save_load_round_trip(tmp_path, verdict_tok, verdict_path):
    path = tmp_path / "verdict.bpe"
    verdict_tok.save(path)
    assert path.read_text(encoding="utf-8").startswith("numpy_gpt-bpe v1\npattern ")
    loaded = BPETokenizer.load(path)
    assert loaded.merges == verdict_tok.merges
    assert loaded.special_tokens == verdict_tok.special_tokens
    assert loaded.pattern == verdict_tok.pattern
    text = verdict_path.read_text(encoding="utf-8")
    assert loaded.encode(text) == verdict_tok.encode(text)


def test_load_rejects_damaged_files(tmp_path, verdict_tok):
    path = tmp_path / "tok.bpe"
    verdict_tok.save(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    cases = {
        "not a numpy_gpt BPE file": ["something else", *lines[1:]],
        "truncated": lines[:-20],
        "does not exist before": [*lines[:-2], "300 399", ""],
        "expected '<left id> <right id>'": [*lines[:-2], "1 x", ""],
        "256 byte ids": [lines[0], lines[1], "bytes 1 2 3", *lines[3:]],
    }
    for problem, bad_lines in cases.items():
        path.write_text("\n".join(bad_lines), encoding="utf-8")
        with pytest.raises(ValueError, match=problem):
            BPETokenizer.load(path)


def test_gpt2_files_as_bpe_tokenizer(tmp_path, gpt2_vocab_dir, verdict_path):
    tok = BPETokenizer.from_gpt2_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    ranks = data_gym_to_mergeable_bpe_ranks(str(gpt2_vocab_dir / "vocab.bpe"),
                                            str(gpt2_vocab_dir / "encoder.json"))
    enc = tiktoken.Encoding("gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={EOT: 50256})
    text = verdict_path.read_text(encoding="utf-8")
    assert tok.n_vocab == 50257 and len(tok.merges) == 50000 and tok.eot_token == 50256
    assert tok.encode(text) == enc.encode(text)
    tok.save(tmp_path / "gpt2.bpe")
    assert BPETokenizer.load(tmp_path / "gpt2.bpe").encode(text) == enc.encode(text)
