"""Parameter and Module: the tiny protocol every layer in numpy_gpt follows.

This replaces what PyTorch's ``nn.Module`` and autograd do for the book's code, but with nothing
hidden: there is no graph and no autograd. Each layer

* ``forward(*inputs)`` computes its output and, when gradients are wanted, caches exactly what its
  ``backward`` will need (documented in each layer);
* ``backward(dout)`` receives dLoss/dOutput, adds dLoss/dParameter into every trainable
  ``Parameter.grad`` and returns dLoss/dInput.

Gradient bookkeeping is PyTorch's: ``zero_grad()`` sets every ``p.grad`` to None; the first
backward that computes a parameter's gradient stores it (``p.add_grad(g)``), later ones add to it.
So tied weights, a parameter used twice, and gradient accumulation over micro-batches just work.

A composite module calls its children's ``backward`` in reverse order of their ``forward``; where a
value fans out (a residual shortcut), the gradients of the branches are summed.

``no_grad()`` is the inference switch: inside it, layers keep no activations for backward (as
``torch.no_grad``), which saves memory and time in evaluation and generation. ``inference(model)``
is the book's ``model.eval()`` + ``torch.no_grad()`` pair in one block, which also puts the model
back in the mode it was in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Context manager: forward passes inside it cache nothing for backward."""
    global _GRAD_ENABLED
    previous = _GRAD_ENABLED
    _GRAD_ENABLED = False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def is_grad_enabled() -> bool:
    """True unless we are inside ``no_grad()``."""
    return _GRAD_ENABLED


@contextlib.contextmanager
def inference(model: Module) -> Iterator[None]:
    """Evaluate as the book and the papers do: dropout off (``model.eval()``) and nothing kept for
    backward (``no_grad``); the model's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            yield
    finally:
        model.train(was_training)


class Parameter:
    """A learnable array and the gradient accumulated for it.

    ``grad`` is None until a backward computes it, then an array of ``data``'s shape and dtype.
    ``add_grad(g)`` is how layers write it: the first call stores g, later calls add g, and
    ``zero_grad()`` (on the Module or the optimizer) sets it back to None. When ``trainable`` is
    False, layers skip computing this parameter's gradient altogether.
    """

    __slots__ = ("data", "grad", "trainable")

    def __init__(self, data: np.ndarray, trainable: bool = True):
        if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
            raise TypeError(f"Parameter data must be a floating-point ndarray, got {type(data).__name__}"
                            f"{'' if not isinstance(data, np.ndarray) else ' of dtype ' + str(data.dtype)}")
        self.data = data
        self.grad: np.ndarray | None = None
        self.trainable = trainable

    def add_grad(self, g: np.ndarray) -> None:
        """grad += g, where a None grad counts as zero: the first gradient is stored as it is.

        g must have the parameter's shape. It is stored without a copy when it is a fresh array of
        the parameter's dtype (a layer's ``x.T @ dy``), so the first write costs nothing.
        """
        if g.shape != self.data.shape:
            raise ValueError(f"gradient of shape {g.shape} for a parameter of shape {self.data.shape}")
        if self.grad is None:
            fresh = g.dtype == self.data.dtype and g.flags.owndata and g.flags.c_contiguous
            self.grad = g if fresh else np.array(g, dtype=self.data.dtype, order="C")
        else:
            self.grad += g

    def zero_grad(self) -> None:
        self.grad = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def size(self) -> int:
        return self.data.size

    def __repr__(self) -> str:
        flag = "" if self.trainable else ", frozen"
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype}{flag})"


class Module:
    """Base class of every layer. Children and Parameters are found from the instance attributes
    in the order they were assigned, so parameter names are deterministic
    (``trf_blocks.0.att.W_query.weight``)."""

    def __init__(self) -> None:
        self.training = True

    # -- computation -------------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, dout):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *inputs, **kwargs):
        return self.forward(*inputs, **kwargs)

    def _need_cache(self) -> bool:
        """Layers call this in forward: keep activations for backward only if grads are wanted."""
        return _GRAD_ENABLED

    def _pop_cache(self, cache_name: str = "_cache"):
        """Return the activations saved by forward, or explain why backward cannot run."""
        cache = getattr(self, cache_name, None)
        if cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called before forward: run forward first (and not "
                f"inside numpy_gpt.no_grad(), which keeps nothing for backward)")
        setattr(self, cache_name, None)
        return cache

    # -- traversal ---------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value

    def children(self) -> Iterator[Module]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = "", trainable_only: bool = False
                         ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs, deterministic order; a shared (tied) Parameter once."""
        seen: set[int] = set()
        for mod_name, mod in self.named_modules(prefix):
            for name, value in vars(mod).items():
                if isinstance(value, Parameter) and id(value) not in seen:
                    seen.add(id(value))
                    if trainable_only and not value.trainable:
                        continue
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def parameters(self, trainable_only: bool = False) -> Iterator[Parameter]:
        for _, p in self.named_parameters(trainable_only=trainable_only):
            yield p

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters(trainable_only=trainable_only))

    # -- state -------------------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Set every parameter's gradient to None (the next backward stores a fresh one)."""
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True) -> Module:
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, flag: bool = True) -> Module:
        """Mark every parameter of this module (and its children) trainable or frozen."""
        for p in self.parameters():
            p.trainable = flag
        return self

    def any_trainable(self) -> bool:
        return any(p.trainable for p in self.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        """{dotted name: array}; the arrays are the live parameter data (copy before mutating)."""
        return {name: p.data for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters in place, all or nothing.

        Values are cast to each parameter's dtype. With ``strict`` every parameter must be present
        and no unknown name may appear; the error lists exactly what differs. Every value is checked
        and cast first (a shape or a non-numeric array fails there), so a failed load changes nothing.
        """
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            raise KeyError(f"state dict does not match {type(self).__name__}: "
                           f"missing {missing[:10]}{'...' if len(missing) > 10 else ''}, "
                           f"unexpected {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}")
        bad = [f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {params[k].shape}"
               for k in params if k in state and tuple(np.shape(state[k])) != params[k].shape]
        if bad:
            raise ValueError("shape mismatch in state dict: " + "; ".join(bad))
        staged = {}
        for k, p in params.items():
            if k in state:
                value = np.asarray(state[k])
                if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
                    raise TypeError(f"state dict entry {k!r} holds {value.dtype} values, not numbers")
                staged[k] = value.astype(p.data.dtype, copy=False)
        for k, value in staged.items():
            params[k].data[...] = value

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self.named_children():
            sub = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Sequential(Module):
    """Run children one after another; backward runs them in reverse. Children are named 0, 1, ..."""

    def __init__(self, *layers: Module):
        super().__init__()
        for i, layer in enumerate(layers):
            setattr(self, str(i), layer)

    def __len__(self) -> int:
        return sum(1 for _ in self.named_children())

    def __getitem__(self, i: int) -> Module:
        return list(self.children())[i]

    def __iter__(self) -> Iterator[Module]:
        return self.children()

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x

    def backward(self, dout):
        for layer in reversed(list(self.children())):
            dout = layer.backward(dout)
        return dout
