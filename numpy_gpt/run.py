"""One run machinery for every training loop: checkpoints, exact resume, Ctrl-C and the non-finite guard.

The book's loops (``train_model_simple``, ``train_classifier_simple``, the DPO loop) are a few lines
each: zero the gradients, loss and backward, one optimizer step, evaluate now and then. What a long
run needs besides is the same for all of them, so it lives here once and each loop calls it in a
line or two (``train.train_model``, ``finetune.classifier``, ``finetune.preference``, ``scaling``)::

    with TrainingRun(model, optimizer, history, checkpoint_path=path, resume_from=...) as run:
        batches = run.batches(train_loader)      # (epoch, batch), from where a resumed run stopped
        for step in run.steps(max_steps):        # between two steps: save every N, stop on Ctrl-C
            epoch, (inputs, targets) = next(batches)
            optimizer.zero_grad()
            loss = calc_loss_batch(inputs, targets, model, backward=True)
            run.check(loss)                      # nan or inf: stop before the weights change
            optimizer.step()

What it guarantees:

* **Checkpoints** between two steps, every ``checkpoint_freq`` steps and after the last one, written
  atomically (``checkpoint.save_checkpoint``): the model, the optimizer, the dropout generator, the
  step, the loop's record (``history``, a dataclass) and the data ``layout``.
* **Never a non-finite file.** NaN or inf weights or optimizer state are refused by
  ``save_checkpoint``; the ``NonFiniteLossError`` names the step and the last good file, which is left
  as it was. ``set_lr`` refuses a NaN, infinite or negative learning rate and ``check`` a nan or inf
  loss or gradient norm, both before ``optimizer.step()`` touches the weights.
* **Exact resume.** ``resume_from`` restores all of the above; ``batches`` skips the batches already
  trained on, and each pass sets the loader's ``epoch`` (its shuffle), so the resumed run sees the
  same batches, dropout masks and losses as one never interrupted. The saved record is read like the
  weights: checked whole (layout, record fields and types, optimizer hyperparameters) before anything
  changes, and a record that lies is one ``CheckpointError`` line naming the file.
* **Ctrl-C** (numpy_gpt/interrupt.py): the first one lets the step finish, saves, and raises
  ``TrainingInterrupted`` (the command line prints how to resume and exits 130); a second one quits
  at once.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from tqdm import tqdm

from numpy_gpt.checkpoint import (
    CheckpointError,
    NonFiniteStateError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from numpy_gpt.interrupt import InterruptFlag, TrainingInterrupted, stop_on_interrupt

ADVICE = "Try a lower learning rate, a warmup, or gradient clipping."


class NonFiniteLossError(FloatingPointError):
    """Training produced a nan or inf loss, gradient norm or weight; the message names the step."""


def check_finite(what: str, value: float, step: int, epoch: int | None = None, note: str = "") -> None:
    """Stop training with an error naming the step when ``value`` (a loss or a norm) is nan or inf.

    Called before ``optimizer.step()``, so the weights never see the bad gradients."""
    if not math.isfinite(value):
        where = f"step {step}" + ("" if epoch is None else f" (epoch {epoch + 1})")
        raise NonFiniteLossError(f"{what} is {value} at {where}; training stopped before the weights were "
                                 f"updated with it. {note}{ADVICE}")


def progress_bar(total: int, initial: int = 0, enabled: bool = True, desc: str = "train") -> tqdm:
    """A bar of the training steps (lines printed with ``tqdm.write`` keep it whole)."""
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step",
                dynamic_ncols=True, mininterval=0.5)


class TrainingRun:
    """Checkpoints, exact resume, Ctrl-C and the non-finite guard of one training run (see above).

    ``history`` is the loop's record, a dataclass of numbers and lists; it is saved in every
    checkpoint and, on resume, filled in place from the file. ``layout`` (batches per epoch, batch
    size...) must be the same to resume, or the batches would not line up. ``extra`` is stored beside
    (the tokenizer, for instance), the run's own record under ``extra[key]``. A file that only serves
    to resume (not the run's product) is removed when the run is done if ``keep_when_done`` is False.
    ``progress`` shows a bar of the steps (``self.bar``); ``say`` prints a line without breaking it.
    """

    def __init__(self, model, optimizer, history, *, checkpoint_path: str | os.PathLike | None = None,
                 resume_from: str | os.PathLike | None = None, checkpoint_freq: int | None = None,
                 layout: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
                 key: str = "training", keep_when_done: bool = True, progress: bool = False,
                 desc: str = "train") -> None:
        if checkpoint_freq is not None and checkpoint_freq < 1:
            raise ValueError(f"checkpoint_freq must be >= 1, got {checkpoint_freq}")
        self.model, self.optimizer, self.history = model, optimizer, history
        self.path = None if checkpoint_path is None else Path(checkpoint_path)
        self.every, self.key, self.keep_when_done = checkpoint_freq, key, keep_when_done
        self.layout, self.extra = dict(layout or {}), dict(extra or {})
        self.progress, self.desc = progress, desc
        self.say: Callable[[str], None] = tqdm.write if progress else print
        self.bar: tqdm | None = None
        self.flag = InterruptFlag()
        self._interrupt = None
        self.start = self.step = self.total = 0
        self.epoch: int | None = None
        self.resumed_from = None if resume_from is None else Path(resume_from)
        self.last_good: tuple[Path, int] | None = None
        if self.resumed_from is not None:
            self.start = self._resume(self.resumed_from)
            self.last_good = (self.resumed_from, self.start)

    # -- the loop's side ---------------------------------------------------------------------------
    def __enter__(self) -> TrainingRun:
        self._interrupt = stop_on_interrupt()       # first Ctrl-C: finish this step, save, stop
        self.flag = self._interrupt.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._interrupt is not None:
            self._interrupt.__exit__(*exc)

    def steps(self, total: int) -> Iterator[int]:
        """The step numbers from where the run stands to ``total - 1``. When the loop asks for the
        next one, the step before it is over (evaluation and samples included): the run saves every
        ``checkpoint_freq`` steps, and after a Ctrl-C saves and raises ``TrainingInterrupted``. After
        the last step it saves once more (or removes the file, if it is not to be kept)."""
        self.total = total
        self.bar = progress_bar(total, self.start, self.progress, self.desc)
        if self.resumed_from is not None:
            self.say(f"resumed from step {self.start} of {total} ({self.resumed_from})")
        for step in range(self.start, total):
            if step > self.start:
                self._between_steps(step)
            self.step = step
            yield step
        if total > self.start:
            self.bar.update(1)
        if self.keep_when_done:
            self.save(total)
        elif self.path is not None:
            self.path.unlink(missing_ok=True)

    def batches(self, loader, batches_per_step: int = 1) -> Iterator[tuple[int, Any]]:
        """Endless ``(epoch, batch)`` from ``loader``, starting after the batches the resumed run
        already trained on. Each pass first sets ``loader.epoch`` (when it has one), so its shuffle
        depends on the epoch alone: the batches are those an uninterrupted run would see."""
        epoch, skip = divmod(self.start * batches_per_step, len(loader))
        while True:
            if hasattr(loader, "epoch"):
                loader.epoch = epoch
            for i, batch in enumerate(loader):
                if i >= skip:
                    self.epoch = epoch
                    yield epoch, batch
            skip, epoch = 0, epoch + 1

    def set_lr(self, lr_schedule: Callable[[int], float]) -> float:
        """Write ``lr_schedule(step)`` into every parameter group, unless it is not a finite number
        >= 0: a NaN or infinite learning rate turns every weight NaN in one step."""
        lr = lr_schedule(self.step)
        try:
            value = float(lr)
        except (TypeError, ValueError):
            raise TypeError(f"lr_schedule({self.step}) returned {lr!r}, not a number") from None
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(f"lr_schedule({self.step}) returned {lr!r}; a learning rate must be a finite "
                             f"number >= 0. Training stopped before step {self.step} touched the weights. "
                             f"{self._note()}")
        for group in self.optimizer.param_groups:
            group["lr"] = value
        return value

    def check(self, loss: float, grad_norm: float | None = None) -> None:
        """The non-finite guard, before ``optimizer.step()``: a nan or inf loss (or gradient norm)
        raises ``NonFiniteLossError`` naming the step and the last good checkpoint."""
        check_finite("the training loss", loss, self.step, self.epoch, self._note())
        if grad_norm is not None:
            check_finite("the gradient norm", grad_norm, self.step, self.epoch, self._note())

    # -- saving and resuming -------------------------------------------------------------------------
    def _between_steps(self, done: int) -> None:
        self.bar.update(1)
        stop = self.flag.requested
        if stop or (self.every is not None and done % self.every == 0):
            self.save(done)
        if stop:
            raise TrainingInterrupted(done, self.total, self.path)

    def save(self, step: int) -> None:
        """Write the checkpoint of the run after ``step`` steps (nothing without a checkpoint_path)."""
        if self.path is None:
            return
        extra = {**self.extra, self.key: {**self.layout, "history": asdict(self.history)}}
        try:           # refuses NaN/inf weights or optimizer state, so the file on disk stays good
            save_checkpoint(self.path, self.model, self.optimizer, step=step, extra=extra)
        except NonFiniteStateError as err:
            raise NonFiniteLossError(f"the weights or optimizer state are not finite after step {step - 1}: "
                                     f"{err}. {self._note()}{ADVICE}") from None
        self.last_good = (self.path, step)

    def _note(self) -> str:
        if self.last_good is not None:
            return f"The last good checkpoint is {self.last_good[0]} (step {self.last_good[1]}). "
        return "" if self.path is None else f"No checkpoint was written to {self.path} yet. "

    def _resume(self, path: Path) -> int:
        """Check the saved record whole, then load the weights, the dropout generator, the optimizer and
        the history; returns the step to continue from."""
        meta = read_checkpoint_meta(path)
        record = (meta.get("extra") or {}).get(self.key)
        if meta.get("optimizer") is None or not isinstance(record, dict):
            raise CheckpointError(f"{path} cannot be resumed: it has no optimizer state or {self.key!r} "
                                  f"training record (it was not saved by this kind of training run); load it "
                                  f"with load_checkpoint to generate or to start a new run from its weights")
        saved_layout = {k: record.get(k) for k in self.layout}
        if saved_layout != self.layout:
            raise CheckpointError(f"{path} was trained with {saved_layout}, this run has {self.layout}: "
                                  f"resume with the same data and settings (batch size, context length, "
                                  f"gradient accumulation...), or the batches would not line up")
        history = record_from_dict(type(self.history), record.get("history"),
                                   f"checkpoint {path}: {self.key}.history")
        try:
            self.optimizer.check_param_groups(meta["optimizer"])
            checkpoint = load_checkpoint(path, self.model)
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, CheckpointError):
                raise
            reason = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise CheckpointError(f"checkpoint {path}: the saved optimizer state is not valid: "
                                  f"{reason}") from None
        for f in fields(history):
            setattr(self.history, f.name, getattr(history, f.name))
        return checkpoint.step


def record_from_dict(cls: type, saved: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from the dict a checkpoint saved: every field present and
    of its declared type (int, float, str, list[...], dict[str, ...]), or a ``CheckpointError`` that
    names ``where`` and the field."""
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where} is missing or not a JSON object")
    names = [f.name for f in fields(cls)]
    missing, unknown = [n for n in names if n not in saved], sorted(set(saved) - set(names))
    if missing or unknown:
        raise CheckpointError(f"{where}: " + "; ".join(
            part for part in (f"missing fields {missing}" if missing else "",
                              f"unknown fields {unknown}" if unknown else "") if part))
    hints = typing.get_type_hints(cls)
    for name in names:
        if not _is_a(saved[name], hints[name]):
            raise CheckpointError(f"{where}: field {name!r} must be {_describe(hints[name])}, "
                                  f"got {saved[name]!r:.80}")
    return cls(**{name: saved[name] for name in names})


def _is_a(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (an int is a float too; a bool is neither)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return isinstance(value, list) and all(_is_a(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) and _is_a(v, args[1])
                                               for k, v in value.items())
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return hint is Any or isinstance(value, hint)


def _describe(hint: Any, plural: bool = False) -> str:
    """"a list of numbers", "an integer", ... for a type hint, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, dict):
        kind, of = ("list" if origin is list else "object"), _describe(args[-1], plural=True)
        return f"{kind}s of {of}" if plural else f"{'a' if origin is list else 'an'} {kind} of {of}"
    names = {int: ("an integer", "integers"), float: ("a number", "numbers"), str: ("a string", "strings")}
    return names.get(hint, (str(hint), str(hint)))[plural]
