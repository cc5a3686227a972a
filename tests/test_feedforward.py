"""FeedForward (numpy_gpt/nn/feedforward.py): finite differences in float64, PyTorch in float32."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.feedforward import FeedForward
from numpy_gpt.tools import torch_reference

EPS = 1e-5   # finite-difference step; see tests/test_attention.py


def cfg(emb_dim: int) -> dict:
    return {"vocab_size": 10, "context_length": 8, "emb_dim": emb_dim, "n_heads": 1, "n_layers": 1,
            "drop_rate": 0.0, "qkv_bias": False}


@given(batch=st.integers(1, 2), seq=st.integers(1, 4), emb_dim=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, emb_dim, seed):
    rng = np.random.default_rng(seed)
    ff = FeedForward(cfg(emb_dim), rng=rng, dtype=np.float64)
    for p in ff.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    report = gradcheck(ff, rng.standard_normal((batch, seq, emb_dim)), seed=seed, eps=EPS)
    assert report.ok, str(report)
    assert [row.name for row in report.rows] == ["layers.0.weight", "layers.0.bias", "layers.2.weight",
                                                 "layers.2.bias", "input[0]"]


def test_shapes_and_names():
    ff = FeedForward(cfg(6))
    assert ff.layers[0].weight.shape == (6, 24) and ff.layers[2].weight.shape == (24, 6)
    assert type(ff.layers[1]).__name__ == "GELU"


def test_matches_torch_float32():
    rng = np.random.default_rng(0)
    ff = FeedForward(cfg(8), rng=rng)
    for p in ff.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.3
    ref = torch_reference.load_numpy_state_dict(torch_reference.FeedForward(cfg(8)), ff.state_dict())
    x = rng.standard_normal((2, 5, 8), dtype=np.float32)
    dout = rng.standard_normal((2, 5, 8), dtype=np.float32)
    ref_y, ref_dx = torch_reference.forward_backward(ref, x, dout)
    y = ff(x)
    dx = ff.backward(dout)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, ref_y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-5)
    grads = torch_reference.numpy_grads(ref)
    for name, p in ff.named_parameters():
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, grads[name], rtol=1e-4, atol=1e-4, err_msg=name)
