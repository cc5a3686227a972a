"""The chapter-3 teaching classes (numpy_gpt/attention_steps.py).

References: the values printed in the book (section 3.3), central finite differences in float64,
and PyTorch autograd on the same formulas in float32.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_matches_torch, reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.attention_steps import (
    CausalAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v0,
    SelfAttention_v1,
    SelfAttention_v2,
    softmax,
    softmax_backward,
)
from numpy_gpt.gradcheck import gradcheck

torch = reference("torch")

# Finite-difference step: with eps = 1e-6 the float64 rounding of the O(1) outputs, divided by
# 2 eps, reaches 1e-9 and uses most of the 1e-6 relative budget for the key bias, whose exact
# gradient is 0; at 1e-5 the rounding is 10x smaller and the O(eps^2) truncation still ~1e-10.
EPS = 1e-5

# "Your journey starts with one step", the 3-d embeddings of the book's section 3.3.1
BOOK_INPUTS = np.array([[0.43, 0.15, 0.89],   # Your
                        [0.55, 0.87, 0.66],   # journey
                        [0.57, 0.85, 0.64],   # starts
                        [0.22, 0.58, 0.33],   # with
                        [0.77, 0.25, 0.10],   # one
                        [0.05, 0.80, 0.55]])  # step


def randomize(module, seed):
    """O(1) weights and biases, so that every gradient is far from zero (except the key bias's,
    which is exactly zero: adding q.b_k to a whole row of scores does not change the softmax)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    return module


def rewinder(module):
    """Replay the same dropout masks on every forward of every Dropout inside ``module``."""
    drops = [m for m in module.modules() if hasattr(m, "rng")]
    states = [d.rng.bit_generator.state for d in drops]

    def rewind():
        for d, s in zip(drops, states, strict=True):
            d.rng.bit_generator.state = s
    return rewind


def test_v0_matches_the_book():
    """Section 3.3.2 prints these attention weights for "journey" and all six context vectors."""
    attn = SelfAttention_v0()
    context = attn(BOOK_INPUTS)
    np.testing.assert_allclose(softmax(BOOK_INPUTS @ BOOK_INPUTS.T)[1],
                               [0.1385, 0.2379, 0.2333, 0.1240, 0.1082, 0.1581], atol=5e-5)
    np.testing.assert_allclose(context, [[0.4421, 0.5931, 0.5790], [0.4419, 0.6515, 0.5683],
                                         [0.4431, 0.6496, 0.5671], [0.4304, 0.6298, 0.5510],
                                         [0.4671, 0.5910, 0.5266], [0.4177, 0.6503, 0.5645]], atol=5e-5)


def test_softmax_backward_is_the_jacobian_product():
    """dS = J^T dP with the explicit Jacobian J_ij = P_i (delta_ij - P_j)."""
    rng = np.random.default_rng(0)
    s, dp = rng.standard_normal(5), rng.standard_normal(5)
    p = softmax(s)
    jacobian = np.diag(p) - np.outer(p, p)
    np.testing.assert_allclose(softmax_backward(p, dp), jacobian.T @ dp, rtol=1e-12)


@given(batch=st.integers(1, 2), seq=st.integers(1, 5), d=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_gradcheck_v0(batch, seq, d, seed):
    x = np.random.default_rng(seed).standard_normal((batch, seq, d))
    report = gradcheck(SelfAttention_v0(), x, seed=seed, eps=EPS)
    assert report.ok, str(report)


@given(cls=st.sampled_from([SelfAttention_v1, SelfAttention_v2]), unbatched=st.booleans(),
       seq=st.integers(1, 5), d_in=st.integers(1, 4), d_out=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_gradcheck_v1_v2(cls, unbatched, seq, d_in, d_out, seed):
    attn = randomize(cls(d_in, d_out, dtype=np.float64), seed)
    shape = (seq, d_in) if unbatched else (2, seq, d_in)
    report = gradcheck(attn, np.random.default_rng(seed + 1).standard_normal(shape), seed=seed,
                       eps=EPS)
    assert report.ok, str(report)
    assert [row.name for row in report.rows] == [name for name, _ in attn.named_parameters()] + ["input[0]"]


@given(batch=st.integers(1, 2), context_length=st.integers(1, 5), data=st.data(), d_in=st.integers(1, 4),
       d_out=st.integers(1, 3), qkv_bias=st.booleans(), dropout=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_gradcheck_causal_attention(batch, context_length, data, d_in, d_out, qkv_bias, dropout, seed):
    seq = data.draw(st.integers(1, context_length), label="seq")
    attn = randomize(CausalAttention(d_in, d_out, context_length, dropout, qkv_bias, dtype=np.float64),
                     seed)
    attn.dropout.rng = np.random.default_rng(seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, seq, d_in))
    report = gradcheck(attn, x, seed=seed, eps=EPS, before_forward=rewinder(attn))
    assert report.ok, str(report)
    assert len(report.rows) == (7 if qkv_bias else 4)


@given(heads=st.integers(1, 3), seq=st.integers(1, 4), dropout=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_gradcheck_wrapper(heads, seq, dropout, seed):
    wrapper = randomize(MultiHeadAttentionWrapper(3, 2, 4, dropout, heads, qkv_bias=True,
                                                  dtype=np.float64), seed)
    for i, head in enumerate(wrapper.heads):
        head.dropout.rng = np.random.default_rng(seed + i)
    x = np.random.default_rng(seed + 1).standard_normal((2, seq, 3))
    report = gradcheck(wrapper, x, seed=seed, eps=EPS, before_forward=rewinder(wrapper))
    assert report.ok, str(report)
    assert len(report.rows) == 6 * heads + 1


def test_v1_and_v2_agree_with_the_same_weights():
    """The book's exercise 3.1: copy v2's Linear weights into v1 (both store (in, out) here)."""
    v2 = SelfAttention_v2(3, 2, rng=np.random.default_rng(789), dtype=np.float64)
    v1 = SelfAttention_v1(3, 2, dtype=np.float64)
    for name in ("W_query", "W_key", "W_value"):
        getattr(v1, name).data[...] = getattr(v2, name).weight.data
    np.testing.assert_allclose(v1(BOOK_INPUTS), v2(BOOK_INPUTS), rtol=1e-12)


def torch_causal_attention(x, wq, wk, wv, bias, mask_future=True):
    """The book's CausalAttention formula written directly with torch ops (no dropout)."""
    q, k, v = x @ wq + bias[0], x @ wk + bias[1], x @ wv + bias[2]
    scores = q @ k.transpose(-1, -2)
    t = x.shape[-2]
    if mask_future:
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), -torch.inf)
    return torch.softmax(scores / math.sqrt(k.shape[-1]), dim=-1) @ v


@pytest.mark.parametrize("cls", [SelfAttention_v2, CausalAttention])
def test_matches_torch_float32(cls):
    rng = np.random.default_rng(5)
    if cls is CausalAttention:
        attn = cls(4, 3, 6, 0.0, qkv_bias=True, rng=rng)
    else:
        attn = cls(4, 3, qkv_bias=True, rng=rng)
    randomize(attn, 6)
    x = rng.standard_normal((2, 6, 4), dtype=np.float32)
    dout = rng.standard_normal((2, 6, 3), dtype=np.float32)
    names = ("W_query", "W_key", "W_value")
    tw = [torch.from_numpy(getattr(attn, n).weight.data.copy()).requires_grad_() for n in names]
    tb = [torch.from_numpy(getattr(attn, n).bias.data.copy()).requires_grad_() for n in names]
    def ref(tx):
        return torch_causal_attention(tx, *tw, tb, mask_future=cls is CausalAttention)

    def ref_grads():
        return {f"{n}.{kind}": t.grad.numpy()
                for n, w, b in zip(names, tw, tb, strict=True) for kind, t in (("weight", w), ("bias", b))}

    assert_matches_torch(attn, ref, x, dout, rtol=1e-4, atol=1e-5, grad_atol=1e-4, ref_grads=ref_grads)


def test_causal_attention_ignores_the_future_and_wrapper_concatenates():
    rng = np.random.default_rng(0)
    wrapper = MultiHeadAttentionWrapper(3, 2, 6, 0.0, num_heads=3, rng=rng)
    x = rng.standard_normal((2, 6, 3), dtype=np.float32)
    y = wrapper(x)
    assert y.shape == (2, 6, 6) and y.dtype == np.float32
    np.testing.assert_array_equal(y[..., 2:4], wrapper.heads[1](x))
    x2 = x.copy()
    x2[:, 4:] = 100.0
    np.testing.assert_array_equal(wrapper(x2)[:, :4], y[:, :4])
    with pytest.raises(ValueError, match="context_length=6"):
        wrapper(np.zeros((1, 7, 3), np.float32))
    with pytest.raises(ValueError, match="x\\[None\\]"):
        wrapper(np.zeros((6, 3), np.float32))


def test_dropout_on_attention_weights():
    """In training, p = 0.5 zeroes some weights and doubles the rest; eval mode is deterministic."""
    attn = CausalAttention(3, 2, 6, 0.5, rng=np.random.default_rng(0))
    attn.dropout.rng = np.random.default_rng(1)
    x = np.random.default_rng(2).standard_normal((1, 6, 3), dtype=np.float32)
    attn(x)
    _, _, _, weights, dropped = attn._cache
    assert set(np.unique(np.round(dropped / np.where(weights > 0, weights, 1), 5))) <= {0.0, 2.0}
    attn.eval()
    np.testing.assert_array_equal(attn(x), attn(x))
