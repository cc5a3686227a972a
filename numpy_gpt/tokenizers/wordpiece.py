"""WordPiece: BERT's tokenizer, and a minimal trainer for its vocabulary (the encoder side of ch. 2).

GPT-2 splits text into byte-level BPE tokens (bpe.py). BERT uses WordPiece, in two stages:

1. Basic tokenization (``basic_tokenize``): clean the text (drop NUL, U+FFFD and control
   characters, turn every whitespace character into a space), put spaces around CJK ideographs
   (each becomes a word of its own), optionally lower-case and strip accents (decompose to NFD and
   drop the combining marks: "Élan" -> "elan"), split on whitespace, then split every punctuation
   character off as a word of its own ("don't." -> "don", "'", "t", ".").
2. WordPiece (``wordpiece``): each word is cut greedily, longest match first, into pieces of the
   vocabulary; pieces after the first carry the prefix "##" ("unaffable" -> "un", "##aff",
   "##able"). A word with a part no piece matches, or longer than 100 characters, is one [UNK].

``encode`` wraps the pieces in [CLS] ... [SEP], and reads the special tokens ([CLS], [SEP], [PAD],
[MASK], [UNK]) written in a text as themselves, so "The cat [MASK] on the mat." has a mask to fill.
The ids equal those of Hugging Face's ``tokenizers.BertWordPieceTokenizer`` and
``transformers.BertTokenizer`` given the same vocab.txt (one token per line, its id is its line
number).

``train_wordpiece_vocab`` learns a vocab.txt from text as the WordPiece paper does: start from the
characters ("##" + c inside a word), then repeatedly merge the adjacent pair (a, b) with the best
score count(ab) / (count(a) * count(b)), which prefers pairs whose parts are rarely seen apart.
"""

from __future__ import annotations

import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from numpy_gpt.fileio import write_text_atomic

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_CHARS_PER_WORD = 100

# The CJK Unified Ideographs blocks, as BERT defines "Chinese character" (not Hangul or kana).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


# -- basic tokenization ----------------------------------------------------------------------------
def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    """Every ASCII non-letter, non-digit symbol ("$", "^", "`" too) and every Unicode P* character."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return cp >= 0x3400 and any(low <= cp <= high for low, high in _CJK_RANGES)


def clean_text(text: str) -> str:
    """Drop NUL, U+FFFD and control characters; every whitespace character becomes a space."""
    return "".join(" " if _is_whitespace(ch) else ch for ch in text
                   if ch not in "\x00\ufffd" and not _is_control(ch))


def strip_accents(text: str) -> str:
    """Decompose (NFD: "é" -> "e" + U+0301) and drop the combining marks (category Mn)."""
    return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")


def basic_tokenize(text: str, lowercase: bool = True, strip_accents_: bool | None = None) -> list[str]:
    """BERT's pre-tokenization: the words that WordPiece then cuts. ``strip_accents_`` None follows
    ``lowercase`` (BERT's uncased models strip accents, cased ones keep them)."""
    text = clean_text(text)
    text = "".join(f" {ch} " if _is_cjk(ch) else ch for ch in text)          # each ideograph a word
    if lowercase:
        text = text.lower()
    if strip_accents_ if strip_accents_ is not None else lowercase:
        text = strip_accents(text)
    words = []
    for chunk in text.split():
        word = ""
        for ch in chunk:
            if _is_punctuation(ch):
                words += [word, ch] if word else [ch]
                word = ""
            else:
                word += ch
        if word:
            words.append(word)
    return words


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
