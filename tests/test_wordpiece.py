"""WordPieceTokenizer and train_wordpiece_vocab (numpy_gpt/tokenizers/wordpiece.py).

The reference is Hugging Face: ``tokenizers.BertWordPieceTokenizer`` and
``transformers.BertTokenizer`` reading the same vocab.txt. There is no bert-base vocabulary
offline, so the vocab.txt is trained in the test, once by HF's trainer and once by ours.
"""

from __future__ import annotations

import pytest
from helpers import reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.tokenizers.wordpiece import (
    SPECIAL_TOKENS,
    WordPieceTokenizer,
    basic_tokenize,
    train_wordpiece_vocab,
    wordpiece,
)

# Letters with and without accents, digits, CJK ideographs, kana, punctuation (ASCII and not),
# whitespace of several kinds, control characters, NUL, U+FFFD and a few symbols.
BertWordPieceTokenizer = reference("tokenizers", "BertWordPieceTokenizer")
BertTokenizer = reference("transformers", "BertTokenizer")

ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 éÉèüÜñçßİıΣσς")
ALPHABET += list("中文字日本語ひらカナ.,;:!?'\"()[]{}-_/\\@#$%^&*~`+=<>|“”‘’—…¡¿·\t\n\r\u00a0\u2003\u2028")
ALPHABET += ["\x00", "\x07", "\x7f", "\ufffd", "\u200b", "e\u0301", "[MASK]", "[CLS]", " [SEP] ", "##"]


@pytest.fixture(scope="module")
def verdict(verdict_path):
    return verdict_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf_vocab(verdict, tmp_path_factory):
    """A vocab.txt trained by HF tokenizers' BertWordPieceTokenizer on the-verdict."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator([verdict], vocab_size=500)
    folder = tmp_path_factory.mktemp("hf_vocab")
    trainer.save_model(str(folder))
    return folder / "vocab.txt"


def references(vocab_txt, lowercase):
    return (BertWordPieceTokenizer(str(vocab_txt), lowercase=lowercase),
            BertTokenizer(str(vocab_txt), do_lower_case=lowercase))


@pytest.mark.parametrize("lowercase", [True, False])
def test_verdict_ids_equal_hf(hf_vocab, verdict, lowercase):
    ours = WordPieceTokenizer.from_file(hf_vocab, lowercase=lowercase)
    fast, bert = references(hf_vocab, lowercase)
    ids = ours.encode(verdict)
    assert ids[0] == ours.cls_id and ids[-1] == ours.sep_id and len(ids) > 5000
    assert ids == fast.encode(verdict).ids
    assert ids == bert.encode(verdict)
    bare = fast.encode(verdict, add_special_tokens=False).ids
    assert ours.encode(verdict, add_special_tokens=False) == bare
    assert ours.decode(ids) == fast.decode(ids)


@settings(max_examples=60)
@given(pieces=st.lists(st.sampled_from(ALPHABET), max_size=40), lowercase=st.booleans())
def test_generated_text_ids_equal_hf(hf_vocab, pieces, lowercase):
    text = "".join(pieces)
    ours = WordPieceTokenizer.from_file(hf_vocab, lowercase=lowercase)
    fast, bert = references(hf_vocab, lowercase)
    assert ours.encode(text) == fast.encode(text).ids == bert.encode(text)
    assert ours.decode(ours.encode(text)) == fast.decode(fast.encode(text).ids)


def test_our_trained_vocab_read_by_hf(verdict, tmp_path):
    vocab = train_wordpiece_vocab(verdict[:6000], 220)
    assert len(vocab) == 220 and vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(set(vocab)) == len(vocab)
    ours = WordPieceTokenizer(vocab)
    path = ours.save(tmp_path / "vocab.txt")
    fast, bert = references(path, True)
    assert WordPieceTokenizer.from_file(path).inverse == vocab
    text = verdict[6000:12000]                         # text the vocabulary was not trained on
    assert ours.encode(text) == fast.encode(text).ids == bert.encode(text)
    assert ours.unk_id not in ours.encode(verdict[:6000])   # every training word can be spelled


def test_greedy_longest_match_first_by_hand():
    vocab = {"un", "##aff", "##able", "##a", "##ff", "a", "##b"}
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]
    assert wordpiece("ab", vocab) == ["a", "##b"]
    assert wordpiece("abc", vocab) == ["[UNK]"]                 # "c" cannot be spelled: the word is [UNK]
    assert wordpiece("a" * 101, vocab | {"##" + "a"}) == ["[UNK]"]   # over 100 characters
    assert basic_tokenize("Héllo, 世界! don't") == ["hello", ",", "世", "界", "!", "don", "'", "t"]
    assert basic_tokenize("Héllo", lowercase=False) == ["Héllo"]


def test_trainer_merges_by_score_by_hand():
    # words: ab x3, cd, cb. Counts: a 3, ##b 4, c 2, ##d 1; pairs: (a, ##b) 3, (c, ##d) 1, (c, ##b) 1.
    # Scores count(xy) / (count(x) count(y)): ab 3/12, cd 1/2, cb 1/8: the rare "cd" wins, whose
    # parts never occur apart. Then c is only in "cb": ab 3/12 and cb 1/4 tie; the first seen wins.
    vocab = train_wordpiece_vocab("ab ab ab cd cb", 11)
    assert vocab == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b", "c", "##d", "cd", "ab"]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_file(tmp_path / "none.txt")
    with pytest.raises(ValueError, match="no \\['\\[UNK\\]'"):
        WordPieceTokenizer(["a", "[CLS]", "[SEP]"])
    with pytest.raises(ValueError, match="more than once"):
        WordPieceTokenizer(["[UNK]", "[CLS]", "[SEP]", "a", "a"])
    tok = WordPieceTokenizer(["[UNK]", "[CLS]", "[SEP]", "a"])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([4])
    with pytest.raises(TypeError, match="expects a str"):
        tok.encode(b"a")


def test_every_code_point_ids_equal_rust_bert_tokenizer():
    """Every code point but the surrogates (which a Rust string cannot hold), cased and uncased, as a
    word of its own and between two letters ("a" + c + "b"), gives the ids of tokenizers'
    BertWordPieceTokenizer, the Rust reference; the vocabulary holds each character, plain and "##",
    so a wrong split, a wrong lower case or a dropped accent shows as a different id, not as [UNK].
    The words of a chunk are joined by spaces into one text: every step is per code point or cuts at
    a space, so one text of 32,768 words is split as 32,768 texts would be (and runs in seconds)."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(chars), 32768):
        chunk = chars[start:start + 32768]
        texts = [" ".join(chunk), " ".join("a" + c + "b" for c in chunk)]
        specials = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
        normalized = BertWordPieceTokenizer(specials, lowercase=True).normalizer.normalize_str(texts[0])
        symbols = dict.fromkeys([*chunk, *normalized, "a", "b"])
        vocab = [*SPECIAL_TOKENS, *(s for s in symbols if s not in "[] "), *("##" + s for s in symbols)]
        for lowercase in (False, True):
            reference = BertWordPieceTokenizer({t: i for i, t in enumerate(vocab)}, lowercase=lowercase)
            ours = WordPieceTokenizer(vocab, lowercase=lowercase)
            expected = reference.encode_batch(texts, add_special_tokens=False)
            for text, want in zip(texts, expected, strict=True):
                got = ours.encode(text, add_special_tokens=False)
                if got != want.ids:                    # name the first code point that differs
                    words = text.split(" ")
                    for word in words:
                        one = reference.encode(word, add_special_tokens=False).ids
                        assert ours.encode(word, add_special_tokens=False) == one, (
                            f"{word!r} ({', '.join(f'U+{ord(c):04X}' for c in word)}) lowercase={lowercase}: "
                            f"ours {ours.tokenize(word)}, reference {reference.encode(word).tokens[1:-1]}")
                    assert got == want.ids


def test_sigma_lowercases_per_code_point():
    """Rust lower-cases each code point alone: a word-final Σ is σ, where str.lower() gives ς."""
    assert basic_tokenize("ΟΔΟΣ ΣΑΣ Σ") == ["οδοσ", "σασ", "σ"]
    assert basic_tokenize("ὀδός", lowercase=True) == ["οδος"]          # a written ς stays ς


def test_unicode_tables_are_what_the_script_derives():
    """The BERT tables in unicode16.py are scripts/unicode_tables.py's output, not edited by hand."""
    import shutil
    import subprocess
    import sys
    import unicodedata
    from pathlib import Path
    if shutil.which("perl") is None or unicodedata.unidata_version != "14.0.0":
        pytest.skip("the script needs perl and Python 3.11's Unicode 14.0 tables")
    script = Path(__file__).resolve().parents[1] / "scripts" / "unicode_tables.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
