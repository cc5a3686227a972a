"""GELU (tanh, GPT-2's) and ErfGELU (exact, BERT's), and Dropout: hand values, finite differences,
PyTorch parity, dtypes, masks and seeds."""

import math

import numpy as np
import pytest
from helpers import assert_matches_torch, reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.gelu import GELU, ErfGELU, erf

torch = reference("torch")

shapes = st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 16))


def _gelu_by_hand(v: float) -> float:
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


def test_gelu_hand_values():
    xs = [-6.0, -1.0, -0.1, 0.0, 0.5, 1.0, 3.0, 30.0]
    y = GELU()(np.array(xs, dtype=np.float64))
    np.testing.assert_allclose(y, [_gelu_by_hand(v) for v in xs], rtol=1e-14)
    assert y[3] == 0.0 and y[-1] == 30.0


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_gelu_gradcheck_float64(shape, seed):
    rng = np.random.default_rng(seed)
    report = gradcheck(GELU(), 3 * rng.standard_normal(shape), seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


def test_gelu_matches_torch_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 16), dtype=np.float32) * 3
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    assert_matches_torch(GELU(), torch.nn.GELU(approximate="tanh"), x, dy, rtol=1e-5, atol=1e-5)


def test_erf_float32_within_its_stated_accuracy():
    x = np.linspace(-6, 6, 100_001)
    exact = np.array([math.erf(v) for v in x])
    approx = erf(x.astype(np.float32))
    assert approx.dtype == np.float32
    assert np.abs(approx - exact).max() < 6e-7                 # A-S 7.1.26: 1.5e-7, plus float32 rounding
    assert np.array_equal(erf(x), exact)                       # float64: math.erf itself


def test_erf_gelu_matches_torch_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 33), dtype=np.float32) * 3
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    assert_matches_torch(ErfGELU(), torch.nn.GELU(approximate="none"), x, dy, rtol=1e-6, atol=1e-6)


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_erf_gelu_gradcheck_float64(shape, seed):
    rng = np.random.default_rng(seed)
    report = gradcheck(ErfGELU(), 3 * rng.standard_normal(shape), seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("layer", [GELU(), ErfGELU(), Dropout(0.5, rng=np.random.default_rng(0)),
                                   Dropout(0.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(layer, dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(dtype)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == dtype


def test_backward_before_forward():
    for layer in (GELU(), ErfGELU(), Dropout(0.1)):
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.ones(3, np.float32))


def test_dropout_validates_p():
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\)"):
            Dropout(p)


def test_dropout_eval_and_zero_p_are_identity():
    x = np.random.default_rng(2).standard_normal((3, 4), dtype=np.float32)
    dy = np.ones_like(x)
    for drop in (Dropout(0.5).eval(), Dropout(0.0)):
        np.testing.assert_array_equal(drop(x), x)
        np.testing.assert_array_equal(drop.backward(dy), dy)


def test_dropout_train_zeroes_p_and_rescales():
    p = 0.3
    drop = Dropout(p, rng=np.random.default_rng(3))
    x = np.full((400, 500), 2.0, dtype=np.float32)
    y = drop(x)
    zeroed = float((y == 0).mean())
    assert abs(zeroed - p) < 4 * math.sqrt(p * (1 - p) / x.size)       # 4 standard deviations
    np.testing.assert_allclose(y[y != 0], 2.0 / (1 - p), rtol=1e-6)
    dy = np.random.default_rng(4).standard_normal(x.shape, dtype=np.float32)
    dx = drop.backward(dy)
    np.testing.assert_array_equal(dx == 0, y == 0)                      # the forward's mask
    np.testing.assert_allclose(dx[y != 0], dy[y != 0] / (1 - p), rtol=1e-6)


def test_dropout_same_seed_same_mask():
    x = np.ones((50, 60), np.float32)
    a = Dropout(0.5, rng=np.random.default_rng(7))(x)
    b = Dropout(0.5, rng=np.random.default_rng(7))(x)
    np.testing.assert_array_equal(a, b)
    shared = np.random.default_rng(7)
    first, second = Dropout(0.5, rng=shared), Dropout(0.5, rng=shared)
    np.testing.assert_array_equal(first(x), a)                          # they draw in turn
    assert not np.array_equal(second(x), a)
    assert isinstance(Dropout(0.1).rng, np.random.Generator)


def test_dropout_mask_is_the_float32_uniform_stream():
    """The specification, from a second generator with the same seed: element kept iff its float32
    uniform is >= p; the shared generator then stands where that draw left it."""
    p, shape = 0.3, (3, 5, 7)
    drop = Dropout(p, rng=np.random.default_rng(11))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = drop(x)
    reference = np.random.default_rng(11)
    keep = reference.random(shape, dtype=np.float32) >= p
    np.testing.assert_array_equal(y, np.where(keep, x * np.float32(1 / (1 - p)), np.float32(0)))
    assert y.dtype == np.float32
    assert drop.rng.random(4).tolist() == reference.random(4).tolist()


def test_gelu_chunks_on_threads_equal_the_formula(threads):
    """GELU runs its formula through map_chunks; any thread count gives the formula's bits."""
    from numpy_gpt.nn.gelu import gelu, gelu_backward
    x = np.random.default_rng(5).standard_normal((3, 70, 33)).astype(np.float32)
    dy = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    layer = GELU()
    y = layer(x)
    dx = layer.backward(dy)
    y_ref, t_ref = gelu(x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(dx, gelu_backward(x, t_ref, dy))


@given(shape=shapes, p=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=st.integers(0, 2**16))
def test_dropout_gradcheck_with_fixed_mask(shape, p, seed):
    drop = Dropout(p, rng=np.random.default_rng(seed))
    state = drop.rng.bit_generator.state
    report = gradcheck(drop, np.random.default_rng(seed + 1).standard_normal(shape), seed=seed,
                       before_forward=lambda: setattr(drop.rng.bit_generator, "state", state))
    assert report.ok and report.max_rel_error < 1e-6, str(report)
