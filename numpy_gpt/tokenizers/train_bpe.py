"""Training a byte-level BPE vocabulary on your own text (the book's chapter 2.5, done by hand).

GPT-2's 50,257-token vocabulary was learned by this procedure: start from the 256 byte values, count
every adjacent pair of tokens in the training text, give the most frequent pair a new id, replace it
everywhere, and repeat until the vocabulary has the size you asked for. As in GPT-2, the text is first
cut by ``GPT2_PATTERN`` into chunks (words, numbers, punctuation, whitespace) and pairs never cross a
chunk boundary, so " the" can become a token but "e t" cannot. Special tokens such as
``<|endoftext|>`` are cut out of the text before counting and get the last ids.

Training counts each distinct chunk once, weighted by how often it occurs, and after each merge only
updates the counts of the chunks that contained the merged pair; a heap finds the most frequent pair
(ties go to the smallest pair of ids, so training is deterministic). tinyshakespeare to 512 tokens
takes a few seconds. naive_bpe.py is the same training without the bookkeeping (recount everything
after each merge); read it first: the tests check that both learn the same merges in the same order.

``BPETokenizer`` encodes and decodes with the same engine as ``GPT2Tokenizer`` (bpe.py), so it has
tiktoken's API and tiktoken's encoding rule (join the adjacent pair whose result has the lowest id).
``BPETokenizer.from_gpt2_files`` turns OpenAI's ``encoder.json`` + ``vocab.bpe`` into a
BPETokenizer with GPT-2's exact vocabulary.

File format (``save``/``load``), UTF-8 text, one item per line::

    numpy_gpt-bpe v1
    pattern <the pre-tokenization regex as a JSON string>
    bytes <256 space-separated ids: the id of byte value 0, 1, ..., 255>
    special <n>
    <special token as a JSON string> <id>        (n lines)
    merges <m>
    <left id> <right id>                         (m lines; line i creates id 256 + i)
"""

from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import regex

from numpy_gpt.fileio import write_text_atomic
from numpy_gpt.tokenizers.bpe import (
    ENDOFTEXT,
    GPT2_PATTERN,
    ByteLevelBPE,
    PreTokenizer,
    _fix_surrogates,
    read_gpt2_vocab,
    token_bytes_from_merges,
)

_FORMAT_HEADER = "numpy_gpt-bpe v1"


class OutOfMerges(ValueError):
    """The text has fewer distinct pairs to merge than ``vocab_size`` asks for; ``largest`` is the
    largest vocabulary it can train."""

    def __init__(self, message: str, largest: int) -> None:
        super().__init__(message)
        self.largest = largest


class BPETokenizer(ByteLevelBPE):
    """A byte-level BPE tokenizer defined by its merges; trainable, savable, loadable.

    Args:
        merges: ``merges[i] = (left_id, right_id)``: the pair that merge i joins into id ``256 + i``.
        special_tokens: special token -> id (ids after the BPE ids).
        pattern: the pre-tokenization regex.
        byte_ids: ``byte_ids[b]`` is the id of byte value b (default: b itself; GPT-2 permutes them).
    """

    def __init__(self, merges: Sequence[tuple[int, int]], special_tokens: Mapping[str, int] | None = None,
                 pattern: str = GPT2_PATTERN, byte_ids: Sequence[int] | None = None) -> None:
        self.merges = [(int(left), int(right)) for left, right in merges]
        self.byte_ids = list(range(256)) if byte_ids is None else [int(i) for i in byte_ids]
        super().__init__(token_bytes_from_merges(self.byte_ids, self.merges), special_tokens, pattern,
                         name="bpe")

    # ---------------------------------------------------------------- training
    @classmethod
    def train(cls, text: str, vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,),
              pattern: str = GPT2_PATTERN, verbose: bool = False) -> BPETokenizer:
        """Learn ``vocab_size - 256 - len(special_tokens)`` merges from ``text``.

        ``vocab_size`` counts everything: the 256 byte tokens, the merges and the special tokens
        (GPT-2: 256 + 50,000 + 1 = 50,257). Raises ValueError if the text runs out of pairs first.
        """
        special_tokens = list(dict.fromkeys(special_tokens))
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise ValueError(f"vocab_size={vocab_size} is too small: the 256 byte tokens and "
                             f"{len(special_tokens)} special token(s) alone need {256 + len(special_tokens)}")
        words, freqs = _count_chunks(_fix_surrogates(text), special_tokens, PreTokenizer(pattern))

        # pair -> total count, and pair -> indices of the words that (may) contain it
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)
        for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in zip(word, word[1:], strict=False):
                pair_counts[pair] += freq
                where[pair].add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)

        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges:
            best = _pop_most_frequent(heap, pair_counts)
            if best is None:
                raise OutOfMerges(f"the text ran out of pairs to merge after {len(merges)} merges; "
                                 f"vocab_size={vocab_size} needs {n_merges}: use more text or a smaller "
                                 f"vocab_size (at most {256 + len(merges) + len(special_tokens)})",
                                  256 + len(merges) + len(special_tokens))
            new_id = 256 + len(merges)
            merges.append(best)
            if verbose:
                print(f"merge {len(merges)}/{n_merges}: {best} -> {new_id} ({pair_counts[best]} occurrences)")
            changed: set[tuple[int, int]] = set()
            for w in where.pop(best):
                word, freq = words[w], freqs[w]
                merged = _merge(word, best, new_id)
                if len(merged) == len(word):
                    continue  # the pair left this word in an earlier merge
                for pair in zip(word, word[1:], strict=False):
                    pair_counts[pair] -= freq
                    changed.add(pair)
                for pair in zip(merged, merged[1:], strict=False):
                    pair_counts[pair] += freq
                    where[pair].add(w)
                    changed.add(pair)
                words[w] = merged
            for pair in changed:
                if pair_counts[pair] > 0:
                    heapq.heappush(heap, (-pair_counts[pair], pair))
                else:
                    del pair_counts[pair]
        specials = {token: 256 + n_merges + i for i, token in enumerate(special_tokens)}
        return cls(merges, specials, pattern)

    @classmethod
    def from_gpt2_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> BPETokenizer:
        """GPT-2's vocabulary (OpenAI's ``encoder.json`` + ``vocab.bpe``) as a BPETokenizer."""
        byte_ids, merges, special_tokens = read_gpt2_vocab(encoder_json, vocab_bpe)
        return cls(merges, special_tokens, GPT2_PATTERN, byte_ids)

    # ---------------------------------------------------------------- save / load
    def save(self, path: str | Path) -> None:
        """Write the tokenizer in the text format described in this module's docstring (atomically)."""
        lines = [_FORMAT_HEADER,
                 f"pattern {json.dumps(self.pattern)}",
                 "bytes " + " ".join(map(str, self.byte_ids)),
                 f"special {len(self._special_tokens)}",
                 *(f"{json.dumps(token)} {token_id}" for token, token_id in self._special_tokens.items()),
                 f"merges {len(self.merges)}",
                 *(f"{left} {right}" for left, right in self.merges)]
        write_text_atomic(path, "\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """Read a file written by ``save``; every count and id is checked."""
        path = Path(path)
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        reader = _LineReader(path, lines)
        if reader.next() != _FORMAT_HEADER:
            raise ValueError(f"{path} is not a numpy_gpt BPE file: its first line should be "
                             f"{_FORMAT_HEADER!r}")
        pattern = reader.json_field("pattern")
        if not isinstance(pattern, str):
            raise ValueError(f"{path} line 2: the pattern must be a JSON string")
        byte_ids = reader.ints_field("bytes")
        if len(byte_ids) != 256:
            raise ValueError(f"{path} line 3: expected 256 byte ids, got {len(byte_ids)}")
        specials = {}
        for _ in range(reader.count_field("special")):
            token, _, token_id = reader.next().rpartition(" ")
            try:
                token = json.loads(token)
            except json.JSONDecodeError:
                token = None
            if not isinstance(token, str) or not _is_uint(token_id):
                reader.fail("expected '<special token as a JSON string> <id>'")
            specials[token] = int(token_id)
        merges = []
        for _ in range(reader.count_field("merges")):
            pair = reader.next().split(" ")
            if len(pair) != 2 or not all(_is_uint(p) for p in pair):
                reader.fail("expected '<left id> <right id>'")
            merges.append((int(pair[0]), int(pair[1])))
        if reader.remaining():
            reader.fail("unexpected extra lines after the merges")
        try:
            return cls(merges, specials, pattern, byte_ids)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


def _count_chunks(text: str, special_tokens: list[str], pretokenizer: PreTokenizer
                  ) -> tuple[list[list[int]], list[int]]:
    """Distinct pre-tokenized chunks of ``text`` (special tokens removed) as byte lists, and their counts."""
    if special_tokens:
        specials = sorted(special_tokens, key=len, reverse=True)
        segments = regex.split("|".join(regex.escape(s) for s in specials), text)
    else:
        segments = [text]
    counts: Counter[str] = Counter()
    for segment in segments:
        counts.update(pretokenizer.findall(segment))
    words = [list(chunk.encode("utf-8")) for chunk in counts]
    return words, list(counts.values())


def _pop_most_frequent(heap: list, pair_counts: dict[tuple[int, int], int]) -> tuple[int, int] | None:
    """Pop the most frequent pair (smallest ids on ties), skipping heap entries with outdated counts."""
    while heap:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) == -negative_count:
            return pair
    return None


def _merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of ``pair`` in ``word``, left to right, by ``new_id``."""
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _is_uint(text: str) -> bool:
    return text.isascii() and text.isdigit()


class _LineReader:
    """Walks the lines of a saved tokenizer, raising errors that name the file and the line."""

    def __init__(self, path: Path, lines: list[str]) -> None:
        self.path, self.lines, self.pos = path, lines, 0

    def fail(self, problem: str) -> None:
        raise ValueError(f"{self.path} line {self.pos}: {problem}")

    def next(self) -> str:
        if self.pos >= len(self.lines):
            self.pos += 1
            self.fail("the file ends too early (truncated?)")
        self.pos += 1
        return self.lines[self.pos - 1]

    def remaining(self) -> int:
        return len(self.lines) - self.pos

    def _field(self, name: str) -> str:
        line = self.next()
        if not line.startswith(name + " "):
            self.fail(f"expected a line starting with {name!r}")
        return line[len(name) + 1:]

    def json_field(self, name: str) -> object:
        try:
            return json.loads(self._field(name))
        except json.JSONDecodeError:
            self.fail(f"the value of {name!r} is not valid JSON")

    def ints_field(self, name: str) -> list[int]:
        values = self._field(name).split(" ")
        if not all(_is_uint(v) for v in values):
            self.fail(f"{name!r} must be followed by non-negative integers")
        return [int(v) for v in values]

    def count_field(self, name: str) -> int:
        value = self._field(name)
        if not _is_uint(value):
            self.fail(f"{name!r} must be followed by a count")
        if int(value) > self.remaining():
            self.fail(f"{name} {value} announces more lines than the file has (truncated?)")
        return int(value)
