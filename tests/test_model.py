"""GPTModel (numpy_gpt/model.py).

References: central finite differences in float64 on a tiny model (every parameter, dropout off and
on with replayed masks), the independent PyTorch GPTModel (numpy_gpt.tools.torch_reference) in float32 on
a model of GPT_CONFIG_124M's shape, the uncached forward for the KV cache, and the book's numbers
for the parameter count.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference, tiny_cfg, torch_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.model import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPTModel,
)
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import Module, no_grad

torch = reference("torch")
F = reference("torch.nn.functional")

EPS = 1e-5   # finite-difference step; see tests/test_attention.py

TINY = tiny_cfg(vocab_size=7, context_length=4, emb_dim=4, qkv_bias=True)
SMALL = tiny_cfg(context_length=12, n_heads=4, n_layers=3, drop_rate=0.1, qkv_bias=True)


def ids(shape, vocab_size, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=shape)


def randomize(model: GPTModel, seed: int) -> GPTModel:
    """O(1) parameters (LayerNorm scales near 1), so that no gradient is negligibly small."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        p.data[...] = (1.0 if name.endswith("scale") else 0.0) + rng.standard_normal(p.shape) * 0.4
    return model


# -- configs and parameters -----------------------------------------------------------------------
def test_configs_are_the_books():
    assert GPT_CONFIG_124M == {"vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
                               "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False}
    for cfg, (emb, layers, heads) in ((GPT_CONFIG_355M, (1024, 24, 16)), (GPT_CONFIG_774M, (1280, 36, 20)),
                                      (GPT_CONFIG_1558M, (1600, 48, 25))):
        assert (cfg["emb_dim"], cfg["n_layers"], cfg["n_heads"]) == (emb, layers, heads)
        assert {k: v for k, v in cfg.items() if k not in ("emb_dim", "n_layers", "n_heads")} == {
            k: v for k, v in GPT_CONFIG_124M.items() if k not in ("emb_dim", "n_layers", "n_heads")}


@pytest.fixture(scope="module")
def gpt124() -> GPTModel:
    """One GPT_CONFIG_124M model for the module (about 650 MB of float32 weights)."""
    return GPTModel(GPT_CONFIG_124M, seed=123)


def test_parameter_count_124m(gpt124):
    assert gpt124.num_parameters() == 163_009_536                     # the book's count, untied head
    tok = gpt124.tok_emb.weight
    assert gpt124.num_parameters() - tok.size == 124_412_160          # with out_head tied to tok_emb
    assert gpt124.out_head.weight.shape == tok.shape[::-1]


def test_init_statistics_124m(gpt124):
    residual_std = 0.02 / np.sqrt(2 * 12)
    sd = gpt124.state_dict()
    assert all(a.dtype == np.float32 for a in sd.values())
    for name, std in (("tok_emb.weight", 0.02), ("pos_emb.weight", 0.02), ("out_head.weight", 0.02),
                      ("trf_blocks.0.att.W_query.weight", 0.02), ("trf_blocks.5.ff.layers.0.weight", 0.02),
                      ("trf_blocks.3.att.out_proj.weight", residual_std),
                      ("trf_blocks.11.ff.layers.2.weight", residual_std)):
        assert abs(float(sd[name].std()) - std) < 0.02 * std, name
        assert abs(float(sd[name].mean())) < 0.05 * std, name
    for name, a in sd.items():
        if name.endswith((".bias", ".shift")):
            assert not a.any(), name
        if name.endswith(".scale"):
            assert (a == 1).all(), name


def test_state_dict_names():
    model = GPTModel({**TINY, "n_layers": 1, "qkv_bias": False}, seed=0)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        "tok_emb.weight": (7, 4), "pos_emb.weight": (4, 4),
        "trf_blocks.0.att.W_query.weight": (4, 4), "trf_blocks.0.att.W_key.weight": (4, 4),
        "trf_blocks.0.att.W_value.weight": (4, 4), "trf_blocks.0.att.out_proj.weight": (4, 4),
        "trf_blocks.0.att.out_proj.bias": (4,), "trf_blocks.0.ff.layers.0.weight": (4, 16),
        "trf_blocks.0.ff.layers.0.bias": (16,), "trf_blocks.0.ff.layers.2.weight": (16, 4),
        "trf_blocks.0.ff.layers.2.bias": (4,), "trf_blocks.0.norm1.scale": (4,),
        "trf_blocks.0.norm1.shift": (4,), "trf_blocks.0.norm2.scale": (4,),
        "trf_blocks.0.norm2.shift": (4,), "final_norm.scale": (4,), "final_norm.shift": (4,),
        "out_head.weight": (4, 7)}
    with_bias = GPTModel({**TINY, "n_layers": 1}, seed=0).state_dict()
    assert with_bias["trf_blocks.0.att.W_key.bias"].shape == (4,)


def test_same_seed_same_model_and_dropout():
    a, b, c = GPTModel(SMALL, seed=5), GPTModel(SMALL, seed=5), GPTModel(SMALL, seed=6)
    for (name, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters(),
                                            strict=True):
        np.testing.assert_array_equal(pa.data, pb.data, err_msg=name)
        if name.endswith(".weight"):
            assert not np.array_equal(pa.data, pc.data), name
    x = ids((2, 6), 50)
    np.testing.assert_array_equal(a(x), b(x))          # training mode: the same dropout masks too


def test_init_false_allocates_zeros_then_loads():
    """init=False draws nothing: Linear/Embedding weights are zeros, LayerNorms as usual; after
    loading a state dict the model computes what the source model computes."""
    source = randomize(GPTModel({**TINY, "qkv_bias": True}, seed=3), seed=4)
    empty = GPTModel({**TINY, "qkv_bias": True}, init=False)
    for (name, p), (_, q) in zip(empty.named_parameters(), source.named_parameters(), strict=True):
        assert p.shape == q.shape and p.data.dtype == np.float32
        expected = 1.0 if name.endswith(".scale") else 0.0
        assert np.all(p.data == expected), name
    empty.load_state_dict(source.state_dict())
    x = ids((2, 4), TINY["vocab_size"])
    np.testing.assert_array_equal(empty.eval()(x), source.eval()(x))


def test_dropout_rng_is_shared_and_reseedable():
    model = GPTModel(SMALL, seed=0)
    drops = [m for m in model.modules() if isinstance(m, Dropout)]
    assert len(drops) == 1 + 3 * SMALL["n_layers"]
    assert all(d.rng is model.dropout_rng for d in drops)
    x = ids((2, 6), 50)
    model.set_dropout_seed(42)
    first = model(x)
    assert not np.array_equal(first, model(x))
    model.set_dropout_seed(42)
    np.testing.assert_array_equal(first, model(x))
    model.eval()
    np.testing.assert_array_equal(model(x), model(x))


@pytest.mark.parametrize("change, error, message", [
    ({"n_heads": 5}, ValueError, "divisible by n_heads"),
    ({"emb_dim": 0}, ValueError, "emb_dim must be a positive integer"),
    ({"n_layers": 2.0}, ValueError, "n_layers must be a positive integer"),
    ({"drop_rate": 1.0}, ValueError, "drop_rate"),
    ({"qkv_bias": "no"}, ValueError, "qkv_bias"),
    ({"model_name": "gpt2"}, KeyError, "unknown keys \\['model_name'\\]"),
    ({"hidden_dim": 0}, ValueError, "hidden_dim must be a positive integer"),
    ({"hidden_dim": 24.0}, ValueError, "hidden_dim must be a positive integer"),
])
def test_bad_config(change, error, message):
    with pytest.raises(error, match=message):
        GPTModel({**TINY, **change})


def test_missing_config_key():
    cfg = dict(TINY)
    del cfg["qkv_bias"]
    with pytest.raises(KeyError, match="missing keys \\['qkv_bias'\\]"):
        GPTModel(cfg)
    with pytest.raises(ValueError, match="float32 or float64"):
        GPTModel(TINY, dtype=np.float16)


# -- finite differences ---------------------------------------------------------------------------
@settings(max_examples=8)
@given(batch=st.integers(1, 2), seq=st.integers(1, 4), n_layers=st.integers(1, 2),
       n_heads=st.sampled_from([1, 2]), qkv_bias=st.booleans(),
       drop_rate=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, n_layers, n_heads, qkv_bias, drop_rate, seed):
    cfg = {**TINY, "n_layers": n_layers, "n_heads": n_heads, "qkv_bias": qkv_bias, "drop_rate": drop_rate}
    model = randomize(GPTModel(cfg, seed=seed, dtype=np.float64), seed)
    idx = ids((batch, seq), cfg["vocab_size"], seed)
    report = gradcheck(model, idx, seed=seed, eps=EPS, before_forward=lambda: model.set_dropout_seed(seed))
    assert report.ok, str(report)
    assert [row.name for row in report.rows] == [name for name, _ in model.named_parameters()]


# -- PyTorch parity on the 124M shape -------------------------------------------------------------
@pytest.mark.parametrize("builtin_kernels", [False, True], ids=["book", "builtin"])
def test_matches_torch_124m_float32(gpt124, builtin_kernels):
    """Logits, the loss with some ignored (-100) targets, and every gradient, against PyTorch: the
    book's torch model, and the one with torch's fused kernels that the benchmark also times."""
    model = gpt124.eval()
    model.zero_grad()                                   # the fixture is shared by both parameters
    ref = torch_reference.torch_gpt_from_numpy(model, builtin_kernels=builtin_kernels).eval()
    idx = ids((2, 8), 50257, seed=1)
    targets = ids((2, 8), 50257, seed=2)
    targets[0, :3] = -100
    targets[1, 5] = -100

    logits = model(idx)
    loss, dlogits = cross_entropy(logits, targets)
    model.backward(dlogits)
    ref_logits = ref(torch.from_numpy(idx))
    ref_loss = F.cross_entropy(ref_logits.flatten(0, 1), torch.from_numpy(targets).flatten())
    ref_loss.backward()

    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, ref_logits.detach().numpy(), atol=1e-4, rtol=0)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
    ref_grads = torch_reference.numpy_grads(ref)
    assert set(ref_grads) == set(model.state_dict())
    for name, p in model.named_parameters():
        assert p.grad.dtype == np.float32, name
        scale = float(np.abs(ref_grads[name]).max())
        assert scale > 0, name
        err = float(np.abs(p.grad - ref_grads[name]).max())
        assert err <= 1e-4 * scale, f"{name}: max error {err:.3g} vs gradient scale {scale:.3g}"


# -- KV cache -------------------------------------------------------------------------------------
@settings(max_examples=15)
@given(batch=st.integers(1, 2), prefill=st.integers(1, 6), steps=st.integers(0, 6),
       seed=st.integers(0, 2**16))
def test_kv_cache_equals_full_forward(batch, prefill, steps, seed):
    model = GPTModel(SMALL, seed=seed).eval()
    total = prefill + steps
    idx = ids((batch, total), SMALL["vocab_size"], seed)
    full = model(idx)
    cache = model.new_kv_cache(batch)
    chunks = [model(idx[:, :prefill], kv_cache=cache)]
    chunks += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(prefill, total)]
    assert all(layer.length == total for layer in cache)
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_errors():
    model = GPTModel(SMALL, seed=0).eval()
    cache = model.new_kv_cache(1, max_len=5)
    assert len(cache) == SMALL["n_layers"] and cache[0].keys.shape == (1, 4, 5, 4)
    model(ids((1, 4), 50), kv_cache=cache)
    with pytest.raises(ValueError, match="no room"):
        model(ids((1, 2), 50), kv_cache=cache)
    with pytest.raises(ValueError, match="batch size 1"):
        model(ids((2, 1), 50), kv_cache=cache)
    assert all(layer.length == 4 for layer in cache)          # failed calls changed nothing
    with pytest.raises(ValueError, match="context_length"):
        model.new_kv_cache(1, max_len=13)
    full = model.new_kv_cache(1)
    model(ids((1, 12), 50), kv_cache=full)
    with pytest.raises(ValueError, match="holds 12 positions and 1 more tokens would exceed"):
        model(ids((1, 1), 50), kv_cache=full)
    with pytest.raises(TypeError, match="new_kv_cache"):
        model(ids((1, 1), 50), kv_cache=cache[:2])


def test_kv_cache_forward_keeps_nothing_for_backward():
    model = GPTModel(SMALL, seed=0)
    x = ids((1, 3), 50)
    model(x)
    logits = model(x, kv_cache=model.new_kv_cache(1))
    with pytest.raises(RuntimeError, match="without a kv_cache"):
        model.backward(np.ones_like(logits))


# -- dtypes ---------------------------------------------------------------------------------------
def record_dtypes(model: Module) -> list[tuple[str, str, np.dtype]]:
    """Wrap every module's forward and backward (on the instance) to record the dtype of each
    array they return."""
    seen = []
    for name, module in model.named_modules():
        for method in ("forward", "backward"):
            original = getattr(module, method)

            def wrapped(*args, _original=original, _name=name, _method=method, **kwargs):
                out = _original(*args, **kwargs)
                if isinstance(out, np.ndarray):
                    seen.append((_name, _method, out.dtype))
                return out
            setattr(module, method, wrapped)
    return seen


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_dtype_leak(dtype):
    model = GPTModel(SMALL, seed=0, dtype=dtype)
    seen = record_dtypes(model)
    idx = ids((2, 7), 50).astype(np.int32)
    logits = model(idx)
    attention_arrays = model.trf_blocks[0].att._cache[:5]              # q, k, v, P, Pd (then the pad mask)
    loss, dlogits = cross_entropy(logits, ids((2, 7), 50, seed=1))
    model.backward(dlogits)
    assert logits.dtype == dlogits.dtype == dtype
    assert all(a.dtype == dtype for a in attention_arrays)          # q, k, v, P, Pd
    assert {d for _, _, d in seen} == {np.dtype(dtype)}, [s for s in seen if s[2] != dtype]
    assert len({(n, m) for n, m, _ in seen}) > 4 * SMALL["n_layers"] * 2
    assert all(p.grad.dtype == dtype for p in model.parameters())
    model.eval()
    seen.clear()
    with no_grad():
        assert model(idx, kv_cache=model.new_kv_cache(2)).dtype == dtype
    assert {d for _, _, d in seen} == {np.dtype(dtype)}


# -- frozen parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize("trainable", [("trf_blocks.2",), ("trf_blocks.2", "final_norm", "out_head"),
                                       ("trf_blocks.1", "tok_emb"), ("final_norm",), ()])
def test_frozen_parameters_get_no_gradient(trainable):
    """Freezing parameters gives exactly zero grads there and the full model's grads elsewhere;
    the frozen blocks below the lowest trainable part are never back-propagated through."""
    full = GPTModel(SMALL, seed=3).eval()
    part = GPTModel(SMALL, seed=3).eval()
    part.requires_grad_(False)
    modules = dict(part.named_modules())
    for name in trainable:
        modules[name].requires_grad_(True)
    lowest = min((list(modules).index(n) for n in trainable), default=None)
    below = [m for n, m in part.named_modules() if n.startswith("trf_blocks.") and n.count(".") == 1
             and (lowest is None or list(modules).index(n) < lowest)]
    for block in below:
        block.backward = lambda dout: pytest.fail("backward went through a fully frozen prefix")

    idx, targets = ids((2, 9), 50), ids((2, 9), 50, seed=1)
    for model in (full, part):
        _, dlogits = cross_entropy(model(idx), targets)
        model.backward(dlogits)
    full_grads = dict(full.named_parameters())
    for name, p in part.named_parameters():
        if p.trainable:
            np.testing.assert_allclose(p.grad, full_grads[name].grad, rtol=1e-5, atol=1e-7, err_msg=name)
        else:
            assert p.grad is None, name
    for block in below:
        assert block.att._cache is None          # forward kept no activations for them either


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("idx, error, message", [
    (np.array([[1, 2, 7]]), ValueError, "token id 7 is outside the vocabulary \\[0, 7\\)"),
    (np.array([[1, -1, 2]]), ValueError, "token id -1 is outside"),
    (np.zeros((1, 5), dtype=np.int64), ValueError, "5 tokens exceed context_length=4"),
    (np.zeros((1, 3), dtype=np.float32), TypeError, "integer token ids"),
    (np.array([1, 2, 3]), ValueError, "idx\\[None\\]"),
    (np.zeros((1, 2, 3), dtype=np.int64), ValueError, "\\(batch, tokens\\)"),
    (np.zeros((1, 0), dtype=np.int64), ValueError, "non-empty"),
])
def test_bad_ids(idx, error, message):
    with pytest.raises(error, match=message):
        GPTModel(TINY, seed=0)(idx)


def test_backward_needs_a_recorded_forward():
    model = GPTModel(TINY, seed=0)
    with pytest.raises(RuntimeError, match="run model\\(idx\\) first"):
        model.backward(np.zeros((1, 2, 7), np.float32))
    with no_grad():
        logits = model(ids((1, 2), 7))
    with pytest.raises(RuntimeError, match="no_grad"):
        model.backward(np.zeros_like(logits))
    logits = model(ids((1, 2), 7))
    with pytest.raises(ValueError, match="logits' shape \\(1, 2, 7\\)"):
        model.backward(np.zeros((1, 3, 7), np.float32))


def test_load_state_dict_is_all_or_nothing(tiny_cfg):
    """A bad last entry (strings, or the wrong shape) fails before any parameter is written."""
    model = GPTModel(tiny_cfg(), seed=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    good = {k: v + 1.0 for k, v in before.items()}
    last = list(good)[-1]
    for bad_value, error in ((np.full(good[last].shape, "x"), TypeError), (good[last][:-1], ValueError)):
        with pytest.raises(error, match=last.replace(".", r"\.")):
            model.load_state_dict({**good, last: bad_value})
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(v, before[k])
