"""RMSNorm (numpy_gpt/nn/rmsnorm.py): hand-computed values, finite differences in float64, and
transformers' LlamaRMSNorm and torch's nn.RMSNorm in float32."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_keeps_dtype_and_freezes, assert_matches_torch, assert_refuses_misuse, reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.rmsnorm import RMSNorm

llama = reference("transformers.models.llama.modeling_llama")
torch = reference("torch")


def _random_norm(dim, rng, dtype=np.float32, eps=1e-6):
    norm = RMSNorm(dim, eps=eps, dtype=dtype)
    norm.scale.data[:] = rng.standard_normal(dim)
    return norm


def test_hand_computed_values():
    y = RMSNorm(4, eps=0.0)(np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32))
    rms = math.sqrt((1 + 4 + 9 + 16) / 4)                  # 7.5 ** 0.5: no centring
    np.testing.assert_allclose(y[0], [v / rms for v in (1, 2, 3, 4)], rtol=1e-6)


def test_unit_root_mean_square_and_no_centring():
    x = np.random.default_rng(0).standard_normal((3, 5, 64), dtype=np.float32) * 7 + 3
    y = RMSNorm(64)(x)
    np.testing.assert_allclose(np.sqrt((y * y).mean(-1)), 1, atol=1e-5)
    assert y.mean() > 0.3                                  # unlike LayerNorm, the mean survives (3 / 7.6)


@given(batch=st.integers(1, 3), seq=st.integers(1, 6), dim=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, dim, seed):
    rng = np.random.default_rng(seed)
    norm = _random_norm(dim, rng, np.float64)
    report = gradcheck(norm, rng.standard_normal((batch, seq, dim)), seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert [row.name for row in report.rows] == ["scale", "input[0]"]


@pytest.mark.parametrize("shape", [(6, 32), (2, 5, 32), (2, 150, 576)])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_matches_transformers_llama_rmsnorm_float32(shape, eps):
    rng = np.random.default_rng(1)
    dim = shape[-1]
    norm = _random_norm(dim, rng, eps=eps)
    ref = llama.LlamaRMSNorm(dim, eps=eps)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(norm.scale.data))
    x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1
    dy = rng.standard_normal(shape, dtype=np.float32)
    assert_matches_torch(norm, ref, x, dy, rtol=1e-4, atol=1e-4,
                         ref_grads=lambda: {"scale": ref.weight.grad.numpy()})


def test_matches_torch_rmsnorm_float32():
    rng = np.random.default_rng(2)
    norm = _random_norm(48, rng, eps=1e-5)
    ref = torch.nn.RMSNorm(48, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(norm.scale.data))
    x = rng.standard_normal((3, 7, 48), dtype=np.float32)
    assert_matches_torch(norm, ref, x, rng.standard_normal(x.shape, dtype=np.float32), rtol=1e-4,
                         atol=1e-4, ref_grads=lambda: {"scale": ref.weight.grad.numpy()})


def test_dtype_is_kept_and_a_frozen_scale_gets_no_gradient():
    assert_keeps_dtype_and_freezes(lambda dtype: RMSNorm(8, dtype=dtype), (2, 3, 8))


def test_errors():
    assert_refuses_misuse(RMSNorm(8), 8)
