"""The book's first tokenizers: words and punctuation mapped to ids (chapter 2.2-2.4).

Text is split with a regular expression at punctuation (``, . : ; ? _ ! " ( ) '``), at ``--`` and at
whitespace; the pieces that are not blank are the tokens. The vocabulary is every distinct token of a
training text, sorted, numbered from 0 (``build_vocab``; "The Verdict" gives 1,130 tokens).

* ``SimpleTokenizerV1`` raises KeyError on a word it has never seen.
* ``SimpleTokenizerV2`` adds two special tokens, ``<|endoftext|>`` (between documents) and
  ``<|unk|>`` (any unknown word), at the end of the vocabulary.

``decode`` joins the tokens with spaces and removes the space before ``, . ? ! " ( ) '``, so the original
spacing is not kept: ``encode(decode(ids)) == ids`` holds, ``decode(encode(text)) == text`` only for
text already spaced that way. The byte-level BPE (bpe.py) fixes both weaknesses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

ENDOFTEXT = "<|endoftext|>"
UNK = "<|unk|>"

_SPLIT = re.compile(r'([,.:;?_!"()\']|--|\s)')
_SPACE_BEFORE_PUNCTUATION = re.compile(r'\s+([,.?!"()\'])')


def tokenize(text: str) -> list[str]:
    """Split ``text`` into the book's word and punctuation tokens (whitespace dropped)."""
    return [item.strip() for item in _SPLIT.split(text) if item.strip()]


def build_vocab(text: str, special_tokens: Iterable[str] = ()) -> dict[str, int]:
    """Token -> id for every distinct token of ``text`` in sorted order, then ``special_tokens``."""
    all_tokens = sorted(set(tokenize(text)))
    all_tokens.extend(token for token in special_tokens if token not in all_tokens)
    return {token: i for i, token in enumerate(all_tokens)}


class SimpleTokenizerV1:
    """Word-level tokenizer over a fixed vocabulary; unknown words raise KeyError."""

    def __init__(self, vocab: Mapping[str, int]) -> None:
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in self.str_to_int.items()}
        if len(self.int_to_str) != len(self.str_to_int):
            raise ValueError("the vocabulary maps two tokens to the same id")

    @classmethod
    def from_text(cls, text: str) -> SimpleTokenizerV1:
        """A tokenizer whose vocabulary is every token of ``text``."""
        return cls(build_vocab(text))

    @property
    def n_vocab(self) -> int:
        return len(self.str_to_int)

    @property
    def vocab_size(self) -> int:
        return self.n_vocab

    def encode(self, text: str) -> list[int]:
        ids = []
        for token in tokenize(text):
            if token not in self.str_to_int:
                raise KeyError(f"{token!r} is not in the vocabulary ({self.n_vocab} tokens); "
                               f"SimpleTokenizerV2 maps unknown words to {UNK}")
            ids.append(self.str_to_int[token])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        try:
            text = " ".join(self.int_to_str[int(i)] for i in ids)
        except KeyError as exc:
            raise ValueError(f"token id {exc.args[0]} is not in the vocabulary (ids 0..{self.n_vocab - 1})"
                             ) from None
        return _SPACE_BEFORE_PUNCTUATION.sub(r"\1", text)


class SimpleTokenizerV2(SimpleTokenizerV1):
    """Word-level tokenizer with ``<|unk|>`` for unknown words and ``<|endoftext|>`` between texts."""

    def __init__(self, vocab: Mapping[str, int]) -> None:
        super().__init__(vocab)
        missing = [token for token in (ENDOFTEXT, UNK) if token not in self.str_to_int]
        if missing:
            raise ValueError(f"SimpleTokenizerV2 needs {missing} in its vocabulary; build it with "
                             f"build_vocab(text, special_tokens=['{ENDOFTEXT}', '{UNK}'])")

    @classmethod
    def from_text(cls, text: str) -> SimpleTokenizerV2:
        """A tokenizer whose vocabulary is every token of ``text`` plus ``<|endoftext|>``, ``<|unk|>``."""
        return cls(build_vocab(text, special_tokens=(ENDOFTEXT, UNK)))

    @property
    def eot_token(self) -> int:
        return self.str_to_int[ENDOFTEXT]

    @property
    def unk_token(self) -> int:
        return self.str_to_int[UNK]

    def encode(self, text: str) -> list[int]:
        unk = self.unk_token
        return [self.str_to_int.get(token, unk) for token in tokenize(text)]
