"""Linear: finite differences in float64, PyTorch parity in float32, dtypes, errors, frozen weights."""

import numpy as np
import pytest
from helpers import assert_matches_torch, reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import no_grad

torch = reference("torch")


@given(batch=st.integers(1, 3), seq=st.integers(1, 8), d_in=st.integers(1, 16),
       d_out=st.integers(1, 16), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, d_in, d_out, bias, seed):
    rng = np.random.default_rng(seed)
    layer = Linear(d_in, d_out, bias=bias, rng=rng, dtype=np.float64)
    if bias:
        layer.bias.data[:] = rng.standard_normal(d_out)
    report = gradcheck(layer, rng.standard_normal((batch, seq, d_in)), seed=seed)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6
    assert [row.name for row in report.rows] == (["weight", "bias"] if bias else ["weight"]) + ["input[0]"]


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (2, 1, 3, 7)])
def test_matches_torch_float32(shape):
    rng = np.random.default_rng(0)
    layer = Linear(7, 6, rng=rng)
    layer.bias.data[:] = rng.standard_normal(6, dtype=np.float32)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal((*shape[:-1], 6), dtype=np.float32)

    ref = torch.nn.Linear(7, 6)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))   # torch stores (out, in)
        ref.bias.copy_(torch.from_numpy(layer.bias.data))
    assert_matches_torch(layer, ref, x, dy, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(dtype):
    rng = np.random.default_rng(1)
    layer = Linear(4, 3, dtype=dtype, rng=rng)
    x = rng.standard_normal((2, 5, 4)).astype(dtype)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert layer.weight.data.dtype == layer.bias.data.dtype == dtype
    assert y.dtype == dx.dtype == layer.weight.grad.dtype == layer.bias.grad.dtype == dtype


def test_init_and_shapes():
    layer = Linear(300, 200, rng=np.random.default_rng(0))
    assert layer.weight.shape == (300, 200) and layer.bias.shape == (200,)
    assert abs(float(layer.weight.data.std()) - 0.02) < 0.001
    assert not layer.bias.data.any()
    same = Linear(300, 200, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(layer.weight.data, same.weight.data)
    no_bias = Linear(3, 2, bias=False)
    assert no_bias.bias is None
    assert [name for name, _ in no_bias.named_parameters()] == ["weight"]


def test_gradients_accumulate():
    rng = np.random.default_rng(2)
    layer = Linear(3, 2, rng=rng)
    x = rng.standard_normal((4, 3), dtype=np.float32)
    dy = rng.standard_normal((4, 2), dtype=np.float32)
    layer(x)
    layer.backward(dy)
    once = layer.weight.grad.copy(), layer.bias.grad.copy()
    layer(x)
    layer.backward(dy)
    np.testing.assert_allclose(layer.weight.grad, 2 * once[0], rtol=1e-6)
    np.testing.assert_allclose(layer.bias.grad, 2 * once[1], rtol=1e-6)
    np.testing.assert_allclose(once[0], x.T @ dy, rtol=1e-6)


def test_frozen_parameters_get_no_gradient():
    rng = np.random.default_rng(3)
    layer = Linear(3, 2, rng=rng)
    layer.weight.trainable = False
    x = rng.standard_normal((4, 3), dtype=np.float32)
    dy = rng.standard_normal((4, 2), dtype=np.float32)
    layer(x)
    dx = layer.backward(dy)
    assert layer.weight.grad is None
    np.testing.assert_allclose(layer.bias.grad, dy.sum(0), rtol=1e-6)
    np.testing.assert_allclose(dx, dy @ layer.weight.data.T, rtol=1e-6)
    report = gradcheck(layer, x)                 # frozen weight is not checked, the rest is
    assert [row.name for row in report.rows] == ["bias", "input[0]"] and report.ok


def test_errors():
    layer = Linear(3, 2)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, 2), np.float32))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        layer(np.ones((2, 4), np.float32))
    with no_grad():
        layer(np.ones((2, 3), np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.ones((2, 2), np.float32))
