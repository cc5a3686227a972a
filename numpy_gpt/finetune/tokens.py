"""The tokenizer a fine-tuned model reads, and its end-of-text token (chapters 6 and 7, any model).

The book fine-tunes GPT-2, so it always encodes with GPT-2's tokenizer and pads with its end-of-text
id 50256. A model pretrained here may use another tokenizer (a character alphabet, or a BPE trained
on its corpus), and its token ids only mean something under that tokenizer. So every fine-tuning
command (finetune-spam, classify, finetune-instruct, chat, and preference tuning) asks
``tokenizer_for_checkpoint`` for the tokenizer the checkpoint records:

* the tokenizer comes from ``model_files.checkpoint_tokenizer``, the one way from a checkpoint to
  its tokenizer (a numpy_gpt ``.npz`` or a safetensors file records it; an OpenAI folder, or a file
  of GPT-2's vocabulary that records none, is GPT-2's);
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
import warnings
from dataclasses import dataclass
from typing import Any

from numpy_gpt.corpora import get_gpt2_tokenizer
from numpy_gpt.model_files import ModelFile, checkpoint_tokenizer, read_model_file
from numpy_gpt.tokenizers.spec import tokenizer_spec

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


def tokenizer_for_checkpoint(checkpoint: str | os.PathLike | ModelFile | None = None, *,
                             data_dir: str | os.PathLike = "data",
                             vocab_dir: str | os.PathLike | None = None) -> FinetuneTokenizer:
    """The tokenizer to fine-tune (or run) the model of ``checkpoint`` (a path or a ``ModelFile``)
    with; GPT-2's when ``checkpoint`` is None (OpenAI's weights or a random model of GPT-2's vocabulary).

    ``model_files.checkpoint_tokenizer`` finds it (GPT-2's vocabulary files come from ``vocab_dir`` or
    ``data_dir``); this adds its end-of-text id. Raises ValueError when the tokenizer has none."""
    tokenizer = checkpoint_tokenizer(checkpoint, data_dir=data_dir, vocab_dir=vocab_dir)
    spec = tokenizer_spec(tokenizer)
    eot_id = getattr(tokenizer, "eot_token", None)
    if eot_id is None:
        where = "GPT-2" if checkpoint is None else getattr(checkpoint, "path", checkpoint)
        raise ValueError(f"{where}: its {spec['kind']} tokenizer has no <|endoftext|> token, which "
                         f"fine-tuning needs to pad batches and end answers (the model has no embedding "
                         f"for it). Checkpoints of `numpy-gpt pretrain` carry one since character "
                         f"alphabets got <|endoftext|> and <|unk|>: pretrain this model again")
    return FinetuneTokenizer(tokenizer, spec, int(eot_id))


def checkpoint_tokenizer_spec(path: str | os.PathLike) -> dict[str, Any] | None:
    """Kept for one release: use ``numpy_gpt.model_files.read_model_file(path).tokenizer_spec``."""
    warnings.warn("checkpoint_tokenizer_spec is deprecated: use numpy_gpt.model_files.read_model_file(path)"
                  ".tokenizer_spec", DeprecationWarning, stacklevel=2)
    return read_model_file(path).tokenizer_spec


def gpt2_tokenizer(data_dir: str | os.PathLike = "data", vocab_dir: str | os.PathLike | None = None):
    """Kept for one release: use ``numpy_gpt.get_gpt2_tokenizer(data_dir, vocab_dir)``."""
    warnings.warn("gpt2_tokenizer is deprecated: use numpy_gpt.get_gpt2_tokenizer(data_dir, vocab_dir)",
                  DeprecationWarning, stacklevel=2)
    return get_gpt2_tokenizer(data_dir, vocab_dir=vocab_dir)


def check_tokenizer_fits(tokens: FinetuneTokenizer, model, where: str = "the model") -> None:
    """A model must have an embedding row for every id its tokenizer produces: ValueError otherwise
    (e.g. a model of a 1,024-token BPE given GPT-2's 50,257 ids)."""
    vocab_size = model.cfg["vocab_size"]
    if tokens.tokenizer.n_vocab > vocab_size:
        raise ValueError(f"{where} has a vocabulary of {vocab_size:,} ids, but its {tokens.kind} tokenizer "
                         f"makes ids up to {tokens.tokenizer.n_vocab - 1:,}: the checkpoint does not record "
                         f"the tokenizer it was trained with (pass a checkpoint written by numpy-gpt)")
