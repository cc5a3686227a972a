"""RoPE (numpy_gpt/nn/rope.py): the rotation's properties, finite differences in float64, and
transformers' Llama rotary embedding (frequencies, Llama 3 scaling, rotate-half) in float32."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.rope import RoPE, check_rope_scaling, rope_frequencies

transformers = reference("transformers")
rope_utils = reference("transformers.modeling_rope_utils")
LlamaRotaryEmbedding = reference("transformers.models.llama.modeling_llama", "LlamaRotaryEmbedding")
torch = reference("torch")
apply_rotary_pos_emb = reference("transformers.models.llama.modeling_llama", "apply_rotary_pos_emb")

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


def hf_rope(base: float, scaling: dict | None) -> dict:
    """The RoPE settings of a transformers config: rope_theta, and the scaling dict (transformers 5
    reads rope_theta from inside it, 4 from beside it)."""
    return {"rope_theta": base, "rope_scaling": None if scaling is None else {**scaling, "rope_theta": base}}


@given(batch=st.integers(1, 2), heads=st.integers(1, 3), seq=st.integers(1, 6),
       half=st.integers(1, 4), start=st.integers(0, 10), scaled=st.booleans(), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, heads, seq, half, start, scaled, seed):
    rope = RoPE(2 * half, 16, theta_base=100.0, scaling=LLAMA3 if scaled else None, dtype=np.float64)
    x = np.random.default_rng(seed).standard_normal((batch, heads, seq, 2 * half))
    report = gradcheck(lambda x: (rope.rotate(x, start), lambda dy: rope.rotate_backward(dy, start)),
                       x, seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    module_report = gradcheck(rope, [x, start], seed=seed)          # the Module protocol, same pair
    assert module_report.ok, str(module_report)


def test_rotation_preserves_norms_and_position_zero_is_identity():
    rng = np.random.default_rng(0)
    rope = RoPE(8, 32, dtype=np.float64)
    x = rng.standard_normal((2, 3, 32, 8))
    y = rope.rotate(x)
    np.testing.assert_allclose(y[..., 0, :], x[..., 0, :])                  # angle 0
    def pair_lengths(a):                                                    # each pair keeps its length
        return a[..., :4] ** 2 + a[..., 4:] ** 2
    np.testing.assert_allclose(pair_lengths(y), pair_lengths(x))


def test_scores_depend_only_on_the_offset():
    """(R(m) q) . (R(n) k) = q . R(n - m) k: the same q, k at positions (m, n) and (m + s, n + s)
    give the same score."""
    rng = np.random.default_rng(1)
    rope = RoPE(16, 64, dtype=np.float64)
    q, k = rng.standard_normal(16), rng.standard_normal(16)
    def score(m, n):
        return rope.rotate(q[None], m)[0] @ rope.rotate(k[None], n)[0]
    for m, n, shift in [(3, 7, 10), (0, 5, 40), (9, 2, 21)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), rel=1e-12)
    assert score(3, 7) != pytest.approx(score(3, 8))


def test_backward_is_the_inverse_rotation():
    rng = np.random.default_rng(2)
    rope = RoPE(6, 10, dtype=np.float64)
    x = rng.standard_normal((4, 10, 6))
    np.testing.assert_allclose(rope.rotate_backward(rope.rotate(x, 0), 0), x, atol=1e-12)


def test_llama3_scaling_bands():
    """Fast pairs unchanged, slow pairs divided by factor, the middle strictly between."""
    theta = rope_frequencies(64, 500000.0)
    scaled = rope_frequencies(64, 500000.0, {**LLAMA3, "original_max_position_embeddings": 8192})
    wavelength = 2 * np.pi / theta
    fast, slow = wavelength < 8192 / 4, wavelength > 8192 / 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    np.testing.assert_array_equal(scaled[fast], theta[fast])
    np.testing.assert_allclose(scaled[slow], theta[slow] / 8)
    middle = ~fast & ~slow
    assert np.all((scaled[middle] < theta[middle]) & (scaled[middle] > theta[middle] / 8))


@pytest.mark.parametrize("scaling", [None, LLAMA3], ids=["default", "llama3"])
@pytest.mark.parametrize("head_dim,base", [(8, 10000.0), (64, 500000.0)])
def test_frequencies_match_transformers(scaling, head_dim, base):

    config = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, head_dim=head_dim,
                                      max_position_embeddings=64, **hf_rope(base, scaling))
    if scaling is None:
        inv_freq = LlamaRotaryEmbedding.compute_default_rope_parameters(config)[0]
    else:
        inv_freq = rope_utils.ROPE_INIT_FUNCTIONS["llama3"](config)[0]
    np.testing.assert_allclose(rope_frequencies(head_dim, base, scaling), inv_freq.double().numpy(),
                               rtol=1e-6)


@pytest.mark.parametrize("scaling", [None, LLAMA3], ids=["default", "llama3"])
def test_rotation_and_gradient_match_transformers_float32(scaling):
    """apply_rotary_pos_emb (rotate-half pairing) with LlamaRotaryEmbedding's cos/sin at positions
    start .. start+T-1, and autograd's gradient through it."""

    head_dim, start, t = 16, 5, 11
    config = transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=head_dim,
                                      max_position_embeddings=64, **hf_rope(500.0, scaling))
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 4, t, head_dim), dtype=np.float32)
    k = rng.standard_normal((2, 2, t, head_dim), dtype=np.float32)
    dq = rng.standard_normal(q.shape, dtype=np.float32)
    dk = rng.standard_normal(k.shape, dtype=np.float32)

    tq, tk = torch.from_numpy(q).requires_grad_(), torch.from_numpy(k).requires_grad_()
    positions = torch.arange(start, start + t)[None].expand(2, t)
    cos, sin = LlamaRotaryEmbedding(config)(tq, positions)
    ref_q, ref_k = apply_rotary_pos_emb(tq, tk, cos, sin)
    torch.autograd.backward([ref_q, ref_k], [torch.from_numpy(dq), torch.from_numpy(dk)])

    rope = RoPE(head_dim, 64, theta_base=500.0, scaling=scaling)
    out_q, out_k = rope.rotate(q, start), rope.rotate(k, start)
    assert out_q.dtype == np.float32
    np.testing.assert_allclose(out_q, ref_q.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out_k, ref_k.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rope.rotate_backward(dq, start), tq.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rope.rotate_backward(dk, start), tk.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_float32_results_and_no_context_sized_table():
    rope = RoPE(8, 10**9)                                       # a context of a billion positions
    x = np.ones((1, 4, 8), np.float32)
    assert rope.rotate(x, 10**9 - 4).dtype == rope.rotate_backward(x, 3).dtype == np.float32
    cos, sin = rope._rows(5, 4)
    assert cos.shape == sin.shape == (4, 4) and cos.dtype == np.float32
    np.testing.assert_allclose(cos, np.cos(np.arange(5, 9)[:, None] * rope.theta), rtol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="even head_dim"):
        RoPE(7, 16)
    with pytest.raises(ValueError, match="outside 0 .. 15"):
        RoPE(8, 16).rotate(np.ones((1, 4, 8), np.float32), 13)
    with pytest.raises(ValueError, match="head_dim=8"):
        RoPE(8, 16).rotate(np.ones((1, 4, 6), np.float32))
    with pytest.raises(ValueError, match="'yarn' is not supported"):
        check_rope_scaling({**LLAMA3, "rope_type": "yarn"})
    with pytest.raises(ValueError, match="lacks"):
        check_rope_scaling({"rope_type": "llama3", "factor": 8.0})
    with pytest.raises(ValueError, match="must be below"):
        check_rope_scaling({**LLAMA3, "low_freq_factor": 4.0})
    with pytest.raises(RuntimeError, match="before forward"):
        RoPE(8, 16).backward(np.ones((1, 4, 8), np.float32))
