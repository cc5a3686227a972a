"""Byte-pair encoding in its plainest form (the book's chapter 2.5): the lesson, and the tests' oracle.

The book calls tiktoken; this file is what tiktoken does, written the slow, obvious way, in the style
of Karpathy's minbpe. Text is stored as UTF-8 bytes, so the alphabet is the 256 byte values (ids
0..255) and any text can be encoded. Training then grows the vocabulary one token at a time:

1. ``get_stats``: count every adjacent pair of ids.
2. pick the most frequent pair, give it the next free id (256, 257, ...) and ``merge`` it: replace
   each occurrence, left to right, by the new id.
3. repeat until the vocabulary has ``vocab_size`` ids. The merges, in order, ARE the tokenizer.

Worked example (Wikipedia's): in "aaabdaaabac" the pair "aa" is most frequent (4 times, counting
the overlapping ones) and becomes Z: "ZabdZabac". Now "Za" and "ab" tie at 2; "ab" becomes Y:
"ZYdZYac"; then "ZY" becomes X: "XdXac". Five ids instead of eleven bytes.

Two rules make the result well defined and equal to GPT-2's and to ``BPETokenizer.train``
(train_bpe.py, the fast trainer):

- Pre-tokenization. The text is first cut by GPT-2's regular expression into chunks (a word with its
  leading space, a run of digits, a run of punctuation, whitespace), and pairs never cross a chunk
  boundary: " the" can become a token, "e t" cannot.
- Tie-breaking. When several pairs are equally frequent, the smallest pair wins, comparing the
  left ids first, then the right ones. In the example "Za" is (256, 97) and "ab" is (97, 98), so
  "ab" wins.

Encoding replays the merges: in each chunk, while some adjacent pair has a merge, apply the one
learned earliest (lowest new id). That is exactly how OpenAI's GPT-2 encoder applies the 50,000
merges of ``vocab.bpe``. Each step rescans the whole chunk, so encoding costs O(n^2) per chunk and
training recounts the whole text per merge: fine for a lesson and a 20 KB story, too slow for a
book. bpe.py and train_bpe.py compute the same thing fast; the tests check that they agree with
this file. Not handled here: special tokens such as ``<|endoftext|>``, and the few letters that
Unicode 17 added (tiktoken, hence bpe.py, still classes them as Unicode 16 did).
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

# GPT-2's pre-tokenization pattern as OpenAI's encoder.py writes it: contractions, then an optional
# space followed by letters, digits or other symbols, then whitespace (a run of spaces leaves its
# last space to the word that follows it).
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Pair = tuple[int, int]


def get_stats(ids: Sequence[int], counts: dict[Pair, int] | None = None) -> dict[Pair, int]:
    """Count each adjacent pair in ``ids`` (into ``counts`` if given): [1, 2, 3, 1, 2] -> {(1, 2): 2, ...}."""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:], strict=False):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``ids``, left to right, by ``new_id``."""
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train(text: str, vocab_size: int, pattern: str = GPT2_SPLIT_PATTERN) -> dict[Pair, int]:
    """Learn ``vocab_size - 256`` merges from ``text``; returns {pair: new id}, in the order learned."""
    chunks = [list(chunk.encode("utf-8")) for chunk in regex.findall(pattern, text)]
    merges: dict[Pair, int] = {}
    for new_id in range(256, vocab_size):
        counts: dict[Pair, int] = {}
        for ids in chunks:
            get_stats(ids, counts)
        if not counts:
            raise ValueError(f"the text ran out of pairs after {len(merges)} merges; "
                             f"use more text or a vocab_size of at most {new_id}")
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent; on a tie, the smallest pair
        chunks = [merge(ids, pair, new_id) for ids in chunks]
        merges[pair] = new_id
    return merges


def encode(text: str, merges: dict[Pair, int], pattern: str = GPT2_SPLIT_PATTERN,
           byte_ids: Sequence[int] = range(256)) -> list[int]:
    """Text -> ids: in each chunk, apply the earliest-learned merge that fits, until none does.

    ``byte_ids[b]`` is the id of byte value b: b itself for our trainer; GPT-2 numbers its 256 byte
    tokens in its own order.
    """
    out = []
    for chunk in regex.findall(pattern, text):
        ids = [byte_ids[b] for b in chunk.encode("utf-8")]
        while len(ids) >= 2:
            pair = min(get_stats(ids), key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break  # no adjacent pair left that was ever merged
            ids = merge(ids, pair, merges[pair])
        out.extend(ids)
    return out


def build_vocab(merges: dict[Pair, int], byte_ids: Sequence[int] = range(256)) -> dict[int, bytes]:
    """Id -> the bytes it stands for: the 256 single bytes, then each merge joins two earlier tokens."""
    vocab = {token_id: bytes([b]) for b, token_id in enumerate(byte_ids)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    return vocab


def decode(ids: Sequence[int], vocab: dict[int, bytes]) -> str:
    """Ids -> text (a multi-byte character cut in half becomes U+FFFD)."""
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
