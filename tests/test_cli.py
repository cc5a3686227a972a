"""Tests for numpy_gpt/cli/ (main.py, pretrain.py): pretrain -> generate, resume, gradcheck, errors."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from numpy_gpt.checkpoint import load_checkpoint
from numpy_gpt.cli import main

TINY_FLAGS = ["--preset", "tiny", "--context-length", "16", "--emb-dim", "16", "--n-layers", "1",
              "--n-heads", "2", "--batch-size", "4", "--eval-freq", "3", "--eval-iter", "1",
              "--warmup-steps", "2", "--sample-tokens", "12", "--num-samples", "1", "--no-progress",
              "--tokenizer", "char"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log. " * 60, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def char_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    code = main(["pretrain", "--corpus", str(corpus), "--max-steps", "6", "--prompt", "the ",
                 "--out-dir", str(out), *TINY_FLAGS])
    assert code == 0
    return out


def test_pretrain_writes_checkpoint_plot_and_samples(char_run, capsys):
    for name in ("model.npz", "loss.png", "samples.txt"):
        assert (char_run / name).is_file(), name
    checkpoint = load_checkpoint(char_run / "model.npz")
    assert checkpoint.step == 6
    assert checkpoint.extra["tokenizer"]["kind"] == "char"
    spec = checkpoint.extra["tokenizer"]            # the alphabet, then <|endoftext|> and <|unk|>
    assert spec["special_tokens"] == ["<|endoftext|>", "<|unk|>"]
    assert checkpoint.model.cfg["vocab_size"] == len(spec["chars"]) + 2
    assert (char_run / "samples.txt").read_text(encoding="utf-8").count("the ") >= 1


def test_pretrain_reports_where_things_went(corpus, tmp_path, capsys):
    assert main(["pretrain", "--corpus", str(corpus), "--max-steps", "3", "--out-dir", str(tmp_path),
                 "--prompt", "the", *TINY_FLAGS]) == 0
    out = capsys.readouterr().out
    assert f"Checkpoint: {tmp_path / 'model.npz'}" in out
    assert f"Loss plot:  {tmp_path / 'loss.png'}" in out
    assert "Final: train loss" in out and "sample 1" in out


def test_generate_from_the_checkpoint(char_run, capsys):
    capsys.readouterr()
    args = ["generate", "--checkpoint", str(char_run / "model.npz"), "--prompt", "the cat",
            "--max-new-tokens", "20", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.startswith("the cat") and len(first.rstrip("\n")) == len("the cat") + 20
    assert main([*args, "--no-cache"]) == 0
    assert capsys.readouterr().out == first, "cached and uncached sampling agree"
    assert main([*args[:-2], "--temperature", "0", "--top-k", "3"]) == 0


def test_generate_uses_the_recorded_prompt_and_plots_attention(char_run, tmp_path, capsys):
    png = tmp_path / "att.png"
    assert main(["generate", "--checkpoint", str(char_run / "model.npz"), "--max-new-tokens", "5",
                 "--attention-plot", str(png)]) == 0
    assert capsys.readouterr().out.startswith("the ")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_pretrain_with_a_trained_bpe_and_resume(corpus, tmp_path, capsys):
    flags = [*TINY_FLAGS, "--corpus", str(corpus), "--tokenizer", "bpe", "--vocab-size", "270",
             "--out-dir", str(tmp_path), "--prompt", "the"]
    assert main(["pretrain", "--max-steps", "3", *flags]) == 0
    assert len(list(tmp_path.glob("tokenizer-bpe270-*.bpe"))) == 1, "the trained BPE is cached"
    assert main(["pretrain", "--max-steps", "6", "--resume", *flags]) == 0
    checkpoint = load_checkpoint(tmp_path / "model.npz")
    assert checkpoint.step == 6
    history = checkpoint.extra["training"]["history"]
    assert len(history["step_losses"]) == 6
    assert checkpoint.extra["tokenizer"]["kind"] == "bpe"
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(tmp_path / "model.npz"), "--prompt", "the dog",
                 "--max-new-tokens", "8", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the dog")


def test_a_new_run_reuses_the_cached_bpe(corpus, tmp_path, capsys):
    flags = [*TINY_FLAGS, "--corpus", str(corpus), "--tokenizer", "bpe", "--vocab-size", "270",
             "--out-dir", str(tmp_path), "--max-steps", "1"]
    assert main(["pretrain", *flags]) == 0
    assert "Training a 270-token BPE" in capsys.readouterr().out
    assert main(["pretrain", *flags, "--overwrite"]) == 0         # --overwrite keeps the cached BPE
    assert "Reusing the BPE tokenizer" in capsys.readouterr().out


def test_a_finished_run_is_never_replaced_without_asking(corpus, tmp_path, capsys):
    """Issue 24 item 20: a second pretrain into a run folder is refused before any work, the finished
    model untouched; --overwrite replaces the run and removes the earlier run's plot and samples."""
    flags = [*TINY_FLAGS, "--corpus", str(corpus), "--tokenizer", "char", "--out-dir", str(tmp_path),
             "--max-steps", "2"]
    assert main(["pretrain", *flags]) == 0
    capsys.readouterr()
    model = (tmp_path / "model.npz").read_bytes()
    (tmp_path / "stale.txt").write_text("not ours", encoding="utf-8")
    assert main(["pretrain", *flags[:-1], "1"]) == 1
    captured = capsys.readouterr()
    assert "Corpus" not in captured.out                                  # refused before any work
    (line,) = captured.err.strip().splitlines()
    assert str(tmp_path) in line and all(way in line for way in ("--resume", "--overwrite", "--out-dir"))
    assert (tmp_path / "model.npz").read_bytes() == model
    (tmp_path / "samples.txt").write_text("the old run's samples", encoding="utf-8")
    assert main(["pretrain", *flags[:-1], "1", "--overwrite", "--num-samples", "0"]) == 0
    assert (tmp_path / "model.npz").read_bytes() != model
    assert not (tmp_path / "samples.txt").read_text(encoding="utf-8").startswith("the old run")
    assert (tmp_path / "stale.txt").exists()                         # only the command's own files go


@pytest.mark.parametrize("command, out_flag, product, state", [
    ("finetune-spam", "--out", "spam-classifier.npz", "spam-train.npz"),
    ("finetune-instruct", "--out", "instruct.npz", "instruct-train.npz"),
    ("finetune-dpo", "--out", "dpo.npz", "dpo-train.npz"),
    ("pretrain-mlm", "--out-dir", "model.npz", "model.npz"),
])
def test_every_training_command_refuses_a_folder_that_holds_a_run(command, out_flag, product, state,
                                                                   tmp_path, capsys):
    """The same rule for every command that writes a run folder, before it reads anything: a finished
    model (or an interrupted run's state) is kept unless --resume or --overwrite says otherwise."""
    extra = ["--init", str(tmp_path / "missing.npz")] if command == "finetune-dpo" else []
    for name in dict.fromkeys((product, state)):
        (tmp_path / name).write_bytes(b"a run")
        assert main([command, out_flag, str(tmp_path), *extra]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path} already holds" in err and "--overwrite" in err and "--resume" in err
        assert (tmp_path / name).read_bytes() == b"a run"
        (tmp_path / name).unlink()
    if product != state:                                     # --resume of a finished run: nothing to resume
        (tmp_path / product).write_bytes(b"a run")
        assert main([command, out_flag, str(tmp_path), "--resume", *extra]) == 1
        assert "finished run, with nothing left to resume" in capsys.readouterr().err


def test_gradcheck_prints_a_passing_table(capsys):
    assert main(["gradcheck"]) == 0
    out = capsys.readouterr().out
    for layer in ("Linear", "LayerNorm", "MultiHeadAttention", "TransformerBlock", "GPTModel",
                  "cross_entropy"):
        assert f"\n{layer} " in out
    assert "all gradients match" in out and "FAIL" not in out


def test_errors_are_one_clear_line(char_run, corpus, tmp_path, capsys):
    assert main(["generate", "--checkpoint", str(tmp_path / "missing.npz")]) == 1
    assert "does not exist" in capsys.readouterr().err
    truncated = tmp_path / "truncated.npz"
    data = (char_run / "model.npz").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    assert main(["generate", "--checkpoint", str(truncated)]) == 1
    assert "corrupt or truncated" in capsys.readouterr().err
    assert main(["pretrain", "--corpus", str(corpus), "--context-length", "4000", "--out-dir",
                 str(tmp_path / "x"), *TINY_FLAGS[4:]]) == 1
    assert "validation split" in capsys.readouterr().err
    assert main(["pretrain", "--corpus", str(tmp_path / "nope.txt"), "--out-dir", str(tmp_path / "y")]) == 1
    assert "neither a registered corpus" in capsys.readouterr().err
    assert not (tmp_path / "y").exists(), "no run folder for a run that could not start"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "pretrain" in capsys.readouterr().out


def test_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "numpy_gpt", "--help"], capture_output=True, text=True,
                            check=True)
    for command in ("pretrain", "generate", "gradcheck"):
        assert command in result.stdout


@pytest.mark.parametrize("text, advice", [("ab " * 3000, "--vocab-size 259"),
                                          ("abcdefgh" * 400, "--tokenizer char")])
def test_the_advice_of_a_bpe_out_of_pairs_works(text, advice, tmp_path, capsys):
    """Issue 24 item 24: a BPE that runs out of pairs to merge suggested a vocabulary with which the
    split then had too few tokens; the advice is now checked before it is given, and following it runs."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    flags = ["pretrain", "--corpus", str(corpus), "--context-length", "16", "--batch-size", "2",
             "--max-steps", "1", "--num-samples", "0", "--sample-tokens", "2", "--no-progress"]
    assert main([*flags, "--out-dir", str(tmp_path / "a")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"use {advice}, or more text" in line
    assert main([*flags, *advice.split(), "--out-dir", str(tmp_path / "b")]) == 0


@pytest.mark.parametrize("corpus_text, said", [("", "is empty"), ("ab", "too few")])
def test_scaling_refuses_a_corpus_too_small_before_making_its_folder(corpus_text, said, tmp_path, capsys):
    """Issue 24 item 24: an empty corpus is called empty, and a refused sweep leaves no folder."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text, encoding="utf-8")
    assert main(["scaling", "--corpus", str(corpus), "--quick", "--out-dir", str(tmp_path / "sweep"),
                 "--no-progress"]) == 1
    assert said in capsys.readouterr().err and not (tmp_path / "sweep").exists()


def test_a_long_run_evaluates_about_twenty_times_not_every_hundred_steps(corpus, tmp_path, capsys):
    """Issue 24 item 25: `pretrain --preset from-scaling` printed an evaluation every 100 of 172,630
    steps. Without --eval-freq, a run longer than 2,000 steps evaluates every max_steps / 20."""
    flags = [flag for flag in TINY_FLAGS if flag not in ("--eval-freq", "3")]
    assert main(["pretrain", *flags, "--corpus", str(corpus), "--out-dir", str(tmp_path), "--max-steps",
                 "2400", "--batch-size", "1", "--num-samples", "0", "--sample-tokens", "2"]) == 0
    steps = [int(s) for s in re.findall(r"\(Step (\d+)\)", capsys.readouterr().out)]
    assert steps[:3] == [0, 120, 240] and len(steps) <= 22
