"""SwiGLU (numpy_gpt/nn/swiglu.py): finite differences in float64, transformers' LlamaMLP in
float32, and the sigmoid's behaviour far from zero."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import assert_matches_torch, reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.swiglu import SwiGLU, swiglu, swiglu_backward

transformers = reference("transformers")
torch = reference("torch")
LlamaMLP = reference("transformers.models.llama.modeling_llama", "LlamaMLP")

EPS = 1e-5   # finite-difference step; see tests/test_attention.py


def random_swiglu(emb_dim, hidden_dim, rng, bias=False, dtype=np.float64, std=0.5):
    ff = SwiGLU(emb_dim, hidden_dim, bias=bias, rng=rng, dtype=dtype)
    for p in ff.parameters():
        p.data[...] = rng.standard_normal(p.shape) * std
    return ff


@given(batch=st.integers(1, 2), seq=st.integers(1, 4), emb_dim=st.integers(1, 5), hidden=st.integers(1, 7),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, emb_dim, hidden, bias, seed):
    rng = np.random.default_rng(seed)
    ff = random_swiglu(emb_dim, hidden, rng, bias)
    report = gradcheck(ff, rng.standard_normal((batch, seq, emb_dim)), seed=seed, eps=EPS)
    assert report.ok, str(report)
    expected = [f"{lin}.{kind}" for lin in ("gate", "up", "down") for kind in ("weight", "bias")
                if kind == "weight" or bias]
    assert [row.name for row in report.rows] == [*expected, "input[0]"]


def test_elementwise_formula_by_hand():
    a = np.array([-2.0, 0.0, 1.5])
    b = np.array([3.0, -1.0, 0.5])
    h, s = swiglu(a, b)
    sigmoid = 1 / (1 + np.exp(-a))
    np.testing.assert_allclose(s, sigmoid, rtol=1e-15)
    np.testing.assert_allclose(h, a * sigmoid * b, rtol=1e-15)
    da, db = swiglu_backward(a, b, s, np.ones(3))
    np.testing.assert_allclose(db, a * sigmoid, rtol=1e-15)
    np.testing.assert_allclose(da, b * (sigmoid + a * sigmoid * (1 - sigmoid)), rtol=1e-14)


def test_no_overflow_far_from_zero():
    a = np.array([-1000.0, -90.0, 90.0, 1000.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                             # an overflow warning fails
        h, s = swiglu(a, np.ones_like(a))
        da, _ = swiglu_backward(a, np.ones_like(a), s, np.ones_like(a))
    assert np.isfinite(h).all() and np.isfinite(da).all()
    np.testing.assert_array_equal(h, [0.0, 0.0, 90.0, 1000.0])


@pytest.mark.parametrize("bias", [False, True])
def test_matches_transformers_llama_mlp_float32(bias):

    emb_dim, hidden = 24, 40                                       # not 4x, not 8/3x
    rng = np.random.default_rng(0)
    ff = random_swiglu(emb_dim, hidden, rng, bias, dtype=np.float32, std=0.3)
    config = transformers.LlamaConfig(hidden_size=emb_dim, num_attention_heads=4, intermediate_size=hidden,
                                      mlp_bias=bias, hidden_act="silu")
    ref = LlamaMLP(config)
    names = {"gate": ref.gate_proj, "up": ref.up_proj, "down": ref.down_proj}
    with torch.no_grad():
        for ours, lin in names.items():
            lin.weight.copy_(torch.from_numpy(getattr(ff, ours).weight.data.T))
            if bias:
                lin.bias.copy_(torch.from_numpy(getattr(ff, ours).bias.data))

    def ref_grads():
        grads = {f"{ours}.weight": lin.weight.grad.numpy().T for ours, lin in names.items()}
        if bias:
            grads.update({f"{ours}.bias": lin.bias.grad.numpy() for ours, lin in names.items()})
        return grads

    x = rng.standard_normal((2, 7, emb_dim), dtype=np.float32)
    dout = rng.standard_normal((2, 7, emb_dim), dtype=np.float32)
    assert_matches_torch(ff, ref, x, dout, rtol=1e-4, atol=1e-5, grad_atol=1e-4, ref_grads=ref_grads)


def test_dtype_and_shapes():
    ff = SwiGLU(6, 10, rng=np.random.default_rng(1))
    assert ff.gate.weight.shape == ff.up.weight.shape == (6, 10) and ff.down.weight.shape == (10, 6)
    assert ff.gate.bias is None
    x = np.random.default_rng(2).standard_normal((3, 6), dtype=np.float32)      # any leading dims
    y = ff(x)
    dx = ff.backward(np.ones_like(y))
    assert y.shape == dx.shape == (3, 6) and y.dtype == dx.dtype == ff.down.weight.grad.dtype == np.float32
