"""FeedForward (numpy_gpt/nn/feedforward.py): finite differences in float64, PyTorch in float32."""

from __future__ import annotations

import numpy as np
from helpers import assert_matches_torch, tiny_cfg, torch_reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.feedforward import FeedForward

EPS = 1e-5   # finite-difference step; see tests/test_attention.py


def cfg(emb_dim: int) -> dict:
    return tiny_cfg(emb_dim=emb_dim, n_heads=1)


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
    assert_matches_torch(ff, ref, x, dout, rtol=1e-4, atol=1e-5, grad_atol=1e-4)
