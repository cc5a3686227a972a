"""Character-level tokenizer: one id per distinct character of the training text.

This is the tokenizer of nanoGPT's tiny-Shakespeare baseline (65 characters), the quickest model to
train on a CPU: the vocabulary is so small that the output layer costs almost nothing, at the price of
sequences about four times longer than with GPT-2's BPE. It is not in the book, which goes straight
from words (simple.py) to BPE (bpe.py); it is here as the CPU-friendly end of that range.

File format (``save``/``load``): a JSON object
``{"format": "numpy_gpt-char", "version": 1, "chars": ["\\n", " ", "!", ...]}``, where the id of a
character is its position in ``chars``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from numpy_gpt.fileio import write_text_atomic

_FORMAT = "numpy_gpt-char"


class CharTokenizer:
    """Maps each character of a fixed alphabet to its index; characters outside it raise ValueError."""

    def __init__(self, chars: Sequence[str]) -> None:
        chars = list(chars)
        if not chars or any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("CharTokenizer needs a non-empty sequence of single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the alphabet lists a character twice")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """The alphabet is the sorted set of characters of ``text`` (as nanoGPT's prepare.py)."""
        if not text:
            raise ValueError("CharTokenizer.from_text needs a non-empty text")
        return cls(sorted(set(text)))

    @property
    def n_vocab(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return self.n_vocab

    def encode(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in stoi})
            raise ValueError(f"characters {unknown[:20]!r} are not in this tokenizer's alphabet of "
                             f"{self.n_vocab}; build it from a text that contains them") from None

    def decode(self, ids: Iterable[int]) -> str:
        chars = self.chars
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < len(chars)]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside 0..{len(chars) - 1}")
        return "".join([chars[i] for i in ids])

    def save(self, path: str | Path) -> None:
        """Write the alphabet as JSON (see the module docstring), atomically."""
        write_text_atomic(path, json.dumps({"format": _FORMAT, "version": 1, "chars": self.chars}))

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
            return cls(data.get("chars") or [])
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
