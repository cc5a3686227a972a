"""Pretraining: the loss helpers and training loops of chapter 5 and appendix D.

The book's pieces, under the book's names:

* ``calc_loss_batch`` -- cross-entropy of one batch; with ``backward=True`` it also back-propagates,
  which is what ``loss.backward()`` does in the book (there is no autograd here);
* ``calc_loss_loader`` / ``evaluate_model`` -- mean loss over (the first ``num_batches`` of) a data
  loader, under ``no_grad``; ``perplexity`` = exp(loss);
* ``train_model_simple`` -- chapter 5's loop: epochs, an evaluation every ``eval_freq`` steps,
  tokens seen, a generated sample after each epoch;
* ``train_model`` -- appendix D's loop: learning-rate schedule (linear warmup + cosine decay),
  gradient clipping, plus gradient accumulation, checkpoints and exact resumption.

Both loops show a progress bar (tqdm) with the loss and the training speed in tokens per second,
and stop with ``NonFiniteLossError`` naming the step as soon as a loss is nan or inf -- before the
bad gradients reach the weights. Checkpoints, resumption, Ctrl-C and that guard are numpy_gpt/run.py's
``TrainingRun``, shared by every training loop of the package.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from numpy_gpt.generate import generate, text_to_token_ids, token_ids_to_text
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import inference, no_grad
from numpy_gpt.optim import AdamW, clip_grad_norm
from numpy_gpt.run import NonFiniteLossError, TrainingRun, check_finite, progress_bar, record_from_dict

__all__ = ["NonFiniteLossError", "TrainingHistory", "calc_loss_batch", "calc_loss_loader", "evaluate_model",
           "generate_and_print_sample", "perplexity", "train_model", "train_model_simple"]


# -- losses (section 5.1) ---------------------------------------------------------------------------
def calc_loss_batch(input_batch: np.ndarray, target_batch: np.ndarray, model, *, backward: bool = False,
                    grad_scale: float = 1.0) -> float:
    """Mean cross-entropy of the model's next-token predictions for one batch (B, T).

    With ``backward=True`` the gradient of ``grad_scale * loss`` is back-propagated and ADDED into
    the parameters' ``.grad`` (gradient accumulation uses ``grad_scale = 1 / accumulation steps``).
    The loss is returned as a Python float either way.
    """
    logits = model(input_batch)                                       # (B, T, V)
    loss, dlogits = cross_entropy(logits, target_batch)
    if backward:
        if grad_scale != 1.0:
            dlogits *= dlogits.dtype.type(grad_scale)
        model.backward(dlogits)
    return loss


def calc_loss_loader(data_loader, model, num_batches: int | None = None, *,
                     loss_fn: Callable[..., float] = calc_loss_batch) -> float:
    """Average ``loss_fn`` (default ``calc_loss_batch``) over the first ``num_batches`` batches
    (default: all), under ``no_grad``. An empty loader gives nan, as in the book. Chapter 6's
    classifier passes its own per-batch loss (the last token's).

    An evaluation is not a training pass: a loader's ``epoch`` counter (which a full pass advances)
    is left as it was, so evaluating never changes the order of the training batches."""
    if len(data_loader) == 0:
        return float("nan")
    num_batches = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    epoch = getattr(data_loader, "epoch", None)
    total_loss = 0.0
    try:
        with no_grad():
            for i, (input_batch, target_batch) in enumerate(data_loader):
                if i >= num_batches:
                    break
                total_loss += loss_fn(input_batch, target_batch, model)
    finally:
        if epoch is not None:
            data_loader.epoch = epoch
    return total_loss / num_batches


def evaluate_model(model, train_loader, val_loader, eval_iter: int | None, *,
                   loss_fn: Callable[..., float] = calc_loss_batch) -> tuple[float, float]:
    """(train loss, validation loss) over ``eval_iter`` batches of each (None: all), in evaluation
    mode (no dropout); the model goes back to the mode it was in afterwards."""
    with inference(model):
        return (calc_loss_loader(train_loader, model, eval_iter, loss_fn=loss_fn),
                calc_loss_loader(val_loader, model, eval_iter, loss_fn=loss_fn))


def perplexity_from_loss(loss: float) -> float:
    """exp(loss): the number of tokens the model is, on average, as unsure between (section 5.1.2).
    (The perplexity of a text, with a sliding window, is ``numpy_gpt.evaluation.perplexity``.)"""
    return math.exp(loss) if loss < 700 else float("inf")


def perplexity(loss: float) -> float:
    """Kept for one release: use ``perplexity_from_loss(loss)`` (``numpy_gpt.evaluation.perplexity`` is
    the perplexity of a text)."""
    warnings.warn("numpy_gpt.train.perplexity is deprecated: use numpy_gpt.train.perplexity_from_loss(loss) "
                  "(numpy_gpt.evaluation.perplexity(model, token_ids) is the perplexity of a text)",
                  DeprecationWarning, stacklevel=2)
    return perplexity_from_loss(loss)


def generate_and_print_sample(model, tokenizer, start_context: str, max_new_tokens: int = 50, *,
                              print_fn: Callable[[str], None] = print, **sampling: Any) -> str:
    """Continue ``start_context`` (greedy by default, as the book) and print it on one line.

    ``sampling`` is passed on to ``generate`` (temperature, top_k, top_p, seed). Returns the text.
    """
    context_size = model.cfg["context_length"]
    encoded = text_to_token_ids(start_context, tokenizer)
    token_ids = generate(model, encoded, max_new_tokens, context_size, **sampling)
    text = token_ids_to_text(token_ids, tokenizer)
    print_fn(text.replace("\n", " "))
    return text


# -- shared by both loops ---------------------------------------------------------------------------
class _Speedometer:
    """Tokens per second of training proper (forward, backward, update), evaluation excluded."""

    def __init__(self) -> None:
        self.tokens, self.seconds = 0, 0.0
        self._start = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self, tokens: int) -> float:
        """Count ``tokens`` trained on since ``start``; return the seconds that took."""
        elapsed = time.perf_counter() - self._start
        self.seconds += elapsed
        self.tokens += tokens
        return elapsed

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


# -- chapter 5: the simple loop --------------------------------------------------------------------
def train_model_simple(model, train_loader, val_loader, optimizer: AdamW, num_epochs: int, eval_freq: int,
                       eval_iter: int, start_context: str, tokenizer, *, progress: bool = True
                       ) -> tuple[list[float], list[float], list[int]]:
    """The book's ``train_model_simple``: returns (train_losses, val_losses, track_tokens_seen),
    one entry per evaluation, i.e. every ``eval_freq`` steps starting with the first step. After
    each epoch it prints a greedy continuation of ``start_context``."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    speed = _Speedometer()
    bar = progress_bar(num_epochs * len(train_loader), 0, progress)
    say = tqdm.write if progress else print
    try:
        for epoch in range(num_epochs):
            model.train()
            for input_batch, target_batch in train_loader:
                speed.start()
                optimizer.zero_grad()
                loss = calc_loss_batch(input_batch, target_batch, model, backward=True)
                check_finite("the training loss", loss, global_step + 1, epoch)
                optimizer.step()
                speed.stop(input_batch.size)
                tokens_seen += input_batch.size
                global_step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{speed.tokens_per_second:,.0f}", refresh=False)

                if global_step % eval_freq == 0:
                    train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                    train_losses.append(train_loss)
                    val_losses.append(val_loss)
                    track_tokens_seen.append(tokens_seen)
                    say(f"Ep {epoch + 1} (Step {global_step:06d}): "
                        f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            generate_and_print_sample(model, tokenizer, start_context, print_fn=say)
    finally:
        bar.close()
    return train_losses, val_losses, track_tokens_seen


# -- appendix D: the full loop ----------------------------------------------------------------------
@dataclass
class TrainingHistory:
    """What ``train_model`` records. It is stored in every checkpoint, so a resumed run continues
    the same history (and the loss plot covers the whole run).

    Per evaluation: ``eval_steps`` (0-based global step, as the book counts), ``tokens_seen``,
    ``train_losses``, ``val_losses``. Per optimizer step: ``step_losses`` (training loss, averaged
    over the accumulated micro-batches) and ``lrs``. ``train_seconds`` and ``train_tokens`` measure
    the speed of training proper (evaluation and sampling excluded).
    """

    eval_steps: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainingHistory:
        """The history a checkpoint saved, every field checked (``run.record_from_dict``)."""
        return record_from_dict(cls, saved, "the saved training history")


def train_model(model, train_loader, val_loader, optimizer: AdamW, *, num_epochs: int = 1,
                max_steps: int | None = None, eval_freq: int = 100, eval_iter: int = 5,
                lr_schedule: Callable[[int], float] | None = None, grad_clip: float | None = 1.0,
                grad_accum_steps: int = 1, tokenizer=None, start_context: str | None = None,
                sample_tokens: int = 50, sampling: dict[str, Any] | None = None,
                checkpoint_path: str | os.PathLike | None = None, checkpoint_freq: int | None = None,
                checkpoint_extra: dict[str, Any] | None = None,
                resume_from: str | os.PathLike | None = None, progress: bool = True) -> TrainingHistory:
    """Appendix D's ``train_model``: pretraining with a learning-rate schedule, clipping,
    gradient accumulation, checkpoints and resumption. Returns the ``TrainingHistory``.

    Steps. One optimizer step consumes ``grad_accum_steps`` batches (their gradients summed with
    weight 1/grad_accum_steps, so the step equals one on a batch that many times larger). The run
    lasts ``max_steps`` steps if given, else ``num_epochs`` passes over ``train_loader``.

    Each step: ``lr = lr_schedule(global_step)`` is written into every parameter group (no
    schedule: the optimizer's lr stays), the gradients are clipped to a global norm of
    ``grad_clip`` (None: no clipping; the book clips only after warmup, this loop always does),
    then ``optimizer.step()``. Every ``eval_freq`` steps (from the first) and after the last one,
    ``evaluate_model`` runs on ``eval_iter`` batches and a line is printed. With a ``tokenizer``
    and ``start_context``, a sample of ``sample_tokens`` tokens is printed after each epoch and at
    the end: greedy as in the book, or as ``sampling`` says (``generate``'s temperature, top_k,
    top_p, seed).

    Checkpoints, resumption, Ctrl-C (numpy_gpt/run.py's ``TrainingRun``). With ``checkpoint_path``
    the model, optimizer, dropout RNG, step and history are saved (atomically) every
    ``checkpoint_freq`` steps, if given, and at the end; ``checkpoint_extra`` is stored alongside
    (e.g. which tokenizer to use). ``resume_from`` a checkpoint saved by this function continues that
    run: with the same seed, data and settings, the losses are exactly those of a run that was never
    interrupted. The first Ctrl-C lets the current step finish, saves and raises
    ``TrainingInterrupted``; a second one stops at once.

    A nan or inf loss (or gradient norm) raises ``NonFiniteLossError`` naming the step; the weights
    are not updated with it and the last checkpoint file is left as it was. A schedule's NaN or
    inf learning rate is refused (ValueError) before the step, and a checkpoint is never written
    from non-finite weights or optimizer state (``NonFiniteLossError``): the file on disk, which
    the error names as the last good one, was checked finite when it was written.
    """
    per_epoch = len(train_loader)
    if grad_accum_steps < 1 or per_epoch < 1:
        raise ValueError(f"need grad_accum_steps >= 1 and a non-empty train_loader, got "
                         f"grad_accum_steps={grad_accum_steps} and {per_epoch} batches")
    if eval_freq < 1:
        raise ValueError(f"eval_freq must be >= 1, got {eval_freq}")
    if max_steps is None:
        max_steps = num_epochs * per_epoch // grad_accum_steps
        if max_steps < 1:
            raise ValueError(f"{num_epochs} epoch(s) of {per_epoch} batches make no full step of "
                             f"{grad_accum_steps} accumulated batches: lower grad_accum_steps")
    batch_shape = next(iter(train_loader))[0].shape
    layout = {"grad_accum_steps": grad_accum_steps, "batches_per_epoch": per_epoch,
              "batch_size": int(batch_shape[0]), "context_length": int(batch_shape[1])}
    history = TrainingHistory()
    run = TrainingRun(model, optimizer, history, checkpoint_path=checkpoint_path, resume_from=resume_from,
                      checkpoint_freq=checkpoint_freq, layout=layout, extra=checkpoint_extra,
                      progress=progress)

    def sample() -> None:
        if tokenizer is not None and start_context:
            generate_and_print_sample(model, tokenizer, start_context, sample_tokens, print_fn=run.say,
                                      **(sampling or {}))

    speed = _Speedometer()
    params = list(model.parameters(trainable_only=True))
    model.train()
    with run:
        batches = run.batches(train_loader, grad_accum_steps)
        for global_step in run.steps(max_steps):
            speed.start()
            if lr_schedule is not None:
                run.set_lr(lr_schedule)                     # NaN/inf refused before it reaches the weights
            optimizer.zero_grad()
            step_loss, step_tokens = 0.0, 0
            for _ in range(grad_accum_steps):
                epoch, (input_batch, target_batch) = next(batches)
                loss = calc_loss_batch(input_batch, target_batch, model, backward=True,
                                       grad_scale=1.0 / grad_accum_steps)
                run.check(loss)
                step_loss += loss / grad_accum_steps
                step_tokens += input_batch.size
            if grad_clip is not None:
                run.check(step_loss, clip_grad_norm(params, grad_clip))
            optimizer.step()
            history.train_seconds += speed.stop(step_tokens)

            history.step_losses.append(step_loss)
            history.lrs.append(float(optimizer.param_groups[0]["lr"]))
            history.train_tokens += step_tokens
            run.bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{speed.tokens_per_second:,.0f}",
                                refresh=False)

            last = global_step == max_steps - 1
            if global_step % eval_freq == 0 or last:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, eval_iter)
                history.eval_steps.append(global_step)
                history.tokens_seen.append(history.train_tokens)
                history.train_losses.append(train_loss)
                history.val_losses.append(val_loss)
                run.say(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, "
                        f"Val loss {val_loss:.3f}, Val perplexity {perplexity_from_loss(val_loss):.1f}")
            batches_done = (global_step + 1) * grad_accum_steps
            if batches_done // per_epoch > (batches_done - grad_accum_steps) // per_epoch and not last:
                sample()                                   # an epoch ended during this step
    sample()
    return history
