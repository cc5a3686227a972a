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

import numpy as np
import pytest

from numpy_gpt.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from numpy_gpt.cli import main
from numpy_gpt.model import GPTModel
from numpy_gpt.tokenizers.char import CharTokenizer

PRETRAIN = ["--preset", "tiny", "--context-length", "16", "--emb-dim", "16", "--n-layers", "1",
            "--n-heads", "2", "--batch-size", "4", "--eval-freq", "3", "--eval-iter", "1", "--max-steps", "3",
            "--warmup-steps", "1", "--sample-tokens", "4", "--num-samples", "1", "--no-progress",
            "--max-chars", "6000", "--prompt", "I"]
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
    cfg = {"vocab_size": 50257, "context_length": 32, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
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
    assert main(["finetune-spam", "--init", "checkpoint", "--checkpoint", str(checkpoint), "--spam-file",
                 str(spam_collection(tmp_path / "SMSSpamCollection")), "--out", str(spam), *FINETUNE,
                 *vocab]) == 0
    out = capsys.readouterr().out
    assert "majority class: always" in out and "length baseline: 'spam' if" in out
    assert re.search(r"Training accuracy: [\d.]+% \(\d+ of \d+ examples\)", out)
    metrics = json.loads((spam / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["tokenizer"] == kind
    assert metrics["max_length"] <= (32 if kind == "gpt2" else 16)            # at most the context
    labels = {name: read_labels(tmp_path / "data" / "sms_spam_collection" / f"{name}.csv")
              for name in ("train", "validation", "test")}
    assert metrics["split_sizes"] == {name: len(y) for name, y in labels.items()}
    majority = int(np.bincount(labels["train"]).argmax())
    for name, y in labels.items():                  # the majority baseline, recounted from the CSVs
        assert metrics["baselines"]["majority_class"][name] == pytest.approx(np.mean(y == majority))
    # the threshold rule includes "always ham" and "always spam", so it is at least as good on train
    baselines = metrics["baselines"]
    assert baselines["length_threshold"]["train"] >= baselines["majority_class"]["train"]
    assert set(metrics["accuracy_after"]) == {"train", "validation", "test"}
    if kind == "char":                              # context 16: most messages are cut, none crash
        assert sum(metrics["truncated_messages"].values()) > 0
    extra = read_checkpoint_meta(spam / "spam-classifier.npz")["extra"]
    assert extra["tokenizer"] == spec and extra["pad_token_id"] == eot

    assert main(["classify", "WINNER!! # free cash \U0001F600", "see you at lunch", "--checkpoint",
                 str(spam / "spam-classifier.npz"), *vocab]) == 0
    assert capsys.readouterr().out.splitlines()[:2] in ([a, b] for a in ("spam", "not spam")
                                                         for b in ("spam", "not spam"))

    # stage 3: instructions, from the same pretrained checkpoint
    instruct = tmp_path / "instruct"
    assert main(["finetune-instruct", "--init", "checkpoint", "--checkpoint", str(checkpoint), "--data",
                 str(instruction_data(tmp_path / "data.json")), "--limit", "8", "--out", str(instruct),
                 "--max-new-tokens", "3", "--judge", "none", *FINETUNE, *vocab]) == 0
    out = capsys.readouterr().out
    for label in ("echo the instruction and input", "most common training answer", "untuned model",
                  "fine-tuned model", "What these scores show"):
        assert label in out
    metrics = json.loads((instruct / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["baselines"]) == {"echo", "most_common_answer", "untuned_model"}
    assert metrics["baselines"]["echo"]["n"] == metrics["offline"]["n"] == 4
    loss = metrics["validation_response_loss"]
    assert loss["tokens"] > 0 and math.isclose(loss["perplexity_after"], math.exp(loss["loss_after"]))
    if kind == "char":          # '#' is not in the-verdict's alphabet, and the prompt outgrows 16 tokens
        assert "#" not in spec["chars"] and metrics["truncated_examples"]["train"] > 0
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
