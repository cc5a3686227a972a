"""The tokenizer a fine-tuned model reads, and its end-of-text token (chapters 6 and 7, any model).

The book fine-tunes GPT-2, so it always encodes with GPT-2's tokenizer and pads with its end-of-text
id 50256. A model pretrained here may use another tokenizer (a character alphabet, or a BPE trained
on its corpus), and its token ids only mean something under that tokenizer. So every fine-tuning
command (finetune-spam, classify, finetune-instruct, chat, and preference tuning) asks
``tokenizer_for_checkpoint`` for the tokenizer the checkpoint records:

* a numpy_gpt ``.npz`` records it in ``extra["tokenizer"]`` (``tokenizers/spec.py``); a safetensors
  file in its metadata; an OpenAI folder is GPT-2's; a file that records none is taken to be GPT-2's
  (the vocabulary-size check of ``check_tokenizer_fits`` catches a wrong guess);
* starting from OpenAI's weights or a random model (``checkpoint=None``) means GPT-2's tokenizer.

Fine-tuning needs one special token, end-of-text: it pads a batch (chapter 6's ``SpamDataset``,
chapter 7's collate function) and ends an answer (generation stops at it). GPT-2 has it (50256), a
BPE trained here has it (the last id, ``BPETokenizer.train``), and ``numpy-gpt pretrain`` gives a
character alphabet ``<|endoftext|>`` and ``<|unk|>``. A checkpoint whose tokenizer lacks it (a
character model pretrained before that) cannot be fine-tuned: its model has no embedding row for the
token. The error says so and how to fix it (pretrain again).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GPT2_SPEC = {"kind": "gpt2"}


@dataclass(frozen=True)
class FinetuneTokenizer:
    """A tokenizer ready for fine-tuning: the tokenizer itself, the JSON description to record in the
    fine-tuned checkpoint (so classify and chat find it again), and the end-of-text id that pads and
    stops."""

    tokenizer: Any
    spec: dict[str, Any]
    eot_id: int

    @property
    def kind(self) -> str:
        return self.spec["kind"]


def checkpoint_tokenizer_spec(path: str | os.PathLike) -> dict[str, Any] | None:
    """The tokenizer description a checkpoint records, or None. A ``.npz`` is read without loading its
    weights (``read_checkpoint_meta``), so this works for classifier checkpoints too."""
    path = Path(path)
    if path.suffix == ".npz":
        from numpy_gpt.checkpoint import read_checkpoint_meta
        return (read_checkpoint_meta(path).get("extra") or {}).get("tokenizer")
    from numpy_gpt.gpt2.convert import read_tokenizer_spec
    return read_tokenizer_spec(path)


def gpt2_tokenizer(data_dir: str | os.PathLike = "data", vocab_dir: str | os.PathLike | None = None):
    """GPT-2's tokenizer: from ``vocab_dir``'s encoder.json and vocab.bpe when given (nothing is
    downloaded), else from ``data_dir/gpt2`` (downloaded there once)."""
    from numpy_gpt.corpora import get_gpt2_tokenizer
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    if vocab_dir is not None:
        vocab_dir = Path(vocab_dir)
        return GPT2Tokenizer.from_files(vocab_dir / "encoder.json", vocab_dir / "vocab.bpe")
    return get_gpt2_tokenizer(data_dir)


def tokenizer_for_checkpoint(checkpoint: str | os.PathLike | None = None, *,
                             data_dir: str | os.PathLike = "data",
                             vocab_dir: str | os.PathLike | None = None) -> FinetuneTokenizer:
    """The tokenizer to fine-tune (or run) the model of ``checkpoint`` with; GPT-2's when
    ``checkpoint`` is None (OpenAI's weights or a random model of GPT-2's vocabulary).

    GPT-2's vocabulary files come from ``vocab_dir`` or ``data_dir`` (see ``gpt2_tokenizer``); char
    and trained-BPE tokenizers are stored in the checkpoint itself. Raises ValueError when the
    tokenizer has no end-of-text token."""
    from numpy_gpt.tokenizers.spec import check_tokenizer_spec, tokenizer_from_spec, tokenizer_spec

    where = f"{checkpoint}" if checkpoint is not None else "GPT-2"
    recorded = None if checkpoint is None else checkpoint_tokenizer_spec(checkpoint)
    description = f"{where}'s tokenizer description"
    if recorded is None or check_tokenizer_spec(recorded, description)["kind"] == "gpt2":
        tokenizer, spec = gpt2_tokenizer(data_dir, vocab_dir), dict(GPT2_SPEC)
    else:
        tokenizer = tokenizer_from_spec(recorded, data_dir, where=description)
        spec = tokenizer_spec(tokenizer)
    eot_id = getattr(tokenizer, "eot_token", None)
    if eot_id is None:
        raise ValueError(f"{where}: its {spec['kind']} tokenizer has no <|endoftext|> token, which "
                         f"fine-tuning needs to pad batches and end answers (the model has no embedding "
                         f"for it). Checkpoints of `numpy-gpt pretrain` carry one since character "
                         f"alphabets got <|endoftext|> and <|unk|>: pretrain this model again")
    return FinetuneTokenizer(tokenizer, spec, int(eot_id))


def check_tokenizer_fits(tokens: FinetuneTokenizer, model, where: str = "the model") -> None:
    """A model must have an embedding row for every id its tokenizer produces: ValueError otherwise
    (e.g. a model of a 1,024-token BPE given GPT-2's 50,257 ids)."""
    vocab_size = model.cfg["vocab_size"]
    if tokens.tokenizer.n_vocab > vocab_size:
        raise ValueError(f"{where} has a vocabulary of {vocab_size:,} ids, but its {tokens.kind} tokenizer "
                         f"makes ids up to {tokens.tokenizer.n_vocab - 1:,}: the checkpoint does not record "
                         f"the tokenizer it was trained with (pass a checkpoint written by numpy-gpt)")
