"""Tests for numpy_gpt/finetune/classifier.py: the spam dataset, what trains, the gradient of the
classification path (finite differences, PyTorch), frozen parameters costing nothing, and a tiny
model that learns a synthetic spam task from scratch."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.checkpoint import save_checkpoint
from numpy_gpt.data import DataLoader
from numpy_gpt.finetune.classifier import (
    SpamDataset,
    add_classification_head,
    calc_accuracy_loader,
    calc_loss_batch,
    class_probabilities,
    classify_review,
    last_token_cross_entropy,
    load_classifier,
    plot_values,
    save_classifier,
    set_trainable,
    train_classifier_simple,
)
from numpy_gpt.finetune.data import write_spam_csv
from numpy_gpt.gradcheck import WithLoss, gradcheck
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.lora import LinearWithLoRA
from numpy_gpt.optim import AdamW

torch = reference("torch")

TINY = {"vocab_size": 30, "context_length": 10, "emb_dim": 8, "n_heads": 2, "n_layers": 3,
        "drop_rate": 0.0, "qkv_bias": True}


class WordTokenizer:
    """Lower-case words as tokens; id 0 is the end-of-text/padding token."""

    def __init__(self, words):
        self.vocab = ["<|endoftext|>", *sorted(set(words))]
        self.ids = {w: i for i, w in enumerate(self.vocab)}

    def encode(self, text):
        return [self.ids[w] for w in re.findall(r"\w+", text.lower())]

    def decode(self, ids):
        return " ".join(self.vocab[i] for i in ids)


# -- data ---------------------------------------------------------------------------------------
def test_spam_dataset_pads_and_truncates(tmp_path):
    tok = WordTokenizer("win a free prize now see you at lunch ok".split())
    path = write_spam_csv([("spam", "Win a FREE prize now"), ("ham", "see you"), ("ham", "ok")],
                          tmp_path / "train.csv")
    ds = SpamDataset(path, tok, pad_token_id=0)
    assert ds.max_length == 5 and len(ds) == 3
    np.testing.assert_array_equal(ds.inputs, [tok.encode("win a free prize now"),
                                              tok.encode("see you") + [0, 0, 0],
                                              tok.encode("ok") + [0, 0, 0, 0]])
    assert ds.inputs.dtype == ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 0, 0]
    short = SpamDataset(path, tok, max_length=3, pad_token_id=0)
    np.testing.assert_array_equal(short.inputs[0], tok.encode("win a free"))
    x, y = next(iter(DataLoader(short, batch_size=2)))
    assert x.shape == (2, 3) and y.tolist() == [1, 0]
    with pytest.raises(ValueError, match="either csv_file or texts"):
        SpamDataset(path, tok, texts=["x"], labels=[0])


# -- what trains --------------------------------------------------------------------------------
def trainable_names(model):
    return {name for name, _ in model.named_parameters(trainable_only=True)}


def classifier(dtype=np.float32, seed=0):
    return add_classification_head(GPTModel(TINY, seed=seed, dtype=dtype), num_classes=2, seed=1)


def test_head_and_trainable_choices():
    model = classifier()
    assert model.out_head.weight.shape == (8, 2) and model.out_head.bias is not None
    set_trainable(model, "last-block")
    names = trainable_names(model)
    assert {n.split(".")[0] for n in names} == {"trf_blocks", "final_norm", "out_head"}
    assert {n.split(".")[1] for n in names if n.startswith("trf_blocks")} == {"2"}
    set_trainable(model, "last-n", n_blocks=2)
    assert {n.split(".")[1] for n in trainable_names(model) if n.startswith("trf_blocks")} == {"1", "2"}
    set_trainable(model, "last-n", n_blocks=0)
    assert trainable_names(model) == {"final_norm.scale", "final_norm.shift", "out_head.weight",
                                      "out_head.bias"}
    set_trainable(model, "all")
    assert trainable_names(model) == {name for name, _ in model.named_parameters()}
    set_trainable(model, "lora", lora_rank=2, lora_alpha=4)
    assert isinstance(model.out_head, LinearWithLoRA)
    assert all(n.endswith(("lora.A", "lora.B")) for n in trainable_names(model))
    with pytest.raises(ValueError, match="trainable must be one of"):
        set_trainable(classifier(), "everything")
    with pytest.raises(ValueError, match="n_blocks"):
        set_trainable(classifier(), "last-n", n_blocks=4)


# -- gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize("trainable", ["last-block", "lora"])
def test_classification_path_gradchecks(trainable):
    rng = np.random.default_rng(0)
    model = set_trainable(classifier(np.float64), trainable, lora_rank=2, lora_alpha=4)
    if trainable == "lora":
        for name, p in model.named_parameters(trainable_only=True):
            if name.endswith("lora.B"):
                p.data[...] = 0.5 * rng.standard_normal(p.shape)
    idx = rng.integers(0, TINY["vocab_size"], (3, 7))
    # a few random elements of every trainable tensor keep the run short (test_lora checks all of a
    # LoRA model's)
    path = WithLoss(model, lambda logits: last_token_cross_entropy(logits, np.array([0, 1, 1])))
    report = gradcheck(path, [idx],
                       max_elems_per_param=12 if trainable == "last-block" else 4)
    assert report.ok, str(report)
    assert {row.name.split(".")[1] for row in report.rows} == (
        {"trf_blocks", "final_norm", "out_head"} if trainable == "last-block"
        else {"trf_blocks", "out_head"})


def test_last_token_loss_matches_pytorch():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((4, 6, 2)).astype(np.float32)
    targets = np.array([0, 1, 1, 0])
    loss, dlogits = last_token_cross_entropy(logits, targets)
    t = torch.tensor(logits, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t[:, -1, :], torch.tensor(targets))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(dlogits, t.grad.numpy(), rtol=1e-6, atol=1e-7)
    assert not dlogits[:, :-1].any()


def count_backward_calls(modules):
    """Wrap each module's backward with a counter; returns the list of counts (live)."""
    counts = [0] * len(modules)
    for k, module in enumerate(modules):
        def counted(dout, k=k, original=module.backward):
            counts[k] += 1
            return original(dout)
        module.backward = counted
    return counts


@pytest.mark.parametrize("trainable, blocks_walked", [("last-block", [0, 0, 1]), ("last-n", [0, 1, 1]),
                                                      ("all", [1, 1, 1]), ("lora", [1, 1, 1])])
def test_frozen_parameters_cost_no_gradient_work(trainable, blocks_walked):
    rng = np.random.default_rng(2)
    model = set_trainable(classifier(), trainable, n_blocks=2, lora_rank=2, lora_alpha=4)
    blocks = list(model.trf_blocks)
    block_calls = count_backward_calls(blocks)
    emb_calls = count_backward_calls([model.tok_emb, model.pos_emb])
    linear_calls = count_backward_calls([m for m in model.modules() if type(m) is Linear])
    idx = rng.integers(0, TINY["vocab_size"], (4, 8))
    model(idx)
    # blocks below the lowest trainable one ran without keeping activations for a backward
    assert [b.att._cache is not None for b in blocks] == [bool(c) for c in blocks_walked]
    model.zero_grad()
    calc_loss_batch(idx, np.array([0, 1, 0, 1]), model, backward=True)
    assert block_calls == blocks_walked
    assert emb_calls == ([1, 1] if trainable == "all" else [0, 0])
    if trainable == "lora":                           # every Linear is wrapped: no Linear.backward, no dW
        assert len(linear_calls) == 6 * TINY["n_layers"] + 1 and not any(linear_calls)
    frozen = [(name, p) for name, p in model.named_parameters() if not p.trainable]
    assert [name for name, p in frozen if p.grad is not None] == []
    # every trainable tensor got a gradient (LoRA's A gets none while B is still zero)
    trained = [(n, p) for n, p in model.named_parameters(trainable_only=True) if not n.endswith("lora.A")]
    assert all(p.grad is not None and p.grad.any() for _, p in trained)


# -- a tiny model learns a synthetic spam task ----------------------------------------------------
HAM_WORDS = ("see you at lunch tomorrow ok call me when home are we still on for dinner thanks "
             "love the movie meeting moved to three bring the book").split()
TRIGGERS = ["free", "winner", "prize", "cash", "urgent"]


def synthetic_messages(rng, n):
    """Half ham (4-10 everyday words), half spam (the same, plus one trigger word somewhere)."""
    texts, labels = [], []
    for i in range(n):
        words = list(rng.choice(HAM_WORDS, size=rng.integers(4, 11)))
        if i % 2:
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(TRIGGERS)))
        texts.append(" ".join(words))
        labels.append(i % 2)
    return texts, labels


def test_tiny_model_learns_synthetic_spam(tmp_path):
    rng = np.random.default_rng(0)
    tok = WordTokenizer(HAM_WORDS + TRIGGERS)
    texts, labels = synthetic_messages(rng, 520)
    train_ds = SpamDataset(None, tok, pad_token_id=0, texts=texts[:400], labels=labels[:400])
    val_ds = SpamDataset(None, tok, train_ds.max_length, pad_token_id=0, texts=texts[400:440],
                         labels=labels[400:440])
    test_ds = SpamDataset(None, tok, train_ds.max_length, pad_token_id=0, texts=texts[440:],
                          labels=labels[440:])
    train_loader = DataLoader(train_ds, batch_size=16, shuffle=True, drop_last=True)
    val_loader, test_loader = DataLoader(val_ds, batch_size=20), DataLoader(test_ds, batch_size=20)

    cfg = {"vocab_size": len(tok.vocab), "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 1,
           "drop_rate": 0.0, "qkv_bias": False}
    model = set_trainable(add_classification_head(GPTModel(cfg, seed=123)), "all")
    before = calc_accuracy_loader(test_loader, model)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    train_losses, val_losses, train_accs, val_accs, examples_seen = train_classifier_simple(
        model, train_loader, val_loader, optimizer, num_epochs=6, eval_freq=25, eval_iter=2, verbose=False)
    after = calc_accuracy_loader(test_loader, model)
    assert before < 0.7 and after > 0.95, (before, after)
    assert len(train_accs) == len(val_accs) == 6 and examples_seen == 6 * 25 * 16
    assert len(train_losses) == len(val_losses) == 6 and val_losses[-1] < val_losses[0]

    length = train_ds.max_length
    assert classify_review("call me when home winner", model, tok, length, pad_token_id=0) == "spam"
    assert classify_review("see you at lunch", model, tok, length, pad_token_id=0) == "not spam"
    probs = class_probabilities("call me when home winner", model, tok, length, pad_token_id=0)
    ids = tok.encode("call me when home winner")
    padded = np.asarray([ids + [0] * (length - len(ids))])
    logits = model(padded)[0, -1].astype(np.float64)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(), rtol=1e-6)
    assert probs[1] > 0.5

    path = save_classifier(tmp_path / "spam.npz", model, max_length=train_ds.max_length, pad_token_id=0)
    loaded, extra = load_classifier(path)
    assert extra["max_length"] == train_ds.max_length and extra["num_classes"] == 2
    assert calc_accuracy_loader(test_loader, loaded) == after

    png = plot_values(np.linspace(0, 6, 6), np.linspace(0, examples_seen, 6), train_accs, val_accs,
                      label="accuracy", path=tmp_path / "accuracy-plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_save_classifier_merges_lora(tmp_path):
    rng = np.random.default_rng(3)
    model = set_trainable(classifier(np.float64), "lora", lora_rank=2, lora_alpha=4)
    for name, p in model.named_parameters(trainable_only=True):
        if name.endswith("lora.B"):
            p.data[...] = 0.1 * rng.standard_normal(p.shape)
    idx = rng.integers(0, TINY["vocab_size"], (2, 6))
    expected = model(idx)
    loaded, _ = load_classifier(save_classifier(tmp_path / "c.npz", model, max_length=6))
    np.testing.assert_allclose(loaded(idx), expected, rtol=1e-12, atol=1e-12)
    plain = save_checkpoint(tmp_path / "plain.npz", GPTModel(TINY, seed=0))
    with pytest.raises(ValueError, match="plain.npz is a GPT language model, not a GPT spam classifier"):
        load_classifier(plain)


# -- the command line ---------------------------------------------------------------------------
def run_cli(argv):
    """The command through numpy_gpt.cli.main: its flag checks and its one-line error path."""
    from numpy_gpt.cli import main
    return main(argv)


@pytest.mark.parametrize("start", ["scratch", "openai-checkpoint"])
def test_cli_finetune_spam_then_classify(start, tmp_path, gpt2_vocab_dir, capsys, request):
    rng = np.random.default_rng(5)
    texts, labels = synthetic_messages(rng, 60)
    lines = [f"{'spam' if y else 'ham'}\t{t}" for t, y in zip(texts, labels, strict=True)]
    lines += [f"ham\t{t}" for t in synthetic_messages(rng, 40)[0][::2]]       # more ham than spam
    (tmp_path / "SMSSpamCollection").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    common = ["--vocab-dir", str(gpt2_vocab_dir), "--data-dir", str(tmp_path / "data")]
    if start == "scratch":
        init = ["--init", "scratch", "--preset", "tiny", "--trainable", "all"]
    else:                         # the tiny GPT-2 in OpenAI's format stands in for the 124M download
        tiny_gpt2 = request.getfixturevalue("gpt2_tiny_dir") / "openai"
        init = ["--init", "checkpoint", "--checkpoint", str(tiny_gpt2), "--trainable", "last-block"]
    rc = run_cli(["finetune-spam", *init, "--spam-file", str(tmp_path / "SMSSpamCollection"),
                  "--out", str(out), "--epochs", "1", "--lr", "1e-3", "--eval-freq", "2", "--eval-iter", "1",
                  *common])
    assert rc == 0
    assert {p.name for p in out.iterdir()} == {"spam-classifier.npz", "metrics.json", "loss-plot.png",
                                              "accuracy-plot.png"}
    metrics = json.loads((out / "metrics.json").read_text())
    splits = {"train", "validation", "test"}
    assert set(metrics["accuracy_before"]) == set(metrics["accuracy_after"]) == splits
    assert metrics["trainable_parameters"] > 0 and metrics["train_seconds"] >= 0
    capsys.readouterr()

    assert run_cli(["classify", "win a free prize", "see you at lunch", "--checkpoint",
                    str(out / "spam-classifier.npz"), *common]) == 0
    lines = capsys.readouterr().out.split("\n")[:2]
    assert {line.split(" (p = ")[0].strip() for line in lines} <= {"spam", "not spam"}
    assert run_cli(["classify", "hello", "--checkpoint", str(tmp_path / "missing.npz"), *common]) == 1
    assert "finetune-spam" in capsys.readouterr().err


def test_cli_reports_missing_gpt2_weights(tmp_path, gpt2_vocab_dir, monkeypatch, capsys):
    from numpy_gpt.download import DownloadError

    def offline(*args, **kwargs):
        raise DownloadError("Could not download GPT-2 124M checkpoint.\nTried: ...")
    monkeypatch.setattr("numpy_gpt.gpt2.convert.load_gpt2", offline)
    rc = run_cli(["classify", "hello", "--init", "gpt2-124M", "--models-dir", str(tmp_path),
                  "--vocab-dir", str(gpt2_vocab_dir)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "Could not download GPT-2 124M" in err and "--init scratch" in err


def test_load_classifier_rejects_other_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz is corrupt or truncated"):
        load_classifier(tmp_path / "junk.npz")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="arrays.npz has no '__meta__' entry"):
        load_classifier(tmp_path / "arrays.npz")


def test_spam_baselines_hand_computed():
    """Majority class and the best length threshold, chosen on train and scored on every split."""
    from numpy_gpt.finetune.classifier import spam_baselines

    tok = WordTokenizer(["a"])
    def split(lengths, labels, max_length=4):
        return SpamDataset(None, tok, max_length, pad_token_id=0, texts=[" ".join("a" * n) for n in lengths],
                           labels=labels)
    # train: lengths 1 1 2 3 5 (seen as 1 1 2 3 4), labels 0 0 0 1 1 -> majority 0 (3 of 5); the best
    # threshold is "more than 2 tokens" (5 of 5)
    datasets = {"train": split([1, 1, 2, 3, 5], [0, 0, 0, 1, 1]), "test": split([2, 9, 1, 4], [1, 1, 0, 0])}
    baselines = spam_baselines(datasets)
    assert baselines["majority_class"] == {"rule": "always 'not spam'", "train": 0.6, "test": 0.5}
    assert baselines["length_threshold"] == {"rule": "'spam' if more than 2 tokens", "train": 1.0,
                                             "test": 0.5}
    assert datasets["train"].num_truncated == 1 and datasets["test"].num_truncated == 1


def test_naive_bayes_hand_computed():
    """Issue 24 item 3: the word-count baseline. Train: ham "see you", spam "win win"; add-one smoothing
    over {see, win, you} gives P(w | ham) = (.4, .2, .4), P(w | spam) = (.2, .6, .2), priors 1/2."""
    from numpy_gpt.finetune.classifier import naive_bayes, spam_baselines

    texts = ["win", "see", "you WIN!", "see you win", "never seen"]
    # spam .6 > .2; ham .4 > .2; spam .12 > .08; ham .032 > .024; a tie (no known word) is 'not spam'
    assert naive_bayes(["see you", "win win"], np.array([0, 1]), texts).tolist() == [1, 0, 1, 0, 0]
    tok = WordTokenizer(["see", "you", "win", "never", "seen"])
    train = SpamDataset(None, tok, 4, pad_token_id=0, texts=["see you", "win win"], labels=[0, 1])
    test = SpamDataset(None, tok, 4, pad_token_id=0, texts=texts[:4], labels=[1, 0, 0, 0])
    assert spam_baselines({"train": train, "test": test})["naive_bayes"] == {
        "rule": "bag-of-words naive Bayes fitted on train", "train": 1.0, "test": 0.75}


def test_examples_covered_counts_what_an_evaluation_sees():
    from numpy_gpt.finetune.classifier import examples_covered

    data = SpamDataset(None, WordTokenizer(["a"]), 2, pad_token_id=0, texts=["a"] * 10, labels=[0] * 10)
    assert examples_covered(DataLoader(data, 4), 2) == 8
    assert examples_covered(DataLoader(data, 4)) == 10                 # the last batch holds 2
    assert examples_covered(DataLoader(data, 4, drop_last=True)) == 8  # the shuffled training loader
    assert examples_covered(DataLoader(data, 4), 9) == 10
