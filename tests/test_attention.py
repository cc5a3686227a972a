"""MultiHeadAttention and KVCache (numpy_gpt/nn/attention.py).

References: central finite differences in float64 (gradcheck), the teaching
MultiHeadAttentionWrapper (independent per-head code), the PyTorch reference in float32, and the
uncached forward for the KV cache.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches_torch, reference, torch_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.attention_steps import MultiHeadAttentionWrapper
from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.attention import KVCache, MultiHeadAttention, causal_mask
from numpy_gpt.nn.module import no_grad
from numpy_gpt.nn.rope import RoPE

torch = reference("torch")
transformers = reference("transformers")
llama = reference("transformers.models.llama.modeling_llama")
qwen3 = reference("transformers.models.qwen3.modeling_qwen3")

# Finite-difference step: with eps = 1e-6 the float64 rounding of the O(1) outputs, divided by
# 2 eps, reaches 1e-9 and uses most of the 1e-6 relative budget for the key bias, whose exact
# gradient is 0; at 1e-5 the rounding is 10x smaller and the O(eps^2) truncation still ~1e-10.
EPS = 1e-5


def make_mha(d_in, num_heads, head_dim, context_length, dropout=0.0, qkv_bias=True, seed=0,
             dtype=np.float64) -> MultiHeadAttention:
    """An MHA with O(1) random weights and biases, so every gradient is far from zero."""
    rng = np.random.default_rng(seed)
    mha = MultiHeadAttention(d_in, num_heads * head_dim, context_length, dropout, num_heads,
                             qkv_bias, rng=rng, dtype=dtype)
    for p in mha.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    return mha


def rewind(dropout):
    """A before_forward hook that replays the same dropout masks on every forward."""
    state = dropout.rng.bit_generator.state
    return lambda: setattr(dropout.rng.bit_generator, "state", state)


# -- finite differences ---------------------------------------------------------------------------
@given(batch=st.integers(1, 2), heads=st.integers(1, 4), head_dim=st.integers(1, 3),
       d_in=st.integers(1, 5), context_length=st.integers(1, 5), data=st.data(),
       qkv_bias=st.booleans(), dropout=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, heads, head_dim, d_in, context_length, data, qkv_bias, dropout, seed):
    seq = data.draw(st.integers(1, context_length), label="seq")
    mha = make_mha(d_in, heads, head_dim, context_length, dropout, qkv_bias, seed)
    mha.dropout.rng = np.random.default_rng(seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, seq, d_in))
    report = gradcheck(mha, x, seed=seed, eps=EPS, before_forward=rewind(mha.dropout))
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6
    names = [row.name for row in report.rows]
    assert names == [name for name, _ in mha.named_parameters()] + ["input[0]"]


def test_dropout_mask_really_applies():
    """With p = 0.5 in training some attention weights are dropped, so the output changes."""
    mha = make_mha(3, 2, 2, 6, dropout=0.5)
    x = np.random.default_rng(1).standard_normal((2, 6, 3))
    train_out = mha(x)
    mha.eval()
    assert not np.allclose(train_out, mha(x))


# -- the wrapper of chapter 3.6.1 computes the same thing -----------------------------------------
@given(batch=st.integers(1, 2), seq=st.integers(1, 6), heads=st.integers(1, 4),
       head_dim=st.integers(1, 4), d_in=st.integers(1, 5), qkv_bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_matches_multihead_wrapper(batch, seq, heads, head_dim, d_in, qkv_bias, seed):
    rng = np.random.default_rng(seed)
    wrapper = MultiHeadAttentionWrapper(d_in, head_dim, 6, 0.0, heads, qkv_bias, rng=rng,
                                        dtype=np.float64)
    for p in wrapper.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    mha = MultiHeadAttention(d_in, heads * head_dim, 6, 0.0, heads, qkv_bias, dtype=np.float64)
    for h, head in enumerate(wrapper.heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)     # head h's slice of the features
        for name in ("W_query", "W_key", "W_value"):
            getattr(mha, name).weight.data[:, cols] = getattr(head, name).weight.data
            if qkv_bias:
                getattr(mha, name).bias.data[cols] = getattr(head, name).bias.data
    mha.out_proj.weight.data[...] = np.eye(heads * head_dim)    # the wrapper has no out_proj
    mha.out_proj.bias.data[...] = 0.0

    x = rng.standard_normal((batch, seq, d_in))
    dout = rng.standard_normal((batch, seq, heads * head_dim))
    np.testing.assert_allclose(mha(x), wrapper(x), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mha.backward(dout), wrapper.backward(dout), rtol=1e-10, atol=1e-12)
    for h, head in enumerate(wrapper.heads):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        for name in ("W_query", "W_key", "W_value"):
            ours, theirs = getattr(mha, name), getattr(head, name)
            np.testing.assert_allclose(ours.weight.grad[:, cols], theirs.weight.grad, rtol=1e-9, atol=1e-12)
            if qkv_bias:
                np.testing.assert_allclose(ours.bias.grad[cols], theirs.bias.grad, rtol=1e-9, atol=1e-12)


# -- PyTorch parity in float32 --------------------------------------------------------------------
# t=128: the 2 x 4 x 128 rows of scores are cut into several chunks (numpy_gpt.fast.map_chunks)
@pytest.mark.parametrize("qkv_bias,t", [(False, 7), (True, 7), (False, 128)])
def test_matches_torch_float32(qkv_bias, t, threads):
    b, d_in, d_out, heads, ctx = 2, 12, 16, 4, 128
    mha = make_mha(d_in, heads, d_out // heads, ctx, qkv_bias=qkv_bias, dtype=np.float32)
    ref = torch_reference.MultiHeadAttention(d_in, d_out, ctx, 0.0, heads, qkv_bias)
    torch_reference.load_numpy_state_dict(ref, mha.state_dict())
    rng = np.random.default_rng(3)
    x = rng.standard_normal((b, t, d_in), dtype=np.float32)
    dout = rng.standard_normal((b, t, d_out), dtype=np.float32)

    assert_matches_torch(mha, ref, x, dout, rtol=1e-4, atol=1e-5, grad_atol=1e-4)


# -- properties -----------------------------------------------------------------------------------
def test_causal_future_tokens_do_not_change_the_past():
    mha = make_mha(4, 2, 3, 8)
    x = np.random.default_rng(0).standard_normal((1, 8, 4))
    y = mha(x)
    x2 = x.copy()
    x2[:, 5:] += 10.0
    np.testing.assert_array_equal(mha(x2)[:, :5], y[:, :5])


def test_causal_mask_is_boolean_upper_triangle():
    mask = causal_mask(4)
    assert mask.dtype == np.bool_ and not mask.flags.writeable
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0]])


def test_single_token_attends_to_itself():
    """T = 1: the weight is 1 on the only token, so the output is out_proj(W_value x)."""
    mha = make_mha(3, 2, 2, 4)
    x = np.random.default_rng(0).standard_normal((2, 1, 3))
    expected = (x @ mha.W_value.weight.data + mha.W_value.bias.data) @ mha.out_proj.weight.data
    np.testing.assert_allclose(mha(x), expected + mha.out_proj.bias.data, rtol=1e-12)


def test_kept_attention_weights_are_the_softmax_the_forward_used():
    """keep_attn_weights: forward keeps P, before dropout, in attn_weights (off by default: nothing
    kept). Reference: the scores written out from the projections, and the output rebuilt from P."""
    mha = make_mha(4, 2, 3, 8, dropout=0.5).eval()
    x = np.random.default_rng(1).standard_normal((1, 5, 4))
    mha(x)
    assert mha.attn_weights is None
    mha.keep_attn_weights = True
    out = mha(x)

    def heads(layer):                                                         # (B, H, T, hd)
        return (x @ layer.weight.data + layer.bias.data).reshape(1, 5, 2, 3).transpose(0, 2, 1, 3)

    scores = heads(mha.W_query) @ heads(mha.W_key).swapaxes(-1, -2) / np.sqrt(3)
    scores[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] = -np.inf
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(mha.attn_weights, expected, rtol=1e-12)
    context = (mha.attn_weights @ heads(mha.W_value)).transpose(0, 2, 1, 3).reshape(1, 5, 6)
    np.testing.assert_allclose(out, context @ mha.out_proj.weight.data + mha.out_proj.bias.data, rtol=1e-12)
    cache = mha.new_kv_cache(1)                                               # a cached step keeps its rows
    mha(x[:, :3], cache)
    mha(x[:, 3:], cache)
    np.testing.assert_allclose(mha.attn_weights, expected[:, :, 3:], rtol=1e-12)


def test_float32_stays_float32():
    mha = make_mha(8, 2, 4, 16, dropout=0.3, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 5, 8), dtype=np.float32)
    y = mha(x)
    assert y.dtype == np.float32
    assert all(a.dtype == np.float32 for a in mha._cache if a is not None)   # None: no padding mask
    assert mha.backward(np.ones_like(y)).dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in mha.parameters())
    cache = mha.new_kv_cache(2)
    mha.eval()
    assert mha(x, cache).dtype == np.float32


# -- KV cache -------------------------------------------------------------------------------------
@given(batch=st.integers(1, 2), heads=st.integers(1, 3), head_dim=st.integers(1, 3),
       chunks=st.lists(st.integers(1, 3), min_size=1, max_size=5), seed=st.integers(0, 2**16))
def test_kv_cache_equals_full_forward(batch, heads, head_dim, chunks, seed):
    total = sum(chunks)
    mha = make_mha(4, heads, head_dim, 16, dropout=0.5, seed=seed).eval()
    x = np.random.default_rng(seed).standard_normal((batch, total, 4))
    full = mha(x)
    cache = mha.new_kv_cache(batch, max_len=total)
    outs, start = [], 0
    for n in chunks:
        outs.append(mha(x[:, start:start + n], cache))
        start += n
        assert cache.length == start
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-10, atol=1e-12)
    keys = x @ mha.W_key.weight.data + mha.W_key.bias.data                         # (B, T, C)
    np.testing.assert_allclose(cache.keys, keys.reshape(batch, total, heads, head_dim).transpose(0, 2, 1, 3))


def test_kv_cache_keeps_nothing_for_backward():
    mha = make_mha(4, 2, 2, 8)
    x = np.random.default_rng(0).standard_normal((1, 3, 4))
    mha(x)                                   # a training forward first ...
    mha(x, mha.new_kv_cache(1))              # ... then a cached one: backward must not use stale state
    with pytest.raises(RuntimeError, match="before forward"):
        mha.backward(np.ones((1, 3, 4)))


def test_kv_cache_errors():
    mha = make_mha(4, 2, 2, 6)
    x = np.random.default_rng(0).standard_normal((1, 4, 4))
    cache = mha.new_kv_cache(1, max_len=5)
    mha(x, cache)
    with pytest.raises(ValueError, match="full"):
        mha(x[:, :2], cache)
    assert cache.length == 4                 # the failed call changed nothing
    with pytest.raises(ValueError, match="KVCache holds"):
        mha(np.zeros((2, 1, 4)), cache)      # batch 2 into a batch-1 cache
    with pytest.raises(ValueError, match="exceeds context_length"):
        mha.new_kv_cache(1, max_len=7)
    big = KVCache(1, 2, 10, 2, np.float64)
    big.length = 5
    with pytest.raises(ValueError, match="context_length=6"):
        mha(x[:, :2], big)
    with pytest.raises(TypeError, match="KVCache dtype"):
        mha(x[:, :1], KVCache(1, 2, 6, 2, np.float32))
    with pytest.raises(TypeError, match="must be a KVCache"):
        mha(x, [cache])
    with pytest.raises(ValueError, match="positive integer"):
        KVCache(1, 2, 0, 2)


# -- bad input ------------------------------------------------------------------------------------
def test_bad_construction_and_input():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MultiHeadAttention(4, 6, 8, 0.0, num_heads=4)
    mha = make_mha(4, 2, 2, 6)
    with pytest.raises(ValueError, match="d_in=4"):
        mha(np.zeros((1, 3, 5)))
    with pytest.raises(ValueError, match="d_in=4"):
        mha(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="context_length=6"):
        mha(np.zeros((1, 7, 4)))
    fresh = make_mha(4, 2, 2, 6)
    with pytest.raises(RuntimeError, match="before forward"):
        fresh.backward(np.zeros((1, 3, 4)))
    with no_grad():
        fresh(np.zeros((1, 3, 4)))
    with pytest.raises(RuntimeError, match="before forward"):
        fresh.backward(np.zeros((1, 3, 4)))


# -- bidirectional (BERT) attention and the padding mask ------------------------------------------
def padding_mask(rng, batch, seq):
    """A (B, T) 1/0 mask with at least one real token per row, padding at the right as BERT pads."""
    lengths = rng.integers(1, seq + 1, size=batch)
    return (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)


@settings(max_examples=12)
@given(batch=st.integers(1, 2), heads=st.integers(1, 3), head_dim=st.integers(1, 3),
       d_in=st.integers(1, 4), seq=st.integers(1, 5), causal=st.booleans(), masked=st.booleans(),
       dropout=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_gradcheck_bidirectional_and_padding_float64(batch, heads, head_dim, d_in, seq, causal, masked,
                                                      dropout, seed):
    mha = make_mha(d_in, heads, head_dim, 5, dropout, True, seed)
    mha.causal = causal
    mha.dropout.rng = np.random.default_rng(seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((batch, seq, d_in))
    mask = padding_mask(rng, batch, seq) if masked else None
    report = gradcheck(mha, [x, None, mask], seed=seed, eps=EPS, before_forward=rewind(mha.dropout))
    assert report.ok, str(report)


def test_gradcheck_rows_with_every_key_padded_float64():
    """Left padding under a causal mask leaves the first queries only padded keys to look at: they
    average them (transformers' behaviour), and the constant scores pass no gradient on."""
    mha = make_mha(3, 2, 2, 6, seed=4)
    x = np.random.default_rng(5).standard_normal((2, 6, 3))
    mask = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    y = mha(x, None, mask)
    assert np.isfinite(y).all()
    report = gradcheck(mha, [x, None, mask], eps=EPS)
    assert report.ok, str(report)


def sdpa_reference(mha, x, dout, mask, causal):
    """The same layer in PyTorch: our weights, torch's scaled_dot_product_attention with a boolean
    mask (True = may attend) and autograd. Returns y, dx and {parameter name: grad} as NumPy."""
    params = {name: torch.tensor(p.data, requires_grad=True) for name, p in mha.named_parameters()}
    xt = torch.tensor(x, requires_grad=True)
    b, t, _ = x.shape
    h, hd = mha.num_heads, mha.head_dim

    def project(name):
        y = xt @ params[f"{name}.weight"]
        if f"{name}.bias" in params:
            y = y + params[f"{name}.bias"]
        return y.view(b, t, h, hd).transpose(1, 2)

    allowed = None
    if mask is not None:
        allowed = torch.tensor(mask, dtype=torch.bool)[:, None, None, :].expand(b, 1, t, t)
    if causal:
        lower = torch.ones(t, t, dtype=torch.bool).tril()
        allowed = lower if allowed is None else allowed & lower
    ctx = torch.nn.functional.scaled_dot_product_attention(project("W_query"), project("W_key"),
                                                           project("W_value"), attn_mask=allowed)
    y = ctx.transpose(1, 2).reshape(b, t, h * hd) @ params["out_proj.weight"] + params["out_proj.bias"]
    y.backward(torch.tensor(dout))
    return (y.detach().numpy(), xt.grad.numpy(),
            {name: p.grad.numpy() for name, p in params.items()})


@pytest.mark.parametrize("causal,masked", [(False, False), (False, True), (True, True)])
def test_bidirectional_matches_torch_sdpa_float32(causal, masked, threads):
    b, t, d_in, heads, head_dim = 3, 9, 10, 4, 4
    mha = make_mha(d_in, heads, head_dim, 16, qkv_bias=True, dtype=np.float32, seed=7)
    mha.causal = causal
    rng = np.random.default_rng(8)
    x = rng.standard_normal((b, t, d_in), dtype=np.float32)
    dout = rng.standard_normal((b, t, heads * head_dim), dtype=np.float32)
    mask = np.array([[1] * 9, [1] * 5 + [0] * 4, [1] * 2 + [0] * 7]) if masked else None

    ref_y, ref_dx, ref_grads = sdpa_reference(mha, x, dout, mask, causal)
    y = mha(x, None, mask)
    dx = mha.backward(dout)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, ref_y, atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(dx, ref_dx, atol=1e-5, rtol=1e-4)
    for name, p in mha.named_parameters():
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, ref_grads[name], atol=1e-4, rtol=1e-4, err_msg=name)


def test_bidirectional_sees_the_future_and_padding_changes_nothing():
    mha = make_mha(4, 2, 3, 8)
    mha.causal = False
    x = np.random.default_rng(0).standard_normal((1, 8, 4))
    changed = x.copy()
    changed[0, -1] += 1.0
    with no_grad():
        assert not np.allclose(mha(x)[0, 0], mha(changed)[0, 0])     # token 0 sees token 7
        # padding: tokens 0..4 alone give what they give inside a padded batch of 8
        alone = mha(x[:, :5])
        padded = mha(changed, None, np.array([[1] * 5 + [0] * 3]))
    np.testing.assert_allclose(padded[:, :5], alone, rtol=1e-12, atol=1e-12)
    assert "causal=False" in repr(mha)


def test_padding_mask_and_kv_cache_errors():
    mha = make_mha(4, 2, 2, 8, dtype=np.float32)
    x = np.zeros((2, 3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        mha(x, None, np.ones((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="1 \\(real token\\) and 0"):
        mha(x, None, np.full((2, 3), 2))
    with pytest.raises(ValueError, match="1 \\(real token\\) and 0"):
        mha(x, None, np.ones((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="KV cache serves causal"):
        mha(x, mha.new_kv_cache(2), np.ones((2, 3), dtype=np.int64))
    mha.causal = False
    with pytest.raises(ValueError, match="KV cache serves causal"):
        mha(x, mha.new_kv_cache(2))


# -- Llama and Qwen3: grouped-query attention, RoPE, QK-norm ----------------------------------------
def make_gqa(d_in, heads, kv_heads, head_dim, context_length, *, d_out=None, rope=False, qk_norm=False,
             qkv_bias=False, out_bias=False, dropout=0.0, seed=0, dtype=np.float64) -> MultiHeadAttention:
    """A grouped-query attention layer with O(1) random weights (RMSNorm scales around 1)."""
    rng = np.random.default_rng(seed)
    rotary = RoPE(head_dim, context_length, theta_base=50.0, dtype=dtype) if rope else None
    mha = MultiHeadAttention(d_in, d_in if d_out is None else d_out, context_length, dropout, heads, qkv_bias,
                             num_kv_heads=kv_heads, head_dim=head_dim, out_bias=out_bias, rope=rotary,
                             qk_norm=qk_norm, rng=rng, dtype=dtype)
    for name, p in mha.named_parameters():
        p.data[...] = rng.standard_normal(p.shape) * (0.3 if name.endswith("norm.scale") else 0.5)
        if name.endswith("norm.scale"):
            p.data += 1.0
    return mha


@settings(max_examples=20)
@given(batch=st.integers(1, 2), kv_heads=st.integers(1, 2), group=st.integers(1, 3),
       half=st.integers(1, 2), d_in=st.integers(1, 4), seq=st.integers(1, 5), rope=st.booleans(),
       qk_norm=st.booleans(), bias=st.booleans(), dropout=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_gradcheck_grouped_rope_qk_norm_float64(batch, kv_heads, group, half, d_in, seq, rope, qk_norm, bias,
                                               dropout, seed):
    mha = make_gqa(d_in, kv_heads * group, kv_heads, 2 * half, 6, d_out=3, rope=rope, qk_norm=qk_norm,
                   qkv_bias=bias, out_bias=bias, dropout=dropout, seed=seed)
    mha.dropout.rng = np.random.default_rng(seed)
    x = np.random.default_rng(seed + 1).standard_normal((batch, seq, d_in))
    report = gradcheck(mha, x, seed=seed, eps=EPS, before_forward=rewind(mha.dropout))
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert [row.name for row in report.rows] == [n for n, _ in mha.named_parameters()] + ["input[0]"]


@pytest.mark.parametrize("rope,qk_norm", [(False, False), (True, True)])
def test_grouped_equals_multi_head_with_repeated_keys_and_values(rope, qk_norm):
    """GQA is MHA whose key/value heads come in identical groups: copying each key/value head to the
    G query heads of its group gives an MHA with the same output and input gradient, and the GQA's
    W_key/W_value gradients are the MHA's summed over each group."""
    heads, kv_heads, hd, d_in = 6, 2, 4, 5
    group = heads // kv_heads
    gqa = make_gqa(d_in, heads, kv_heads, hd, 8, rope=rope, qk_norm=qk_norm, qkv_bias=True, seed=1)
    mha = make_gqa(d_in, heads, heads, hd, 8, rope=rope, qk_norm=qk_norm, qkv_bias=True, seed=2)
    for name in ("W_query", "out_proj", "q_norm", "k_norm"):
        if getattr(gqa, name) is not None:
            getattr(mha, name).load_state_dict(getattr(gqa, name).state_dict())
    for name in ("W_key", "W_value"):
        for h in range(heads):                                  # query head h reads kv head h // G
            cols, kv_cols = slice(h * hd, (h + 1) * hd), slice((h // group) * hd, (h // group + 1) * hd)
            getattr(mha, name).weight.data[:, cols] = getattr(gqa, name).weight.data[:, kv_cols]
            getattr(mha, name).bias.data[cols] = getattr(gqa, name).bias.data[kv_cols]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, d_in))
    dout = rng.standard_normal((2, 7, d_in))
    np.testing.assert_allclose(gqa(x), mha(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gqa.backward(dout), mha.backward(dout), rtol=1e-10, atol=1e-12)
    for name in ("W_key", "W_value"):
        summed = getattr(mha, name).weight.grad.reshape(d_in, kv_heads, group, hd).sum(axis=2)
        np.testing.assert_allclose(getattr(gqa, name).weight.grad, summed.reshape(d_in, -1), rtol=1e-10)
        bias = getattr(mha, name).bias.grad.reshape(kv_heads, group, hd).sum(axis=1)
        np.testing.assert_allclose(getattr(gqa, name).bias.grad, bias.reshape(-1), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gqa.W_query.weight.grad, mha.W_query.weight.grad, rtol=1e-10)


def hf_attention(family: str, mha: MultiHeadAttention, bias: bool, rope_base: float):
    """transformers' LlamaAttention or Qwen3Attention (eager) holding ``mha``'s weights, and the
    gradient names in numpy_gpt's terms."""
    cls = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}[family]
    config = cls(hidden_size=mha.d_in, num_attention_heads=mha.num_heads,
                 num_key_value_heads=mha.num_kv_heads, head_dim=mha.head_dim, attention_bias=bias,
                 max_position_embeddings=mha.context_length, rope_theta=rope_base, rms_norm_eps=1e-6)
    config._attn_implementation = "eager"
    if family == "llama":
        Attention, Rotary = llama.LlamaAttention, llama.LlamaRotaryEmbedding
    else:
        Attention, Rotary = qwen3.Qwen3Attention, qwen3.Qwen3RotaryEmbedding
    ref = Attention(config, layer_idx=0)
    pairs = {"W_query": ref.q_proj, "W_key": ref.k_proj, "W_value": ref.v_proj, "out_proj": ref.o_proj}
    with torch.no_grad():
        for ours, lin in pairs.items():
            lin.weight.copy_(torch.from_numpy(getattr(mha, ours).weight.data.T))
            if bias:
                lin.bias.copy_(torch.from_numpy(getattr(mha, ours).bias.data))
        if family == "qwen3":
            ref.q_norm.weight.copy_(torch.from_numpy(mha.q_norm.scale.data))
            ref.k_norm.weight.copy_(torch.from_numpy(mha.k_norm.scale.data))

    def run(x):
        b, t, _ = x.shape
        cos, sin = Rotary(config)(x, torch.arange(t)[None].expand(b, t))
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        mask = torch.zeros(b, 1, t, t).masked_fill(future, torch.finfo(torch.float32).min)
        return ref(x, position_embeddings=(cos, sin), attention_mask=mask)[0]

    def grads():
        out = {}
        for ours, lin in pairs.items():
            out[f"{ours}.weight"] = lin.weight.grad.numpy().T
            if bias:
                out[f"{ours}.bias"] = lin.bias.grad.numpy()
        if family == "qwen3":
            out["q_norm.scale"] = ref.q_norm.weight.grad.numpy()
            out["k_norm.scale"] = ref.k_norm.weight.grad.numpy()
        return out

    return run, grads


@pytest.mark.parametrize("family,bias,head_dim",
                         [("llama", False, 8), ("llama", True, 8), ("qwen3", False, 12)])
def test_grouped_attention_matches_transformers_float32(family, bias, head_dim, threads):
    """LlamaAttention (GQA + RoPE) and Qwen3Attention (GQA + RoPE + QK-norm, head_dim 12 while
    d_in / heads = 6): output, input gradient and every parameter gradient."""
    mha = make_gqa(24, 4, 2, head_dim, 32, rope=True, qk_norm=family == "qwen3", qkv_bias=bias, out_bias=bias,
                   seed=4, dtype=np.float32)
    mha.rope = RoPE(head_dim, 32, theta_base=50.0)                  # float32 tables, as the layer's dtype
    run, grads = hf_attention(family, mha, bias, 50.0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 11, 24), dtype=np.float32)
    dout = rng.standard_normal((2, 11, 24), dtype=np.float32)
    assert_matches_torch(mha, run, x, dout, rtol=1e-4, atol=1e-4, grad_atol=1e-4, ref_grads=grads)


@given(kv_heads=st.integers(1, 2), group=st.integers(1, 3), chunks=st.lists(st.integers(1, 3), min_size=1,
       max_size=4), qk_norm=st.booleans(), seed=st.integers(0, 2**16))
def test_grouped_kv_cache_equals_full_forward(kv_heads, group, chunks, qk_norm, seed):
    total = sum(chunks)
    mha = make_gqa(4, kv_heads * group, kv_heads, 4, 16, rope=True, qk_norm=qk_norm, seed=seed).eval()
    x = np.random.default_rng(seed).standard_normal((2, total, 4))
    full = mha(x)
    cache = mha.new_kv_cache(2, max_len=total)
    assert cache.keys.shape == (2, kv_heads, total, 4)           # Hkv heads stored, not H
    outs, start = [], 0
    for n in chunks:
        outs.append(mha(x[:, start:start + n], cache))
        start += n
    np.testing.assert_allclose(np.concatenate(outs, axis=1), full, rtol=1e-10, atol=1e-12)


def test_grouped_attention_errors():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        MultiHeadAttention(8, 8, 4, 0.0, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="rope is for head_dim 4"):
        MultiHeadAttention(8, 8, 4, 0.0, num_heads=4, head_dim=6, rope=RoPE(4, 4))
    mha = MultiHeadAttention(8, 10, 4, 0.0, num_heads=4, num_kv_heads=2, head_dim=6)   # 4 * 6 != 10: fine
    assert mha.W_query.weight.shape == (8, 24) and mha.W_key.weight.shape == (8, 12)
    assert mha.out_proj.weight.shape == (24, 10) and "num_kv_heads=2" in repr(mha)
