"""TransformerBlock (numpy_gpt/nn/block.py), GPT-2's block and, switched, BERT's.

References: central finite differences in float64 (dropout off and on, with replayed masks) for
GPT-2's block and for every combination of the switches (causal or not, pre- or post-LN, tanh or
erf GELU, with a padding mask and a feed-forward width that is not 4C), the PyTorch reference block
in float32, and the hand-derived fact that a block whose two branches output zero is the identity
for values and gradients. BERT's switched block is also proven against transformers' BertLayer
inside the whole model (tests/test_encoder.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_matches_torch, tiny_cfg, torch_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.block import TransformerBlock
from numpy_gpt.nn.dropout import Dropout

EPS = 1e-5   # finite-difference step; see tests/test_attention.py


def cfg(emb_dim=4, n_heads=2, context_length=4, drop_rate=0.0, qkv_bias=True) -> dict:
    return tiny_cfg(context_length=context_length, emb_dim=emb_dim, n_heads=n_heads, n_layers=1,
                    drop_rate=drop_rate, qkv_bias=qkv_bias)


def reference_scale_name(name: str) -> str:
    """The tensor whose gradient sets the tolerance scale for ``name``'s gradient: itself, except
    for the key bias. Its exact gradient is 0 (adding q.b_k to a whole row of scores leaves the
    softmax unchanged), so both frameworks return float32 rounding noise of the size of the terms
    that cancel, i.e. of the key weight's gradient."""
    return name.replace("W_key.bias", "W_key.weight")


def make_block(config, seed, dtype=np.float64, **switches) -> TransformerBlock:
    """A block with O(1) random parameters (LayerNorm scale near 1) and seeded dropouts."""
    rng = np.random.default_rng(seed)
    block = TransformerBlock(config, rng=rng, dtype=dtype, **switches)
    for name, p in block.named_parameters():
        p.data[...] = (1.0 if name.endswith("scale") else 0.0) + rng.standard_normal(p.shape) * 0.4
    shared = np.random.default_rng(seed)
    for m in block.modules():
        if isinstance(m, Dropout):
            m.rng = shared
    return block


@settings(max_examples=15)
@given(batch=st.integers(1, 2), heads=st.integers(1, 4), context_length=st.integers(1, 4),
       data=st.data(), qkv_bias=st.booleans(), drop_rate=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, heads, context_length, data, qkv_bias, drop_rate, seed):
    # emb_dim >= 4: a LayerNorm over 2 features maps each row to about (-1, 1) or (1, -1), a step
    # so sharp where the two are close that finite differences cannot follow it
    head_dim = data.draw(st.integers(-(-4 // heads), 4 // heads + 1), label="head_dim")
    seq = data.draw(st.integers(1, context_length), label="seq")
    block = make_block(cfg(heads * head_dim, heads, context_length, drop_rate, qkv_bias), seed)
    rng = block.drop_shortcut.rng
    state = rng.bit_generator.state
    x = np.random.default_rng(seed + 1).standard_normal((batch, seq, heads * head_dim))
    report = gradcheck(block, x, seed=seed, eps=EPS,
                       before_forward=lambda: setattr(rng.bit_generator, "state", state))
    assert report.ok, str(report)
    assert [row.name for row in report.rows] == [n for n, _ in block.named_parameters()] + ["input[0]"]


SWITCHES = [(causal, pre_norm, gelu) for causal in (True, False) for pre_norm in (True, False)
            for gelu in ("tanh", "erf")]


@pytest.mark.parametrize("causal,pre_norm,gelu", SWITCHES)
def test_every_switch_combination_gradcheck_float64(causal, pre_norm, gelu):
    """GPT-2's block (causal, pre-LN, tanh), BERT's (bidirectional, post-LN, erf) and the six
    between them: every parameter and the input, with dropout on (attention and both shortcuts,
    at two rates), a padding mask and a feed-forward 6 wide where 4C would be 16."""
    config = {**cfg(emb_dim=4, n_heads=2, context_length=5, drop_rate=0.3), "hidden_dim": 6,
              "drop_rate_attn": 0.2}
    block = make_block(config, 7, causal=causal, pre_norm=pre_norm, gelu=gelu, eps=1e-12)
    assert block.att.causal == causal and block.pre_norm == pre_norm
    assert type(block.ff.layers[1]).__name__ == {"tanh": "GELU", "erf": "ErfGELU"}[gelu]
    assert block.ff.layers[0].weight.shape == (4, 6) and block.att.dropout.p == 0.2
    rng = block.drop_shortcut.rng
    state = rng.bit_generator.state
    x = np.random.default_rng(8).standard_normal((2, 5, 4))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    report = gradcheck(block, [x, None, mask], eps=EPS,
                       before_forward=lambda: setattr(rng.bit_generator, "state", state))
    assert report.ok, str(report)
    assert [row.name for row in report.rows] == [n for n, _ in block.named_parameters()] + ["input[0]"]


LLAMA_SWITCHES = [
    {"normalization": "rmsnorm"},
    {"feed_forward": "swiglu", "ff_bias": False},
    {"n_kv_heads": 1, "head_dim": 3, "out_bias": False},
    {"normalization": "rmsnorm", "feed_forward": "swiglu", "n_kv_heads": 1, "out_bias": False,
     "ff_bias": False, "qkv_bias": False, "rope": True},                            # Llama 3
    {"normalization": "rmsnorm", "feed_forward": "swiglu", "n_kv_heads": 1, "head_dim": 4,
     "qk_norm": True, "out_bias": False, "ff_bias": False, "qkv_bias": False, "rope": True},   # Qwen3
]


@pytest.mark.parametrize("switches", LLAMA_SWITCHES,
                         ids=["rmsnorm", "swiglu", "gqa-head_dim", "llama3", "qwen3"])
def test_llama_switches_gradcheck_float64(switches):
    """GPT-2's block with Llama's and Qwen3's switches, one at a time and all together (config keys,
    nn/block.py's DECODER_DEFAULTS; the RoPE is the ``rope`` keyword): every parameter and the
    input, with dropout on and a feed-forward 6 wide."""
    from numpy_gpt.nn.rope import RoPE
    switches = dict(switches)
    rope = switches.pop("rope", False)
    config = {**cfg(emb_dim=4, n_heads=2, context_length=5, drop_rate=0.3), "hidden_dim": 6, **switches}
    head_dim = switches.get("head_dim", 2)
    block = make_block(config, 9, eps=1e-6, rope=RoPE(head_dim, 5, 100.0, dtype=np.float64) if rope else None)
    assert type(block.norm1).__name__ == {"layernorm": "LayerNorm", "rmsnorm": "RMSNorm"}[
        config.get("normalization", "layernorm")]
    kind = config.get("feed_forward", "gelu")
    assert type(block.ff).__name__ == {"gelu": "FeedForward", "swiglu": "SwiGLU"}[kind]
    assert block.att.num_kv_heads == config.get("n_kv_heads", 2) and block.att.head_dim == head_dim
    rng = block.drop_shortcut.rng
    state = rng.bit_generator.state
    x = np.random.default_rng(10).standard_normal((2, 5, 4))
    report = gradcheck(block, x, eps=EPS, before_forward=lambda: setattr(rng.bit_generator, "state", state))
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert [row.name for row in report.rows] == [n for n, _ in block.named_parameters()] + ["input[0]"]


def test_defaults_are_gpt2s_block():
    """TransformerBlock(cfg) is the book's: causal attention, pre-LN, tanh GELU, eps 1e-5, 4C wide."""
    block = TransformerBlock(cfg(emb_dim=8))
    assert block.att.causal and block.pre_norm and type(block.ff.layers[1]).__name__ == "GELU"
    assert block.norm1.eps == block.norm2.eps == 1e-5 and block.ff.layers[0].weight.shape == (8, 32)
    with pytest.raises(ValueError, match="gelu must be one of"):
        TransformerBlock(cfg(), gelu="relu")


def test_matches_torch_float32():
    config = cfg(emb_dim=16, n_heads=4, context_length=8)
    block = make_block(config, 0, np.float32)
    ref = torch_reference.load_numpy_state_dict(torch_reference.TransformerBlock(config), block.state_dict())
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 16), dtype=np.float32)
    dout = rng.standard_normal((2, 6, 16), dtype=np.float32)
    grads = {}

    def ref_grads():
        grads.update(torch_reference.numpy_grads(ref))
        return grads

    assert_matches_torch(block, ref, x, dout, rtol=1e-4, atol=1e-4, ref_grads=ref_grads,
                         grad_atol=lambda name: 1e-4 * np.abs(grads[reference_scale_name(name)]).max())


def test_zero_branches_make_the_identity():
    """With out_proj and the second FF layer all zero, both branches add 0: y = x and dx = dout
    (the shortcut carries the gradient unchanged; the branches contribute exactly 0)."""
    block = make_block(cfg(drop_rate=0.5), 0)
    block.eval()
    for layer in (block.att.out_proj, block.ff.layers[2]):
        layer.weight.data[...] = 0.0
        layer.bias.data[...] = 0.0
    rng = np.random.default_rng(2)
    x, dout = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(block(x), x)
    np.testing.assert_array_equal(block.backward(dout), dout)


def test_kv_cache_passes_through():
    block = make_block(cfg(context_length=6), 3).eval()
    x = np.random.default_rng(0).standard_normal((1, 5, 4))
    cache = block.att.new_kv_cache(1)
    steps = [block(x[:, :3], cache), block(x[:, 3:4], cache), block(x[:, 4:], cache)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), block(x), rtol=1e-12, atol=1e-14)


def test_backward_before_forward():
    block = make_block(cfg(), 0)
    with pytest.raises(RuntimeError, match="before forward"):
        block.backward(np.zeros((1, 2, 4)))
