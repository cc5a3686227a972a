"""Every training command keeps the same promises: numpy_gpt/run.py's TrainingRun, proven per command.

pretrain, pretrain-mlm, finetune-spam, finetune-instruct, finetune-dpo and scaling all train through
one ``TrainingRun``. Each guarantee below is ONE test parametrised over the six commands, run
in-process through ``numpy_gpt.cli.main`` on tiny models and data:

* checkpoints every N steps (``--checkpoint-freq``), and at the end where the run file is the product;
* a non-finite state is never saved: a NaN weight after step 3 stops the command with one line naming
  the last good checkpoint (step 2), which stays on disk, finite;
* Ctrl-C at step 2 (a real SIGINT, raised in this process) saves, exits 130 and prints the command that
  continues; that very command ends with exactly the weights of a run never interrupted;
* a second Ctrl-C quits at once: exit 130, no traceback, no further step and nothing more saved.

Then the resume record: a checkpoint whose training record lies is one CheckpointError line, class by
class of lie. tests/test_cli_interrupt.py sends a real SIGINT to a subprocess from outside.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import string
from pathlib import Path

import numpy as np
import pytest
from helpers import with_meta

from numpy_gpt import run as training_run
from numpy_gpt.checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from numpy_gpt.cli import main
from numpy_gpt.interrupt import InterruptFlag
from numpy_gpt.model import GPTModel
from numpy_gpt.optim import AdamW

COMMANDS = ["pretrain", "pretrain-mlm", "finetune-spam", "finetune-instruct", "finetune-dpo", "scaling"]
# The file each command keeps its unfinished run in, relative to its output folder.
RUN_FILE = {"pretrain": "model.npz", "pretrain-mlm": "model.npz", "finetune-spam": "spam-train.npz",
            "finetune-instruct": "instruct-train.npz", "finetune-dpo": "dpo-train.npz"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A word corpus, a random base GPT with a character tokenizer (context 320: a prompt keeps half of
    it, room for the Alpaca prompt), SMS lines, instruction entries and preference pairs."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]
    (folder / "corpus.txt").write_text(" ".join(rng.choice(words, 4000)) + "\n", encoding="utf-8")
    chars = ["\n", *string.printable[:95]]                         # digits, letters, punctuation, space
    spec = {"kind": "char", "chars": chars, "special_tokens": ["<|endoftext|>", "<|unk|>"]}
    cfg = {"vocab_size": len(chars) + 2, "context_length": 320, "emb_dim": 16, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    save_checkpoint(folder / "base.npz", GPTModel(cfg, seed=0), extra={"tokenizer": spec})
    sms = [f"{'spam' if i % 3 == 0 else 'ham'}\t{' '.join(rng.choice(['win', 'cash', 'see', 'you'], 4))}"
           for i in range(60)]
    (folder / "sms.txt").write_text("\n".join(sms) + "\n", encoding="utf-8")
    instructions = [{"instruction": "Repeat.", "input": w, "output": w} for w in words * 2]
    (folder / "instruct.json").write_text(json.dumps(instructions), encoding="utf-8")
    pairs = [{"instruction": "Say it.", "input": w, "output": w, "chosen": f"{w}, please", "rejected": w}
             for w in words * 3][:24]
    (folder / "pairs.json").write_text(json.dumps(pairs), encoding="utf-8")
    return folder


def argv(command: str, data: Path, out: Path, *extra: str) -> list[str]:
    """A few steps of ``command`` on the tiny data, with dropout where the command has it."""
    base = ["--init", "checkpoint", "--checkpoint", str(data / "base.npz")]
    tail = {
        "pretrain": ["--corpus", str(data / "corpus.txt"), "--tokenizer", "char", "--preset", "tiny",
                     "--context-length", "16", "--emb-dim", "16", "--n-layers", "1", "--n-heads", "2",
                     "--batch-size", "4", "--drop-rate", "0.1", "--max-steps", "6", "--eval-freq", "100",
                     "--eval-iter", "1", "--num-samples", "0", "--sample-tokens", "2", "--no-progress",
                     "--out-dir", str(out)],
        "pretrain-mlm": ["--corpus", str(data / "corpus.txt"), "--vocab-size", "200", "--min-frequency", "2",
                         "--context-length", "16", "--emb-dim", "16", "--n-layers", "1", "--n-heads", "2",
                         "--batch-size", "4", "--drop-rate", "0.1", "--max-steps", "6", "--warmup-steps", "1",
                         "--eval-freq", "100", "--eval-iter", "1", "--no-progress", "--out-dir", str(out)],
        "finetune-spam": [*base, "--spam-file", str(data / "sms.txt"), "--data-dir", str(out / "data"),
                          "--epochs", "1", "--batch-size", "4", "--eval-freq", "100", "--eval-iter", "1",
                          "--trainable", "all", "--lr", "1e-3", "--drop-rate", "0.1", "--out", str(out)],
        "finetune-instruct": [*base, "--data", str(data / "instruct.json"), "--epochs", "1",
                              "--batch-size", "4", "--eval-freq", "100", "--eval-iter", "1",
                              "--max-new-tokens", "2", "--judge", "none", "--lr", "1e-3",
                              "--drop-rate", "0.1", "--out", str(out)],
        "finetune-dpo": ["--init", str(data / "base.npz"), "--data", str(data / "pairs.json"),
                         "--batch-size", "4", "--lr", "1e-3", "--eval-freq", "100", "--num-responses", "1",
                         "--max-new-tokens", "2", "--drop-rate", "0.1", "--no-progress", "--out", str(out)],
        "scaling": ["--corpus", str(data / "corpus.txt"), "--context-length", "16", "--batch-size", "4",
                    "--sizes", "1", "--budgets", "3e7", "--seeds", "1", "--min-steps", "3",
                    "--eval-tokens", "64", "--bootstrap", "0", "--no-progress", "--out-dir", str(out)],
    }[command]
    return [command, *tail, *extra]


class Spy:
    """What the runs of one command did: the steps each save was for, the optimizer steps taken, and the
    weights at the end of every run that finished. ``at_step(k, action)`` calls ``action`` right after
    the k-th optimizer step of the training runs (steps taken outside a run, such as the sweep's timing
    steps, are not counted)."""

    def __init__(self, monkeypatch) -> None:
        self.saves: list[int] = []
        self.steps = 0
        self.finals: list[dict[str, np.ndarray]] = []
        self.actions: dict[int, object] = {}
        spy = self
        save, step, leave = training_run.save_checkpoint, AdamW.step, training_run.TrainingRun.__exit__

        def saving(path, model, optimizer=None, **kwargs):
            spy.saves.append(kwargs["step"])
            return save(path, model, optimizer, **kwargs)

        def stepping(optimizer):
            step(optimizer)
            if isinstance(getattr(signal.getsignal(signal.SIGINT), "__self__", None), InterruptFlag):
                spy.steps += 1
                if spy.steps in spy.actions:
                    spy.actions[spy.steps](optimizer)

        def leaving(run, *exc):
            if exc[0] is None:
                spy.finals.append({k: v.copy() for k, v in run.model.state_dict().items()})
            return leave(run, *exc)

        monkeypatch.setattr(training_run, "save_checkpoint", saving)
        monkeypatch.setattr(AdamW, "step", stepping)
        monkeypatch.setattr(training_run.TrainingRun, "__exit__", leaving)

    def at_step(self, k: int, action) -> None:
        self.actions[k] = action


def ctrl_c(times: int = 1):
    """An action pressing Ctrl-C ``times`` times: real SIGINTs, handled as a terminal's would be."""
    def press(optimizer) -> None:
        for _ in range(times):
            signal.raise_signal(signal.SIGINT)
    return press


def nan_weight(optimizer) -> None:
    optimizer.param_groups[0]["params"][0].data.flat[0] = np.nan


@pytest.fixture(autouse=True)
def keep_sigint():
    """The command line ignores SIGINT once it has reported Ctrl-C; give pytest its handler back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def run_file(command: str, out: Path) -> Path:
    if command == "scaling":
        (partial,) = out.glob("*.partial.npz")
        return partial
    return out / RUN_FILE[command]


_WHOLE: dict[str, Spy] = {}


def whole_run(command: str, data: Path, tmp_path_factory, monkeypatch) -> Spy:
    """The uninterrupted run of ``command`` with --checkpoint-freq 2 (once per command and process)."""
    if command not in _WHOLE:
        with monkeypatch.context() as patch:
            spy = Spy(patch)
            assert main(argv(command, data, tmp_path_factory.mktemp("whole"), "--checkpoint-freq", "2")) == 0
        _WHOLE[command] = spy
    return _WHOLE[command]


@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoint_every_n_steps(command, data, tmp_path_factory, monkeypatch):
    spy = whole_run(command, data, tmp_path_factory, monkeypatch)
    total = spy.steps
    kept = command not in ("finetune-spam", "scaling")        # their run file only serves to resume
    assert total >= 4
    assert spy.saves == list(range(2, total, 2)) + ([total] if kept else [])


@pytest.mark.parametrize("command", COMMANDS)
def test_a_non_finite_state_is_never_saved(command, data, tmp_path, monkeypatch, capsys):
    spy = Spy(monkeypatch)
    spy.at_step(3, nan_weight)
    assert main(argv(command, data, tmp_path, "--checkpoint-freq", "1")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not finite after step 2" in err, err
    path = run_file(command, tmp_path)
    assert f"The last good checkpoint is {path} (step 2)" in err
    assert spy.saves == [1, 2, 3] and read_checkpoint_meta(path)["step"] == 2
    with np.load(path, allow_pickle=False) as npz:
        assert all(np.isfinite(npz[k]).all() for k in npz.files if npz[k].dtype.kind == "f")


@pytest.mark.parametrize("command", COMMANDS)
def test_ctrl_c_saves_exits_130_and_its_resume_command_continues_exactly(command, data, tmp_path,
                                                                          tmp_path_factory, monkeypatch,
                                                                          capsys):
    whole = whole_run(command, data, tmp_path_factory, monkeypatch)
    spy = Spy(monkeypatch)
    spy.at_step(2, ctrl_c())
    assert main(argv(command, data, tmp_path)) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    saved = re.search(r"interrupted after step 2 of \d+; saved to (\S+);.* (?:continue with|run the same "
                      r"command again to continue): (numpy-gpt .*)$", err)
    assert saved, err
    assert Path(saved[1]) == run_file(command, tmp_path) and read_checkpoint_meta(saved[1])["step"] == 2
    assert spy.steps == 2 and spy.saves == [2] and not spy.finals

    resume = shlex.split(saved[2])[1:]                    # the very command it printed
    assert main(resume) == 0
    assert f"resumed from step 2 of {whole.steps}" in capsys.readouterr().out
    assert spy.steps == whole.steps
    (resumed,), (straight,) = spy.finals, whole.finals
    assert resumed.keys() == straight.keys()
    for name, value in straight.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_ctrl_c_quits_at_once(command, data, tmp_path, monkeypatch, capsys):
    spy = Spy(monkeypatch)
    spy.at_step(2, ctrl_c(times=2))
    assert main(argv(command, data, tmp_path)) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == f"numpy-gpt {command}: interrupted" and "Traceback" not in err
    assert spy.steps == 2 and spy.saves == [] and not spy.finals


# -- a resume record that lies -------------------------------------------------------------------------
TINY = {"vocab_size": 20, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1, "drop_rate": 0.1,
        "qkv_bias": False}


def _train(path: Path, resume: bool = False, steps: int = 2):
    from numpy_gpt.data import create_dataloader_v1
    from numpy_gpt.train import train_model

    model = GPTModel(TINY, seed=0)
    ids = np.arange(200) % TINY["vocab_size"]
    loader = create_dataloader_v1(ids, batch_size=2, max_length=8, stride=8, shuffle=True, seed=1)
    return train_model(model, loader, loader, AdamW(model.parameters(), lr=1e-3), max_steps=steps,
                       eval_iter=1, checkpoint_path=path, resume_from=path if resume else None,
                       progress=False)


def _set(*keys, value=None, delete=False):
    """A change of the checkpoint's metadata: set (or delete) the entry at ``keys``."""
    def change(meta):
        node = meta
        for key in keys[:-1]:
            node = node[key]
        if delete:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("extra", "training", "history", delete=True), r"training\.history is missing"),
    (_set("extra", "training", "history", "lrs", delete=True), r"missing fields \['lrs'\]"),
    (_set("extra", "training", "history", "extra_field", value=1), r"unknown fields \['extra_field'\]"),
    (_set("extra", "training", "history", "step_losses", value=[1.0, "x"]),
     r"'step_losses' must be a list of numbers"),
    (_set("extra", "training", "history", "train_tokens", value=True), r"'train_tokens' must be an integer"),
    (_set("extra", "training", "history", value=[]), r"training\.history is missing or not a JSON object"),
    (_set("extra", "training", "batch_size", value=3), r"was trained with .*'batch_size': 3"),
    (_set("extra", "training", delete=True), r"cannot be resumed: it has no optimizer state or 'training'"),
    (_set("optimizer", "param_groups", delete=True), r"optimizer state is not valid: .*no 'param_groups'"),
    (_set("optimizer", "param_groups", value={"lr": 1}), r"param_groups must be a list"),
    (_set("optimizer", "param_groups", 0, "lr", value="x"), r"optimizer state is not valid: .*lr must be a "
                                                            r"number, got 'x'"),
    (_set("optimizer", "param_groups", 0, "betas", value=[0.9]), r"optimizer state is not valid"),
    (_set("optimizer", "state.0.step", value="x"), r"state\.0\.step must be an integer"),
])
def test_a_resume_record_that_lies_is_one_clear_error(tmp_path, change, message):
    """The whole training record is checked when it is read, as the weights are: each class of lie is a
    CheckpointError naming the file (the command line prints it as one line, exit code 1)."""
    path = tmp_path / "run.npz"
    _train(path)
    with_meta(path, path, change)
    with pytest.raises(CheckpointError, match=message) as error:
        _train(path, resume=True, steps=4)
    assert str(path) in str(error.value)


def test_a_lying_record_changes_nothing_before_it_is_refused(tmp_path):
    """The record and the optimizer's hyperparameters are checked before any weight is loaded."""
    from numpy_gpt.run import TrainingRun
    from numpy_gpt.train import TrainingHistory

    path = tmp_path / "run.npz"
    _train(path)
    with_meta(path, path, _set("optimizer", "param_groups", 0, "lr", value="x"))
    model = GPTModel(TINY, seed=5)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    rng_before = model.dropout_rng.bit_generator.state
    with pytest.raises(CheckpointError):
        TrainingRun(model, AdamW(model.parameters(), lr=1e-3), TrainingHistory(), resume_from=path,
                    layout={"batch_size": 2})
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert model.dropout_rng.bit_generator.state == rng_before


def test_the_cli_reports_a_lying_record_in_one_line(data, tmp_path, capsys):
    """`pretrain --resume` on a checkpoint whose history was deleted: one line, exit 1 (was a KeyError)."""
    assert main(argv("pretrain", data, tmp_path)) == 0
    path = tmp_path / "model.npz"
    with_meta(path, path, _set("extra", "training", "history", delete=True))
    capsys.readouterr()
    assert main([*argv("pretrain", data, tmp_path), "--resume"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training.history is missing" in err and "Traceback" not in err


def test_checkpoint_without_resume_stays_loadable(tmp_path):
    """A run file is an ordinary checkpoint: load_checkpoint reads it without the training record."""
    path = tmp_path / "run.npz"
    _train(path)
    assert load_checkpoint(path).step == 2
