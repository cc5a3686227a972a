"""Tests for numpy_gpt/train.py: loss helpers, the two training loops, checkpoints and resumption.

References: PyTorch's cross-entropy and autograd on the independent torch GPT (torch_reference)
for the loss and its gradients; the definition of gradient accumulation (one step on a batch twice
as large); an uninterrupted run for a resumed one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import reference, tiny_cfg, torch_reference

from numpy_gpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpy_gpt.data import create_dataloader_v1
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import no_grad
from numpy_gpt.optim import AdamW, WarmupCosineLR
from numpy_gpt.train import (
    NonFiniteLossError,
    TrainingHistory,
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    perplexity,
    perplexity_from_loss,
    train_model,
    train_model_simple,
)

torch = reference("torch")

CFG = tiny_cfg(vocab_size=53, emb_dim=32)


def token_stream(n: int = 600, seed: int = 0) -> np.ndarray:
    """A learnable stream: a repeating pattern with some noise."""
    rng = np.random.default_rng(seed)
    ids = np.tile(np.arange(CFG["vocab_size"]), n // CFG["vocab_size"] + 1)[:n]
    noise = rng.random(n) < 0.2
    ids[noise] = rng.integers(0, CFG["vocab_size"], noise.sum())
    return ids


def loaders(batch_size: int = 4, seed: int = 5):
    ids = token_stream()
    train = create_dataloader_v1(ids[:500], batch_size=batch_size, max_length=16, stride=8, shuffle=True,
                                 drop_last=True, seed=seed)
    val = create_dataloader_v1(ids[500:], batch_size=batch_size, max_length=16, stride=16, shuffle=False,
                               drop_last=False)
    return train, val


class _Chars:
    """A stand-in tokenizer over the tiny vocabulary: id i <-> chr(65 + i)."""

    def encode(self, text):
        return [ord(c) - 65 for c in text]

    def decode(self, ids):
        return "".join(chr(65 + i) for i in ids)


# -- loss helpers -----------------------------------------------------------------------------------
def test_calc_loss_batch_matches_torch_loss_and_gradients():
    model = GPTModel(CFG, seed=1)
    reference = torch_reference.torch_gpt_from_numpy(model)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 53, (3, 16)), rng.integers(0, 53, (3, 16))
    model.zero_grad()
    loss = calc_loss_batch(x, y, model, backward=True, grad_scale=0.5)
    logits = reference(torch.from_numpy(x))
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), torch.from_numpy(y).flatten())
    (0.5 * expected).backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    grads = torch_reference.numpy_grads(reference)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name], rtol=1e-3, atol=1e-6, err_msg=name)


def test_calc_loss_batch_without_backward_leaves_grads_alone():
    model = GPTModel(CFG, seed=1)
    x = np.zeros((1, 4), np.int64)
    calc_loss_batch(x, x, model)
    assert all(p.grad is None for p in model.parameters())


def test_calc_loss_loader_averages_the_first_batches_and_keeps_the_epoch():
    model = GPTModel(CFG, seed=1)
    train, _ = loaders()
    train.epoch = 3
    batches = list(train)[:2]
    train.epoch = 3
    with no_grad():
        expected = np.mean([calc_loss_batch(x, y, model) for x, y in batches])
    assert calc_loss_loader(train, model, num_batches=2) == pytest.approx(expected, rel=1e-12)
    assert train.epoch == 3
    calc_loss_loader(train, model)                 # a full pass would advance a DataLoader's epoch
    assert train.epoch == 3
    assert math.isnan(calc_loss_loader([], model))


def test_evaluate_model_runs_without_dropout_and_restores_training_mode():
    model = GPTModel({**CFG, "drop_rate": 0.5}, seed=1)
    train, val = loaders()
    first = evaluate_model(model, train, val, eval_iter=2)
    assert first == evaluate_model(model, train, val, eval_iter=2)
    assert model.training


def test_perplexity_from_loss():
    assert perplexity_from_loss(0.0) == 1.0
    assert perplexity_from_loss(math.log(50)) == pytest.approx(50)
    assert perplexity_from_loss(1e4) == math.inf


def test_train_perplexity_is_a_deprecated_alias_of_perplexity_from_loss():
    with pytest.warns(DeprecationWarning, match="perplexity_from_loss"):
        assert perplexity(math.log(50)) == perplexity_from_loss(math.log(50))


# -- the loops --------------------------------------------------------------------------------------
def test_tiny_model_overfits_one_batch():
    model = GPTModel(CFG, seed=0)
    rng = np.random.default_rng(0)
    batch = [(rng.integers(0, 53, (4, 16)), rng.integers(0, 53, (4, 16)))]
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    history = train_model(model, batch, batch, optimizer, max_steps=150, eval_freq=50, eval_iter=1,
                          progress=False)
    assert history.step_losses[0] > 3.5                # ~ln(53) at the start
    assert history.val_losses[-1] < 0.05


class GradientRecorder:
    """An optimizer that only records the gradients it is asked to apply."""

    def __init__(self, model):
        self.model, self.param_groups, self.grads = model, [{"lr": 0.0}], []

    def zero_grad(self):
        self.model.zero_grad()

    def step(self):
        self.grads.append({name: p.grad.copy() for name, p in self.model.named_parameters()})


def test_gradient_accumulation_equals_one_large_batch():
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 53, (4, 16)), rng.integers(0, 53, (4, 16))
    model = GPTModel(CFG, seed=9)
    accumulated, large = GradientRecorder(model), GradientRecorder(model)
    train_model(model, [(x[:2], y[:2]), (x[2:], y[2:])], [(x, y)], accumulated, max_steps=1,
                grad_accum_steps=2, grad_clip=None, eval_iter=1, progress=False)
    train_model(model, [(x, y)], [(x, y)], large, max_steps=1, grad_clip=None, eval_iter=1, progress=False)
    for name, grad in large.grads[0].items():
        np.testing.assert_allclose(accumulated.grads[0][name], grad, rtol=1e-4, atol=1e-6, err_msg=name)


def test_train_model_applies_the_schedule_and_records_history(capsys):
    model = GPTModel(CFG, seed=0)
    train, val = loaders()
    schedule = WarmupCosineLR(1e-2, total_steps=12, warmup_steps=3, min_lr=1e-4)
    history = train_model(model, train, val, AdamW(model.parameters(), lr=1.0), max_steps=12, eval_freq=5,
                          eval_iter=2, lr_schedule=schedule, tokenizer=_Chars(), start_context="ABC",
                          sample_tokens=5, progress=False)
    assert history.lrs == [schedule(s) for s in range(12)]
    assert history.eval_steps == [0, 5, 10, 11]
    assert history.tokens_seen == [64, 6 * 64, 11 * 64, 12 * 64]
    assert history.train_tokens == 12 * 64 and len(history.step_losses) == 12
    assert history.val_losses[-1] < history.val_losses[0]
    out = capsys.readouterr().out
    assert "Ep 1 (Step 000000): Train loss" in out
    assert sum(line.startswith("ABC") for line in out.splitlines()) == 1    # 12 steps < 1 epoch


def test_train_model_simple_follows_the_book(capsys):
    model = GPTModel(CFG, seed=0)
    train, val = loaders()
    optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    train_losses, val_losses, tokens = train_model_simple(model, train, val, optimizer, num_epochs=2,
                                                          eval_freq=5, eval_iter=1, start_context="AB",
                                                          tokenizer=_Chars(), progress=False)
    steps = 2 * len(train)
    assert len(train_losses) == len(val_losses) == len(tokens) == len(range(0, steps, 5))
    assert tokens == [(s + 1) * 64 for s in range(0, steps, 5)]
    out = capsys.readouterr().out
    assert "Ep 2 (Step" in out
    assert sum(line.startswith("AB") for line in out.splitlines()) == 2     # a sample per epoch


def test_resume_gives_the_same_run_as_straight_through(tmp_path):
    cfg = {**CFG, "drop_rate": 0.1}

    def run(max_steps, checkpoint_path=None, resume_from=None):
        model = GPTModel(cfg, seed=42)
        train, val = loaders(seed=7)
        optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        history = train_model(model, train, val, optimizer, max_steps=max_steps, eval_freq=4, eval_iter=2,
                              lr_schedule=WarmupCosineLR(3e-3, 40, 5), grad_clip=0.5,
                              checkpoint_path=checkpoint_path, resume_from=resume_from, progress=False)
        return model, history

    straight_model, straight = run(40)                 # spans more than two epochs of 15 batches
    path = tmp_path / "run.npz"
    run(21, checkpoint_path=path)                      # stops mid-epoch 2, at an evaluation step
    assert load_checkpoint(path).step == 21
    resumed_model, resumed = run(40, checkpoint_path=path, resume_from=path)
    assert resumed.step_losses == straight.step_losses
    assert resumed.eval_steps == straight.eval_steps
    assert resumed.train_losses == straight.train_losses
    assert resumed.val_losses == straight.val_losses
    for (name, a), (_, b) in zip(resumed_model.named_parameters(), straight_model.named_parameters(),
                                 strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    model = GPTModel(CFG, seed=3)
    train, val = loaders()
    path = tmp_path / "model.npz"
    train_model(model, train, val, AdamW(model.parameters(), lr=1e-3), max_steps=3, eval_iter=1,
                checkpoint_path=path, checkpoint_extra={"tokenizer": {"kind": "char", "chars": ["a"]}},
                progress=False)
    loaded = load_checkpoint(path)
    assert loaded.extra["tokenizer"] == {"kind": "char", "chars": ["a"]}
    assert TrainingHistory.from_dict(loaded.extra["training"]["history"]).train_tokens == 3 * 64
    idx = token_stream(32)[None, :16]
    model.eval()
    loaded.model.eval()
    with no_grad():
        np.testing.assert_array_equal(loaded.model(idx), model(idx))


def test_nonfinite_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
    model = GPTModel(CFG, seed=0)
    train, val = loaders()

    class Poisoned:
        """The training data, but the weights turn to nan when the 6th batch is drawn."""
        epoch = 0

        def __len__(self):
            return len(train)

        def __iter__(self):
            for i, batch in enumerate(train):
                if i == 5:
                    model.out_head.weight.data[0, 0] = np.nan
                yield batch

    path = tmp_path / "model.npz"
    with pytest.raises(NonFiniteLossError, match=r"step 5 .*last good checkpoint is .*model.npz \(step 4\)"):
        train_model(model, Poisoned(), val, AdamW(model.parameters(), lr=1e-3), max_steps=10, eval_freq=100,
                    eval_iter=1, checkpoint_path=path, checkpoint_freq=2, progress=False)
    saved = load_checkpoint(path)
    assert saved.step == 4
    assert all(np.isfinite(p.data).all() for p in saved.model.parameters())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nonfinite_loss_in_the_simple_loop():
    model = GPTModel(CFG, seed=0)
    model.tok_emb.weight.data[:] = np.inf
    train, val = loaders()
    with pytest.raises(NonFiniteLossError, match="step 0"):
        train_model_simple(model, train, val, AdamW(model.parameters(), lr=1e-3), 1, 5, 1, "A", _Chars(),
                           progress=False)


def test_resume_from_a_corrupt_or_truncated_checkpoint_is_a_clear_error(tmp_path):
    model = GPTModel(CFG, seed=0)
    good = tmp_path / "good.npz"
    save_checkpoint(good, model, AdamW(model.parameters(), lr=1e-3), step=1)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint at all")
    train, val = loaders()
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            train_model(model, train, val, AdamW(model.parameters(), lr=1e-3), max_steps=2,
                        resume_from=path, progress=False)


def test_resume_refuses_checkpoints_it_cannot_continue(tmp_path):
    model = GPTModel(CFG, seed=0)
    inference_only = tmp_path / "weights.npz"
    save_checkpoint(inference_only, model)
    train, val = loaders()
    with pytest.raises(ValueError, match="cannot be resumed"):
        train_model(model, train, val, AdamW(model.parameters(), lr=1e-3), max_steps=2,
                    resume_from=inference_only, progress=False)
    path = tmp_path / "run.npz"
    train_model(model, train, val, AdamW(model.parameters(), lr=1e-3), max_steps=2, eval_iter=1,
                checkpoint_path=path, progress=False)
    other_train, _ = loaders(batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        train_model(model, other_train, val, AdamW(model.parameters(), lr=1e-3), max_steps=4,
                    resume_from=path, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"grad_accum_steps": 0}, "grad_accum_steps"), ({"eval_freq": 0}, "eval_freq"),
    ({"num_epochs": 1, "grad_accum_steps": 100}, "no full step")])
def test_bad_loop_settings_are_rejected(kwargs, message):
    model = GPTModel(CFG, seed=0)
    train, val = loaders()
    with pytest.raises(ValueError, match=message):
        train_model(model, train, val, AdamW(model.parameters(), lr=1e-3), progress=False, **kwargs)
