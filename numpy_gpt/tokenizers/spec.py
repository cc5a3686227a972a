"""Tokenizer descriptions stored in checkpoints: built, checked and turned back into tokenizers.

Chapter 5 saves a model; to generate text with it later you also need the tokenizer it was trained
with. A numpy_gpt checkpoint records it in ``extra["tokenizer"]`` as a small JSON document, so the
``.npz`` file is all ``numpy-gpt generate`` needs (a safetensors file written by ``convert`` keeps
the same document in its metadata). One schema for every model numpy_gpt writes:

    {"kind": "gpt2"}                                      GPT-2's tokenizer (its files are read from
                                                          the data folder, downloaded once)
    {"kind": "char", "chars": ["\\n", " ", "A", ...],     a character tokenizer: its alphabet and
     "special_tokens": ["<|endoftext|>", "<|unk|>"]}      the special tokens after it (optional)
    {"kind": "bpe", "pattern": "gpt2",                    a BPE trained here (train_bpe.py): its
     "byte_ids": [256 ids], "merges": [[l, r], ...],      merges, byte ids and special tokens
     "special_tokens": {"<|endoftext|>": 1023}}
    {"kind": "wordpiece", "vocab": ["[PAD]", ...],        BERT's WordPiece (the encoder's, from
     "lowercase": true, "strip_accents": null}            pretrain-mlm): the vocabulary in id order
    {"kind": "hf", "tokenizer_json": "{...}",             a Hugging Face tokenizer (hf_json.py): its
     "tokenizer_config": {"chat_template": ...,           tokenizer.json as text, rebuilt through the
                          "bos_token": ..., ...}}         file's checks; chat template, bos, eos

``model_files.checkpoint_tokenizer`` is the one way from a checkpoint to its tokenizer; it reads
this document (and the encoder's older ``extra["wordpiece"]``, which had no "kind").

A checkpoint may come from anywhere, so a description is data and never code. The one part that
would be executable, the pre-tokenization regular expression, is stored by *name* (a key of
``KNOWN_PATTERNS``): a regex read from a file could backtrack catastrophically and hang ``generate``
on the prompt. Unknown names are refused; an older checkpoint that stored the pattern itself still
loads when that text is exactly a known pattern. Every other field is checked too (types, counts,
ids), and the vocabulary a spec describes is bounded before any token's bytes are built: a merge
list that doubles a token's length at each step would otherwise ask for 2**n bytes.
"""

from __future__ import annotations

import os
from typing import Any

from numpy_gpt.tokenizers.bpe import NAMED_PATTERNS

# Pre-tokenization patterns a spec may name (GPT-2's, Llama 3's, Qwen2's). GPT-2's is also the one
# BPETokenizer.train uses.
KNOWN_PATTERNS = NAMED_PATTERNS
KINDS = ("char", "bpe", "gpt2", "wordpiece", "hf")
MAX_CHARS = 1 << 20               # alphabet of a character tokenizer (Unicode has ~1.1 million)
MAX_MERGES = 1 << 20              # GPT-2 has 50,000; cl100k about 100,000
MAX_SPECIAL_TOKENS = 1 << 12
MAX_TOKEN_BYTES = 1 << 12         # GPT-2's longest token is 128 bytes
MAX_VOCAB = 1 << 20               # a WordPiece vocabulary (bert-base-uncased has 30,522)
_FIELDS = {"char": {"kind", "chars", "special_tokens"},
           "bpe": {"kind", "pattern", "byte_ids", "merges", "special_tokens"}, "gpt2": {"kind"},
           "wordpiece": {"kind", "vocab", "lowercase", "strip_accents"},
           "hf": {"kind", "tokenizer_json", "tokenizer_config"}}
_OPTIONAL = {"char": {"special_tokens"}, "wordpiece": {"strip_accents"}, "hf": {"tokenizer_config"}}
_HF_CONFIG_KEYS = ("chat_template", "bos_token", "eos_token")


class TokenizerSpecError(ValueError):
    """A tokenizer description that is malformed, or names a pattern or kind numpy_gpt does not know."""


def pattern_name(pattern: str) -> str:
    """The ``KNOWN_PATTERNS`` name of a pre-tokenization regex, or TokenizerSpecError."""
    for name, known in KNOWN_PATTERNS.items():
        if pattern == known:
            return name
    raise TokenizerSpecError(f"the pre-tokenization pattern {pattern!r:.80} is not one numpy_gpt knows "
                             f"({sorted(KNOWN_PATTERNS)}); a checkpoint records patterns by name only")


def tokenizer_spec(tokenizer) -> dict[str, Any]:
    """The JSON description of ``tokenizer`` that ``tokenizer_from_spec`` rebuilds it from."""
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    from numpy_gpt.tokenizers.char import CharTokenizer
    from numpy_gpt.tokenizers.hf_json import HFTokenizer
    from numpy_gpt.tokenizers.train_bpe import BPETokenizer
    from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer

    if isinstance(tokenizer, CharTokenizer):
        spec = {"kind": "char", "chars": list(tokenizer.chars)}
        if tokenizer.special_tokens:                      # older specs have none: keep them unchanged
            spec["special_tokens"] = list(tokenizer.special_tokens)
        return spec
    if isinstance(tokenizer, BPETokenizer):
        return {"kind": "bpe", "pattern": pattern_name(tokenizer.pattern),
                "byte_ids": list(tokenizer.byte_ids), "merges": [list(pair) for pair in tokenizer.merges],
                "special_tokens": tokenizer.special_tokens}
    if isinstance(tokenizer, GPT2Tokenizer):
        return {"kind": "gpt2"}
    if isinstance(tokenizer, WordPieceTokenizer):
        return {"kind": "wordpiece", "vocab": list(tokenizer.inverse), "lowercase": bool(tokenizer.lowercase),
                "strip_accents": tokenizer.strip_accents}
    if isinstance(tokenizer, HFTokenizer):
        return {"kind": "hf", "tokenizer_json": tokenizer.tokenizer_json,
                "tokenizer_config": {key: getattr(tokenizer, key) for key in _HF_CONFIG_KEYS}}
    raise TypeError(f"cannot record a {type(tokenizer).__name__} in a checkpoint")


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_tokenizer_spec(spec: object, where: str = "the tokenizer spec") -> dict[str, Any]:
    """Check every field of a tokenizer description; return it normalised (a BPE pattern as its
    name, merges as tuples). ``where`` names the file in the error messages."""
    def fail(problem: str) -> TokenizerSpecError:
        return TokenizerSpecError(f"{where}: {problem}")

    if not isinstance(spec, dict):
        raise fail(f"expected a JSON object with a 'kind' ({', '.join(KINDS)}), got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise fail(f"unknown tokenizer kind {kind!r:.80}; expected one of {list(KINDS)}")
    optional = _OPTIONAL.get(kind, set())
    if not _FIELDS[kind] - optional <= set(spec) <= _FIELDS[kind]:
        raise fail(f"a {kind!r} tokenizer has the fields {sorted(_FIELDS[kind] - optional)}"
                   f"{f' (and optionally {sorted(optional)})' if optional else ''}, got "
                   f"{sorted(map(str, spec))[:10]}")
    if kind == "gpt2":
        return {"kind": "gpt2"}
    if kind == "char":
        chars = spec["chars"]
        if not isinstance(chars, list) or not 0 < len(chars) <= MAX_CHARS or not all(
                isinstance(c, str) and len(c) == 1 for c in chars) or len(set(chars)) != len(chars):
            raise fail(f"'chars' must be a list of 1 to {MAX_CHARS:,} distinct single characters")
        specials = spec.get("special_tokens", [])
        if not isinstance(specials, list) or len(specials) > MAX_SPECIAL_TOKENS or not all(
                isinstance(t, str) and t for t in specials) or len(set(specials)) != len(specials):
            raise fail(f"'special_tokens' must be a list of at most {MAX_SPECIAL_TOKENS} distinct non-empty "
                       f"strings (their ids follow the alphabet's)")
        return {"kind": "char", "chars": chars, "special_tokens": specials}
    if kind == "wordpiece":
        vocab = spec["vocab"]
        if not isinstance(vocab, list) or not 0 < len(vocab) <= MAX_VOCAB or not all(
                isinstance(t, str) and t and len(t) <= MAX_TOKEN_BYTES for t in vocab):
            raise fail(f"'vocab' must be a list of 1 to {MAX_VOCAB:,} non-empty tokens (the WordPiece "
                       f"vocabulary in id order)")
        strip_accents = spec.get("strip_accents")
        if not isinstance(spec["lowercase"], bool) or strip_accents not in (None, True, False):
            raise fail("'lowercase' must be true or false, 'strip_accents' true, false or null")
        return {"kind": "wordpiece", "vocab": vocab, "lowercase": spec["lowercase"],
                "strip_accents": strip_accents}
    if kind == "hf":       # the tokenizer.json itself is checked field by field when it is read
        from numpy_gpt.tokenizers.hf_json import MAX_FILE_BYTES
        config = spec.get("tokenizer_config", {})
        if not isinstance(spec["tokenizer_json"], str) or len(spec["tokenizer_json"]) > MAX_FILE_BYTES:
            raise fail(f"'tokenizer_json' must be the text of a tokenizer.json (at most {MAX_FILE_BYTES:,} "
                       f"characters)")
        if not isinstance(config, dict) or not set(config) <= set(_HF_CONFIG_KEYS) or not all(
                value is None or isinstance(value, str) for value in config.values()):
            raise fail(f"'tokenizer_config' must map some of {list(_HF_CONFIG_KEYS)} to strings or null")
        return {"kind": "hf", "tokenizer_json": spec["tokenizer_json"], "tokenizer_config": config}

    pattern = spec["pattern"]
    if not isinstance(pattern, str):
        raise fail("'pattern' must be the name of a known pre-tokenization pattern")
    if pattern not in KNOWN_PATTERNS:
        try:
            pattern = pattern_name(pattern)            # an older checkpoint that stored the text itself
        except TokenizerSpecError as err:
            raise fail(str(err)) from None
    byte_ids = spec["byte_ids"]
    if not isinstance(byte_ids, list) or sorted(i for i in byte_ids if _is_id(i)) != list(range(256)):
        raise fail("'byte_ids' must list the ids 0..255, each once (the id of byte value 0, 1, ..., 255)")
    merges = spec["merges"]
    if not isinstance(merges, list) or len(merges) > MAX_MERGES:
        raise fail(f"'merges' must be a list of at most {MAX_MERGES:,} [left id, right id] pairs")
    lengths = [1] * 256                                 # byte length of each token, by id
    for i, pair in enumerate(merges):
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_id(t) for t in pair)
                and max(pair) < 256 + i):
            raise fail(f"merge #{i} must be a pair of ids made before it (below {256 + i}), got "
                       f"{pair!r:.80}")
        lengths.append(lengths[pair[0]] + lengths[pair[1]])
        if lengths[-1] > MAX_TOKEN_BYTES:
            raise fail(f"merge #{i} makes a token of {lengths[-1]:,} bytes; tokens are at most "
                       f"{MAX_TOKEN_BYTES:,} bytes long")
    specials = spec["special_tokens"]
    n_bpe = 256 + len(merges)
    if not isinstance(specials, dict) or len(specials) > MAX_SPECIAL_TOKENS or not all(
            isinstance(token, str) and token and _is_id(i) and n_bpe <= i < n_bpe + MAX_SPECIAL_TOKENS
            for token, i in specials.items()) or len(set(specials.values())) != len(specials):
        raise fail(f"'special_tokens' must map at most {MAX_SPECIAL_TOKENS} non-empty strings to distinct "
                   f"ids from {n_bpe} (just after the BPE ids) up")
    return {"kind": "bpe", "pattern": pattern, "byte_ids": byte_ids,
            "merges": [tuple(pair) for pair in merges], "special_tokens": specials}


def tokenizer_from_spec(spec: object, data_dir: str | os.PathLike = "data", *,
                        where: str = "the tokenizer spec", vocab_dir: str | os.PathLike | None = None):
    """Rebuild the tokenizer a (checked) description stands for. GPT-2's is read from ``vocab_dir``
    when given (nothing is downloaded), else from ``data_dir/gpt2``, downloaded there once."""
    spec = check_tokenizer_spec(spec, where)
    if spec["kind"] == "char":
        from numpy_gpt.tokenizers.char import CharTokenizer
        return CharTokenizer(spec["chars"], spec["special_tokens"])
    if spec["kind"] == "bpe":
        from numpy_gpt.tokenizers.train_bpe import BPETokenizer
        return BPETokenizer(spec["merges"], spec["special_tokens"], KNOWN_PATTERNS[spec["pattern"]],
                            spec["byte_ids"])
    if spec["kind"] == "wordpiece":
        from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer
        try:
            return WordPieceTokenizer(spec["vocab"], spec["lowercase"], spec["strip_accents"])
        except ValueError as err:
            raise TokenizerSpecError(f"{where}: the WordPiece vocabulary is invalid: {err}") from None
    if spec["kind"] == "hf":
        from numpy_gpt.tokenizers.hf_json import HFTokenizer
        try:
            return HFTokenizer.from_json(spec["tokenizer_json"], spec["tokenizer_config"],
                                         where=f"{where}, tokenizer_json")
        except ValueError as err:
            raise TokenizerSpecError(str(err)) from None
    from numpy_gpt.corpora import get_gpt2_tokenizer
    return get_gpt2_tokenizer(data_dir, vocab_dir=vocab_dir)
