"""GELU and Dropout: hand values, finite differences, PyTorch parity, dtypes, masks and seeds."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt import torch_reference
from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.activations import GELU, Dropout

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
    ref_y, ref_dx = torch_reference.forward_backward(torch.nn.GELU(approximate="tanh"), x, dy)
    gelu = GELU()
    y = gelu(x)
    dx = gelu.backward(dy)
    np.testing.assert_allclose(y, ref_y, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dx, ref_dx, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [GELU(), Dropout(0.5, rng=np.random.default_rng(0)), Dropout(0.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(layer, dtype):
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(dtype)
    y = layer(x)
    dx = layer.backward(np.ones_like(y))
    assert y.dtype == dx.dtype == dtype


def test_backward_before_forward():
    for layer in (GELU(), Dropout(0.1)):
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


@pytest.mark.parametrize("make_bitgen", [np.random.PCG64, np.random.Philox, np.random.MT19937])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 65536 + 7), (1, 3 * 65536)])
def test_dropout_mask_is_the_stream_of_32_bit_numbers_on_any_thread_count(shape, make_bitgen, threads):
    p, n = 0.3, math.prod(shape)
    drop = Dropout(p, rng=np.random.Generator(make_bitgen(11)))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y = drop(x)
    # The specification, from a second generator with the same seed: one long draw of 64-bit
    # words, read as 32-bit numbers, element kept iff its number >= p * 2^32.
    reference = make_bitgen(11)
    u = reference.random_raw((n + 1) // 2).view(np.uint32)[:n].reshape(shape)
    keep = u >= round(p * 2**32)
    np.testing.assert_array_equal(y, np.where(keep, x * np.float32(1 / (1 - p)), np.float32(0)))
    assert y.dtype == np.float32
    # The shared generator stands where that one long draw left it: the next layer's mask is the
    # continuation of the stream, whatever the thread count.
    assert drop.rng.bit_generator.random_raw(4).tolist() == reference.random_raw(4).tolist()


def test_dropout_takes_a_new_generator_of_another_type(threads):
    """Replacing ``rng`` by a generator of another skip-ahead type (PCG64 -> PCG64DXSM) works: the
    per-thread copies are kept per generator type, and the mask follows the new stream."""
    drop = Dropout(0.5, rng=np.random.Generator(np.random.PCG64(1)))
    x = np.ones((2, 65536 + 3), dtype=np.float32)
    drop(x)
    drop.rng = np.random.Generator(np.random.PCG64DXSM(2))
    y = drop(x)
    u = np.random.PCG64DXSM(2).random_raw((x.size + 1) // 2).view(np.uint32)[:x.size].reshape(x.shape)
    np.testing.assert_array_equal(y, np.where(u >= 2**31, np.float32(2), np.float32(0)))


@given(shape=shapes, p=st.sampled_from([0.0, 0.1, 0.5, 0.9]), seed=st.integers(0, 2**16))
def test_dropout_gradcheck_with_fixed_mask(shape, p, seed):
    drop = Dropout(p, rng=np.random.default_rng(seed))
    state = drop.rng.bit_generator.state
    report = gradcheck(drop, np.random.default_rng(seed + 1).standard_normal(shape), seed=seed,
                       before_forward=lambda: setattr(drop.rng.bit_generator, "state", state))
    assert report.ok and report.max_rel_error < 1e-6, str(report)
