"""numpy_gpt.fast.kernels: each kernel gives the bits of the readable function it names, on float32
and float64, odd shapes, 1 and 2 threads; and the switch that chooses between them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import numpy_gpt.fast
from numpy_gpt.fast import kernels
from numpy_gpt.nn import gelu as gelu_module
from numpy_gpt.nn.loss import softmax_and_nll
from numpy_gpt.nn.softmax import softmax, softmax_backward
from numpy_gpt.optim import adamw_update

SHAPES = [(1, 1), (3, 5), (67, 13), (300, 37)]          # with the threads fixture: 64-element chunks


def _data(shape, dtype, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _same(a, b):
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_equals_the_formula(shape, dtype, threads):
    x, dy = _data(shape, dtype), _data(shape, dtype, seed=1)
    y, t = kernels.gelu(x)
    _same((y, t), gelu_module.gelu(x))
    _same(kernels.gelu_backward(x, t, dy), gelu_module.gelu_backward(x, t, dy))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3, 5, 5), (67, 13), (2, 4, 33, 33)])
def test_softmax_in_place_equals_softmax_with_the_causal_mask(shape, dtype, threads):
    scores = _data(shape, dtype)
    scores[..., np.triu(np.ones(shape[-2:], dtype=bool), k=1)] = -np.inf    # causal: 0 weight
    expected = softmax(scores)
    out = kernels.softmax_(scores)
    assert out is scores                                        # in place
    _same(out, expected)
    assert not out[..., np.triu(np.ones(shape[-2:], dtype=bool), k=1)].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (2, 3, 5, 5), (67, 13), (2, 4, 33, 33)])
def test_softmax_backward_in_place_equals_the_formula(shape, dtype, threads):
    P, dP = softmax(_data(shape, dtype)), _data(shape, dtype, seed=1)
    expected = softmax_backward(P, dP)
    out = kernels.softmax_backward_(P, dP)
    assert out is dP
    _same(out, expected)


def test_softmax_kernels_on_arrays_that_are_not_contiguous():
    scores = _data((6, 10), np.float32).T                       # a transposed view
    assert not scores.flags.c_contiguous
    expected = softmax(scores)
    _same(kernels.softmax_(scores), expected)
    dP = _data((10, 6), np.float32, seed=1)[:, ::1].T.copy().T    # Fortran order
    _same(kernels.softmax_backward_(expected, dP), softmax_backward(expected, dP))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (67, 13), (9, 2001)])
def test_softmax_and_nll_equals_the_formula(shape, dtype, threads):
    logits = _data(shape, dtype, scale=4.0)
    targets = np.random.default_rng(2).integers(0, shape[1], shape[0])
    _same(kernels.softmax_and_nll(logits, targets), softmax_and_nll(logits, targets))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [1, 7, 5003])
@pytest.mark.parametrize("step", [1, 4])
def test_adamw_update_equals_the_formula(size, dtype, step, threads):
    w, g, m = (_data(size, dtype, seed=s) for s in range(3))
    v = np.abs(_data(size, dtype, seed=3))
    options = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "step": step}
    plain = [a.copy() for a in (w, g, m, v)]
    adamw_update(*plain, **options)
    assert kernels.adamw_update(w, g, m, v, **options) is None
    for a, b in zip((w, g, m, v), plain, strict=True):
        _same(a, b)


def test_switch(monkeypatch):
    monkeypatch.setattr(numpy_gpt.fast, "_disabled", set())
    assert numpy_gpt.fast.enabled() and numpy_gpt.fast.enabled("gelu")
    numpy_gpt.fast.disable("gelu")
    assert not numpy_gpt.fast.enabled("gelu") and numpy_gpt.fast.enabled("softmax")
    assert not numpy_gpt.fast.enabled()
    numpy_gpt.fast.disable()
    assert not any(numpy_gpt.fast.enabled(k) for k in numpy_gpt.fast.KERNELS)
    numpy_gpt.fast.enable()
    assert numpy_gpt.fast.enabled()
    with pytest.raises(ValueError, match="unknown kernel"):
        numpy_gpt.fast.disable("flash")
    with pytest.raises(ValueError, match="unknown kernel"):
        numpy_gpt.fast.enabled("flash")


@pytest.mark.parametrize("value,expected", [("0", "False"), ("1", "True"), (None, "True")])
def test_the_environment_turns_the_kernels_off(value, expected, monkeypatch):
    if value is None:
        monkeypatch.delenv("NUMPY_GPT_FAST", raising=False)
    else:
        monkeypatch.setenv("NUMPY_GPT_FAST", value)
    done = subprocess.run([sys.executable, "-c", "import numpy_gpt.fast as f; print(f.enabled())"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == [expected]


def test_the_layers_call_the_kernels_when_on_and_not_when_off(monkeypatch):
    """The switch really switches: with the kernels off, no kernel runs."""
    from numpy_gpt import GPTModel, cross_entropy
    from numpy_gpt.optim import AdamW
    calls = []
    for name in ("gelu", "gelu_backward", "softmax_", "softmax_backward_", "softmax_and_nll",
                 "adamw_update"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name,
                            lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    model = GPTModel({"vocab_size": 11, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1,
                      "drop_rate": 0.0, "qkv_bias": False}, seed=0)
    opt = AdamW(model.parameters(), lr=1e-3)
    idx = np.arange(12).reshape(2, 6) % 11

    def step():
        loss, dlogits = cross_entropy(model(idx), idx)
        model.backward(dlogits)
        opt.step()
        opt.zero_grad()
        return loss

    monkeypatch.setattr(numpy_gpt.fast, "_disabled", set(numpy_gpt.fast.KERNELS))
    readable = [step() for _ in range(2)]
    readable_weights = [p.data.copy() for p in model.parameters()]
    assert calls == []
    model = GPTModel(model.cfg, seed=0)
    opt = AdamW(model.parameters(), lr=1e-3)
    monkeypatch.setattr(numpy_gpt.fast, "_disabled", set())
    assert [step() for _ in range(2)] == readable                   # the same losses, bit for bit
    for p, w in zip(model.parameters(), readable_weights, strict=True):
        np.testing.assert_array_equal(p.data, w)
    assert set(calls) == {"gelu", "gelu_backward", "softmax_", "softmax_backward_", "softmax_and_nll",
                          "adamw_update"}
