"""numpy_gpt.fast.kernels: each kernel gives the bits of the readable function it names, on float32
and float64, odd sizes, 1 and 2 threads; and the switch that chooses between them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import numpy_gpt.fast
from numpy_gpt.fast import kernels
from numpy_gpt.optim import adamw_update


def _data(shape, dtype, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def _same(a, b):
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


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
    assert numpy_gpt.fast.enabled() and numpy_gpt.fast.enabled("adamw")
    numpy_gpt.fast.disable("adamw")
    assert not numpy_gpt.fast.enabled("adamw") and not numpy_gpt.fast.enabled()
    numpy_gpt.fast.enable("adamw")
    with numpy_gpt.fast.readable():
        assert not numpy_gpt.fast.enabled("adamw")
    assert numpy_gpt.fast.enabled("adamw")
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


def test_the_kernels_run_when_on_and_not_when_off(monkeypatch):
    """The switch really switches: with the kernels off, no kernel runs; on or off, a training step
    gives the same losses and weights, bit for bit."""
    from numpy_gpt import GPTModel, cross_entropy
    from numpy_gpt.optim import AdamW
    calls = []
    for name in ("adamw_update",):
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
    assert set(calls) == {"adamw_update"}
