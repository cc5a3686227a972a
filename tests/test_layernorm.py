"""LayerNorm: hand-computed values, finite differences, PyTorch parity, dtypes, errors."""

import math

import numpy as np
import pytest
from helpers import assert_keeps_dtype_and_freezes, assert_matches_torch, assert_refuses_misuse, reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.layernorm import LayerNorm

torch = reference("torch")


def _random_norm(dim, rng, dtype=np.float32):
    norm = LayerNorm(dim, dtype=dtype)
    norm.scale.data[:] = rng.standard_normal(dim)
    norm.shift.data[:] = rng.standard_normal(dim)
    return norm


def test_hand_computed_values():
    norm = LayerNorm(4)
    y = norm(np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32))
    std = math.sqrt(1.25 + 1e-5)                        # mean 2.5, biased variance 1.25
    np.testing.assert_allclose(y[0], [(v - 2.5) / std for v in (1, 2, 3, 4)], rtol=1e-6)


def test_normalizes_each_row():
    x = np.random.default_rng(0).standard_normal((3, 5, 64), dtype=np.float32) * 7 + 3
    y = LayerNorm(64)(x)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-3)


@given(batch=st.integers(1, 3), seq=st.integers(1, 8), dim=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, dim, seed):
    rng = np.random.default_rng(seed)
    norm = _random_norm(dim, rng, np.float64)
    report = gradcheck(norm, rng.standard_normal((batch, seq, dim)), seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert [row.name for row in report.rows] == ["scale", "shift", "input[0]"]


@pytest.mark.parametrize("shape", [(6, 32), (2, 5, 32), (2, 150, 768)])
def test_matches_torch_float32(shape):
    rng = np.random.default_rng(1)
    dim = shape[-1]
    norm = _random_norm(dim, rng)
    x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1
    dy = rng.standard_normal(shape, dtype=np.float32)
    ref = torch.nn.LayerNorm(dim, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(norm.scale.data))
        ref.bias.copy_(torch.from_numpy(norm.shift.data))
    assert_matches_torch(norm, ref, x, dy, rtol=1e-4, atol=1e-4,
                         ref_grads=lambda: {"scale": ref.weight.grad.numpy(), "shift": ref.bias.grad.numpy()})


def test_dtype_is_kept_and_frozen_parameters_get_no_gradient():
    assert_keeps_dtype_and_freezes(lambda dtype: LayerNorm(8, dtype=dtype), (2, 3, 8))


def test_errors():
    assert_refuses_misuse(LayerNorm(8), 8)
