"""WordPiece: BERT's tokenizer, and a minimal trainer for its vocabulary (the encoder side of ch. 2).

GPT-2 splits text into byte-level BPE tokens (bpe.py). BERT uses WordPiece, in two stages:

1. Basic tokenization (``basic_tokenize``): clean the text (drop NUL, U+FFFD and control
   characters, turn every whitespace character into a space), put spaces around CJK ideographs
   (each becomes a word of its own), optionally strip accents (decompose to NFD and drop the
   combining marks: "Élan" -> "Elan") and lower-case, split on whitespace, then split every
   punctuation character off as a word of its own ("don't." -> "don", "'", "t", ".").
2. WordPiece (``wordpiece``): each word is cut greedily, longest match first, into pieces of the
   vocabulary; pieces after the first carry the prefix "##" ("unaffable" -> "un", "##aff",
   "##able"). A word with a part no piece matches, or longer than 100 characters, is one [UNK].

``encode`` wraps the pieces in [CLS] ... [SEP], and reads the special tokens ([CLS], [SEP], [PAD],
[MASK], [UNK]) written in a text as themselves, so "The cat [MASK] on the mat." has a mask to fill.
The reference is one implementation: Hugging Face's Rust tokenizer, ``tokenizers.BertWordPieceTokenizer``
(which transformers 5's ``BertTokenizer`` is), given the same vocab.txt (one token per line, its id is
its line number). The ids equal its ids on every code point, cased and uncased (tests/test_wordpiece.py
tries all 1,112,064), so its choices are ours: lower case per code point (a word-final "Σ" is "σ",
never "ς"), punctuation, control characters and accents as Unicode 8.0 classed them, lower case from
Unicode 17.0 (the tables are in unicode16.py), accents stripped before lower-casing. transformers 4's
slow Python ``BertTokenizer`` differs: it first composes the text to NFC, so in cased mode "e" + U+0301
is one character "é" there and two here; and it takes every class from Python's own Unicode tables.

``train_wordpiece_vocab`` learns a vocab.txt from text as the WordPiece paper does: start from the
characters ("##" + c inside a word), then repeatedly merge the adjacent pair (a, b) with the best
score count(ab) / (count(a) * count(b)), which prefers pairs whose parts are rarely seen apart.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from numpy_gpt.fileio import write_text_atomic
from numpy_gpt.tokenizers.unicode16 import (
    BERT_CONTROL,
    BERT_MARKS,
    BERT_PUNCTUATION,
    DECOMPOSED_AFTER_8,
    UNICODE_17_LOWERCASE,
)

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100

# BERT's character classes, as the Rust reference has them (the tables are in unicode16.py):
# - whitespace: the Unicode White_Space property (\v, \f and U+0085 are control characters first);
# - control characters (Cc, Cf, Co) and punctuation (P*) as of Unicode 8.0; every ASCII symbol that
#   is not a letter or digit ("$", "^", "`" too) is punctuation as well;
# - the CJK Unified Ideographs blocks, as BERT defines "Chinese character" (not Hangul or kana);
#   0x2B920 starts the fifth one, where Google's BERT wrote 0x2B820: the Rust tokenizer's value.
_WHITESPACE = "\t\n\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_PUNCTUATION = "\\x21-\\x2f\\x3a-\\x40\\x5b-\\x60\\x7b-\\x7e" + BERT_PUNCTUATION
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))

_DROPPED = re.compile(f"[\ufffd{BERT_CONTROL}]")                   # U+FFFD and control characters (NUL too)
_SPACES = re.compile(f"[{_WHITESPACE}]")
_CJK = re.compile("([" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES) + "])")
_MARKS = re.compile(f"[{BERT_MARKS}]")
_NEWER_THAN_NFD = re.compile(f"([{DECOMPOSED_AFTER_8}])")
_WORDS = re.compile(f"[{_PUNCTUATION}]|[^{_PUNCTUATION} ]+")         # a punctuation mark, or a run of others


# -- basic tokenization ----------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """Drop NUL, U+FFFD and control characters; every whitespace character becomes a space."""
    return _SPACES.sub(" ", _DROPPED.sub("", text))


def strip_accents(text: str) -> str:
    """Decompose (NFD: "é" -> "e" + U+0301) and drop the combining marks (category Mn). A character
    assigned after Unicode 8.0 stays whole, as in the reference's NFD."""
    parts = _NEWER_THAN_NFD.split(text)                   # odd parts: the characters NFD must not touch
    text = "".join(part if i % 2 else unicodedata.normalize("NFD", part) for i, part in enumerate(parts))
    return _MARKS.sub("", text)


def lower_code_points(text: str) -> str:
    """Each code point to its lower case, alone: "Σ" is always "σ", where ``str.lower()`` writes a
    word-final "ς"; letters newer than Python's Unicode tables get their Unicode 17.0 lower case."""
    return text.replace("\u03a3", "\u03c3").translate(UNICODE_17_LOWERCASE).lower()


def basic_tokenize(text: str, lowercase: bool = True, strip_accents_: bool | None = None) -> list[str]:
    """BERT's pre-tokenization: the words that WordPiece then cuts. ``strip_accents_`` None follows
    ``lowercase`` (BERT's uncased models strip accents, cased ones keep them). The steps run in the
    reference's order: clean, space the ideographs, strip accents, lower-case, split."""
    text = _CJK.sub(r" \1 ", clean_text(text))                         # each ideograph a word
    if strip_accents_ if strip_accents_ is not None else lowercase:
        text = strip_accents(text)
    if lowercase:
        text = lower_code_points(text)
    return _WORDS.findall(text)


# -- WordPiece --------------------------------------------------------------------------------------
def wordpiece(word: str, vocab: dict[str, int] | set[str], unk_token: str = "[UNK]",
              max_chars: int = MAX_CHARS_PER_WORD) -> list[str]:
    """Cut one word into vocabulary pieces, greedy longest-match-first; [UNK] if it cannot be cut."""
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:                                         # the longest piece that matches
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        if end == start:                                           # nothing matches at `start`
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces


class WordPieceTokenizer:
    """BERT's tokenizer: ``WordPieceTokenizer.from_file("vocab.txt", lowercase=True)``.

    ``encode(text, add_special_tokens=True)`` -> ids ([CLS] ... [SEP]); ``decode(ids)`` -> text;
    ``tokenize(text)`` -> the pieces. Special tokens written in the text are kept whole.
    """

    def __init__(self, vocab: Sequence[str], lowercase: bool = True, strip_accents: bool | None = None):
        self.vocab = {token: i for i, token in enumerate(vocab)}
        if len(self.vocab) != len(vocab):
            repeated = sorted(t for t, n in Counter(vocab).items() if n > 1)
            raise ValueError(f"the vocabulary lists {repeated[:5]} more than once")
        missing = [t for t in ("[UNK]", "[CLS]", "[SEP]") if t not in self.vocab]
        if missing:
            raise ValueError(f"the vocabulary has no {missing}: a BERT vocab.txt lists the special tokens "
                             f"{list(SPECIAL_TOKENS)}")
        self.inverse = list(vocab)
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.special_tokens = [t for t in SPECIAL_TOKENS if t in self.vocab]
        self.unk_id, self.cls_id, self.sep_id = (self.vocab[t] for t in ("[UNK]", "[CLS]", "[SEP]"))
        self.pad_id = self.vocab.get("[PAD]")
        self.mask_id = self.vocab.get("[MASK]")

    @classmethod
    def from_file(cls, vocab_txt: str | os.PathLike, lowercase: bool = True,
                  strip_accents: bool | None = None) -> WordPieceTokenizer:
        """Read a vocab.txt: one token per line, in id order (trailing spaces and the newline
        removed, as transformers reads it)."""
        path = Path(vocab_txt)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: a WordPiece vocabulary is a vocab.txt with one "
                                    f"token per line")
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text ({err})") from None
        if lines and lines[-1] == "":
            lines.pop()
        return cls([line.rstrip() for line in lines], lowercase, strip_accents)

    def save(self, path: str | os.PathLike) -> Path:
        return write_text_atomic(path, "".join(token + "\n" for token in self.inverse))

    @property
    def n_vocab(self) -> int:
        return len(self.inverse)

    def tokenize(self, text: str) -> list[str]:
        """The pieces of ``text``; a special token written in the text stays one piece."""
        pieces: list[str] = []
        for segment, special in self._split_special(text):
            if special:
                pieces.append(segment)
                continue
            for word in basic_tokenize(segment, self.lowercase, self.strip_accents):
                pieces += wordpiece(word, self.vocab)
        return pieces

    def _split_special(self, text: str) -> list[tuple[str, bool]]:
        """Cut ``text`` at every special token ([MASK] ...): [(segment, is_special), ...]."""
        segments = [(text, False)]
        for token in self.special_tokens:
            cut = []
            for segment, special in segments:
                if special:
                    cut.append((segment, True))
                    continue
                parts = segment.split(token)
                for i, part in enumerate(parts):
                    if i:
                        cut.append((token, True))
                    cut.append((part, False))
            segments = cut
        return [(s, special) for s, special in segments if special or s]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``, as [CLS] pieces [SEP] (or the pieces alone)."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        ids = [self.vocab[piece] for piece in self.tokenize(text)]
        return [self.cls_id, *ids, self.sep_id] if add_special_tokens else ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Pieces joined by spaces, "##" continuations glued to their word, and the space before
        ".", "?", "!" and "," removed (the clean-up of tokenizers' WordPiece decoder)."""
        tokens = []
        for i in ids:
            if isinstance(i, bool) or not 0 <= int(i) < len(self.inverse) or int(i) != i:
                raise ValueError(f"token id {i!r} is not in the vocabulary of {len(self.inverse)} tokens")
            token = self.inverse[int(i)]
            if not (skip_special_tokens and token in self.special_tokens):
                tokens.append(token)
        text = " ".join(tokens).replace(" ##", "")
        for mark in ".?!,":
            text = text.replace(" " + mark, mark)
        return text


# -- training a vocabulary ----------------------------------------------------------------------------
def train_wordpiece_vocab(text: str, vocab_size: int, lowercase: bool = True,
                          special_tokens: Sequence[str] = SPECIAL_TOKENS,
                          min_frequency: int = 1) -> list[str]:
    """A WordPiece vocabulary of (at most) ``vocab_size`` tokens learned from ``text``.

    1. Count the words of ``basic_tokenize(text)``; write each as characters, "##" before all but
       the first: "hug" -> h ##u ##g. The vocabulary starts as the special tokens and these symbols.
    2. Count every adjacent pair of symbols over all words (weighted by word count), and each
       symbol alone; merge the pair with the highest count(ab) / (count(a) * count(b)) in every
       word ("##u" + "##g" -> "##ug"; "h" + "##ug" -> "hug") and add it to the vocabulary.
    3. Repeat until the vocabulary is full or no pair is seen ``min_frequency`` times or more.

    The score favours pairs whose parts rarely occur apart, which on a large text includes rare
    junk ("mingw32"); ``min_frequency`` (say 20 for a few MB) keeps merges to pairs seen often.
    Ties go to the pair counted first. The counts are kept up to date rather than recounted: a
    merge only changes the words that contain the pair (``words_with``), so only those are
    un-counted, merged and counted again.
    """
    if vocab_size < len(special_tokens):
        raise ValueError(f"vocab_size {vocab_size} cannot even hold the {len(special_tokens)} special tokens")
    word_counts = Counter(basic_tokenize(text, lowercase))
    splits = {word: [c if i == 0 else "##" + c for i, c in enumerate(word)] for word in word_counts}
    vocab = list(dict.fromkeys([*special_tokens, *(s for symbols in splits.values() for s in symbols)]))
    known = set(vocab)
    pair_counts: Counter[tuple[str, str]] = Counter()
    symbol_counts: Counter[str] = Counter()
    words_with: dict[tuple[str, str], set[str]] = {}

    def tally(word: str, sign: int) -> None:
        """Add (sign +1) or remove (sign -1) the word's symbols and pairs from the counts."""
        n = sign * word_counts[word]
        symbols = splits[word]
        for s in symbols:
            symbol_counts[s] += n
        for pair in zip(symbols, symbols[1:], strict=False):
            pair_counts[pair] += n
            if sign > 0:
                words_with.setdefault(pair, set()).add(word)

    for word in splits:
        tally(word, +1)
    while len(vocab) < vocab_size:
        live = [pair for pair, n in pair_counts.items() if n >= max(min_frequency, 1)]
        if not live:
            break
        best = max(live, key=lambda p: pair_counts[p] / (symbol_counts[p[0]] * symbol_counts[p[1]]))
        merged = best[0] + best[1].removeprefix("##")
        for word in words_with.pop(best):
            tally(word, -1)
            symbols, i = splits[word], 0
            while i < len(symbols) - 1:
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i:i + 2] = [merged]
                else:
                    i += 1
            tally(word, +1)
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
    return vocab[:vocab_size]
