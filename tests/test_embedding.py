"""Embedding, PositionalEmbedding and the sinusoidal table: gradients, PyTorch parity, errors."""

import math

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.embedding import (
    Embedding,
    PositionalEmbedding,
    scatter_add_rows,
    sinusoidal_positional_encoding,
)

torch = reference("torch")


@given(batch=st.integers(1, 3), seq=st.integers(1, 8), vocab=st.integers(1, 16),
       dim=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_embedding_gradcheck_float64(batch, seq, vocab, dim, seed):
    rng = np.random.default_rng(seed)
    emb = Embedding(vocab, dim, rng=rng, dtype=np.float64)
    ids = rng.integers(0, vocab, (batch, seq))          # small vocabularies repeat ids
    report = gradcheck(emb, ids, seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


@given(n=st.integers(0, 40), rows=st.integers(1, 12), dim=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_scatter_add_rows_equals_add_at(n, rows, dim, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, rows, n)
    values = rng.standard_normal((n, dim))
    expected = np.zeros((rows, dim))
    for i, v in zip(ids, values, strict=True):          # the plainest loop, one row at a time
        expected[i] += v
    np.testing.assert_allclose(scatter_add_rows(rows, ids, values), expected, rtol=1e-12, atol=1e-12)


def test_embedding_matches_torch_float32():
    rng = np.random.default_rng(0)
    emb = Embedding(50, 8, rng=rng)
    ids = rng.integers(0, 50, (3, 7))
    ids[0, :4] = 5                                      # a repeated id accumulates
    dout = rng.standard_normal((3, 7, 8), dtype=np.float32)
    ref = torch.nn.Embedding(50, 8)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(emb.weight.data))
    out_ref = ref(torch.from_numpy(ids))
    out_ref.backward(torch.from_numpy(dout))

    out = emb(ids)
    assert emb.backward(dout) is None
    np.testing.assert_array_equal(out, out_ref.detach().numpy())
    np.testing.assert_allclose(emb.weight.grad, ref.weight.grad.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_embedding_dtype(dtype):
    emb = Embedding(10, 4, dtype=dtype)
    out = emb(np.array([[1, 2, 2]], dtype=np.int32))
    emb.backward(np.ones_like(out))
    assert out.dtype == emb.weight.data.dtype == emb.weight.grad.dtype == dtype
    assert emb.weight.grad[2].tolist() == [2.0] * 4


def test_embedding_errors():
    emb = Embedding(10, 4)
    with pytest.raises(RuntimeError, match="before forward"):
        emb.backward(np.ones((1, 1, 4), np.float32))
    with pytest.raises(TypeError, match="integers"):
        emb(np.array([[1.0, 2.0]]))
    with pytest.raises(IndexError, match=r"contain 10 at position \(0, 1\), outside \[0, 10\)"):
        emb(np.array([[3, 10, 11]]))
    with pytest.raises(IndexError, match="-1"):
        emb(np.array([-1]))


def test_embedding_frozen():
    emb = Embedding(10, 4)
    emb.weight.trainable = False
    emb(np.array([[1, 2]]))
    emb.backward(np.ones((1, 2, 4), np.float32))
    assert emb.weight.grad is None


def test_positional_embedding_forward_and_errors():
    pos = PositionalEmbedding(6, 3, rng=np.random.default_rng(0))
    out = pos(4)
    np.testing.assert_array_equal(out, pos.weight.data[:4])
    assert out.shape == (4, 3) and not out.flags.writeable
    np.testing.assert_array_equal(pos(np.array([2, 3])), pos.weight.data[2:4])
    with pytest.raises(ValueError, match="sequence length 7 exceeds context_length 6"):
        pos(7)
    with pytest.raises(IndexError, match="outside"):
        pos(np.array([5, 6]))
    with pytest.raises(TypeError, match="integers"):
        pos(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        pos(np.array([[0, 1]]))


@given(seq=st.integers(1, 8), dim=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_positional_embedding_gradcheck(seq, dim, seed):
    rng = np.random.default_rng(seed)
    pos = PositionalEmbedding(8, dim, rng=rng, dtype=np.float64)
    assert gradcheck(pos, seq, seed=seed).ok
    positions = rng.integers(0, 8, seq)                 # arbitrary, possibly repeated positions
    report = gradcheck(pos, positions, seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


def test_positional_embedding_backward_sums_the_batch():
    rng = np.random.default_rng(1)
    pos = PositionalEmbedding(5, 3, rng=rng)
    dout = rng.standard_normal((2, 4, 3), dtype=np.float32)
    pos(4)
    pos.backward(dout)
    assert pos.weight.grad.dtype == np.float32
    np.testing.assert_allclose(pos.weight.grad[:4], dout.sum(0), rtol=1e-6)
    assert not pos.weight.grad[4].any()


@pytest.mark.parametrize("dim", [1, 4, 7])
def test_sinusoidal_matches_hand_formula(dim):
    table = sinusoidal_positional_encoding(12, dim)
    assert table.shape == (12, dim) and table.dtype == np.float32
    for pos in range(12):
        for j in range(dim):
            angle = pos / 10000 ** ((j - j % 2) / dim)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[pos, j] == pytest.approx(expected, abs=1e-6)
    assert sinusoidal_positional_encoding(3, 4, dtype=np.float64).dtype == np.float64
