"""Masked-language-model pretraining: how BERT learns, and fill-mask, how it is used.

GPT learns by predicting the next token at every position (chapter 5). BERT sees the whole
sentence at once, so predicting "the next token" would be copying it; instead it hides some tokens
and predicts them from both sides ("The cat [MASK] on the mat." -> "sat"). This module holds:

* ``mask_tokens``: BERT's recipe for which tokens to hide and how;
* ``MLMLoader``: windows of a token stream as ([CLS] text [SEP]) sequences with fresh masks for
  every batch, a drop-in for the chapter-5 loaders, so ``train.train_model`` (warmup, cosine,
  clipping, checkpoints, exact resume, Ctrl-C) trains an EncoderModel unchanged: its
  ``calc_loss_batch`` computes ``cross_entropy(model(inputs), labels)``, and the labels are -100
  (the ignore_index) wherever nothing was hidden;
* ``masked_accuracy`` and the ``unigram`` baseline, to see that the model learned something;
* ``save_mlm_checkpoint`` / ``load_mlm_checkpoint``: numpy_gpt's checkpoint format (atomic, no
  pickle, validated before anything is allocated), with the encoder config (``cfg``, as every model's)
  and the WordPiece vocabulary (the one tokenizer schema, tokenizers/spec.py) stored inside; it loads
  the way ``numpy_gpt.load`` loads any model file;
* ``fill_mask``: the top-k candidates for each [MASK] of a text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.checkpoint import save_checkpoint
from numpy_gpt.encoder import EncoderModel
from numpy_gpt.model_files import (
    OLD_ENCODER_CONFIG_KEY,
    OLD_WORDPIECE_KEY,
    checkpoint_tokenizer,
    read_model_file,
)
from numpy_gpt.nn.module import no_grad
from numpy_gpt.nn.softmax import softmax
from numpy_gpt.tokenizers.spec import tokenizer_spec
from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer

IGNORE_INDEX = -100
ENCODER_CONFIG_KEY = OLD_ENCODER_CONFIG_KEY   # where the first encoder checkpoints kept their config
TOKENIZER_KEY = OLD_WORDPIECE_KEY             # ... and their vocabulary (both still read)


def mask_tokens(ids: np.ndarray, rng: np.random.Generator, *, vocab_size: int, mask_id: int,
                special_ids: Sequence[int] = (), mask_prob: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """BERT's masking: returns (inputs, labels), both shaped like ``ids`` (B, T).

    Each token that is not special ([CLS], [SEP], [PAD]) is chosen with probability ``mask_prob``
    (15 %). A chosen token is replaced by [MASK] 80 % of the time, by a random token 10 % of the
    time, and left unchanged 10 % of the time. ``labels`` holds the original id at the chosen
    positions and ``IGNORE_INDEX`` (-100) everywhere else; a batch in which nothing was chosen gets
    one chosen position, so the loss is never empty.

    Why the loss covers only the chosen positions (cross_entropy's ignore_index). At any other
    position the input shows the answer, and a bidirectional model, which sees its own input
    token, would learn to copy it through the residual stream: 85 % of the loss would be spent on
    a task that teaches nothing about language. Why not always [MASK]: [MASK] never occurs when the
    model is used on real text (fine-tuning, classification); the 10 % random tokens teach it not
    to trust an input token blindly, and the 10 % unchanged ones that a real token may still be a
    prediction target, so every position keeps a useful representation of the context.
    """
    ids = np.asarray(ids)
    special = np.isin(ids, np.asarray(special_ids, dtype=ids.dtype))
    chosen = (rng.random(ids.shape) < mask_prob) & ~special
    if not chosen.any() and (~special).any():
        candidates = np.flatnonzero(~special)
        chosen.flat[candidates[rng.integers(len(candidates))]] = True
    labels = np.where(chosen, ids, IGNORE_INDEX)
    roll = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (roll < 0.8)] = mask_id                                       # 80 %: [MASK]
    swap = chosen & (roll >= 0.8) & (roll < 0.9)                                  # 10 %: a random token
    ordinary = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids, dtype=np.int64))
    inputs[swap] = ordinary[rng.integers(len(ordinary), size=int(swap.sum()))]
    return inputs, labels                                                         # 10 %: unchanged


class MLMLoader:
    """Batches (inputs, labels) of masked sequences cut from a token stream (no [CLS]/[SEP] in it).

    The stream is cut into windows of ``context_length - 2`` tokens (stride = window, so no token
    is seen twice per epoch); each becomes [CLS] window [SEP]. Batches are masked with
    ``mask_tokens`` by a generator seeded from (seed, epoch, batch index), and shuffled per epoch
    from (seed, epoch): a resumed run sees exactly the batches and masks the uninterrupted one
    would have (``train_model`` sets ``epoch``). Without shuffling (validation) every evaluation
    sees the same masks.
    """

    def __init__(self, ids: np.ndarray, tokenizer: WordPieceTokenizer, batch_size: int, context_length: int,
                 *, shuffle: bool = True, drop_last: bool = True, seed: int = 0, mask_prob: float = 0.15):
        if context_length < 3:
            raise ValueError(f"context_length must be at least 3 ([CLS], a token, [SEP]), "
                             f"got {context_length}")
        if tokenizer.mask_id is None:
            raise ValueError("the tokenizer's vocabulary has no [MASK] token")
        window = context_length - 2
        n = len(ids) // window
        body = np.asarray(ids[:n * window], dtype=np.int64).reshape(n, window)
        self.sequences = np.concatenate([np.full((n, 1), tokenizer.cls_id), body,
                                         np.full((n, 1), tokenizer.sep_id)], axis=1)   # (n, T)
        self.tokenizer = tokenizer
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.mask_prob = seed, mask_prob
        self.special_ids = [tokenizer.vocab[t] for t in tokenizer.special_tokens]
        self.epoch = 0

    def __len__(self) -> int:
        n = len(self.sequences)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.arange(len(self.sequences))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        for b in range(len(self)):
            batch = self.sequences[order[b * self.batch_size:(b + 1) * self.batch_size]]
            rng = np.random.default_rng([self.seed, self.epoch, b])
            yield mask_tokens(batch, rng, vocab_size=self.tokenizer.n_vocab, mask_id=self.tokenizer.mask_id,
                              special_ids=self.special_ids, mask_prob=self.mask_prob)


@dataclass
class MaskedAccuracy:
    """Top-1 accuracy at the hidden positions, for the model and for the unigram baseline."""

    model: float
    unigram: float
    positions: int


def unigram_token(train_ids: np.ndarray, special_ids: Sequence[int] = ()) -> int:
    """The most frequent ordinary token of the training ids: the prediction of a model that
    ignores its context altogether."""
    counts = np.bincount(np.asarray(train_ids))
    counts[[i for i in special_ids if i < len(counts)]] = 0
    return int(counts.argmax())


def masked_accuracy(model: EncoderModel, loader: MLMLoader, baseline_token: int,
                    num_batches: int | None = None) -> MaskedAccuracy:
    """How often argmax(logits) is the hidden token, over the chosen positions of (the first
    ``num_batches`` of) ``loader``, and how often ``baseline_token`` is."""
    hits = baseline = total = 0
    with no_grad():
        for i, (inputs, labels) in enumerate(loader):
            if num_batches is not None and i >= num_batches:
                break
            chosen = labels != IGNORE_INDEX
            predicted = model(inputs).argmax(axis=-1)
            hits += int((predicted[chosen] == labels[chosen]).sum())
            baseline += int((labels[chosen] == baseline_token).sum())
            total += int(chosen.sum())
    if total == 0:
        raise ValueError("the loader produced no masked position to evaluate")
    return MaskedAccuracy(hits / total, baseline / total, total)


def fill_mask(model: EncoderModel, tokenizer: WordPieceTokenizer, text: str,
              top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each [MASK] in ``text``, the ``top_k`` most likely tokens with their probabilities."""
    ids = tokenizer.encode(text)
    positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_id]
    if not positions:
        raise ValueError(f"the text has no [MASK] token to fill: {text!r}")
    context = model.cfg["context_length"]
    if len(ids) > context:
        raise ValueError(f"the text is {len(ids)} tokens, more than the model's context of {context}")
    with no_grad():
        logits = model(np.asarray([ids]))[0, positions]                        # (M, V)
    probs = softmax(logits.astype(np.float64))
    results = []
    for row in probs:
        best = np.argsort(-row, kind="stable")[:top_k]
        results.append([(tokenizer.inverse[i], float(row[i])) for i in best])
    return results


# -- checkpoints --------------------------------------------------------------------------------------
def checkpoint_extra(model: EncoderModel, tokenizer: WordPieceTokenizer) -> dict[str, Any]:
    """What an encoder checkpoint stores beside the weights and the config: its vocabulary, as the
    tokenizer description every numpy_gpt checkpoint keeps in ``extra["tokenizer"]``."""
    return {"tokenizer": tokenizer_spec(tokenizer)}


def save_mlm_checkpoint(path: str | os.PathLike, model: EncoderModel, tokenizer: WordPieceTokenizer,
                        **kwargs) -> Path:
    """``save_checkpoint`` (atomic .npz, no pickle) with the vocabulary in ``extra``."""
    extra = {**kwargs.pop("extra", {}), **checkpoint_extra(model, tokenizer)}
    return save_checkpoint(path, model, extra=extra, **kwargs)


def load_mlm_checkpoint(path: str | os.PathLike) -> tuple[EncoderModel, WordPieceTokenizer, dict[str, Any]]:
    """(model in eval mode, tokenizer, extra) from a checkpoint written by pretrain-mlm (or by an older
    numpy_gpt, which kept the config and vocabulary under ``ENCODER_CONFIG_KEY`` and ``TOKENIZER_KEY``).

    The way ``numpy_gpt.load`` goes (model_files.py): the stored config is checked and the shapes it
    implies are compared with the arrays the file really holds before the model is built; then every
    array is read (CRC and finiteness checked). Another kind of file is refused, with the command that
    takes it."""
    file = read_model_file(path, expect=("encoder",), use="load_mlm_checkpoint")
    tokenizer = checkpoint_tokenizer(file)
    return file.load_model(), tokenizer, file.extra
