"""Character-level tokenizer: one id per distinct character of the training text.

This is the tokenizer of nanoGPT's tiny-Shakespeare baseline (65 characters), the quickest model to
train on a CPU: the vocabulary is so small that the output layer costs almost nothing, at the price of
sequences about four times longer than with GPT-2's BPE. It is not in the book, which goes straight
from words (simple.py) to BPE (bpe.py); it is here as the CPU-friendly end of that range.

Special tokens. Fine-tuning (chapters 6 and 7) needs an end-of-text token: it pads a batch and tells
generation where an answer stops. As the book's chapter 2.4 does for its word tokenizer, ``numpy-gpt
pretrain`` gives a character tokenizer two special tokens after its alphabet (``CHAR_SPECIALS``):

* ``<|endoftext|>`` (``eot_token``): padding and the stop token;
* ``<|unk|>`` (``unk_token``): what a character outside the alphabet becomes. A model pretrained on
  text without '#' can still read the instruction format's "### Instruction:"; each unknown character
  is one ``<|unk|>`` id, so the text keeps its length in tokens.

Special tokens are only ever produced by id: ``encode`` reads the string "<|endoftext|>" in a text as
its 13 characters. Without ``<|unk|>`` (an alphabet built without specials) an unknown character is
an error. ``decode`` writes ``<|unk|>`` as U+FFFD, the replacement character (what a UTF-8 decoder
writes for a byte it cannot read), so every id but end-of-text decodes to one character; end-of-text
decodes to its string, as in GPT-2.

File format (``save``/``load``): a JSON object
``{"format": "numpy_gpt-char", "version": 1, "chars": ["\\n", " ", "!", ...], "special_tokens":
["<|endoftext|>", "<|unk|>"]}``, where the id of a character is its position in ``chars`` and the
special tokens follow (ids ``len(chars)``, ``len(chars) + 1``, ...); ``special_tokens`` may be absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from numpy_gpt.fileio import write_text_atomic

_FORMAT = "numpy_gpt-char"
ENDOFTEXT = "<|endoftext|>"                     # the same string as GPT-2's end-of-text token
UNKNOWN = "<|unk|>"                             # the book's chapter 2.4 name for an unknown word
CHAR_SPECIALS = (ENDOFTEXT, UNKNOWN)            # what `numpy-gpt pretrain` adds to a character alphabet
REPLACEMENT = "\ufffd"                          # how <|unk|> decodes


class CharTokenizer:
    """Maps each character of a fixed alphabet to its index; special tokens get the ids after it.

    ``special_tokens`` are strings (e.g. ``CHAR_SPECIALS``) with ids ``len(chars)``, ``len(chars) + 1``,
    ... in order. A character outside the alphabet encodes as ``<|unk|>`` when that special token
    exists, and raises ValueError otherwise.
    """

    def __init__(self, chars: Sequence[str], special_tokens: Sequence[str] = ()) -> None:
        chars, special_tokens = list(chars), list(special_tokens)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer needs a non-empty sequence of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the alphabet lists a character twice")
        if any(not isinstance(t, str) or not t for t in special_tokens) or len(set(special_tokens)) != len(
                special_tokens):
            raise ValueError("CharTokenizer: special tokens must be distinct non-empty strings")
        self.chars = chars
        self.special_tokens = special_tokens
        self.stoi = {c: i for i, c in enumerate(chars)}
        self.special_ids = {t: len(chars) + i for i, t in enumerate(special_tokens)}

    @classmethod
    def from_text(cls, text: str, special_tokens: Sequence[str] = ()) -> CharTokenizer:
        """The alphabet is the sorted set of characters of ``text`` (as nanoGPT's prepare.py)."""
        if not text:
            raise ValueError("CharTokenizer.from_text needs a non-empty text")
        return cls(sorted(set(text)), special_tokens)

    @property
    def n_vocab(self) -> int:
        return len(self.chars) + len(self.special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.n_vocab

    @property
    def eot_token(self) -> int | None:
        """The id of ``<|endoftext|>``, or None when this tokenizer has none."""
        return self.special_ids.get(ENDOFTEXT)

    @property
    def unk_token(self) -> int | None:
        """The id unknown characters encode to (``<|unk|>``), or None: then they are an error."""
        return self.special_ids.get(UNKNOWN)

    def encode(self, text: str) -> list[int]:
        stoi, unk = self.stoi, self.unk_token
        if unk is not None:
            return [stoi.get(c, unk) for c in text]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in stoi})
            raise ValueError(f"characters {unknown[:20]!r} are not in this tokenizer's alphabet of "
                             f"{len(self.chars)}; build it from a text that contains them") from None

    def decode(self, ids: Iterable[int]) -> str:
        pieces = self.chars + [REPLACEMENT if t == UNKNOWN else t for t in self.special_tokens]  # id -> text
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(pieces)]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside 0..{len(pieces) - 1}")
        return "".join([pieces[i] for i in ids])

    def save(self, path: str | Path) -> None:
        """Write the alphabet as JSON (see the module docstring), atomically."""
        data = {"format": _FORMAT, "version": 1, "chars": self.chars}
        if self.special_tokens:
            data["special_tokens"] = self.special_tokens
        write_text_atomic(path, json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a CharTokenizer file (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("version") != 1:
            raise ValueError(f"{path} is not a CharTokenizer file: expected "
                             f'{{"format": "{_FORMAT}", "version": 1, "chars": [...]}}')
        try:
            return cls(data.get("chars") or [], data.get("special_tokens") or [])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
