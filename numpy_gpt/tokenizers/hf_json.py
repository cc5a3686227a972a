"""Hugging Face ``tokenizer.json`` files (byte-level BPE), read without ``tokenizers`` or ``transformers``.

A model folder from the Hugging Face Hub (GPT-2, Llama 3, Qwen2/2.5/3, SmolLM2) carries its tokenizer
as one JSON file, which the Rust library ``tokenizers`` runs as a pipeline:

    added_tokens    cut out of the text first and encoded by id (<|im_start|>, <think>, ...)
    normalizer      nothing, or Unicode NFC (Qwen)
    pre_tokenizer   the text cut into chunks: a Split by the model's own regex (Llama 3's, Qwen's),
                    Digits (SmolLM2: each digit alone), then ByteLevel (GPT-2's regex when
                    ``use_regex``, a space before each chunk when ``add_prefix_space``)
    model           BPE: ``vocab`` (token -> id) and ``merges`` (pairs, in the order they apply),
                    both written in GPT-2's printable byte alphabet (bpe.bytes_to_unicode: "Ġ" = space)
    post_processor  tokens put around the text on request (Llama 3's <|begin_of_text|>)
    decoder         ByteLevel: tokens back to bytes, bytes to text (invalid UTF-8 -> U+FFFD)

``load_hf_tokenizer`` reads such a file into bpe.py's engine, ``ByteLevelBPE``, given the merge list
so that it joins pairs by Hugging Face's rule. The tests train tokenizer.json files with
``tokenizers`` and check that the ids and the decoded text are identical, over mixed scripts and
random Unicode. How ``HFTokenizer`` answers where the two libraries' conventions differ:

* ``encode(text)`` returns the ids of the text alone, as every numpy_gpt tokenizer does;
  ``encode(text, add_special_tokens=True)`` adds the post-processor's tokens, like ``tokenizers``'
  default (Llama 3 then starts with <|begin_of_text|>). A chat template writes them itself.
* Special added tokens follow tiktoken's rule (bpe.py): they become their ids only when allowed
  (``allowed_special="all"`` equals ``tokenizers``), and text that merely looks like one raises by
  default. Non-special added tokens (Qwen3's <think>) are vocabulary: always cut out, as in
  ``tokenizers``.
* ``decode`` keeps special tokens (``tokenizers``' ``skip_special_tokens=False``) and raises on an id
  outside the vocabulary (``tokenizers`` skips it).
* A Python string may hold lone surrogates; ``tokenizers`` refuses them (TypeError), this encodes each
  as U+FFFD, as tiktoken and GPT2Tokenizer do.
* NFC is Python's ``unicodedata`` with the later characters that tokenizers' Unicode 9 tables do not
  know left alone (unicode16.tokenizers_nfc). Measured with Python 3.11 (Unicode 14): a Python with
  Unicode 16 may compose a few letters of that version's new scripts that tokenizers leaves apart.

A tokenizer.json may come from anywhere, so it is data, never code. Its one executable part, the
Split regex, is compiled only when its text is exactly one of the patterns numpy_gpt knows (GPT-2's,
Llama 3's, Qwen2's: ``bpe.NAMED_PATTERNS``); Split by a literal string and Digits need no regex of
the file's. Anything else this module does not implement is refused with one line naming the file
and the field: other models (WordPiece, Unigram), BPE that is not byte-level (SentencePiece-style
``byte_fallback``, Metaspace), other normalizers, pre-tokenizers, decoders and post-processors, BPE
dropout, added tokens with ``lstrip``/``rstrip``/``single_word``. Sizes are checked before anything
is built from them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import regex

from numpy_gpt.tokenizers.bpe import (
    GPT2_ORIGINAL_PATTERN,
    GPT2_PATTERN,
    NAMED_PATTERNS,
    ByteLevelBPE,
    PreTokenizer,
    bytes_to_unicode,
)
from numpy_gpt.tokenizers.unicode16 import tokenizers_nfc

MAX_FILE_BYTES = 64 << 20         # Llama 3's tokenizer.json is 9 MB, Qwen's 7 MB
MAX_CONFIG_BYTES = 4 << 20        # tokenizer_config.json (Qwen3's is 10 kB, chat template included)
MAX_VOCAB = 1 << 21               # ids and entries (Llama 3: 128,256; Qwen: 151,669)
MAX_ADDED_TOKENS = 1 << 16
MAX_ADDED_CHARS = 1 << 18         # all added tokens together: they are compiled into one regex
MAX_MERGES = 1 << 20              # Llama 3 has 280,147
MAX_TOKEN_CHARS = 1 << 12         # a token of the vocab, or an added token
# The Split regexes a tokenizer.json may carry, as tokenizers writes them -> the pattern the engine
# runs (for GPT-2's as OpenAI wrote it, tiktoken's equivalent form).
HF_PATTERNS = {GPT2_ORIGINAL_PATTERN: GPT2_PATTERN, **{text: text for text in NAMED_PATTERNS.values()}}
# The Digits pre-tokenizer cuts at Rust's char::is_numeric: Unicode 16's numbers and 13 of those new in
# Unicode 17 (tests/test_hf_tokenizer.py checks every code point against tokenizers).
DIGIT = r"[\p{N}\U00011DE0-\U00011DE9\U00016FF4-\U00016FF6]"
# Reading a byte-level token string as bytes: each of the 256 characters becomes the byte it stands for
# (translated to the Latin-1 character of that byte, then encoded); any other character means the
# string is no byte-level token.
_BYTE_ALPHABET = bytes_to_unicode()
_AS_LATIN1 = str.maketrans({ch: chr(b) for b, ch in _BYTE_ALPHABET.items()})
_NOT_BYTE_LEVEL = regex.compile(f"[^{regex.escape(''.join(_BYTE_ALPHABET.values()))}]")
_PREFIX_SPACE = "prefix space"   # a pipeline step: a space before every chunk that lacks one


class HFTokenizerError(ValueError):
    """A tokenizer.json or tokenizer_config.json that is malformed or uses what numpy_gpt does not support."""


def load_hf_tokenizer(path: str | os.PathLike) -> HFTokenizer:
    """The tokenizer of a Hugging Face model folder (or of one ``tokenizer.json`` file).

    From the folder it also reads ``tokenizer_config.json`` (the chat template, ``bos_token``,
    ``eos_token``) and ``chat_template.jinja`` when present.
    """
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    text = _read_bounded(file, MAX_FILE_BYTES, "a model's tokenizer.json")
    return HFTokenizer.from_json(text, read_tokenizer_config(file.parent), where=str(file))


def read_tokenizer_config(folder: str | os.PathLike) -> dict[str, str | None]:
    """``chat_template``, ``bos_token`` and ``eos_token`` from a model folder (each None when absent).

    The chat template is ``chat_template.jinja`` if the folder has one (transformers writes it there
    since 4.43), else ``tokenizer_config.json``'s ``chat_template`` (the one named "default" when it
    holds several).
    """
    folder = Path(folder)
    config: dict[str, str | None] = {"chat_template": None, "bos_token": None, "eos_token": None}
    file = folder / "tokenizer_config.json"
    if file.is_file():
        document = _parse_json(_read_bounded(file, MAX_CONFIG_BYTES, "tokenizer_config.json"), str(file))
        if not isinstance(document, dict):
            raise HFTokenizerError(f"{file}: expected a JSON object")
        for key in ("bos_token", "eos_token"):
            value = document.get(key)
            if isinstance(value, dict):                      # an AddedToken written out in full
                value = value.get("content")
            if value is not None and not isinstance(value, str):
                raise HFTokenizerError(f"{file}: {key} must be a string, got {value!r:.80}")
            config[key] = value
        config["chat_template"] = _default_template(document.get("chat_template"), file)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        config["chat_template"] = _read_bounded(jinja, MAX_CONFIG_BYTES, "chat_template.jinja")
    return config


def _default_template(value: object, file: Path) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):                               # [{"name": ..., "template": ...}, ...]
        for entry in value:
            if isinstance(entry, dict) and entry.get("name") == "default" and isinstance(
                    entry.get("template"), str):
                return entry["template"]
        return None
    raise HFTokenizerError(f"{file}: chat_template must be a string or a list of named templates")


def _read_bounded(file: Path, limit: int, what: str) -> str:
    try:
        size = file.stat().st_size
        if size > limit:
            raise HFTokenizerError(f"{file} is {size:,} bytes; {what} may take at most {limit:,}")
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HFTokenizerError(f"cannot read {file} as {what}: {exc}") from None


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise HFTokenizerError(f"{where} is not valid JSON: {str(exc)[:100]}") from None


def _token_bytes(token: str) -> bytes | None:
    """The bytes a byte-level token string stands for ("Ġthe" -> b" the"), None if it is not one."""
    return None if _NOT_BYTE_LEVEL.search(token) else token.translate(_AS_LATIN1).encode("latin-1")


def _decoded_bytes(content: str) -> bytes:
    """What tokenizers' ByteLevel decoder makes of an added token: its byte-level reading when every
    character is in the byte alphabet ("ĠX" -> b" X"), else its UTF-8 text."""
    data = _token_bytes(content)
    return content.encode("utf-8") if data is None else data


class _Pipeline:
    """A tokenizer.json's pre-tokenizer: steps applied in order, each cutting every chunk further.

    A step is a ``PreTokenizer`` (its matches and the text between them become chunks: tokenizers'
    "Isolated" split) or ``_PREFIX_SPACE`` (ByteLevel's ``add_prefix_space``).
    """

    def __init__(self, steps: Sequence[PreTokenizer | str]) -> None:
        self.steps = list(steps)

    def findall(self, text: str) -> list[str]:
        chunks = [text] if text else []
        for step in self.steps:
            if step == _PREFIX_SPACE:
                chunks = [c if c.startswith(" ") else " " + c for c in chunks]
            else:
                chunks = [piece for chunk in chunks for piece in step.split(chunk)]
        return chunks


class HFTokenizer(ByteLevelBPE):
    """A Hugging Face byte-level BPE tokenizer (see the module docstring for where it departs from
    ``tokenizers``' conventions, and why). Build it with ``load_hf_tokenizer`` or ``from_json``.

    Attributes beyond ``ByteLevelBPE``'s: ``added_tokens`` (non-special added token -> id),
    ``prefix_ids`` and ``suffix_ids`` (what ``add_special_tokens=True`` puts around the text),
    ``chat_template``, ``bos_token``, ``eos_token`` (from tokenizer_config.json, or None), and
    ``tokenizer_json``, the file's content (what a numpy_gpt checkpoint stores).
    """

    def __init__(self, vocab: Mapping[int, bytes], merges: Sequence[tuple[int, int]], *,
                 special_tokens: Mapping[str, int], added_tokens: Mapping[str, int],
                 added_bytes: Mapping[int, bytes], pretokenizer: _Pipeline, ignore_merges: bool,
                 nfc: bool, prefix_ids: Sequence[int] = (), suffix_ids: Sequence[int] = (),
                 config: Mapping[str, str | None] | None = None, tokenizer_json: str = "",
                 name: str = "hf") -> None:
        super().__init__(vocab, special_tokens, name=name, merges=merges, ignore_merges=ignore_merges,
                         pretokenizer=pretokenizer)
        self.added_tokens = dict(added_tokens)
        self._decoder.update(added_bytes)          # special and added tokens decode as tokenizers does
        self._max_token_value = max([self._max_token_value, *added_bytes])
        longest_first = sorted(self.added_tokens, key=lambda s: (-len(s), s))
        self._added_pat = regex.compile("|".join(map(regex.escape, longest_first))) if longest_first else None
        self._nfc = nfc
        self.prefix_ids, self.suffix_ids = list(prefix_ids), list(suffix_ids)
        config = dict(config or {})
        self.chat_template: str | None = config.get("chat_template")
        self.bos_token: str | None = config.get("bos_token")
        self.eos_token: str | None = config.get("eos_token")
        self.tokenizer_json = tokenizer_json
        self._compiled_template = None

    @classmethod
    def from_json(cls, text: str, config: Mapping[str, str | None] | None = None, *,
                  where: str = "tokenizer.json") -> HFTokenizer:
        """Build the tokenizer a tokenizer.json's text describes (``where`` names it in errors);
        ``config`` is ``read_tokenizer_config``'s answer."""
        if not isinstance(text, str) or len(text) > MAX_FILE_BYTES:
            raise HFTokenizerError(f"{where}: expected the text of a tokenizer.json of at most "
                                   f"{MAX_FILE_BYTES:,} characters")
        document = _parse_json(text, where)
        fields = _Reader(where).read(document)
        # Stored minified: a checkpoint keeps it, and the indentation of a pretty-printed file is
        # most of its size.
        compact = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        try:
            return cls(**fields, config=config, tokenizer_json=compact)
        except ValueError as exc:                   # what ByteLevelBPE checks: merges, special ids
            raise HFTokenizerError(f"{where}: {exc}") from None

    # ---------------------------------------------------------------- the id of a token
    def token_to_id(self, token: str) -> int | None:
        """The id of an added or special token, or of a vocab token as tokenizer.json writes it
        ("Ġthe"); None if there is none."""
        found = self.added_tokens.get(token, self._special_tokens.get(token))
        data = _token_bytes(token) if found is None else None
        return found if data is None else self._ranks.get(data)

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.token_to_id(self.eos_token)

    @property
    def eot_token(self) -> int | None:
        """The id that ends a text (generation stops, fine-tuning pads with it): the model's
        ``eos_token`` (Llama 3 Instruct: <|eot_id|>), else <|endoftext|>'s id, else None."""
        eos = self.eos_token_id
        return eos if eos is not None else super().eot_token

    # ---------------------------------------------------------------- encoding
    def encode(self, text: str, *, allowed_special: Literal["all"] | frozenset[str] | set[str] = frozenset(),
               disallowed_special: Literal["all"] | frozenset[str] | set[str] = "all",
               add_special_tokens: bool = False) -> list[int]:
        """Text -> token ids (``ByteLevelBPE.encode``'s rules for special tokens). With
        ``add_special_tokens`` the post-processor's tokens go around them (``prefix_ids``,
        ``suffix_ids``), as ``tokenizers``' ``encode`` does by default."""
        ids = super().encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special)
        return [*self.prefix_ids, *ids, *self.suffix_ids] if add_special_tokens else ids

    def _encode_ordinary_into(self, text: str, ids: list[int]) -> None:
        """Cut out the non-special added tokens, normalise the text between them, then BPE it."""
        start = 0
        if self._added_pat is not None:
            for match in self._added_pat.finditer(text):
                self._encode_segment(text[start:match.start()], ids)
                ids.append(self.added_tokens[match.group()])
                start = match.end()
        self._encode_segment(text[start:], ids)

    def _encode_segment(self, text: str, ids: list[int]) -> None:
        if self._nfc:
            text = tokenizers_nfc(text)
        super()._encode_ordinary_into(text, ids)

    # ---------------------------------------------------------------- chat
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], *,
                            add_generation_prompt: bool = False, **context: Any) -> str:
        """The model's chat template rendered for ``messages`` (chat_template.py): the text to encode
        with ``allowed_special="all"``; ``add_generation_prompt=True`` ends it where the assistant's
        answer begins, as in transformers. Raises ChatTemplateError when the folder has no template or
        it uses what the renderer does not support; the caller then falls back to a plain prompt."""
        from numpy_gpt.tokenizers.chat_template import ChatTemplate, ChatTemplateError
        if self.chat_template is None:
            raise ChatTemplateError(f"{self.name}: the model folder has no chat template")
        if self._compiled_template is None:
            self._compiled_template = ChatTemplate(self.chat_template)
        return self._compiled_template.render(messages, add_generation_prompt=add_generation_prompt,
                                              bos_token=self.bos_token, eos_token=self.eos_token, **context)


class _Reader:
    """Checks a parsed tokenizer.json field by field and turns it into ``HFTokenizer``'s arguments."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, problem: str) -> HFTokenizerError:
        return HFTokenizerError(f"{self.where}: {field} {problem}")

    def read(self, document: object) -> dict[str, Any]:
        if not isinstance(document, dict):
            raise self.fail("(the whole file)", "must be a JSON object with a 'model'")
        model = document.get("model")
        if not isinstance(model, dict):
            raise self.fail("model", "is missing: not a tokenizers tokenizer.json")
        model_type = model.get("type", "BPE" if "merges" in model else None)
        if model_type != "BPE":
            raise self.fail("model.type", f"is {model_type!r:.40}; numpy_gpt reads byte-level BPE only "
                            f"(not WordPiece or Unigram tokenizers)")
        for field, allowed in (("dropout", (None,)), ("continuing_subword_prefix", (None, "")),
                               ("end_of_word_suffix", (None, "")), ("byte_fallback", (None, False))):
            if model.get(field) not in allowed:
                raise self.fail(f"model.{field}", f"is {model.get(field)!r:.40}; numpy_gpt reads byte-level "
                                f"BPE without it")
        ignore_merges = model.get("ignore_merges", False)
        if not isinstance(ignore_merges, bool):
            raise self.fail("model.ignore_merges", "must be true or false")
        added = self.added_tokens(document.get("added_tokens", []))
        vocab, vocab_ids = self.vocab(model.get("vocab"), {t["id"] for t in added if t["special"]})
        self.check_added_ids(added, vocab_ids)
        merges = self.merges(model.get("merges"), vocab_ids)
        nfc = self.normalizer(document.get("normalizer"))
        pipeline = self.pre_tokenizer(document.get("pre_tokenizer"))
        self.decoder(document.get("decoder"))
        by_content = {token["content"]: token["id"] for token in added}
        prefix_ids, suffix_ids = self.post_processor(document.get("post_processor"),
                                                     set(vocab) | {t["id"] for t in added})
        return {"vocab": vocab, "merges": merges, "ignore_merges": ignore_merges, "nfc": nfc,
                "pretokenizer": pipeline, "prefix_ids": prefix_ids, "suffix_ids": suffix_ids,
                "special_tokens": {t["content"]: t["id"] for t in added if t["special"]},
                "added_tokens": {t["content"]: t["id"] for t in added if not t["special"]},
                "added_bytes": {i: _decoded_bytes(content) for content, i in by_content.items()}}

    # -------------------------------------------------------------------- the parts
    def steps(self, part: object, field: str, key: str) -> list[Any]:
        """The parts a ``{"type": "Sequence", key: [...]}`` holds, or ``[part]`` for a single one."""
        if _type(part) != "Sequence":
            return [part]
        steps = part.get(key)
        if not isinstance(steps, list):
            raise self.fail(f"{field}.{key}", "must be a list")
        return steps

    def added_tokens(self, tokens: object) -> list[dict[str, Any]]:
        if not isinstance(tokens, list) or len(tokens) > MAX_ADDED_TOKENS:
            raise self.fail("added_tokens", f"must be a list of at most {MAX_ADDED_TOKENS:,} tokens")
        seen_contents: set[str] = set()
        for n, token in enumerate(tokens):
            field = f"added_tokens[{n}]"
            if not isinstance(token, dict) or not _is_id(token.get("id")) or token["id"] >= MAX_VOCAB or not (
                    isinstance(token.get("content"), str) and 0 < len(token["content"]) <= MAX_TOKEN_CHARS):
                raise self.fail(field, f"must have an integer 'id' below {MAX_VOCAB:,} and a non-empty "
                                f"'content' of at most {MAX_TOKEN_CHARS:,} characters")
            if not isinstance(token.get("special", False), bool):
                raise self.fail(f"{field}.special", "must be true or false")
            for flag in ("lstrip", "rstrip", "single_word"):
                if token.get(flag, False) is not False:
                    raise self.fail(f"{field}.{flag}", f"is set for {token['content']!r:.40}; numpy_gpt "
                                    f"supports added tokens matched exactly only")
            if token["content"] in seen_contents:
                raise self.fail(field, f"repeats an earlier added token ({token['content']!r:.40})")
            seen_contents.add(token["content"])
        if sum(map(len, seen_contents)) > MAX_ADDED_CHARS:
            raise self.fail("added_tokens", f"hold more than {MAX_ADDED_CHARS:,} characters in all")
        return [{"id": t["id"], "content": t["content"], "special": t.get("special", False)} for t in tokens]

    def check_added_ids(self, added: list[dict[str, Any]], vocab: dict[str, int]) -> None:
        """tokenizers does not take an added token's id from the file: the token keeps its vocab id,
        or gets the next free one (after the vocab, then after the last added token). A file whose ids
        disagree would load differently there; it is refused."""
        next_id = len(vocab)
        for n, token in enumerate(added):
            expected = vocab.get(token["content"])
            if expected is None:
                expected, next_id = next_id, next_id + 1
            elif expected >= next_id:
                next_id = expected + 1
            if token["id"] != expected:
                raise self.fail(f"added_tokens[{n}].id", f"is {token['id']}, but tokenizers gives "
                                f"{token['content']!r:.40} the id {expected}: the file is inconsistent")

    def vocab(self, vocab: object, special_ids: set[int]) -> tuple[dict[int, bytes], dict[str, int]]:
        """id -> bytes of the BPE tokens (special tokens found in the vocab are left to the special-token
        path), and the whole vocab as token string -> id (merges are written with those strings)."""
        if not isinstance(vocab, dict) or not 0 < len(vocab) <= MAX_VOCAB:
            raise self.fail("model.vocab", f"must be an object of 1 to {MAX_VOCAB:,} token -> id entries")
        token_bytes: dict[int, bytes] = {}
        seen: set[int] = set()
        for token, token_id in vocab.items():
            if not _is_id(token_id) or token_id >= MAX_VOCAB or token_id in seen:
                raise self.fail("model.vocab", f"gives {token!r:.40} the id {token_id!r:.20}; ids must be "
                                f"distinct integers in 0..{MAX_VOCAB - 1:,}")
            if len(token) > MAX_TOKEN_CHARS:
                raise self.fail("model.vocab", f"holds a token of {len(token):,} characters (at most "
                                f"{MAX_TOKEN_CHARS:,})")
            seen.add(token_id)
            if token_id in special_ids:
                continue
            data = _token_bytes(token)
            if data is None:
                raise self.fail("model.vocab", f"token {token!r:.40} (id {token_id}) is not written in the "
                                f"byte-level alphabet: not a byte-level BPE (pre_tokenizer ByteLevel)")
            token_bytes[token_id] = data
        present = set(token_bytes.values())
        missing = [b for b in range(256) if bytes([b]) not in present]
        if missing:
            raise self.fail("model.vocab", f"lacks the single-byte tokens of bytes {missing[:8]} "
                            f"({len(missing)} in all, special added tokens do not count); numpy_gpt needs "
                            f"all 256 (train with initial_alphabet=ByteLevel.alphabet())")
        return token_bytes, vocab

    def merges(self, merges: object, vocab: dict[str, int]) -> list[tuple[int, int]]:
        if not isinstance(merges, list) or len(merges) > MAX_MERGES:
            raise self.fail("model.merges", f"must be a list of at most {MAX_MERGES:,} pairs")
        pairs: list[tuple[int, int]] = []
        try:
            for merge in merges:
                left, right = merge.split(" ") if isinstance(merge, str) else merge if isinstance(
                    merge, list) else None
                vocab[left + right]                        # a KeyError unless the result is a token
                pairs.append((vocab[left], vocab[right]))
        except (KeyError, TypeError, ValueError, AttributeError):
            n = len(pairs)                                 # the merge that failed
            raise self.fail(f"model.merges[{n}]", f"is {merges[n]!r:.60}; a merge is two tokens of the vocab "
                            f"('a b' or [a, b]) whose concatenation is in the vocab too") from None
        return pairs

    def normalizer(self, normalizer: object) -> bool:
        """True for NFC; nothing else but no normalizer at all is supported."""
        kinds = [_type(step) for step in self.steps(normalizer, "normalizer", "normalizers")]
        if any(kind not in (None, "NFC") for kind in kinds):
            raise self.fail("normalizer", f"is {kinds!r:.80}; numpy_gpt supports none, or NFC")
        return "NFC" in kinds

    def pre_tokenizer(self, pre: object) -> _Pipeline:
        steps_json = self.steps(pre, "pre_tokenizer", "pretokenizers")
        if not steps_json:
            raise self.fail("pre_tokenizer", "is an empty Sequence; a byte-level BPE ends with ByteLevel")
        steps: list[PreTokenizer | str] = []
        for n, step in enumerate(steps_json):
            where = "pre_tokenizer" if step is pre else f"pre_tokenizer.pretokenizers[{n}]"
            kind, last = _type(step), n == len(steps_json) - 1
            if kind == "ByteLevel" and last:
                steps.extend(self.byte_level(step, where))
            elif kind == "Split" and not last:
                steps.append(self.split(step, where))
            elif kind == "Digits" and not last:
                individual = step.get("individual_digits", False)
                if not isinstance(individual, bool):
                    raise self.fail(f"{where}.individual_digits", "must be true or false")
                steps.append(PreTokenizer(DIGIT if individual else DIGIT + "+"))
            else:
                raise self.fail(where, f"is {kind!r:.40} at step {n + 1} of {len(steps_json)}; numpy_gpt "
                                f"supports Split and Digits, then a final ByteLevel (a byte-level BPE)")
        return _Pipeline(steps)

    def byte_level(self, step: dict[str, Any], where: str) -> list[PreTokenizer | str]:
        prefix, use_regex = step.get("add_prefix_space"), step.get("use_regex", True)
        if not isinstance(prefix, bool) or not isinstance(use_regex, bool):
            raise self.fail(where, "must give add_prefix_space (and use_regex) as true or false")
        return [*([_PREFIX_SPACE] if prefix else []), *([PreTokenizer(GPT2_PATTERN)] if use_regex else [])]

    def split(self, step: dict[str, Any], where: str) -> PreTokenizer:
        if step.get("behavior") != "Isolated" or step.get("invert", False) is not False:
            raise self.fail(f"{where}.behavior", f"is {step.get('behavior')!r:.40} (invert "
                            f"{step.get('invert')!r:.10}); numpy_gpt supports Isolated, not inverted")
        pattern = step.get("pattern")
        if isinstance(pattern, dict) and set(pattern) == {"String"} and isinstance(pattern["String"], str) \
                and 0 < len(pattern["String"]) <= MAX_TOKEN_CHARS:
            return PreTokenizer(regex.escape(pattern["String"]))
        if isinstance(pattern, dict) and set(pattern) == {"Regex"} and pattern["Regex"] in HF_PATTERNS:
            return PreTokenizer(HF_PATTERNS[pattern["Regex"]])
        raise self.fail(f"{where}.pattern", f"is {pattern!r:.80}; a regex from a file could hang on a "
                        f"crafted text, so numpy_gpt runs only the ones it knows "
                        f"({', '.join(NAMED_PATTERNS)}) and literal strings")

    def decoder(self, decoder: object) -> None:
        if [_type(step) for step in self.steps(decoder, "decoder", "decoders")] != ["ByteLevel"]:
            raise self.fail("decoder", f"is {decoder!r:.80}; numpy_gpt supports the ByteLevel decoder only")

    def post_processor(self, post: object, ids: set[int]) -> tuple[list[int], list[int]]:
        """The ids a single text gets before and after it (``add_special_tokens=True``)."""
        prefix: list[int] = []
        suffix: list[int] = []
        for step in self.steps(post, "post_processor", "processors"):
            kind = _type(step)
            if kind in (None, "ByteLevel"):                  # ByteLevel only trims offsets
                continue
            if kind in ("RobertaProcessing", "BertProcessing"):
                cls_, sep = step.get("cls"), step.get("sep")
                if not all(isinstance(p, list) and len(p) == 2 and p[1] in ids for p in (cls_, sep)):
                    raise self.fail(f"post_processor ({kind})", "must give cls and sep as [token, id]")
                prefix, suffix = [cls_[1]], [sep[1]]
            elif kind == "TemplateProcessing":
                prefix, suffix = self.template(step, ids)
            else:
                raise self.fail("post_processor", f"is {kind!r:.40}; numpy_gpt supports TemplateProcessing, "
                                f"RobertaProcessing, BertProcessing and ByteLevel")
        return prefix, suffix

    def template(self, step: dict[str, Any], ids: set[int]) -> tuple[list[int], list[int]]:
        single, specials = step.get("single"), step.get("special_tokens", {})
        field = "post_processor (TemplateProcessing).single"
        if not isinstance(single, list) or not isinstance(specials, dict):
            raise self.fail(field, "must be a list of SpecialToken and Sequence items")
        parts: tuple[list[int], list[int]] = ([], [])
        seen_sequence = 0
        for item in single:
            if isinstance(item, dict) and set(item) == {"Sequence"} and isinstance(item["Sequence"], dict) \
                    and item["Sequence"].get("id") == "A" and not seen_sequence:
                seen_sequence = 1
            elif isinstance(item, dict) and isinstance(item.get("SpecialToken"), dict) and len(item) == 1:
                name = item["SpecialToken"].get("id")
                entry = specials.get(name) if isinstance(name, str) else None
                token_ids = entry.get("ids") if isinstance(entry, dict) else None
                if not isinstance(token_ids, list) or not all(_is_id(i) and i in ids for i in token_ids):
                    raise self.fail(field, f"names the special token {name!r:.40}, whose ids are not in the "
                                    f"vocabulary or the added tokens")
                parts[seen_sequence].extend(token_ids)
            else:
                raise self.fail(field, f"holds {item!r:.60}; numpy_gpt supports special tokens around one "
                                f"sequence $A")
        if not seen_sequence:
            raise self.fail(field, "has no $A: where does the text go?")
        return parts


def _type(part: object) -> object:
    """A pipeline part's "type" (None for a missing part, the part itself when it is no JSON object)."""
    return part.get("type") if isinstance(part, dict) else part


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
