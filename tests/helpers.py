"""Helpers shared by the tests: the reference libraries, one tiny GPT config, one PyTorch parity round
trip, one lying checkpoint.

The tests come in two tiers run by one command. With only numpy_gpt's runtime dependencies plus pytest
and hypothesis, every finite-difference gradcheck and every pure test runs; the tests that compare
against a reference library (torch, transformers, tokenizers, tiktoken, safetensors, jinja2) skip, each
with one line naming the package and how to install it. A test reaches a reference library only
through ``reference`` (a module that is imported on first use, and skips the test when the package is
absent), the ``needs`` mark or ``require``; tests/test_import_rules.py fails on any other import of one.

``tiny_cfg(**overrides)`` is the config every small test model starts from (the ``tiny_cfg`` fixture
in conftest.py hands out this function). ``with_meta`` copies a checkpoint with its metadata changed,
to test that a file which lies is refused. ``assert_matches_torch`` is the float32 parity proof used
by every layer's test: the same input and upstream gradient through numpy_gpt's layer and through
an independent torch module holding the same weights, comparing the output, the input gradient
and every parameter gradient.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

# The libraries the reference tests compare against (the ``test`` extra in setup.cfg; jinja2 comes with
# transformers' chat templates). Nothing else in tests/ may import them directly.
REFERENCE_PACKAGES = ("torch", "transformers", "tokenizers", "tiktoken", "tiktoken_ext", "safetensors",
                      "jinja2")
# CI sets this so that a reference library missing there fails its tests instead of skipping them.
REQUIRE_REFERENCES = os.environ.get("NUMPY_GPT_REQUIRE_REFERENCES") == "1"


def installed(package: str) -> bool:
    """Whether ``package`` (a top-level name) can be imported, without importing it."""
    return importlib.util.find_spec(package) is not None


def missing_reason(package: str) -> str:
    """The one-line skip reason for a reference test whose ``package`` is not installed."""
    install = "pip install torch==2.13.0 && pip install -e '.[test]'"
    if package == "jinja2":
        install = "pip install jinja2"
    return f"{package} is not installed: this test compares against it; {install}"


def require(*packages: str) -> None:
    """Skip the running test or fixture unless the reference ``packages`` are installed (for a fixture,
    which a mark cannot skip)."""
    for package in packages:
        if not installed(package) and not REQUIRE_REFERENCES:
            pytest.skip(missing_reason(package))


def needs(*packages: str) -> pytest.MarkDecorator:
    """Mark a test that uses reference ``packages`` some other way than through ``reference`` (a
    subprocess, say): it is skipped when one of them is absent."""
    missing = [p for p in packages if not installed(p)]
    return pytest.mark.skipif(bool(missing) and not REQUIRE_REFERENCES,
                              reason=missing_reason(missing[0]) if missing else "")


class reference:  # lower case: it stands in for a module, torch = reference("torch")
    """A reference library, imported on first use: ``torch = reference("torch")`` at the top of a test
    module, then ``torch.tensor(...)`` inside the tests as usual. When the package is not installed, the
    first attribute access skips the test that made it (with ``missing_reason``); at collection time it
    would be an error, so reference objects are used only inside tests and fixtures.

    ``reference("safetensors.numpy", "load_file")`` stands for one function of the module (called like
    it). ``needs`` names the package to check when the module's top-level name is not itself one
    (``reference("numpy_gpt.tools.torch_reference", needs="torch")``).
    """

    def __init__(self, module: str, name: str | None = None, *, needs: str | None = None):
        root = module.split(".")[0]
        package = needs or ("tiktoken" if root == "tiktoken_ext" else root)
        if package not in REFERENCE_PACKAGES:
            raise ValueError(f"reference({module!r}): {package!r} is not a reference package; "
                             f"pass needs= one of {REFERENCE_PACKAGES}")
        self._module, self._name, self._package, self._target = module, name, package, None

    def _resolve(self) -> Any:
        if self._target is None:
            require(self._package)
            target = importlib.import_module(self._module)
            self._target = target if self._name is None else getattr(target, self._name)
        return self._target

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith(("__", "_pytest")):          # copy, inspect and pytest probing the proxy
            raise AttributeError(attr)
        return getattr(self._resolve(), attr)

    def __call__(self, *args, **kwargs) -> Any:
        return self._resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"reference({self._module!r}{'' if self._name is None else f', {self._name!r}'})"


torch_reference = reference("numpy_gpt.tools.torch_reference", needs="torch")

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


def assert_refuses_misuse(layer, width: int) -> None:
    """A layer over the last axis of ``width`` features refuses backward before forward, and an
    input of another width, each with its one clear message."""
    import pytest
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((1, width), np.float32))
    with pytest.raises(ValueError, match=rf"\(\.\.\., {width}\)"):
        layer(np.ones((2, width // 2), np.float32))
