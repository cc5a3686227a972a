"""Masked-language-model pretraining (numpy_gpt/mlm.py) and the encoder commands (cli/encoder.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.checkpoint import CheckpointError, save_checkpoint
from numpy_gpt.cli import main
from numpy_gpt.encoder import EncoderModel
from numpy_gpt.mlm import (
    IGNORE_INDEX,
    MLMLoader,
    fill_mask,
    load_mlm_checkpoint,
    mask_tokens,
    masked_accuracy,
    save_mlm_checkpoint,
    unigram_token,
)
from numpy_gpt.optim import AdamW
from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer, train_wordpiece_vocab
from numpy_gpt.train import train_model

torch = reference("torch")
transformers = reference("transformers")

# A tiny language in which a hidden word can only be recovered from BOTH sides: the subject fixes
# the verb and the verb fixes the place ("the cat sat on the mat", "the dog ran in the park").
SENTENCES = ["the cat sat on the mat .", "the dog ran in the park .", "a bird sang in the tree .",
             "the fish swam in the lake .", "a cow ate on the farm ."]


def tiny_corpus(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(SENTENCES[i] for i in rng.integers(0, len(SENTENCES), n))


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(train_wordpiece_vocab(tiny_corpus(50, 0), 200))   # every word whole


def test_mask_tokens_follows_berts_recipe():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(200, 500))
    ids[:, 0], ids[:, -1] = 2, 3                                  # [CLS] ... [SEP]
    inputs, labels = mask_tokens(ids, rng, vocab_size=1000, mask_id=4, special_ids=[0, 1, 2, 3, 4])
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, [0, -1]].any()                           # special tokens are never chosen
    assert np.array_equal(labels[chosen], ids[chosen])            # labels: the original ids there
    assert np.array_equal(inputs[~chosen], ids[~chosen])          # the rest is untouched
    assert abs(chosen.mean() / (498 / 500) - 0.15) < 0.003
    masked = inputs[chosen] == 4
    unchanged = inputs[chosen] == ids[chosen]
    random = ~masked & ~unchanged
    assert abs(masked.mean() - 0.8) < 0.01
    assert abs(unchanged.mean() - 0.1) < 0.01                     # (a random draw may hit the same id)
    assert abs(random.mean() - 0.1) < 0.01
    assert (inputs[chosen][random] >= 5).all()                   # random replacements are ordinary tokens
    one, labels = mask_tokens(np.array([[2, 7, 3]]), np.random.default_rng(1), vocab_size=10, mask_id=4,
                              special_ids=[2, 3], mask_prob=0.0)
    assert (labels != IGNORE_INDEX).sum() == 1 and labels[0, 1] == 7   # never an empty loss


def test_loader_windows_and_deterministic_masks(tokenizer):
    ids = np.asarray(tokenizer.encode(tiny_corpus(40, 1), add_special_tokens=False))
    loader = MLMLoader(ids, tokenizer, batch_size=3, context_length=10, seed=5)
    assert len(loader) == (len(ids) // 8) // 3
    first = [tuple(map(np.copy, batch)) for batch in loader]
    inputs, labels = first[0]
    assert inputs.shape == labels.shape == (3, 10)
    assert (inputs[:, 0] == tokenizer.cls_id).all() and (inputs[:, -1] == tokenizer.sep_id).all()
    again = list(loader)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(first, again, strict=True))
    loader.epoch = 1                                              # a new epoch: new order, new masks
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, loader, strict=True))


def tiny_encoder(tokenizer, seed=0, context_length=12):
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": context_length, "emb_dim": 32, "n_heads": 2,
           "n_layers": 1, "drop_rate": 0.0, "qkv_bias": True}
    return EncoderModel(cfg, seed=seed)


# Windows whose 8 words all come from one of four topics: a hidden word's topic is given by the
# rest of the window, left and right, so a model that reads its context gets about 1 in 3 right
# while "always the most frequent word" gets about 1 in 12.
TOPICS = [["cat", "dog", "cow"], ["red", "blue", "green"], ["one", "two", "three"], ["run", "jump", "swim"]]


def topic_stream(tokenizer, n, seed, window=8):
    rng = np.random.default_rng(seed)
    text = " ".join(" ".join(rng.choice(TOPICS[rng.integers(4)], window)) for _ in range(n))
    return np.asarray(tokenizer.encode(text, add_special_tokens=False))


def test_train_model_learns_the_blanks_and_resumes_exactly(tmp_path):
    tokenizer = WordPieceTokenizer([*SPECIAL_TOKENS, *(w for topic in TOPICS for w in topic)])
    train_ids, val_ids = topic_stream(tokenizer, 200, 0), topic_stream(tokenizer, 100, 1)
    train_loader = MLMLoader(train_ids, tokenizer, 8, 10, seed=0)
    val_loader = MLMLoader(val_ids, tokenizer, 8, 10, shuffle=False, drop_last=False, seed=1)
    model = tiny_encoder(tokenizer, context_length=10)
    history = train_model(model, train_loader, val_loader, AdamW(model.parameters(), lr=3e-3),
                          max_steps=80, eval_freq=80, eval_iter=2, progress=False)
    specials = [tokenizer.vocab[t] for t in tokenizer.special_tokens]
    accuracy = masked_accuracy(model, val_loader, unigram_token(train_ids, specials))
    assert accuracy.positions > 80
    assert accuracy.model > accuracy.unigram + 0.2, accuracy       # the context is read, both sides
    assert history.val_losses[-1] < history.val_losses[0] - 1.0

    def run(max_steps, resume=None):
        model = tiny_encoder(tokenizer, seed=1, context_length=10)
        return train_model(model, train_loader, val_loader, AdamW(model.parameters(), lr=3e-3),
                           max_steps=max_steps, eval_freq=100, eval_iter=1, progress=False,
                           checkpoint_path=tmp_path / "mlm.npz", resume_from=resume,
                           checkpoint_extra={"note": "test"})
    straight = run(12).step_losses
    run(6)
    resumed = run(12, resume=tmp_path / "mlm.npz").step_losses
    assert resumed == straight                                      # same masks, same batches, same losses


def test_checkpoint_round_trip_and_fill_mask(tokenizer, tmp_path):
    model = tiny_encoder(tokenizer)
    path = save_mlm_checkpoint(tmp_path / "enc.npz", model, tokenizer, step=3)
    loaded, tok, extra = load_mlm_checkpoint(path)
    assert tok.inverse == tokenizer.inverse and not loaded.training
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert np.array_equal(p.data, q.data), name
    results = fill_mask(loaded, tok, "the cat [MASK] on the [MASK] .", top_k=3)
    assert len(results) == 2 and all(len(r) == 3 for r in results)
    probs = [p for _, p in results[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        fill_mask(loaded, tok, "the cat sat")

    save_checkpoint(tmp_path / "plain.npz", model)                 # weights and config, but no vocabulary
    with pytest.raises(CheckpointError, match="plain.npz does not record its tokenizer: "):
        load_mlm_checkpoint(tmp_path / "plain.npz")
    meta_lie = tiny_encoder(tokenizer)
    meta_lie.cfg = {**meta_lie.cfg, "emb_dim": 64}                   # a config the arrays do not fit
    save_mlm_checkpoint(tmp_path / "lying.npz", meta_lie, tokenizer)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_mlm_checkpoint(tmp_path / "lying.npz")


def test_cli_pretrain_mlm_resume_fill_mask_and_heatmap(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(tiny_corpus(400, 4), encoding="utf-8")
    out = tmp_path / "run"
    common = ["pretrain-mlm", "--corpus", str(corpus), "--out-dir", str(out), "--vocab-size", "200",
              "--min-frequency", "2", "--context-length", "16", "--emb-dim", "16", "--n-layers", "1",
              "--n-heads", "2", "--batch-size", "4", "--eval-freq", "2", "--eval-iter", "1",
              "--warmup-steps", "1"]
    assert main([*common, "--max-steps", "3"]) == 0
    assert {"model.npz", "loss.png", "metrics.json"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and 0 <= metrics["unigram_accuracy"] <= 1
    assert main([*common, "--max-steps", "5", "--resume"]) == 0
    assert "resumed from step 3 of 5" in capsys.readouterr().out
    capsys.readouterr()
    assert main(["fill-mask", "the cat [MASK] on the mat .", "--checkpoint", str(out / "model.npz"),
                 "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "the cat [MASK] on the mat ." and len(lines[1].split(",")) == 2
    png = tmp_path / "heat.png"
    assert main(["attention-heatmap", "--out", str(png), "--checkpoint", str(out / "model.npz")]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["fill-mask", "no mask here", "--checkpoint", str(out / "model.npz")]) == 1
    assert "no [MASK]" in capsys.readouterr().err


def test_cli_fill_mask_on_a_transformers_bert_folder(tmp_path, capsys):
    """fill-mask on a BERT written by transformers: its top candidate is transformers' argmax."""
    vocab = [*SPECIAL_TOKENS, *"the cat sat on mat . dog ran in park".split()]
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=16)
    hf = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    hf.save_pretrained(tmp_path)
    text = "the cat [MASK] on the mat ."
    ids = transformers.BertTokenizer(str(tmp_path / "vocab.txt")).encode(text)
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor([ids])).logits[0, ids.index(vocab.index("[MASK]"))]
    expected = vocab[int(logits.argmax())]
    capsys.readouterr()
    assert main(["fill-mask", text, "--bert", str(tmp_path), "--top-k", "3"]) == 0
    first = capsys.readouterr().out.splitlines()[1].split(",")[0].split()
    assert first[0] == expected
    assert float(first[1]) == pytest.approx(float(torch.softmax(logits, -1).max()), abs=1e-3)


def test_encoder_checkpoint_without_drop_rate_attn_loads(tokenizer, tmp_path):
    """Encoder checkpoints written before drop_rate_attn existed (their cfg has one drop_rate) load:
    the attention rate defaults to drop_rate, and a dropout rate is no config difference."""
    model = tiny_encoder(tokenizer)
    path = save_mlm_checkpoint(tmp_path / "enc.npz", model, tokenizer)
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    meta = json.loads(entries["__meta__"].tobytes())
    del meta["cfg"]["drop_rate_attn"]
    entries["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **entries)
    loaded, _, _ = load_mlm_checkpoint(path)
    assert loaded.cfg["drop_rate_attn"] == loaded.cfg["drop_rate"]
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert np.array_equal(p.data, q.data), name
