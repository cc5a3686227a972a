"""GPT-2's byte-level byte-pair encoding (BPE), written from scratch: chapter 2.5 of the book.

The book uses OpenAI's ``tiktoken`` for this step; this module is the same algorithm in plain Python
and gives exactly tiktoken's "gpt2" token ids (the tests compare the two on whole books and on
thousands of random Unicode strings).

How a text becomes token ids:

1. Special tokens such as ``<|endoftext|>`` are cut out first (only those the caller allows; any
   other special token in the text is an error, as in tiktoken).
2. The rest is pre-tokenized by GPT-2's regular expression ``GPT2_PATTERN`` into chunks: words with
   their leading space (" hello"), runs of digits, runs of punctuation, runs of whitespace.
3. Each chunk is turned into UTF-8 bytes and merged: starting from single bytes, the adjacent pair
   whose concatenation has the lowest rank (= token id) in the vocabulary is joined, again and again,
   until no adjacent pair forms a known token. A chunk that is itself a token is one id at once.

The merge loop keeps its candidate pairs in a heap over a linked list of parts, so a chunk of n bytes
costs O(n log n), not the O(n^2) of rescanning every pair after each merge (a 100k-letter "word"
encodes in a fraction of a second), and the ids of every chunk seen are cached, so ordinary text
costs one regex pass and a dict lookup per chunk.

One subtlety: which characters are letters and numbers depends on the Unicode version of the regex
engine. tiktoken's tables are Unicode 16.0, the ``regex`` module's are newer, so ``PreTokenizer``
pins the pattern to Unicode 16.0 for the rare text that holds a newer letter or number (the tables
are in unicode16.py).

naive_bpe.py is the same algorithm written the slow, obvious way (recount and rescan after every
merge); read it first. tests/test_naive_bpe.py checks that the two give identical ids.

``ByteLevelBPE`` is that engine for any vocabulary; ``GPT2Tokenizer`` loads OpenAI's files into it
(``encoder.json`` + ``vocab.bpe``, or a ``.tiktoken`` rank file); ``corpora.get_gpt2_tokenizer``
downloads OpenAI's files once into ``data/gpt2``. The trainable ``BPETokenizer`` (train_bpe.py) is the same
engine with a vocabulary learned from your text, and hf_json.py loads a Hugging Face ``tokenizer.json``
(Llama 3, Qwen, SmolLM2) into it.

Hugging Face's ``tokenizers`` library merges by a slightly different rule, and the engine does both:
tiktoken joins any adjacent pair whose concatenation is a token (lowest token id first), while a
``tokenizer.json`` lists its merges, and only a listed pair is joined (the pair listed first wins).
Given ``merges``, ``ByteLevelBPE`` follows the second rule; the heap and the linked list are the same.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import operator
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import regex

from numpy_gpt.tokenizers.unicode16 import has_unicode_17_letters, pin_to_unicode_16

# GPT-2's pre-tokenization pattern, as tiktoken writes it for "gpt2". OpenAI's original release
# (encoder.py) spells it as GPT2_ORIGINAL_PATTERN below, which splits every text identically; the
# possessive quantifiers (++) only spare the regex engine some backtracking. Contractions, then an
# optional space followed by letters, digits, or other symbols, then whitespace (a run of spaces
# leaves its last space to the word that follows it).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# ... as OpenAI's encoder.py (and Hugging Face's ByteLevel pre-tokenizer) spell it.
GPT2_ORIGINAL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Llama 3's pattern (Meta's tokenizer.py and its tokenizer.json): contractions in any case, a word
# with at most one leading non-letter, numbers of at most three digits, symbols with the newlines
# that follow them, then newlines with the spaces before them, then other whitespace.
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                  r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Qwen2's, Qwen2.5's and Qwen3's pattern: Llama 3's with every digit its own chunk.
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
# The patterns by name: the only ones a checkpoint's tokenizer description (spec.py) or a Hugging Face
# tokenizer.json (hf_json.py) may use, since a regex read from a file could hang on a crafted text.
NAMED_PATTERNS = {"gpt2": GPT2_PATTERN, "llama3": LLAMA3_PATTERN, "qwen2": QWEN2_PATTERN}

ENDOFTEXT = "<|endoftext|>"

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable Unicode characters.

    ``encoder.json`` and ``vocab.bpe`` store tokens as strings: each byte of a token is written as one
    character of this map, so that spaces and control bytes stay visible ("Ġ" is byte 32, a space).
    Printable Latin-1 bytes map to themselves; the other 68 bytes map to U+0100 onwards, in order.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


class PreTokenizer:
    """Splits text into the chunks BPE works on, with ``pattern``, exactly as tiktoken would."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._plain = regex.compile(pattern)
        pinned = pin_to_unicode_16(pattern)
        self._pinned = regex.compile(pinned, flags=regex.V1) if pinned != pattern else self._plain

    def findall(self, text: str) -> list[str]:
        compiled = self._pinned if has_unicode_17_letters(text) else self._plain
        return compiled.findall(text)

    def split(self, text: str) -> list[str]:
        """The matches and the text between them, in order (Hugging Face's "Isolated" split). GPT-2's
        pattern, Llama 3's and Qwen's match every character, so this is ``findall`` for them."""
        chunks = self.findall(text)
        if sum(map(len, chunks)) == len(text):
            return chunks
        compiled = self._pinned if has_unicode_17_letters(text) else self._plain
        chunks, start = [], 0
        for match in compiled.finditer(text):
            chunks.extend(c for c in (text[start:match.start()], match.group()) if c)
            start = match.end()
        return chunks + ([text[start:]] if start < len(text) else [])


# Pieces up to this many characters are remembered with their ids; the cache is emptied when it holds
# this many pieces, so memory stays bounded on any corpus.
_CACHE_MAX_PIECE_CHARS = 256
_CACHE_MAX_ENTRIES = 200_000


def _fix_surrogates(text: str) -> str:
    """Make ``text`` encodable as UTF-8 exactly the way tiktoken does.

    A Python string may hold UTF-16 surrogate code points. A valid high+low pair becomes the character
    it encodes; a lone surrogate becomes U+FFFD (the replacement character).
    """
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class ByteLevelBPE:
    """Byte-level BPE tokenizer with tiktoken's API and exact tiktoken behaviour.

    Args:
        token_bytes: token id -> the bytes it stands for. All 256 single bytes must be present. When
            two ids stand for the same bytes, merging uses the smaller id.
        special_tokens: special token string -> id (e.g. ``{"<|endoftext|>": 50256}``); these ids
            must not be BPE ids.
        pattern: the pre-tokenization regex (``regex`` module syntax).
        name: a label shown in ``repr``.
        merges: a ``tokenizer.json``'s merge list as (left id, right id) pairs, first = joined first.
            Given, only these pairs are joined (Hugging Face's rule); by default any adjacent pair
            that forms a token is, the lowest token id first (tiktoken's rule).
        ignore_merges: with ``merges``, a chunk that is itself a token becomes that one id at once
            (Llama 3 sets it; tiktoken's rule always does this).
        pretokenizer: splits text into chunks (any object with ``findall(text) -> list[str]``) in
            place of ``PreTokenizer(pattern)``; hf_json.py passes a tokenizer.json's pipeline.
    """

    def __init__(self, token_bytes: Mapping[int, bytes], special_tokens: Mapping[str, int] | None = None,
                 pattern: str = GPT2_PATTERN, name: str = "bpe", *,
                 merges: Sequence[tuple[int, int]] | None = None, ignore_merges: bool = False,
                 pretokenizer: PreTokenizer | None = None) -> None:
        special_tokens = dict(special_tokens or {})
        self.name = name
        self.pattern = pattern
        self._decoder: dict[int, bytes] = {}
        self._ranks: dict[bytes, int] = {}
        for token_id in sorted(token_bytes):
            data = token_bytes[token_id]
            if not isinstance(token_id, int) or token_id < 0 or not isinstance(data, bytes) or not data:
                raise ValueError(f"{name}: token {token_id!r} -> {data!r} is not a non-negative int id "
                                 f"mapped to non-empty bytes")
            self._decoder[token_id] = data
            self._ranks.setdefault(data, token_id)
        missing = [b for b in range(256) if bytes([b]) not in self._ranks]
        if missing:
            raise ValueError(f"{name}: the vocabulary lacks single-byte tokens for bytes {missing[:10]} "
                             f"({len(missing)} in all); byte-level BPE needs all 256 to encode any text")
        for token, token_id in special_tokens.items():
            if not token or not isinstance(token_id, int) or token_id < 0 or token_id in self._decoder:
                raise ValueError(f"{name}: special token {token!r} has id {token_id!r}, which is not a "
                                 f"free non-negative int id (BPE ids and special ids must not overlap)")
        if len(set(special_tokens.values())) != len(special_tokens):
            raise ValueError(f"{name}: two special tokens share an id: {special_tokens}")
        self._special_tokens = special_tokens
        self._max_token_value = max([*self._decoder, *special_tokens.values()])
        self._token_len = [0] * (max(self._decoder) + 1)  # byte length of each BPE token, by id
        for token_id, data in self._decoder.items():
            self._token_len[token_id] = len(data)
        # How candidate pairs are ranked: None = by the id of the token they form (tiktoken), else
        # (left bytes, right bytes) -> the pair's place in ``merges``; and the byte length of the token
        # each rank forms (the merge loop's staleness test).
        self._pair_ranks: dict[tuple[bytes, bytes], int] | None = None
        self._merged_len = self._token_len
        self._whole_chunks = merges is None or ignore_merges
        if merges is not None:
            self._pair_ranks, self._merged_len = {}, [0] * len(merges)
            for rank, (left, right) in enumerate(merges):
                a, b = self._decoder.get(left), self._decoder.get(right)
                if a is None or b is None or a + b not in self._ranks:
                    raise ValueError(f"{name}: merge #{rank} ({left!r}, {right!r}) joins ids that are not "
                                     f"tokens, or forms bytes that are not a token")
                self._pair_ranks[a, b] = rank       # a pair listed twice keeps its last place, as in HF
                self._merged_len[rank] = len(a) + len(b)
        for token, token_id in special_tokens.items():
            self._decoder[token_id] = token.encode("utf-8")
        self._pretokenizer = pretokenizer if pretokenizer is not None else PreTokenizer(pattern)
        # Longest first, so that a special token that contains another one wins.
        specials = sorted(special_tokens, key=lambda s: (-len(s), s))
        self._special_pat = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
        self._cache: dict[str, tuple[int, ...]] = {}  # chunk -> its ids

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} n_vocab={self.n_vocab}>"

    # ---------------------------------------------------------------- vocabulary facts
    @property
    def n_vocab(self) -> int:
        """Number of token ids (largest id + 1), as ``tiktoken.Encoding.n_vocab``."""
        return self.max_token_value + 1

    @property
    def vocab_size(self) -> int:
        """Same as ``n_vocab`` (the name the book's GPT config uses)."""
        return self.n_vocab

    @property
    def max_token_value(self) -> int:
        return self._max_token_value

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_tokens)

    @property
    def special_tokens_set(self) -> set[str]:
        return set(self._special_tokens)

    @property
    def eot_token(self) -> int | None:
        """Id of ``<|endoftext|>`` (50256 for GPT-2), or None if this vocabulary has none."""
        return self._special_tokens.get(ENDOFTEXT)

    def clear_cache(self) -> None:
        """Forget the ids remembered per chunk (only benchmarks of cold encoding need this)."""
        self._cache.clear()

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token id stands for."""
        return self.decode_bytes([token_id])

    # ---------------------------------------------------------------- encoding
    def encode(self, text: str, *, allowed_special: Literal["all"] | Collection[str] = frozenset(),
               disallowed_special: Literal["all"] | Collection[str] = "all") -> list[int]:
        """Text -> token ids, with tiktoken's special-token rules.

        Special tokens in ``allowed_special`` (a set, or "all") become their ids. By default any other
        special token found in the text raises ValueError, because text that merely *looks* like a
        control token should not silently become one; pass ``disallowed_special=()`` to encode such
        text as ordinary characters instead.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        for name, value in (("allowed_special", allowed_special), ("disallowed_special", disallowed_special)):
            if isinstance(value, str) and value != "all":
                raise TypeError(f"{name} must be a set of special tokens or 'all', got the string {value!r} "
                                f"(write {{{value!r}}} for a set)")
        if allowed_special == "all":
            allowed_special = self.special_tokens_set
        if disallowed_special == "all":
            disallowed_special = self.special_tokens_set - set(allowed_special)
        if disallowed_special:
            disallowed = sorted(disallowed_special, key=lambda s: (-len(s), s))
            match = regex.search("|".join(regex.escape(s) for s in disallowed), text)
            if match:
                _raise_disallowed_special_token(match.group())
        try:
            return self._encode(text, frozenset(allowed_special))
        except UnicodeEncodeError:
            return self._encode(_fix_surrogates(text), frozenset(allowed_special))

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> token ids, treating special-token strings as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary expects a str, got {type(text).__name__}")
        ids: list[int] = []
        try:
            self._encode_ordinary_into(text, ids)
        except UnicodeEncodeError:
            ids.clear()
            self._encode_ordinary_into(_fix_surrogates(text), ids)
        return ids

    def _encode(self, text: str, allowed_special: frozenset[str]) -> list[int]:
        """Split at allowed special tokens, BPE-encode the text between them (tiktoken's loop)."""
        ids: list[int] = []
        start = 0
        while True:
            special = None
            if allowed_special and self._special_pat is not None:
                search_from = start
                while (match := self._special_pat.search(text, search_from)) is not None:
                    if match.group() in allowed_special:
                        special = match
                        break
                    search_from = match.start() + 1
            end = special.start() if special else len(text)
            self._encode_ordinary_into(text[start:end], ids)
            if special is None:
                return ids
            ids.append(self._special_tokens[special.group()])
            start = special.end()

    def _encode_ordinary_into(self, text: str, ids: list[int]) -> None:
        """Append the ids of ``text`` (no special tokens) to ``ids``: pre-tokenize, then BPE per chunk."""
        cache = self._cache
        for piece in self._pretokenizer.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._bpe(piece.encode("utf-8"))
                if len(piece) <= _CACHE_MAX_PIECE_CHARS:
                    if len(cache) >= _CACHE_MAX_ENTRIES:
                        cache.clear()
                    cache[piece] = piece_ids
            ids.extend(piece_ids)

    def _bpe(self, piece: bytes) -> tuple[int, ...]:
        """Merge the bytes of one chunk into tokens: lowest-rank adjacent pair first, leftmost on ties.

        A pair's rank is the id of the token it forms (tiktoken's rule), or with ``merges`` its place
        in that list (Hugging Face's rule; ``pairs`` holds it). The parts form a linked list of byte
        offsets: the part starting at byte i is ``piece[i:end[i]]`` (``end[i] > n`` once it has been
        absorbed by its left neighbour). Candidate merges wait in a min-heap as one int
        ``rank * (n + 1) + i`` (ordered by rank, then position). An entry is stale when its pair
        has changed since it was pushed; since parts only grow, the pair now starting at i is still
        the same one exactly when it spans as many bytes as the token its rank forms.
        """
        ranks = self._ranks
        if self._whole_chunks:
            whole = ranks.get(piece)
            if whole is not None:
                return (whole,)
        pairs = self._pair_ranks
        merged_len = self._merged_len
        n = len(piece)
        stride = n + 1
        end = list(range(1, n + 1))
        prev = list(range(-1, n - 1))
        if pairs is None:
            heap = [rank * stride + i for i in range(n - 1)
                    if (rank := ranks.get(piece[i:i + 2])) is not None]
        else:
            heap = [rank * stride + i for i in range(n - 1)
                    if (rank := pairs.get((piece[i:i + 1], piece[i + 1:i + 2]))) is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = divmod(heapq.heappop(heap), stride)
            j = end[i]  # the right part of the pair is piece[j:k]
            if j >= n:
                continue  # i was absorbed, or is the last part
            k = end[j]
            if k - i != merged_len[rank]:
                continue  # stale
            end[j] = stride
            end[i] = k
            if k < n:  # new pair with the right neighbour piece[k:m]
                prev[k] = i
                m = end[k]
                rank_right = ranks.get(piece[i:m]) if pairs is None else pairs.get((piece[i:k], piece[k:m]))
                if rank_right is not None:
                    heapq.heappush(heap, rank_right * stride + i)
            p = prev[i]
            if p >= 0:  # new pair with the left neighbour piece[p:i]
                rank_left = ranks.get(piece[p:k]) if pairs is None else pairs.get((piece[p:i], piece[i:k]))
                if rank_left is not None:
                    heapq.heappush(heap, rank_left * stride + p)
        ids = []
        i = 0
        while i < n:
            ids.append(ranks[piece[i:end[i]]])
            i = end[i]
        return tuple(ids)

    # ---------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Token ids -> the exact bytes they stand for (special tokens as their UTF-8 text)."""
        decoder = self._decoder
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if not all(type(i) is int for i in ids):        # 1.0 == 1 and True == 1 would look up fine
            ids = [_token_id(i, self.name) for i in ids]
        try:
            return b"".join([decoder[i] for i in ids])
        except (KeyError, TypeError):
            bad = [i for i in ids if not _is_int(i) or i not in decoder]
            raise ValueError(f"{self.name}: cannot decode token id(s) {bad[:10]}: valid ids are integers "
                             f"in the vocabulary (0..{self.max_token_value})") from None

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Token ids -> text. A sequence that cuts a multi-byte character in half decodes with U+FFFD
        in its place (``errors="replace"``, as tiktoken); pass ``errors="strict"`` to raise instead."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)


def _token_id(value: object, name: str) -> int:
    """A token id given as any integer type (NumPy's too), or TypeError for floats and booleans."""
    if not isinstance(value, bool):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name}: token ids must be integers, got {value!r} ({type(value).__name__})")


def _is_int(value: object) -> bool:
    return isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu")


def _raise_disallowed_special_token(token: str) -> None:
    raise ValueError(
        f"Encountered text corresponding to disallowed special token {token!r}.\n"
        f"If you want this text to be encoded as a special token, pass it to `allowed_special`, "
        f"e.g. `allowed_special={{{token!r}, ...}}`.\n"
        f"If you want this text to be encoded as normal text, disable the check for this token by "
        f"passing `disallowed_special=(enc.special_tokens_set - {{{token!r}}})`.\n"
        f"To disable this check for all special tokens, pass `disallowed_special=()`.\n")


# -------------------------------------------------------------------- OpenAI's GPT-2 files
def read_gpt2_vocab(encoder_json: str | Path, vocab_bpe: str | Path
                    ) -> tuple[list[int], list[tuple[int, int]], dict[str, int]]:
    """Read OpenAI's ``encoder.json`` and ``vocab.bpe`` and check that they agree.

    Returns ``(byte_ids, merges, special_tokens)``: ``byte_ids[b]`` is the token id of byte value b,
    ``merges[i] = (left_id, right_id)`` is the i-th merge, whose result has id ``256 + i``, and
    ``special_tokens`` are the encoder entries past the BPE ids (GPT-2: ``<|endoftext|>`` = 50256).
    """
    byte_decoder = {ch: b for b, ch in bytes_to_unicode().items()}
    encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
    try:
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {encoder_json} as GPT-2's encoder.json: {exc}") from exc
    if not isinstance(encoder, dict) or not all(isinstance(v, int) for v in encoder.values()):
        raise ValueError(f"{encoder_json} is not GPT-2's encoder.json: expected a JSON object of "
                         f"token -> int id")
    try:
        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {vocab_bpe} as GPT-2's vocab.bpe: {exc}") from exc
    if not lines[0].startswith("#version"):
        raise ValueError(f"{vocab_bpe} is not GPT-2's vocab.bpe: its first line should be '#version: 0.2'")
    merge_lines = [line for line in lines[1:] if line]

    def token_id(token: str, where: str) -> int:
        if token not in encoder:
            raise ValueError(f"{where}: token {token!r} is not in {encoder_json}; "
                             f"are encoder.json and vocab.bpe from the same model?")
        return encoder[token]

    byte_ids = [token_id(bytes_to_unicode()[b], "single bytes") for b in range(256)]
    if sorted(byte_ids) != list(range(256)):
        raise ValueError(f"{encoder_json}: the 256 single-byte tokens must have ids 0..255")
    merges = []
    for i, line in enumerate(merge_lines):
        parts = line.split(" ")
        if len(parts) != 2:
            raise ValueError(f"{vocab_bpe} line {i + 2}: expected two tokens separated by a space, "
                             f"got {line!r}")
        where = f"{vocab_bpe} line {i + 2}"
        left, right = (token_id(p, where) for p in parts)
        merged = token_id(parts[0] + parts[1], where)
        if merged != 256 + i:
            raise ValueError(f"{where}: merge {line!r} should produce id {256 + i} but {encoder_json} gives "
                             f"{merged}; are encoder.json and vocab.bpe from the same model?")
        merges.append((left, right))
    n_bpe = 256 + len(merges)
    special_tokens = {token: i for token, i in encoder.items() if i >= n_bpe}
    if len(encoder) != n_bpe + len(special_tokens):
        raise ValueError(f"{encoder_json} has {len(encoder)} entries but {vocab_bpe} implies {n_bpe} BPE "
                         f"tokens plus {len(special_tokens)} special tokens")
    bad = [t for t in special_tokens if not all(ch in byte_decoder for ch in t)]
    if bad:
        raise ValueError(f"{encoder_json}: special tokens {bad[:5]} use characters outside GPT-2's "
                         f"byte alphabet")
    return byte_ids, merges, special_tokens


def token_bytes_from_merges(byte_ids: list[int], merges: list[tuple[int, int]]) -> dict[int, bytes]:
    """Token id -> bytes for a vocabulary of 256 byte tokens plus merges (merge i makes id 256 + i)."""
    if sorted(byte_ids) != list(range(256)):
        raise ValueError("byte_ids must give each of the 256 byte values a distinct id in 0..255")
    token_bytes = {token_id: bytes([b]) for b, token_id in enumerate(byte_ids)}
    for i, (left, right) in enumerate(merges):
        new_id = 256 + i
        if left not in token_bytes or right not in token_bytes:
            raise ValueError(f"merge #{i} ({left}, {right}) uses an id that does not exist before "
                             f"id {new_id}")
        token_bytes[new_id] = token_bytes[left] + token_bytes[right]
    return token_bytes


class GPT2Tokenizer(ByteLevelBPE):
    """GPT-2's tokenizer (50,257 ids, ``<|endoftext|>`` = 50256), loaded from OpenAI's files.

    Usage (the ids the book prints in chapter 2.5)::

        tok = GPT2Tokenizer.from_files("data/gpt2/encoder.json", "data/gpt2/vocab.bpe")
        tok.encode("Hello, do you like tea? <|endoftext|>", allowed_special={"<|endoftext|>"})
        # [15496, 11, 466, 345, 588, 8887, 30, 220, 50256]
    """

    @classmethod
    def from_files(cls, encoder_json: str | Path, vocab_bpe: str | Path) -> GPT2Tokenizer:
        """Load OpenAI's ``encoder.json`` and ``vocab.bpe`` (they are checked against each other)."""
        byte_ids, merges, special_tokens = read_gpt2_vocab(encoder_json, vocab_bpe)
        return cls(token_bytes_from_merges(byte_ids, merges), special_tokens, GPT2_PATTERN, name="gpt2")

    @classmethod
    def from_tiktoken_file(cls, path: str | Path, special_tokens: Mapping[str, int] | None = None,
                           pattern: str = GPT2_PATTERN) -> GPT2Tokenizer:
        """Load a ``.tiktoken`` rank file: one ``<base64 token bytes> <rank>`` line per token.

        Such files hold no special tokens: by default ``<|endoftext|>`` gets the id after the largest
        rank (50256 for GPT-2's ``r50k_base.tiktoken``).
        """
        path = Path(path)
        token_bytes: dict[int, bytes] = {}
        try:
            lines = path.read_bytes().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read tiktoken rank file {path}: {exc}") from exc
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                if len(fields) != 2:
                    raise ValueError("expected 2 fields")
                data, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            except (ValueError, binascii.Error) as exc:
                raise ValueError(f"{path} line {lineno}: expected '<base64 bytes> <rank>', got {line[:80]!r} "
                                 f"({exc})") from None
            if rank in token_bytes:
                raise ValueError(f"{path} line {lineno}: rank {rank} appears twice")
            token_bytes[rank] = data
        if not token_bytes:
            raise ValueError(f"{path} holds no tokens: is it a .tiktoken rank file?")
        if special_tokens is None:
            special_tokens = {ENDOFTEXT: max(token_bytes) + 1}
        return cls(token_bytes, special_tokens, pattern, name=path.stem)
