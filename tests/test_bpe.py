"""GPT2Tokenizer against tiktoken's "gpt2" encoding, built offline from the same OpenAI files."""

from __future__ import annotations

import base64
import json

import pytest
import regex
from helpers import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.corpora import get_gpt2_tokenizer
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer, bytes_to_unicode
from numpy_gpt.tokenizers.unicode16 import pin_to_unicode_16

tiktoken = reference("tiktoken")
data_gym_to_mergeable_bpe_ranks = reference("tiktoken.load", "data_gym_to_mergeable_bpe_ranks")
load_tiktoken_bpe = reference("tiktoken.load", "load_tiktoken_bpe")
openai_public = reference("tiktoken_ext.openai_public")

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok(gpt2_vocab_dir):
    return GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")


@pytest.fixture(scope="module")
def gpt2_ranks(gpt2_vocab_dir):
    return data_gym_to_mergeable_bpe_ranks(str(gpt2_vocab_dir / "vocab.bpe"),
                                           str(gpt2_vocab_dir / "encoder.json"))


@pytest.fixture(scope="module")
def enc(gpt2_ranks):
    """tiktoken's "gpt2" encoding, built offline from the shared copy of OpenAI's files."""
    return tiktoken.Encoding("gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=gpt2_ranks,
                             special_tokens={EOT: 50256}, explicit_n_vocab=50257)


def test_vocabulary_facts(tok, enc):
    assert tok.n_vocab == enc.n_vocab == 50257
    assert tok.eot_token == enc.eot_token == 50256
    assert tok.special_tokens_set == {EOT}


def test_book_example(tok):
    # Chapter 2.5 of the book, printed by tiktoken there.
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of someunknownPlace."
    ids = tok.encode(text, allowed_special={EOT})
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114,
                   286, 617, 34680, 27271, 13]
    assert tok.decode(ids) == text


@pytest.mark.parametrize("fixture", ["verdict_path", "shakespeare_path"])
def test_matches_tiktoken_on_books(request, fixture, tok, enc):
    text = request.getfixturevalue(fixture).read_text(encoding="utf-8")
    ids = tok.encode(text)
    assert ids == enc.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(text) == ids  # second pass, served by the chunk cache


@settings(max_examples=2000)
@given(st.text(max_size=60))
def test_matches_tiktoken_on_any_unicode(tok, enc, text):
    ids = tok.encode_ordinary(text)
    assert ids == enc.encode_ordinary(text)
    assert tok.decode(ids) == text


# Characters where pre-tokenization is delicate: every kind of whitespace, apostrophes and
# contractions, digits of other scripts, combining marks, emoji with joiners, CJK, controls.
_TRICKY = st.sampled_from(
    [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\xa0", "\u2028", "\u3000", "\u200b",
     "'", "'s", "'ll", "'ve", "'re", "'d", "'m", "'t", "’", "a", "Z", "é", "e\u0301", "ß", "İ",
     "1", "42", "٣", "½", "Ⅻ", "!", "...", "--", "<", "|", ">", "😀", "👩\u200d👩\u200d👧", "🇫🇷",
     "中文", "日本語", "한국어", "ﷺ", "\ufeff", "\x00", "\x7f", "\u0301", " <|endoftext|>", "<|end"])


@settings(max_examples=1000)
@given(st.lists(st.one_of(_TRICKY, st.text(max_size=3)), max_size=25).map("".join))
def test_matches_tiktoken_on_tricky_text(tok, enc, text):
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode(text, disallowed_special=()) == enc.encode(text, disallowed_special=())
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(exclude_categories=()), max_size=30))
def test_lone_surrogates_handled_like_tiktoken(tok, enc, text):
    # tiktoken re-encodes the text through UTF-16: a valid surrogate pair becomes its character,
    # a lone surrogate becomes U+FFFD.
    assert tok.encode(text, allowed_special="all") == enc.encode(text, allowed_special="all")
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


def test_lone_surrogate_example(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.decode(tok.encode("\ud83d\ude00")) == "😀"


def test_long_runs(tok, enc):
    for text in ["a" * 100_000, "ab" * 20_000 + " " * 5000 + "1" * 20_000, "!?" * 10_000, "日本" * 10_000,
                 " " * 10_000 + "x", "\n" * 5000]:
        assert tok.encode(text) == enc.encode(text)


def test_disallowed_special_token_error_matches_tiktoken(tok, enc):
    text = "the end <|endoftext|> of it"
    with pytest.raises(ValueError) as ours:
        tok.encode(text)
    with pytest.raises(ValueError) as theirs:
        enc.encode(text)
    assert str(ours.value) == str(theirs.value)
    assert "disallowed special token '<|endoftext|>'" in str(ours.value)


def test_special_token_options(tok, enc):
    text = "a<|endoftext|>b <|endoftext|>"
    assert tok.encode(text, allowed_special={EOT}) == enc.encode(text, allowed_special={EOT})
    assert tok.encode(text, allowed_special="all").count(50256) == 2
    assert tok.encode(text, disallowed_special=()) == tok.encode_ordinary(text) == enc.encode_ordinary(text)
    assert 50256 not in tok.encode_ordinary(text)


def test_decode_bytes_and_partial_characters(tok, enc):
    ids = tok.encode("naïve 😀")
    assert tok.decode_bytes(ids) == "naïve 😀".encode()
    assert tok.decode_bytes([50256]) == EOT.encode()
    partial = tok.encode("😀")[:1]  # half of the emoji's bytes
    assert tok.decode(partial) == enc.decode(partial)
    with pytest.raises(UnicodeDecodeError):
        tok.decode(partial, errors="strict")


def test_decode_rejects_unknown_ids(tok):
    with pytest.raises(ValueError, match="50257"):
        tok.decode([1, 50257])
    with pytest.raises(ValueError, match="cannot decode"):
        tok.decode([-1])


def test_encode_rejects_bad_arguments(tok):
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="set of special tokens"):
        tok.encode("x", allowed_special=EOT)


def test_bytes_to_unicode_is_gpt2s_map():
    mapping = bytes_to_unicode()
    assert len(set(mapping.values())) == 256
    assert mapping[ord("A")] == "A" and mapping[ord(" ")] == "Ġ" and mapping[ord("\n")] == "Ċ"


def test_from_tiktoken_file(tmp_path, verdict_path, gpt2_ranks, enc):
    # Write GPT-2's ranks in tiktoken's file format; tiktoken's own reader is the reference.
    path = tmp_path / "gpt2.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(token) + b" %d\n" % rank
                              for token, rank in sorted(gpt2_ranks.items(), key=lambda x: x[1])))
    reference = tiktoken.Encoding("file", pat_str=openai_public.r50k_pat_str,
                                  mergeable_ranks=load_tiktoken_bpe(str(path)),
                                  special_tokens={EOT: 50256})
    ours = GPT2Tokenizer.from_tiktoken_file(path)
    text = verdict_path.read_text(encoding="utf-8")
    assert ours.eot_token == 50256 and ours.n_vocab == 50257
    assert ours.encode(text) == reference.encode(text) == enc.encode(text)


def test_from_tiktoken_file_rejects_garbage(tmp_path):
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(b"IQ== 0\nnot base64! 1\n")
    with pytest.raises(ValueError, match="line 2"):
        GPT2Tokenizer.from_tiktoken_file(path)
    path.write_bytes(b"IQ== 0\n")  # only the byte "!"
    with pytest.raises(ValueError, match="single-byte tokens"):
        GPT2Tokenizer.from_tiktoken_file(path)


def test_from_files_detects_mismatched_files(tmp_path, gpt2_vocab_dir):
    encoder = json.loads((gpt2_vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    encoder["Ġthe"], encoder["Ġa"] = encoder["Ġa"], encoder["Ġthe"]
    (tmp_path / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    with pytest.raises(ValueError, match="same model"):
        GPT2Tokenizer.from_files(tmp_path / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    (tmp_path / "vocab.bpe").write_text("no header\n", encoding="utf-8")
    with pytest.raises(ValueError, match="#version"):
        GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", tmp_path / "vocab.bpe")


def test_get_gpt2_tokenizer_uses_files_in_place(tmp_path, gpt2_vocab_dir, monkeypatch):
    # Files already in data_dir/gpt2 with the right sha256 are used without any network access.
    (tmp_path / "gpt2").mkdir()
    for name in ("encoder.json", "vocab.bpe"):
        (tmp_path / "gpt2" / name).symlink_to(gpt2_vocab_dir / name)

    def no_network(*args, **kwargs):
        raise AssertionError("get_gpt2_tokenizer tried to download a file that is already there")

    monkeypatch.setattr("requests.get", no_network)
    tokenizer = get_gpt2_tokenizer(tmp_path)
    assert tokenizer.encode("Hello, world") == [15496, 11, 995]
    assert get_gpt2_tokenizer(tmp_path) is tokenizer


def test_letter_number_and_space_classes_match_tiktoken():
    # Which characters are letters (\p{L}), numbers (\p{N}) or spaces (\s) decides where chunks end.
    # Every code point of planes 0-3 that the regex module puts in one of these classes is run through
    # tiktoken's own regex engine with each class alone; ours (pinned to Unicode 16) must agree.
    every = "".join(chr(c) for c in range(0x40000) if not 0xD800 <= c < 0xE000)
    candidates = regex.findall(r"[\p{L}\p{N}\s]", every)
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({ch.encode(): 256 + i for i, ch in enumerate(candidates) if not ch.isascii()})
    char_of = {rank: token.decode() for token, rank in ranks.items() if len(token) > 1 or token[0] < 128}
    text = "".join(candidates)
    for cls in (r"\p{L}", r"\p{N}", r"\s"):
        reference = tiktoken.Encoding("probe", pat_str=cls, mergeable_ranks=ranks, special_tokens={})
        theirs = [char_of[i] for i in reference.encode_ordinary(text)]
        ours = regex.findall(pin_to_unicode_16(cls), text, flags=regex.V1)
        differ = sorted(set(ours) ^ set(theirs))
        assert ours == theirs, f"{cls}: characters classed differently: {differ[:20]}"
