"""Preference tuning with DPO (Direct Preference Optimization), the step after chapter 7.

Instruction fine-tuning (chapter 7) teaches a model to answer; preference tuning teaches it which of two
answers people prefer. The book's companion notebook (ch07/04_preference-tuning-with-dpo) does it with
DPO (Rafailov et al., 2023): no reward model and no reinforcement learning, one more loss.

For a prompt x with a preferred (chosen) answer y_w and a dispreferred (rejected) one y_l, a policy pi
(the model being tuned) and a frozen reference pi_ref (the model before tuning):

    r_w = beta * (log pi(y_w | x) - log pi_ref(y_w | x))      the chosen answer's implicit reward
    r_l = beta * (log pi(y_l | x) - log pi_ref(y_l | x))      the rejected answer's
    L   = -log sigmoid(r_w - r_l)                            mean over the pairs of a batch

The pieces, in the order the gradient flows back:

* ``sequence_logprobs`` / ``sequence_logprobs_backward``: log pi(y | x) as a sum over the answer's
  tokens of log softmax(logits)[token] (prompt and padding masked out), and dL/dlogits;
* ``dpo_loss``: the loss above and its gradient with respect to the policy's log-probabilities;
  ``dpo_rewards``: the numbers to watch (rewards, margins, reward accuracy);
* ``PreferenceDataset`` / ``collate_preference`` / ``PreferenceDataLoader``: token ids of prompt,
  chosen and rejected answers, batched as one (2P, L) array, chosen rows first, with a response mask;
* ``reference_logprobs``: the frozen reference's log-probabilities of every pair, computed once before
  training (no second copy of the model: with LoRA the reference is the base model with its adapters
  switched off, ``nn.lora.lora_disabled``; without LoRA it is the model before its first update);
* ``train_dpo``: the loop, with the progress bar, checkpoints, exact resumption and Ctrl-C of every
  training loop (numpy_gpt/run.py's ``TrainingRun``); ``draw_dpo`` / ``plot_dpo``: the curves.

The book's notebook averages the log-probabilities over the answer's tokens; here they are summed, as
in the DPO paper (the average is the sum divided by the number of tokens, so only the scale of beta
changes for answers of equal length).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.data import DataLoader
from numpy_gpt.fast import map_chunks
from numpy_gpt.finetune.instruct import RESPONSE_HEADER, format_input
from numpy_gpt.nn.lora import lora_disabled
from numpy_gpt.nn.loss import log_softmax_at, softmax_and_nll
from numpy_gpt.nn.module import inference
from numpy_gpt.optim import AdamW, clip_grad_norm
from numpy_gpt.run import TrainingRun, record_from_dict


# -- the sequence log-probability and its backward -------------------------------------------------
def _check_logprob_args(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> None:
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating) or logits.ndim != 3:
        raise ValueError(f"logits must be a floating (N, L, V) array, got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    if np.shape(targets) != logits.shape[:2] or np.shape(mask) != logits.shape[:2]:
        raise ValueError(f"targets {np.shape(targets)} and mask {np.shape(mask)} must both have the "
                         f"logits' (N, L) = {logits.shape[:2]}")
    if not np.issubdtype(np.asarray(targets).dtype, np.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {np.asarray(targets).dtype}")
    t = np.asarray(targets)[np.asarray(mask, dtype=bool)]
    if t.size and (t.min() < 0 or t.max() >= logits.shape[2]):
        raise IndexError(f"a masked-in target is outside [0, {logits.shape[2]})")


def token_logprobs(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Kept for one release: use ``numpy_gpt.nn.loss.log_softmax_at(logits, targets)``."""
    warnings.warn("token_logprobs is deprecated: use numpy_gpt.nn.loss.log_softmax_at(logits, targets)",
                  DeprecationWarning, stacklevel=2)
    return log_softmax_at(logits, targets)


def sequence_logprobs(logits: np.ndarray, targets: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """log pi(y | x) of each sequence: the sum over its masked-in positions of the log-probability the
    model gives the target token.

    logits (N, L, V), targets (N, L) int, mask (N, L) bool (True at the answer's tokens; prompt and
    padding False). Returns (N,) in the logits' dtype:

        logp_n = sum_t mask_nt * log softmax(logits_nt)[targets_nt]
               = sum_t mask_nt * (logits_nt[targets_nt] - logsumexp(logits_nt))

    The per-token part (``nn.loss.log_softmax_at``, the negative of chapter 5's cross-entropy) runs
    on every core through ``map_chunks``; the sum over t is accumulated in float64.
    """
    _check_logprob_args(logits, targets, mask)
    N, L, V = logits.shape
    mask = np.asarray(mask, dtype=bool)
    t_safe = np.where(mask, targets, 0).reshape(-1)                   # (N*L,) any id where masked out
    logp = map_chunks(log_softmax_at, logits.reshape(-1, V), t_safe).reshape(N, L)   # per token
    return logp.sum(axis=1, where=mask, dtype=np.float64).astype(logits.dtype)


def sequence_logprobs_backward(dlogp: np.ndarray, logits: np.ndarray, targets: np.ndarray,
                               mask: np.ndarray) -> np.ndarray:
    """dL/dlogits (N, L, V) from dL/dlogp (N,) for ``logp = sequence_logprobs(logits, targets, mask)``.

    The sum passes dlogp_n unchanged to each of its masked-in tokens; for one token with p =
    softmax(z), d log p_y / d z_v = [v = y] - p_v (the derivative of z_y - logsumexp(z)). So

        dlogits_ntv = dlogp_n * mask_nt * (onehot(targets_nt)_v - softmax(logits_nt)_v)

    and every prompt and padding position gets exactly zero. The softmax is recomputed from the logits
    (one more pass over (N, L, V), instead of keeping it between the two calls).
    """
    _check_logprob_args(logits, targets, mask)
    N, L, V = logits.shape
    if np.shape(dlogp) != (N,):
        raise ValueError(f"dlogp must have one value per sequence, shape ({N},), got {np.shape(dlogp)}")
    mask = np.asarray(mask, dtype=bool)
    t_safe = np.where(mask, targets, 0).reshape(-1)                   # (N*L,)
    _, probs = map_chunks(softmax_and_nll, logits.reshape(-1, V), t_safe)    # (N*L, V) softmax p
    dlogits = probs
    dlogits[np.arange(N * L), t_safe] -= 1.0                          # p - onehot
    scale = -(np.asarray(dlogp, dtype=logits.dtype)[:, None] * mask)  # (N, L): -dlogp_n on answer tokens
    dlogits *= scale.reshape(-1, 1)                                   # dlogp * mask * (onehot - p)
    return dlogits.reshape(N, L, V)


# -- the DPO loss ------------------------------------------------------------------------------------
def _as_pairs(name: str, values: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.floating) or values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D floating array of per-pair log-probabilities, "
                         f"got {values.dtype} {values.shape}")
    if shape is not None and values.shape != shape:
        raise ValueError(f"{name} has shape {values.shape}, policy_chosen has {shape}: one value per pair")
    return values


def dpo_loss(policy_chosen: np.ndarray, policy_rejected: np.ndarray, ref_chosen: np.ndarray,
             ref_rejected: np.ndarray, beta: float = 0.1) -> tuple[float, np.ndarray, np.ndarray]:
    """The DPO loss of P pairs and its gradient: ``(loss, d_policy_chosen, d_policy_rejected)``.

    Inputs are per-pair sequence log-probabilities (P,) (``sequence_logprobs``): the policy's and the
    frozen reference's, of the chosen and of the rejected answer. With

        z_i    = beta * ((pc_i - rc_i) - (pr_i - rr_i))        the reward margin of pair i
        loss   = mean_i  -log sigmoid(z_i) = mean_i log(1 + exp(-z_i)) = mean_i logaddexp(0, -z_i)

    (logaddexp never overflows: for z = -1000 it gives 1000, where log(1 + exp(1000)) is inf).

    Gradient, step by step. sigmoid'(z) = sigmoid(z) sigmoid(-z), so
        d(-log sigmoid(z))/dz = -sigmoid(-z)                    (between -1 and 0: push z up)
    and sigmoid(-z) = exp(-logaddexp(0, z)), stable for either sign of z. The mean gives 1/P, and z
    depends on the policy through dz/dpc = beta and dz/dpr = -beta:
        dL/dpc_i = -beta * sigmoid(-z_i) / P,      dL/dpr_i = +beta * sigmoid(-z_i) / P.
    The reference values get no gradient (they are constants). From here
    ``sequence_logprobs_backward`` carries the gradient through the sum over the answer's tokens and
    then through each token's log-softmax to the logits.

    The gradients have ``policy_chosen``'s dtype; the loss is a Python float.
    """
    pc = _as_pairs("policy_chosen", policy_chosen, None)
    pr = _as_pairs("policy_rejected", policy_rejected, pc.shape)
    rc = _as_pairs("ref_chosen", ref_chosen, pc.shape)
    rr = _as_pairs("ref_rejected", ref_rejected, pc.shape)
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    z = beta * ((pc.astype(np.float64) - rc) - (pr.astype(np.float64) - rr))   # (P,) margins
    loss = float(np.mean(np.logaddexp(0.0, -z)))
    sig_neg = np.exp(-np.logaddexp(0.0, z))                           # sigmoid(-z)
    d_chosen = (-beta / z.size * sig_neg).astype(pc.dtype)
    return loss, d_chosen, -d_chosen


def dpo_rewards(policy_chosen: np.ndarray, policy_rejected: np.ndarray, ref_chosen: np.ndarray,
                ref_rejected: np.ndarray, beta: float = 0.1) -> dict[str, float]:
    """What to watch while training, averaged over the pairs:

    * ``chosen_reward`` = beta (pc - rc), ``rejected_reward`` = beta (pr - rr), with beta as TRL's
      DPOTrainer logs them (the book's notebook reports the log-ratios pc - rc and pr - rr);
    * ``margin`` = chosen_reward - rejected_reward (the z of ``dpo_loss``);
    * ``accuracy``: the fraction of pairs with a positive margin, TRL's ``rewards/accuracies``
      (chosen_reward > rejected_reward): a tie counts 0;
    * ``ties``: the fraction of pairs whose margin is exactly 0. All of them tie while the policy
      is the reference (before the first update), where ``accuracy`` is 0 by construction and
      measures nothing: the command reports it as n/a.
    """
    chosen = beta * (np.asarray(policy_chosen, np.float64) - ref_chosen)
    rejected = beta * (np.asarray(policy_rejected, np.float64) - ref_rejected)
    margin = chosen - rejected
    return {"chosen_reward": float(chosen.mean()), "rejected_reward": float(rejected.mean()),
            "margin": float(margin.mean()), "accuracy": float(np.mean(margin > 0)),
            "ties": float(np.mean(margin == 0))}


# -- data: token ids, batches ------------------------------------------------------------------------
def end_of_text_id(tokenizer) -> int | None:
    """The tokenizer's ``<|endoftext|>`` id (GPT-2: 50256), or None when it has none (a char tokenizer)."""
    return getattr(tokenizer, "eot_token", None)


class PreferenceDataset:
    """Token ids of preference entries: item i is ``(prompt, chosen, rejected)``, three lists of ids.

    ``prompt`` is ``format_input(entry) + "\\n\\n### Response:\\n"`` (chapter 7's Alpaca format up to
    where the answer starts); ``chosen`` and ``rejected`` are the two answers, each followed by
    ``eos_id`` when given (the model is also judged on where it stops). The three parts are encoded
    separately and concatenated, so the prompt's length in tokens is exact.

    ``context_needed`` is the longest prompt plus its longer answer: a context that holds every pair
    whole. With ``max_length`` (the model's context), entries whose prompt leaves no room for one
    answer token are an error naming ``where``, how many there are, the first one's index and the
    context that would hold them, then ``advice`` (what to change).
    """

    def __init__(self, data: Sequence[dict], tokenizer, *, eos_id: int | None = None,
                 max_length: int | None = None, where: str = "the preference data",
                 advice: str = "shorten them or raise --allowed-max-length (up to the model's context)"):
        self.data = list(data)
        tail = [] if eos_id is None else [int(eos_id)]
        self.items: list[tuple[list[int], list[int], list[int]]] = []
        too_long = []
        for i, entry in enumerate(self.data):
            prompt = list(tokenizer.encode(format_input(entry) + RESPONSE_HEADER))
            chosen = list(tokenizer.encode(entry["chosen"])) + tail
            rejected = list(tokenizer.encode(entry["rejected"])) + tail
            if not chosen or not rejected:
                raise ValueError(f"{where}, entry {i}: an empty chosen or rejected answer (and no "
                                 f"end-of-text token) has no log-probability to compare")
            if max_length is not None and len(prompt) >= max_length:
                too_long.append(i)
            self.items.append((prompt, chosen, rejected))
        self.context_needed = max((len(p) + max(len(c), len(r)) for p, c, r in self.items), default=1)
        if too_long:
            first = too_long[0]
            raise ValueError(f"{where}: {len(too_long)} of {len(self.items)} entries have prompts that leave "
                             f"no room for an answer in {max_length} tokens (entry {first} first, "
                             f"{len(self.items[first][0])} tokens; {self.context_needed} tokens hold every "
                             f"pair whole); {advice}")

    def __getitem__(self, index: int) -> tuple[list[int], list[int], list[int]]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class PreferenceBatch:
    """P pairs as one batch of 2P sequences: rows 0..P-1 prompt + chosen, rows P..2P-1 prompt + rejected.

    ``inputs`` and ``targets`` (2P, L) int64 are the padded sequences without their last / first token;
    ``mask`` (2P, L) bool is True where the target is an answer token (never the prompt or padding).
    """

    inputs: np.ndarray
    targets: np.ndarray
    mask: np.ndarray

    @property
    def n_pairs(self) -> int:
        return self.inputs.shape[0] // 2


def collate_preference(batch: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]],
                       pad_token_id: int = 50256, allowed_max_length: int | None = None) -> PreferenceBatch:
    """Pad P ``(prompt, chosen, rejected)`` items into one ``PreferenceBatch`` of 2P rows.

    Row j is ``prompt + answer`` padded with ``pad_token_id`` to the longest row plus one; inputs drop
    the last column, targets the first (targets are inputs shifted by one, as in chapter 7). A target
    at position t is the token t + 1 of its row, so the answer's tokens (indices len(prompt) ..
    len(row) - 1) are the targets at t = len(prompt) - 1 .. len(row) - 2: there the mask is True.
    ``allowed_max_length`` keeps the first that many columns (prompts are checked by
    ``PreferenceDataset`` to leave at least one answer token).
    """
    if len(batch) == 0:
        raise ValueError("collate_preference got an empty batch")
    rows = [list(p) + list(c) for p, c, _ in batch] + [list(p) + list(r) for p, _, r in batch]
    prompt_lengths = np.array([len(p) for p, _, _ in batch] * 2, dtype=np.int64)    # (2P,)
    lengths = np.array([len(row) for row in rows], dtype=np.int64)                   # (2P,)
    width = int(lengths.max()) + 1
    padded = np.full((len(rows), width), pad_token_id, dtype=np.int64)
    for out, row in zip(padded, rows, strict=True):
        out[:len(row)] = row
    positions = np.arange(width - 1)[None, :]                                        # (1, L)
    mask = (positions >= prompt_lengths[:, None] - 1) & (positions < lengths[:, None] - 1)
    inputs, targets = padded[:, :-1], padded[:, 1:]
    if allowed_max_length is not None:
        inputs, targets, mask = (a[:, :allowed_max_length] for a in (inputs, targets, mask))
    return PreferenceBatch(np.ascontiguousarray(inputs), np.ascontiguousarray(targets),
                           np.ascontiguousarray(mask))


class PreferenceDataLoader(DataLoader):
    """Batches of a ``PreferenceDataset``: iterating yields ``(indices, PreferenceBatch)``, the dataset
    indices of the P pairs (to look up their cached reference log-probabilities) and the batch.

    Order, per-epoch shuffling, ``epoch`` and ``len`` are those of ``numpy_gpt.data.DataLoader``.
    """

    def __init__(self, dataset: PreferenceDataset, batch_size: int = 8, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 123, *, pad_token_id: int = 50256,
                 allowed_max_length: int | None = None):
        super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        self.pad_token_id, self.allowed_max_length = pad_token_id, allowed_max_length

    def __iter__(self) -> Iterator[tuple[np.ndarray, PreferenceBatch]]:
        order = self.order(self.epoch)
        for b in range(len(self)):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield indices, collate_preference([self.dataset[int(i)] for i in indices], self.pad_token_id,
                                              self.allowed_max_length)
        self.epoch += 1


# -- log-probabilities of a model --------------------------------------------------------------------
def batch_logprobs(model, batch: PreferenceBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward one batch: ``(chosen (P,), rejected (P,), logits (2P, L, V))``."""
    logits = model(batch.inputs)                                      # (2P, L, V)
    logp = sequence_logprobs(logits, batch.targets, batch.mask)       # (2P,)
    return logp[:batch.n_pairs], logp[batch.n_pairs:], logits


def reference_logprobs(model, loader: PreferenceDataLoader) -> tuple[np.ndarray, np.ndarray]:
    """The frozen reference's log-probabilities of every pair of ``loader``'s dataset, (N,) chosen and
    (N,) rejected, indexed like the dataset. Computed once, under ``no_grad``, in evaluation mode and
    with LoRA adapters switched off: the reference is the model as it was before preference tuning
    (call it before the first update). The loader's epoch counter is left unchanged."""
    n = len(loader.dataset)
    chosen, rejected = np.full(n, np.nan, np.float64), np.full(n, np.nan, np.float64)
    epoch = loader.epoch
    try:
        with inference(model), lora_disabled(model):
            for indices, batch in loader:
                c, r, _ = batch_logprobs(model, batch)
                chosen[indices], rejected[indices] = c, r
    finally:
        loader.epoch = epoch
    if np.isnan(chosen).any():
        raise ValueError("the loader skipped some pairs (drop_last?); the reference needs them all")
    return chosen, rejected


def evaluate_dpo(model, loader: PreferenceDataLoader, ref: tuple[np.ndarray, np.ndarray], beta: float,
                 num_batches: int | None = None) -> dict[str, float]:
    """Loss, rewards, margin and reward accuracy (``dpo_rewards``) over the first ``num_batches``
    batches of ``loader`` (all by default), in evaluation mode under ``no_grad``; plus
    ``preference_accuracy``, the fraction of pairs where the policy alone gives the chosen answer the
    higher log-probability (no reference involved)."""
    epoch = loader.epoch
    parts: list[tuple[np.ndarray, ...]] = []
    try:
        with inference(model):
            for b, (indices, batch) in enumerate(loader):
                if num_batches is not None and b >= num_batches:
                    break
                c, r, _ = batch_logprobs(model, batch)
                parts.append((c, r, ref[0][indices], ref[1][indices]))
    finally:
        loader.epoch = epoch
    pc, pr, rc, rr = (np.concatenate(column) for column in zip(*parts, strict=True))
    loss, _, _ = dpo_loss(pc.astype(np.float64), pr.astype(np.float64), rc, rr, beta)
    return {"loss": loss, **dpo_rewards(pc, pr, rc, rr, beta),
            "preference_accuracy": float(np.mean(pc > pr) + 0.5 * np.mean(pc == pr))}


def before_and_after(before: dict[str, float], after: dict[str, float]) -> str:
    """One line of held-out numbers, before -> after tuning (``evaluate_dpo``'s dicts). Where every
    pair ties (the policy is still the reference) the reward accuracy is n/a: 0 by construction."""
    def accuracy(m: dict[str, float]) -> str:
        return "n/a (policy = reference)" if m["ties"] == 1.0 else f"{m['accuracy']:.1%}"
    return (f"reward accuracy {accuracy(before)} -> {accuracy(after)}, reward margin {before['margin']:.3f} "
            f"-> {after['margin']:.3f}, preference accuracy {before['preference_accuracy']:.1%} -> "
            f"{after['preference_accuracy']:.1%}")


# -- the training loop -------------------------------------------------------------------------------
@dataclass
class DPOHistory:
    """What ``train_dpo`` records; stored in every checkpoint so a resumed run continues it.

    Per optimizer step (training batch): ``losses``, ``chosen_rewards``, ``rejected_rewards``,
    ``margins``, ``accuracies``. Per evaluation: ``eval_steps`` and ``val`` (one ``evaluate_dpo`` dict
    each, on the validation loader). ``train_seconds`` times training proper.
    """

    losses: list[float] = field(default_factory=list)
    chosen_rewards: list[float] = field(default_factory=list)
    rejected_rewards: list[float] = field(default_factory=list)
    margins: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    def record(self, loss: float, rewards: dict[str, float]) -> None:
        self.losses.append(loss)
        self.chosen_rewards.append(rewards["chosen_reward"])
        self.rejected_rewards.append(rewards["rejected_reward"])
        self.margins.append(rewards["margin"])
        self.accuracies.append(rewards["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> DPOHistory:
        """The history a checkpoint saved, every field checked (``run.record_from_dict``)."""
        return record_from_dict(cls, saved, "the saved DPO history")


def dpo_step(model, batch: PreferenceBatch, ref_chosen: np.ndarray, ref_rejected: np.ndarray,
             beta: float) -> tuple[float, dict[str, float]]:
    """Forward and backward of one batch: the gradient of the DPO loss is ADDED into the trainable
    parameters' ``.grad``. Returns the loss and ``dpo_rewards`` of the batch."""
    pc, pr, logits = batch_logprobs(model, batch)                     # (P,), (P,), (2P, L, V)
    loss, d_pc, d_pr = dpo_loss(pc, pr, ref_chosen, ref_rejected, beta)
    dlogits = sequence_logprobs_backward(np.concatenate([d_pc, d_pr]), logits, batch.targets, batch.mask)
    del logits
    model.backward(dlogits)                                           # (2P, L, V) -> every layer
    return loss, dpo_rewards(pc, pr, ref_chosen, ref_rejected, beta)


def train_dpo(model, train_loader: PreferenceDataLoader, val_loader: PreferenceDataLoader, optimizer: AdamW,
              ref_train: tuple[np.ndarray, np.ndarray], ref_val: tuple[np.ndarray, np.ndarray], *,
              beta: float = 0.1, num_epochs: int = 1, eval_freq: int = 5, eval_iter: int | None = None,
              grad_clip: float | None = 1.0, checkpoint_path: str | os.PathLike | None = None,
              checkpoint_freq: int | None = None, checkpoint_extra: dict[str, Any] | None = None,
              resume_from: str | os.PathLike | None = None, progress: bool = True) -> DPOHistory:
    """Preference-tune ``model`` with DPO for ``num_epochs`` passes over ``train_loader``.

    Each step: the batch's policy log-probabilities, the DPO loss against the cached reference values
    ``ref_train`` (from ``reference_logprobs``), backward, clipping to ``grad_clip``, ``optimizer.step()``.
    Every ``eval_freq`` steps (from the first) and after the last, ``evaluate_dpo`` on ``eval_iter``
    validation batches (all by default) prints one line.

    Like every training loop (numpy_gpt/run.py's ``TrainingRun``): a tqdm bar with the loss and the
    reward accuracy; checkpoints (model, optimizer, dropout RNG, step, history; ``checkpoint_extra``
    alongside) every ``checkpoint_freq`` steps and at the end; ``resume_from`` continues such a
    checkpoint exactly (same batches, same losses); the first Ctrl-C saves after the current step and
    raises ``TrainingInterrupted``, a second stops at once. A nan or inf loss or gradient norm raises
    ``NonFiniteLossError`` before the weights change.
    """
    if len(train_loader) < 1 or eval_freq < 1:
        raise ValueError(f"need a non-empty train_loader and eval_freq >= 1; got {len(train_loader)} "
                         f"batches and {eval_freq}")
    max_steps = num_epochs * len(train_loader)
    layout = {"batches_per_epoch": len(train_loader), "batch_size": train_loader.batch_size, "beta": beta,
              "pairs": len(train_loader.dataset)}
    history = DPOHistory()
    params = list(model.parameters(trainable_only=True))
    model.train()
    with TrainingRun(model, optimizer, history, checkpoint_path=checkpoint_path, resume_from=resume_from,
                     checkpoint_freq=checkpoint_freq, layout=layout, extra=checkpoint_extra, key="dpo",
                     progress=progress, desc="dpo") as run:
        batches = run.batches(train_loader)
        for step in run.steps(max_steps):
            started = time.perf_counter()
            epoch, (indices, batch) = next(batches)
            optimizer.zero_grad()
            loss, rewards = dpo_step(model, batch, ref_train[0][indices], ref_train[1][indices], beta)
            run.check(loss, None if grad_clip is None else clip_grad_norm(params, grad_clip))
            optimizer.step()
            history.train_seconds += time.perf_counter() - started
            history.record(loss, rewards)
            run.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{rewards['accuracy']:.2f}", refresh=False)

            if step % eval_freq == 0 or step == max_steps - 1:
                val = evaluate_dpo(model, val_loader, ref_val, beta, eval_iter)
                history.eval_steps.append(step)
                history.val.append(val)
                run.say(f"Ep {epoch + 1} (Step {step:06d}): train loss {loss:.3f}, val loss "
                        f"{val['loss']:.3f}, val reward margin {val['margin']:.3f}, val reward accuracy "
                        f"{val['accuracy']:.1%}")
    return history


# -- the curves --------------------------------------------------------------------------------------
def draw_dpo(history: DPOHistory, title: str | None = None):
    """Four panels: loss, reward margin, reward accuracy, chosen and rejected rewards; per training
    step (thin) and per evaluation on the validation pairs (dots). Returns the Figure."""
    from matplotlib.figure import Figure  # a bare Figure: no pyplot, no window

    steps = np.arange(len(history.losses))
    val = {key: [v[key] for v in history.val] for key in ("loss", "margin", "accuracy", "chosen_reward",
                                                          "rejected_reward")}
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    panels = [("loss", history.losses, "DPO loss"), ("margin", history.margins, "reward margin"),
              ("accuracy", history.accuracies, "reward accuracy")]
    for ax, (key, train_values, label) in zip(axes.flat, panels, strict=False):
        ax.plot(steps, train_values, lw=0.8, alpha=0.7, label="training batch")
        ax.plot(history.eval_steps, val[key], "o-", ms=3, label="validation")
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.legend()
    ax = axes.flat[3]
    ax.plot(steps, history.chosen_rewards, lw=0.8, color="tab:green", alpha=0.6, label="chosen (training)")
    ax.plot(steps, history.rejected_rewards, lw=0.8, color="tab:red", alpha=0.6, label="rejected (training)")
    ax.plot(history.eval_steps, val["chosen_reward"], "o-", ms=3, color="darkgreen",
            label="chosen (validation)")
    ax.plot(history.eval_steps, val["rejected_reward"], "o-", ms=3, color="darkred",
            label="rejected (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("reward = beta * log-ratio")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_dpo(history: DPOHistory, path: str | os.PathLike, title: str | None = None) -> Path:
    """``draw_dpo`` saved as a PNG at ``path``; returns the path written."""
    from numpy_gpt.plots import save_png

    return save_png(draw_dpo(history, title), path)
