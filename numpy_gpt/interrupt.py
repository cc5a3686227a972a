"""Ctrl-C during training keeps the work: the first one stops at the end of the step, a second one at once.

Used by the training loops (``train.train_model`` for pretraining, the fine-tuning loops of chapters 6
and 7). Inside ``stop_on_interrupt()`` the first SIGINT only sets ``requested``; the loop checks it
after each optimizer step, saves its checkpoint and raises ``TrainingInterrupted``, which the command
line turns into one line (how to resume) and exit code 130, the shell's code for "killed by SIGINT".
A second SIGINT raises ``KeyboardInterrupt`` at once, wherever the program is (checkpoints are
written atomically, so an unfinished save leaves the previous file intact).

Signal handlers can only be installed from the main thread; elsewhere the context does nothing and
Ctrl-C behaves as usual.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TrainingInterrupted(Exception):
    """Training stopped after Ctrl-C at ``step`` of ``max_steps``; ``checkpoint`` is where it was saved
    (None when the loop had nowhere to save); ``note`` adds to the message."""

    def __init__(self, step: int, max_steps: int, checkpoint: str | Path | None, note: str = "") -> None:
        self.step, self.max_steps = step, max_steps
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        where = f"saved to {self.checkpoint}" if checkpoint is not None else "nothing saved"
        note = f"; {note}" if note else ""
        super().__init__(f"interrupted after step {step} of {max_steps}; {where}{note}")


class InterruptFlag:
    """``requested`` turns True on the first Ctrl-C; the second Ctrl-C raises ``KeyboardInterrupt``."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving (Ctrl-C again quits at once)", flush=True)


@contextmanager
def stop_on_interrupt() -> Iterator[InterruptFlag]:
    """Within the block, the first Ctrl-C sets ``flag.requested`` instead of raising."""
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGINT, flag._handle)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def resume_hint(argv: list[str] | None = None, flag: str | None = "--resume") -> str:
    """The command that continues an interrupted run: this one, with ``flag`` added if absent (None:
    the same command, for a command that always continues what it finds)."""
    import shlex
    args = list(sys.argv[1:] if argv is None else argv)
    if flag is not None and flag not in args:
        args.append(flag)
    return "numpy-gpt " + shlex.join(args)


def should_resume(run_file: str | Path, asked: bool) -> bool:
    """True when ``--resume`` was given and ``run_file`` holds a run to continue; says so when it
    was given but there is nothing to continue (the command then starts a new run)."""
    if asked and not Path(run_file).exists():
        print(f"--resume: no run saved at {run_file} yet, starting a new one")
    return asked and Path(run_file).exists()
