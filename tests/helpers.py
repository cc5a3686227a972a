"""Helpers shared by the tests: one tiny GPT config, one PyTorch parity round trip, one lying checkpoint.

``tiny_cfg(**overrides)`` is the config every small test model starts from (the ``tiny_cfg`` fixture
in conftest.py hands out this function). ``with_meta`` copies a checkpoint with its metadata changed,
to test that a file which lies is refused. ``assert_matches_torch`` is the float32 parity proof used
by every layer's test: the same input and upstream gradient through numpy_gpt's layer and through
an independent torch module holding the same weights, comparing the output, the input gradient
and every parameter gradient.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

TINY = {"vocab_size": 50, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": False}


def tiny_cfg(**overrides) -> dict:
    """A tiny GPT config: TINY with ``overrides`` (an unknown key is a mistake, so it raises; the
    optional ``hidden_dim`` is known)."""
    unknown = sorted(set(overrides) - set(TINY) - {"hidden_dim"})
    if unknown:
        raise KeyError(f"tiny_cfg: unknown config keys {unknown}")
    return {**TINY, **overrides}


def with_meta(path, out, change: Callable[[dict], None]):
    """Copy checkpoint ``path`` to ``out`` with ``change(meta)`` applied to its __meta__ document."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    change(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(out, **arrays)
    return out


def assert_matches_torch(layer, ref, x: np.ndarray, dout: np.ndarray, *, rtol: float = 1e-4,
                         atol: float = 1e-5, grad_atol: float | Callable[[str], float] | None = None,
                         ref_grads: Callable[[], dict[str, np.ndarray]] | None = None) -> None:
    """numpy_gpt's ``layer`` and torch's ``ref`` agree on y = f(x), on dL/dx for dL/dy = ``dout``,
    and on the gradient of every trainable parameter of ``layer``.

    ``ref`` is a torch module or function; its parameter gradients are read with
    ``tools.torch_reference.numpy_grads`` (names and (in, out) layout as numpy_gpt's) unless
    ``ref_grads()``, called after torch's backward, returns them by numpy_gpt's parameter names.
    ``grad_atol`` is the absolute tolerance for the parameter gradients (default ``atol``), or a
    function of the parameter name.
    """
    from numpy_gpt.tools import torch_reference

    ref_y, ref_dx = torch_reference.forward_backward(ref, x, dout)
    y = layer(x)
    dx = layer.backward(dout)
    assert y.dtype == dx.dtype == x.dtype
    np.testing.assert_allclose(y, ref_y, rtol=rtol, atol=atol, err_msg="output")
    np.testing.assert_allclose(dx, ref_dx, rtol=rtol, atol=atol, err_msg="input gradient")
    grads = torch_reference.numpy_grads(ref) if ref_grads is None else ref_grads()
    for name, p in layer.named_parameters(trainable_only=True):
        tol = atol if grad_atol is None else grad_atol(name) if callable(grad_atol) else grad_atol
        assert p.grad is not None and p.grad.dtype == p.data.dtype, name
        np.testing.assert_allclose(p.grad, grads[name], rtol=rtol, atol=tol, err_msg=name)


def assert_keeps_dtype_and_freezes(make_layer: Callable[[type], object], shape: tuple[int, ...]) -> None:
    """A layer built by ``make_layer(dtype)`` returns its output, the input gradient and every
    parameter gradient in that dtype (float32 and float64); frozen (``requires_grad_(False)``), it
    computes no parameter gradient but still passes the input gradient back."""
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        layer = make_layer(dtype)
        y = layer(rng.standard_normal(shape).astype(dtype))
        dx = layer.backward(np.ones_like(y))
        assert y.dtype == dx.dtype == dtype
        assert all(p.grad.dtype == dtype for p in layer.parameters())
    layer = make_layer(np.float32).requires_grad_(False)
    layer(rng.standard_normal(shape).astype(np.float32))
    dx = layer.backward(rng.standard_normal(shape).astype(np.float32))
    assert all(p.grad is None for p in layer.parameters()) and dx.shape == shape
