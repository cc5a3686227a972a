"""Tests for numpy_gpt/nn/lora.py: gradients by finite differences (float64) and PyTorch (float32),
the frozen weight untouched, replace/merge on a GPTModel."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import reference, tiny_cfg

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.lora import (
    LinearWithLoRA,
    LoRALayer,
    kaiming_uniform_A,
    merge_lora,
    replace_linear_with_lora,
)
from numpy_gpt.nn.loss import cross_entropy

torch = reference("torch")

TINY = tiny_cfg(vocab_size=40, context_length=12, emb_dim=8, qkv_bias=True)


def randomize_B(model, rng):
    """B starts at zero, which would make dL/dA zero too: give it values so both are exercised."""
    for name, p in model.named_parameters():
        if name.endswith("lora.B"):
            p.data[...] = 0.1 * rng.standard_normal(p.shape)


def test_A_init_matches_torch_kaiming_uniform():
    in_dim, rank = 2000, 4
    ours = kaiming_uniform_A(np.random.default_rng(0), in_dim, rank)
    theirs = torch.empty(in_dim, rank)
    torch.manual_seed(0)
    torch.nn.init.kaiming_uniform_(theirs, a=math.sqrt(5))            # the book's call
    bound = 1 / math.sqrt(rank)
    assert ours.dtype == np.float32
    assert np.abs(ours).max() <= bound and float(theirs.abs().max()) <= bound
    assert np.abs(ours).max() > 0.99 * bound and float(theirs.abs().max()) > 0.99 * bound
    assert abs(ours.std() - float(theirs.std())) < 0.01


def test_lora_layer_starts_as_zero_and_gradchecks():
    rng = np.random.default_rng(0)
    layer = LoRALayer(6, 5, rank=3, alpha=2.0, rng=rng, dtype=np.float64)
    x = rng.standard_normal((2, 3, 6))
    assert np.array_equal(layer(x), np.zeros((2, 3, 5)))
    layer.B.data[...] = rng.standard_normal(layer.B.shape)
    np.testing.assert_allclose(layer(x), (2.0 / 3) * x @ layer.A.data @ layer.B.data, rtol=1e-12)
    report = gradcheck(layer, x)
    assert report.ok, str(report)
    assert {row.name for row in report.rows} == {"A", "B", "input[0]"}


def test_linear_with_lora_gradchecks_and_leaves_W_alone():
    rng = np.random.default_rng(1)
    linear = Linear(6, 4, rng=rng, dtype=np.float64)
    linear.bias.data[...] = rng.standard_normal(4)
    wrapped = LinearWithLoRA(linear, rank=2, alpha=4.0, rng=rng)
    x = rng.standard_normal((3, 2, 6))
    np.testing.assert_array_equal(wrapped(x), linear(x))             # B = 0: same output
    assert not linear.weight.trainable and not linear.bias.trainable
    assert [n for n, _ in wrapped.named_parameters(trainable_only=True)] == ["lora.A", "lora.B"]
    wrapped.lora.B.data[...] = rng.standard_normal(wrapped.lora.B.shape)
    report = gradcheck(wrapped, x)
    assert report.ok, str(report)
    assert {row.name for row in report.rows} == {"lora.A", "lora.B", "input[0]"}
    wrapped(x)
    wrapped.backward(rng.standard_normal((3, 2, 4)))
    assert linear.weight.grad is None and linear.bias.grad is None


def test_linear_with_lora_matches_pytorch_float32():
    rng = np.random.default_rng(2)
    linear = Linear(16, 12, rng=rng)
    linear.bias.data[...] = rng.standard_normal(12).astype(np.float32)
    wrapped = LinearWithLoRA(linear, rank=4, alpha=8.0, rng=rng)
    wrapped.lora.B.data[...] = rng.standard_normal((4, 12)).astype(np.float32)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    dy = rng.standard_normal((2, 5, 12)).astype(np.float32)

    y = wrapped(x)
    dx = wrapped.backward(dy)
    assert y.dtype == dx.dtype == wrapped.lora.A.grad.dtype == np.float32

    tx = torch.tensor(x, requires_grad=True)
    W, b = torch.tensor(linear.weight.data), torch.tensor(linear.bias.data)
    A = torch.tensor(wrapped.lora.A.data, requires_grad=True)
    B = torch.tensor(wrapped.lora.B.data, requires_grad=True)
    ty = tx @ W + b + (8.0 / 4) * (tx @ A @ B)                      # appendix E, alpha / rank scaling
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(wrapped.lora.A.grad, A.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(wrapped.lora.B.grad, B.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_bad_rank_and_input():
    with pytest.raises(ValueError, match="rank"):
        LoRALayer(4, 4, rank=0, alpha=1)
    wrapped = LinearWithLoRA(Linear(4, 3), rank=2, alpha=2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        wrapped(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(TypeError, match="Linear"):
        LinearWithLoRA(LoRALayer(4, 4, 2, 2), rank=2, alpha=2)


def lora_model(dtype=np.float64, seed=0):
    model = GPTModel(TINY, seed=seed, dtype=dtype)
    model.requires_grad_(False)                                      # the book: freeze, then add LoRA
    replace_linear_with_lora(model, rank=2, alpha=4.0, seed=1)
    return model


def test_replace_linear_with_lora_wraps_every_linear_once():
    model = GPTModel(TINY, seed=0, dtype=np.float64)
    idx = np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 7))
    before = model(idx)
    n_linear = sum(isinstance(m, Linear) for m in model.modules())
    model.requires_grad_(False)
    replace_linear_with_lora(model, rank=2, alpha=4.0, seed=1)
    replace_linear_with_lora(model, rank=2, alpha=4.0, seed=1)       # nothing left to wrap
    wrapped = [name for name, m in model.named_modules() if isinstance(m, LinearWithLoRA)]
    assert len(wrapped) == n_linear == 6 * TINY["n_layers"] + 1
    assert "trf_blocks.0.att.W_query" in wrapped and "out_head" in wrapped
    assert all(type(m.linear) is Linear for m in model.modules() if isinstance(m, LinearWithLoRA))
    trainable = [n for n, _ in model.named_parameters(trainable_only=True)]
    assert trainable and all(n.endswith(("lora.A", "lora.B")) for n in trainable)
    np.testing.assert_array_equal(model(idx), before)                # B = 0: nothing changed yet


def test_lora_gpt_model_gradchecks_and_frozen_grads_stay_zero():
    rng = np.random.default_rng(3)
    model = lora_model()
    randomize_B(model, rng)
    idx = rng.integers(0, TINY["vocab_size"], (2, 6))
    # The LoRA gradients are small (order 1e-3) next to L = sum(logits * R), whose rounding noise is
    # ~1e-14: a step of 1e-5 keeps that noise well below them.
    report = gradcheck(model, [idx], eps=1e-5)
    assert report.ok, str(report)
    assert len(report.rows) == 2 * (6 * TINY["n_layers"] + 1)

    model32 = lora_model(np.float32)
    randomize_B(model32, rng)
    targets = rng.integers(0, TINY["vocab_size"], (2, 6))
    _, dlogits = cross_entropy(model32(idx), targets)
    model32.backward(dlogits)
    frozen = [(n, p) for n, p in model32.named_parameters() if not p.trainable]
    assert all(p.grad is None for _, p in frozen), [n for n, p in frozen if p.grad is not None]
    assert all(p.grad.any() for p in model32.parameters(trainable_only=True))


def test_merge_lora_gives_the_same_function_as_a_plain_model():
    rng = np.random.default_rng(4)
    model = lora_model()
    randomize_B(model, rng)
    idx = rng.integers(0, TINY["vocab_size"], (2, 9))
    with_adapters = model(idx)
    merge_lora(model)
    assert not any(isinstance(m, LinearWithLoRA) for m in model.modules())
    np.testing.assert_allclose(model(idx), with_adapters, rtol=1e-12, atol=1e-12)
    plain = GPTModel(TINY, seed=99, dtype=np.float64)
    plain.load_state_dict(model.state_dict())                       # the usual parameter names again
    np.testing.assert_allclose(plain(idx), with_adapters, rtol=1e-12, atol=1e-12)


def test_merge_keeps_a_wrapper_consistent():
    rng = np.random.default_rng(5)
    wrapped = LinearWithLoRA(Linear(5, 3, rng=rng, dtype=np.float64), rank=2, alpha=2.0, rng=rng)
    wrapped.lora.B.data[...] = rng.standard_normal((2, 3))
    x = rng.standard_normal((4, 5))
    y = wrapped(x)
    merged = wrapped.merge()
    np.testing.assert_allclose(merged(x), y, rtol=1e-12)
    np.testing.assert_allclose(wrapped(x), y, rtol=1e-12)            # B was reset: not counted twice


def test_unfrozen_wrapped_weight_gets_its_gradient_like_a_linear():
    rng = np.random.default_rng(6)
    linear = Linear(5, 4, rng=rng, dtype=np.float64)
    wrapped = LinearWithLoRA(linear, rank=2, alpha=2.0, rng=rng)
    wrapped.lora.B.data[...] = rng.standard_normal((2, 4))
    linear.requires_grad_(True)                                      # LoRA on top of full fine-tuning
    report = gradcheck(wrapped, rng.standard_normal((3, 5)))
    assert report.ok, str(report)
    assert {row.name for row in report.rows} == {"linear.weight", "linear.bias", "lora.A", "lora.B",
                                                 "input[0]"}
