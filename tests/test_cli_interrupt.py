"""Ctrl-C during `numpy-gpt pretrain` keeps the work (numpy_gpt/interrupt.py, train.train_model).

A real subprocess gets a real SIGINT once it has printed a few step lines; it must exit with 130, one
line on stderr and no traceback, leaving a checkpoint that `--resume` continues to exactly the
weights of a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpy_gpt.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
MAX_STEPS = 120


def _args(corpus: Path, out_dir: Path) -> list[str]:
    return ["pretrain", "--corpus", str(corpus), "--tokenizer", "char", "--preset", "tiny",
            "--context-length", "16", "--emb-dim", "32", "--batch-size", "4", "--drop-rate", "0.1",
            "--max-steps", str(MAX_STEPS), "--eval-freq", "1", "--eval-iter", "1", "--num-samples", "0",
            "--sample-tokens", "4", "--prompt", "the", "--no-progress", "--seed", "7",
            "--out-dir", str(out_dir)]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "numpy_gpt", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=300)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(words, 4000)) + "\n", encoding="utf-8")
    return path


def test_sigint_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, corpus):
    interrupted_dir = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "numpy_gpt", *_args(corpus, interrupted_dir)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:                          # wait until training is under way
            if "(Step 000003)" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--resume" in lines[0], err

    saved = load_checkpoint(interrupted_dir / "model.npz")
    assert 3 < saved.step < MAX_STEPS
    assert saved.optimizer_state is not None

    resumed = _run([*_args(corpus, interrupted_dir), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {saved.step} of {MAX_STEPS}" in resumed.stdout

    straight = _run(_args(corpus, tmp_path / "straight"), tmp_path)
    assert straight.returncode == 0, straight.stderr
    a = dict(load_checkpoint(interrupted_dir / "model.npz").model.named_parameters())
    b = dict(load_checkpoint(tmp_path / "straight" / "model.npz").model.named_parameters())
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name].data, b[name].data, err_msg=name)


def test_a_second_sigint_exits_at_once_with_130_and_no_traceback(tmp_path, corpus):
    """Two Ctrl-C in a row: the second stops at once, still with exit code 130 and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "numpy_gpt", *_args(corpus, tmp_path / "run")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if "(Step 000002)" in line:
                proc.send_signal(signal.SIGINT)
            if line.startswith("Ctrl-C"):                 # the first one was seen: send the second
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def _pretrain_tiny(tmp_path, corpus, context: int) -> str:
    """A tiny character-level model pretrained for two steps; its checkpoint path."""
    from numpy_gpt.cli import main

    assert main(["pretrain", "--corpus", str(corpus), "--tokenizer", "char", "--preset", "tiny",
                 "--context-length", str(context), "--emb-dim", "16", "--n-layers", "1", "--n-heads", "2",
                 "--max-steps", "2", "--eval-iter", "1", "--num-samples", "0", "--no-progress",
                 "--max-chars", "8000", "--out-dir", str(tmp_path / "pre")]) == 0
    return str(tmp_path / "pre" / "model.npz")


def _run_whole_then_ctrl_c_at_first_step(finetune, monkeypatch, capsys) -> None:
    """finetune("whole") runs through; finetune("split") sees a Ctrl-C in its first step (the flag
    set as the signal handler sets it), saves and exits 130 naming --resume."""
    from numpy_gpt import interrupt

    assert finetune("whole") == 0
    original_init = interrupt.InterruptFlag.__init__

    def pressed(self):
        original_init(self)
        self.requested = True
    monkeypatch.setattr(interrupt.InterruptFlag, "__init__", pressed)
    assert finetune("split") == 130
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(interrupt.InterruptFlag, "__init__", original_init)


def test_finetune_instruct_ctrl_c_then_resume_matches_an_uninterrupted_run(tmp_path, verdict_path,
                                                                           monkeypatch, capsys):
    """finetune-instruct on a model pretrained here: a Ctrl-C at the first step saves the run and
    exits 130; --resume then ends with the weights of a run that was never interrupted."""
    import json

    from numpy_gpt.cli import main

    pretrained = _pretrain_tiny(tmp_path, verdict_path, context=320)   # holds a character prompt whole
    words = "ab cd ef gh ij kl mn op".split() * 5
    entries = [{"instruction": "Repeat.", "input": w, "output": w} for w in words]
    (tmp_path / "data.json").write_text(json.dumps(entries), encoding="utf-8")

    def finetune(out: str, *extra: str) -> int:
        return main(["finetune-instruct", "--init", "checkpoint", "--checkpoint", pretrained,
                     "--data", str(tmp_path / "data.json"),
                     "--epochs", "2", "--batch-size", "4", "--eval-freq", "2", "--eval-iter", "1",
                     "--max-new-tokens", "2", "--judge", "none", "--lr", "1e-3", "--out", str(tmp_path / out),
                     *extra])

    _run_whole_then_ctrl_c_at_first_step(finetune, monkeypatch, capsys)
    assert load_checkpoint(tmp_path / "split" / "instruct-train.npz").step == 1
    assert finetune("split", "--resume") == 0
    assert "resumed from step 1 of" in capsys.readouterr().out
    whole = load_checkpoint(tmp_path / "whole" / "instruct.npz").model.state_dict()
    split = load_checkpoint(tmp_path / "split" / "instruct.npz").model.state_dict()
    for name, value in whole.items():
        np.testing.assert_array_equal(split[name], value, err_msg=name)


def test_finetune_spam_ctrl_c_then_resume_matches_an_uninterrupted_run(tmp_path, verdict_path,
                                                                       monkeypatch, capsys):
    """finetune-spam from a model pretrained here, Ctrl-C at the first step, then --resume: the
    classifier equals one trained without interruption."""
    from numpy_gpt.cli import main
    from numpy_gpt.finetune.classifier import load_classifier

    pretrained = _pretrain_tiny(tmp_path, verdict_path, context=32)
    rng = np.random.default_rng(3)
    lines = [f"{'spam' if i % 3 == 0 else 'ham'}\t{' '.join(rng.choice(['win', 'cash', 'see', 'you'], 4))}"
             for i in range(60)]
    (tmp_path / "sms.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def finetune(out: str, *extra: str) -> int:
        return main(["finetune-spam", "--init", "checkpoint", "--checkpoint", pretrained,
                     "--spam-file", str(tmp_path / "sms.txt"), "--data-dir", str(tmp_path / "data"),
                     "--epochs", "2", "--batch-size", "4", "--eval-freq", "2", "--eval-iter", "1",
                     "--trainable", "all", "--lr", "1e-3", "--out", str(tmp_path / out), *extra])

    _run_whole_then_ctrl_c_at_first_step(finetune, monkeypatch, capsys)
    assert finetune("split", "--resume") == 0
    assert "resumed from step 1 of" in capsys.readouterr().out
    whole, split = (load_classifier(tmp_path / run / "spam-classifier.npz")[0].state_dict()
                    for run in ("whole", "split"))
    for name, value in whole.items():
        np.testing.assert_array_equal(split[name], value, err_msg=name)
