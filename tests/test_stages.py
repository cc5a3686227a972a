"""Stage 1 -> 2 -> 3 through the command line: a model pretrained here (character or trained-BPE
tokenizer) or a GPT-2-vocabulary model is fine-tuned with finetune-spam, used by classify, instruction-
tuned with finetune-instruct and asked with chat, each with the tokenizer its checkpoint records.

Tiny models and a few steps each: these tests check that the stages connect and that the honest
numbers (baselines, full-split accuracies, response-token loss) are reported, not that the models
learn. The baselines are recounted here from the CSV files the command wrote."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from numpy_gpt.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from numpy_gpt.cli import main
from numpy_gpt.model import GPTModel
from numpy_gpt.tokenizers.char import CharTokenizer

# Context 384: a character model's instruction prompt ("Below is an instruction ..." and the task) is
# about 160 characters, and a prompt keeps at most half the context.
PRETRAIN = ["--preset", "tiny", "--context-length", "384", "--emb-dim", "16", "--n-layers", "1",
            "--n-heads", "2", "--batch-size", "4", "--eval-freq", "3", "--eval-iter", "1", "--max-steps", "3",
            "--warmup-steps", "1", "--sample-tokens", "4", "--num-samples", "1", "--no-progress",
            "--max-chars", "12000", "--prompt", "I"]
FINETUNE = ["--epochs", "1", "--lr", "1e-3", "--eval-freq", "2", "--eval-iter", "1", "--batch-size", "4",
            "--trainable", "all"]
WORDS = "see you at lunch tomorrow ok call me when home are we still on for dinner thanks".split()
TRIGGERS = ["free", "winner", "prize", "cash", "urgent"]


def spam_collection(path, n=40, seed=5):
    """A synthetic SMSSpamCollection: spam holds a trigger word, and ham outnumbers spam."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(3, 9))))
        if i % 3 == 0:
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(TRIGGERS)))
        lines.append(f"{'spam' if i % 3 == 0 else 'ham'}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def instruction_data(path, n=40, seed=1):
    rng = np.random.default_rng(seed)
    entries = []
    for _ in range(n):
        word = list(rng.choice(list("bcdfghjk"), size=3))
        entries.append({"instruction": "Reverse the letters.", "input": " ".join(word),
                        "output": " ".join(word[::-1])})
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoints(verdict_path, tmp_path_factory):
    """kind -> (checkpoint path, end-of-text id it should use): two pretrained here, one random model of
    GPT-2's vocabulary."""
    root = tmp_path_factory.mktemp("stage1")
    runs = {}
    for kind, extra in (("char", []), ("bpe", ["--vocab-size", "300"])):
        assert main(["pretrain", "--corpus", str(verdict_path), "--tokenizer", kind, *extra,
                     "--out-dir", str(root / kind), *PRETRAIN]) == 0
        spec = load_checkpoint(root / kind / "model.npz", load_optimizer=False).extra["tokenizer"]
        # end-of-text is the first id after the alphabet (char) or the last id (BPE, vocabulary 300)
        runs[kind] = (root / kind / "model.npz", len(spec["chars"]) if kind == "char" else 299)
    cfg = {"vocab_size": 50257, "context_length": 128, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    runs["gpt2"] = (save_checkpoint(root / "gpt2.npz", GPTModel(cfg, seed=0),
                                    extra={"tokenizer": {"kind": "gpt2"}}), 50256)
    return runs


def read_labels(path):
    with open(path, encoding="utf-8", newline="") as f:
        return np.array([int(row["Label"]) for row in csv.DictReader(f)])


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_pretrained_model_goes_through_every_stage(kind, checkpoints, tmp_path, gpt2_vocab_dir, capsys):
    checkpoint, eot = checkpoints[kind]
    spec = read_checkpoint_meta(checkpoint)["extra"]["tokenizer"]
    vocab = ["--vocab-dir", str(gpt2_vocab_dir), "--data-dir", str(tmp_path / "data")]

    # stage 2: classification
    spam = tmp_path / "spam"
    cut = ["--max-length", "16"] if kind == "char" else []            # most messages are longer
    assert main(["finetune-spam", "--init", "checkpoint", "--checkpoint", str(checkpoint), "--spam-file",
                 str(spam_collection(tmp_path / "SMSSpamCollection")), "--out", str(spam), *FINETUNE,
                 *cut, *vocab]) == 0
    out = capsys.readouterr().out
    assert "majority class: always" in out and "length baseline: 'spam' if" in out
    assert "word counts: bag-of-words naive Bayes" in out
    assert re.search(r"Training accuracy: [\d.]+% \(\d+ of \d+ examples\)", out)
    metrics = json.loads((spam / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["tokenizer"] == kind
    assert metrics["max_length"] <= (16 if kind == "char" else 128)            # at most the context
    labels = {name: read_labels(tmp_path / "data" / "sms_spam_collection" / f"{name}.csv")
              for name in ("train", "validation", "test")}
    assert metrics["split_sizes"] == {name: len(y) for name, y in labels.items()}
    assert metrics["dedupe"] is False and set(metrics["overlap"]) == {
        "validation_in_train", "test_in_train", "test_in_validation"}
    majority = int(np.bincount(labels["train"]).argmax())
    for name, y in labels.items():                  # the majority baseline, recounted from the CSVs
        assert metrics["baselines"]["majority_class"][name] == pytest.approx(np.mean(y == majority))
    # the threshold rule includes "always ham" and "always spam", so it is at least as good on train
    baselines = metrics["baselines"]
    assert baselines["length_threshold"]["train"] >= baselines["majority_class"]["train"]
    assert set(metrics["accuracy_after"]) == {"train", "validation", "test"}
    if kind == "char":                              # --max-length 16: most messages are cut, none crash
        assert sum(metrics["truncated_messages"].values()) > 0
    extra = read_checkpoint_meta(spam / "spam-classifier.npz")["extra"]
    assert extra["tokenizer"] == spec and extra["pad_token_id"] == eot

    assert main(["classify", "WINNER!! # free cash \U0001F600", "see you at lunch", "--checkpoint",
                 str(spam / "spam-classifier.npz"), *vocab]) == 0
    lines = capsys.readouterr().out.splitlines()[:2]
    for line, text in zip(lines, ["WINNER!! # free cash \U0001F600", "see you at lunch"], strict=True):
        label, p = re.fullmatch(r"(spam|not spam) +\(p = ([\d.]+)\)  (.*)", line).group(1, 2)
        assert 0.5 <= float(p) <= 1 and line.endswith(text)                 # the label, how sure, the text
    assert main(["classify", "fine", " ", "--checkpoint", str(spam / "spam-classifier.npz")]) == 2
    assert "text 2 of 2 is empty" in capsys.readouterr().err              # an empty text: before any work

    # stage 3: instructions, from the same pretrained checkpoint
    instruct = tmp_path / "instruct"
    assert main(["finetune-instruct", "--init", "checkpoint", "--checkpoint", str(checkpoint), "--data",
                 str(instruction_data(tmp_path / "data.json")), "--limit", "8", "--out", str(instruct),
                 "--max-new-tokens", "3", "--judge", "none", *FINETUNE, *vocab]) == 0
    out = capsys.readouterr().out
    if kind != "char":           # the training sample: a whole prompt, and nothing after end-of-text
        (sample,) = {line for line in out.splitlines() if line.startswith("Below is an instruction")}
        assert "<|endoftext|>" not in sample.rstrip().removesuffix("<|endoftext|>")
    for label in ("echo the instruction and input", "constant answer", "untuned model",
                  "fine-tuned model", "What these scores show"):
        assert label in out
    metrics = json.loads((instruct / "metrics.json").read_text(encoding="utf-8"))
    assert {"echo", "constant_answer", "untuned_model"} <= set(metrics["baselines"])
    assert ("most_common_answer" in metrics["baselines"]) == (metrics["most_common_answer"] is not None)
    assert not (instruct / "instruct-train.npz").exists()          # the finished run keeps only its model
    assert metrics["baselines"]["echo"]["n"] == metrics["offline"]["n"] == 4
    loss = metrics["validation_response_loss"]
    assert loss["tokens"] > 0 and math.isclose(loss["perplexity_after"], math.exp(loss["loss_after"]))
    if kind == "char":          # '#' is not in the-verdict's alphabet
        assert "#" not in spec["chars"]
    assert read_checkpoint_meta(instruct / "instruct.npz")["extra"]["tokenizer"] == spec

    assert main(["chat", "--checkpoint", str(instruct / "instruct.npz"), "--instruction",
                 "Reverse the letters.", "--input", "b # d", "--max-new-tokens", "3", *vocab]) == 0


def test_a_checkpoint_without_end_of_text_is_refused(tmp_path, capsys):
    """A character model pretrained before alphabets got <|endoftext|>: one clear line."""
    tok = CharTokenizer.from_text("abc ")
    cfg = {"vocab_size": tok.n_vocab, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    path = save_checkpoint(tmp_path / "old.npz", GPTModel(cfg, seed=0),
                           extra={"tokenizer": {"kind": "char", "chars": tok.chars}})
    assert main(["chat", "--checkpoint", str(path), "--instruction", "abc"]) == 1
    err = capsys.readouterr().err
    assert "no <|endoftext|> token" in err and "pretrain this model again" in err
    assert len(err.strip().splitlines()) == 1


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path, gpt2_vocab_dir, capsys):
    """The issue's second failure: a 1,024-id model read with GPT-2's 50,257 ids (no recorded tokenizer)."""
    cfg = {"vocab_size": 1024, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    path = save_checkpoint(tmp_path / "bare.npz", GPTModel(cfg, seed=0))
    assert main(["chat", "--checkpoint", str(path), "--instruction", "hi", "--vocab-dir",
                 str(gpt2_vocab_dir)]) == 1
    assert "vocabulary of 1,024 ids" in capsys.readouterr().err


# -- the README's chain, as written ----------------------------------------------------------------
README = Path(__file__).resolve().parents[1] / "README.md"
# Appended to each README line (a later flag wins): sizes, steps and lengths made tiny, never the
# context, the data or the files that connect the stages.
TOY = {"pretrain": ["--emb-dim", "16", "--n-layers", "1", "--max-steps", "2", "--eval-freq", "2",
                    "--eval-iter", "1", "--num-samples", "0", "--sample-tokens", "2", "--max-chars", "300000",
                    "--no-progress"],
       "finetune-spam": ["--epochs", "1", "--eval-freq", "100", "--eval-iter", "1"],
       "finetune-instruct": ["--limit", "16", "--max-new-tokens", "2", "--judge", "none", "--eval-freq",
                             "100", "--eval-iter", "1"],
       "finetune-dpo": ["--num-responses", "1", "--max-new-tokens", "2", "--eval-freq", "100", "--eval-iter",
                        "1", "--no-progress"],
       "classify": [], "chat": ["--max-new-tokens", "2"]}


def readme_stage_chain() -> list[list[str]]:
    """The command lines of the README's "Stage 1 -> 2 -> 3" section, in order."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    section = text.split("## Stage 1 -> 2 -> 3 in one sitting", 1)[1].split("\n## ", 1)[0]
    return [shlex.split(line, comments=True) for line in section.splitlines()
            if line.startswith("    ") and line.split()[0] in ("numpy-gpt", "python")]


def test_the_readme_chain_runs_as_written(tmp_path, monkeypatch, capsys):
    """Issue 24 item 1: pretrain -> finetune-spam -> classify -> finetune-instruct -> finetune-dpo ->
    chat, each line of the README as written (its context, its files), only made tiny: no stage
    refuses what the one before wrote, and none cuts every example."""
    chain = readme_stage_chain()
    assert [argv[1] if argv[0] == "numpy-gpt" else "script" for argv in chain] == [
        "pretrain", "script", "finetune-spam", "classify", "finetune-instruct", "finetune-dpo", "chat"]
    monkeypatch.chdir(tmp_path)
    for argv in chain:
        if argv[0] == "python":
            subprocess.run([sys.executable, str(README.parent / argv[1]), *argv[2:]], check=True)
            continue
        command = argv[1]
        assert main([*argv[1:], *TOY[command]]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        if command == "finetune-instruct":
            metrics = json.loads(Path("runs/instruct/metrics.json").read_text(encoding="utf-8"))
            assert metrics["truncated_examples"]["train"] == 0, out
        if command == "chat":
            assert out.strip()
    assert Path("runs/dpo/dpo.npz").is_file()


def test_a_context_too_short_for_the_later_stages_is_refused_with_advice_that_works(verdict_path, tmp_path,
                                                                                   capsys):
    """At context 16 every instruction example would be cut: finetune-instruct refuses before training
    and names the context that cuts none; pretraining with it, the same command runs. finetune-dpo
    names the context that holds every pair, and that the model's context (not a flag) is the limit."""
    data = ["--data", str(instruction_data(tmp_path / "data.json")), "--limit", "8", "--judge", "none",
            "--max-new-tokens", "2", *FINETUNE]

    def pretrain(context: str) -> Path:
        out = tmp_path / f"ctx{context}"
        flags = [*PRETRAIN, "--context-length", context, "--num-samples", "0"]
        assert main(["pretrain", "--corpus", str(verdict_path), "--tokenizer", "char", "--out-dir", str(out),
                     *flags]) == 0
        return out / "model.npz"

    short = pretrain("16")
    capsys.readouterr()
    instruct = ["finetune-instruct", "--init", "checkpoint", "--checkpoint"]
    assert main([*instruct, str(short), "--out", str(tmp_path / "i16"), *data]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "cuts every one of the" in line and "instruction header alone is" in line
    context = re.search(r"--context-length (\d+)", line)[1]
    assert not (tmp_path / "i16" / "instruct-train.npz").exists()
    assert main([*instruct, str(pretrain(context)), "--out", str(tmp_path / "i"), *data]) == 0
    assert json.loads((tmp_path / "i" / "metrics.json").read_text())["truncated_examples"]["train"] == 0

    assert main(["finetune-dpo", "--init", str(short), "--out", str(tmp_path / "dpo")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "leave no room for an answer in 16 tokens" in line and "hold every pair whole" in line
    assert "the model's context of 16 tokens is the limit" in line and "--context-length" in line
    assert main(["finetune-dpo", "--init", str(short), "--allowed-max-length", "8", "--out",
                 str(tmp_path / "dpo")]) == 1
    assert "raise --allowed-max-length (up to the model's context of 16)" in capsys.readouterr().err


@pytest.mark.parametrize("init", ["checkpoint", "scratch"])
def test_finetune_spam_arch_encoder_goes_through_the_same_command(init, verdict_path, tmp_path, capsys):
    """Issue 24 item 5: the encoder is fine-tuned by finetune-spam itself (an encoder pretrained by
    pretrain-mlm, or a new one), on the same data with the same baselines and accuracy table, and
    classify reads what it writes."""
    start = []
    if init == "checkpoint":
        mlm = tmp_path / "mlm"
        assert main(["pretrain-mlm", "--corpus", str(verdict_path), "--max-chars", "20000", "--vocab-size",
                     "200", "--min-frequency", "2", "--context-length", "32", "--emb-dim", "16", "--n-layers",
                     "1", "--n-heads", "2", "--max-steps", "2", "--batch-size", "4", "--eval-freq", "2",
                     "--eval-iter", "1", "--out-dir", str(mlm), "--no-progress"]) == 0
        start = ["--checkpoint", str(mlm / "model.npz")]
    spam = tmp_path / "spam"
    assert main(["finetune-spam", "--arch", "encoder", "--init", init, *start, "--preset", "tiny",
                 "--spam-file", str(spam_collection(tmp_path / "SMSSpamCollection")), "--out", str(spam),
                 "--data-dir", str(tmp_path / "data"), *FINETUNE]) == 0
    out = capsys.readouterr().out
    for label in ("majority class: always", "length baseline", "word counts: bag-of-words naive Bayes",
                  "model after fine-tuning"):
        assert label in out
    metrics = json.loads((spam / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["arch"] == "encoder" and metrics["tokenizer"] == "wordpiece"
    assert set(metrics["baselines"]) == {"majority_class", "length_threshold", "naive_bayes"}
    assert read_checkpoint_meta(spam / "spam-classifier.npz")["model_class"] == "EncoderClassifier"
    assert main(["classify", "winner free cash", "see you at lunch", "--checkpoint",
                 str(spam / "spam-classifier.npz")]) == 0
    assert all(re.match(r"(spam|not spam) +\(p = ", line) for line in capsys.readouterr().out.splitlines())


@pytest.mark.parametrize("flags", [["--init", "gpt2-124M"],
                                   ["--init", "scratch", "--trainable", "last-block"]])
def test_finetune_spam_arch_encoder_refuses_what_does_not_fit_an_encoder(flags, tmp_path, capsys):
    assert main(["finetune-spam", "--arch", "encoder", *flags, "--out", str(tmp_path / "o")]) == 2
    assert "--arch encoder" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_the_encoder_vs_decoder_script_goes_through_the_library_with_training_baselines(tmp_path):
    """Issue 24 items 3 and 5: the script trains its three models with finetune_spam_classifier and
    reports the command's baselines, the majority class taken from the training labels."""
    script = README.parent / "scripts" / "encoder_vs_decoder_spam.py"
    subprocess.run([sys.executable, str(script), "--synthetic", "--synthetic-size", "80", "--epochs", "1",
                    "--emb-dim", "16", "--n-layers", "1", "--out", str(tmp_path)], check=True,
                   capture_output=True)
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    labels = {name: read_labels(tmp_path / "data" / f"{name}.csv") for name in ("train", "test")}
    majority = int(np.bincount(labels["train"], minlength=2).argmax())
    assert saved["baselines"]["majority_class"]["test"] == pytest.approx(np.mean(labels["test"] == majority))
    assert set(saved["results"]) == {"decoder (last token)", "encoder ([CLS] + pooler)",
                                     "encoder (mean pooling)"}
