"""LoRA, low-rank adaptation (appendix E of the book).

Instead of updating a big frozen weight W (in, out), LoRA learns a low-rank correction
``delta_W = (alpha / rank) * A @ B`` with A (in, rank) and B (rank, out), rank << min(in, out):

    y = x @ W + b + (alpha / rank) * x @ A @ B

* ``LoRALayer`` is the correction on its own: A starts Kaiming-uniform, B starts at zero, so a freshly
  wrapped model computes exactly what it computed before.
* ``LinearWithLoRA`` wraps an existing ``Linear``: it freezes the linear's W and b and trains only A and
  B. Its backward never forms dL/dW (the (in, out) matmul that full fine-tuning pays for); it returns
  dL/dx through both paths because the layers below may still have LoRA matrices to train.
* ``replace_linear_with_lora(model, rank, alpha)`` swaps every ``Linear`` of a model for a
  ``LinearWithLoRA``, as the book's function of the same name.
* ``merge_lora(model)`` folds each correction back into its W (``W + (alpha / rank) * A @ B``) and puts
  plain ``Linear`` layers back, so inference costs nothing extra.
* ``with lora_disabled(model):`` switches every adapter off for a while: the model then computes exactly
  what it computed before LoRA was added. Preference tuning (finetune/preference.py) uses this base
  model as its frozen reference, so no second copy of the weights is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, Parameter


def kaiming_uniform_A(rng: np.random.Generator, in_dim: int, rank: int,
                      dtype: np.dtype | type = np.float32) -> np.ndarray:
    """A (in_dim, rank) drawn from U(-1/sqrt(rank), 1/sqrt(rank)).

    This is what the book's ``torch.nn.init.kaiming_uniform_(A, a=math.sqrt(5))`` draws for a tensor of
    shape (in_dim, rank): PyTorch takes size(1) = rank as the fan-in, the leaky-ReLU gain is
    sqrt(2 / (1 + 5)) and the bound gain * sqrt(3 / fan_in) = 1 / sqrt(rank).
    """
    bound = 1.0 / np.sqrt(rank)
    return rng.uniform(-bound, bound, size=(in_dim, rank)).astype(dtype)


class LoRALayer(Module):
    """The low-rank path x -> (alpha / rank) * x @ A @ B, with A (in_dim, rank) and B (rank, out_dim).

    forward caches x and the scaled projection h = (alpha / rank) * x @ A (N, rank) for backward.
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float, *,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        if not isinstance(rank, (int, np.integer)) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}")
        rng = np.random.default_rng() if rng is None else rng
        self.in_dim, self.out_dim, self.rank, self.alpha = in_dim, out_dim, int(rank), alpha
        self.scaling = alpha / rank
        self.A = Parameter(kaiming_uniform_A(rng, in_dim, self.rank, dtype))
        self.B = Parameter(np.zeros((self.rank, out_dim), dtype=dtype))
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(f"LoRALayer expects input of shape (..., {self.in_dim}), got {x.shape}")
        x2d = x.reshape(-1, self.in_dim)                            # (N, in)
        h = x2d @ self.A.data                                       # (N, rank)
        h *= np.asarray(self.scaling, dtype=h.dtype)
        if self._need_cache():
            self._cache = (x2d, h, x.shape)
        return (h @ self.B.data).reshape(*x.shape[:-1], self.out_dim)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """With s = alpha / rank, h = s * x @ A (N, rank) and y = h @ B:
        dL/dB = h.T @ dy (rank, out);  dL/dh = dy @ B.T (N, rank);
        dL/dA = s * x.T @ dL/dh (in, rank);  dL/dx = s * dL/dh @ A.T (N, in).
        Every product here has ``rank`` as one of its dimensions: cheap next to x @ W.
        """
        x2d, h, x_shape = self._pop_cache()
        dy2d = dy.reshape(-1, self.out_dim)                         # (N, out)
        if self.B.trainable:
            self.B.add_grad(h.T @ dy2d)                             # (rank, out)
        dh = dy2d @ self.B.data.T                                   # (N, rank)
        dh *= np.asarray(self.scaling, dtype=dh.dtype)              # now s * dL/dh
        if self.A.trainable:
            self.A.add_grad(x2d.T @ dh)                             # (in, rank)
        return (dh @ self.A.data.T).reshape(x_shape)

    def delta_weight(self) -> np.ndarray:
        """The dense update (alpha / rank) * A @ B, shape (in_dim, out_dim)."""
        delta = self.A.data @ self.B.data
        delta *= np.asarray(self.scaling, dtype=delta.dtype)
        return delta

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, rank={self.rank}, alpha={self.alpha}"


class LinearWithLoRA(Module):
    """y = x @ W + b + (alpha / rank) * x @ A @ B around an existing ``Linear``; W and b are frozen.

    The wrapped layer keeps its name (``linear``), so its parameters appear as ``....linear.weight``
    and the LoRA matrices as ``....lora.A`` / ``....lora.B``. Forward does the x @ W product itself
    (instead of calling the linear's forward) so x is cached once, by the LoRA path, and nothing is
    kept for a dL/dW that is never computed. Should W or b be unfrozen again (LoRA on top of full
    fine-tuning), their gradients are computed as ``Linear`` computes them.
    """

    def __init__(self, linear: Linear, rank: int, alpha: float, *,
                 rng: np.random.Generator | None = None):
        super().__init__()
        if not isinstance(linear, Linear):
            raise TypeError(f"LinearWithLoRA wraps a numpy_gpt Linear, got {type(linear).__name__}")
        linear.requires_grad_(False)
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha,
                              rng=rng, dtype=linear.weight.data.dtype)
        self.enabled = True                                         # False: the plain Linear (lora_disabled)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.enabled:                                        # adapter off: exactly the wrapped layer
            return self.linear(x)
        W = self.linear.weight.data                                 # (in, out), frozen
        if x.ndim < 1 or x.shape[-1] != W.shape[0]:
            raise ValueError(f"LinearWithLoRA expects input of shape (..., {W.shape[0]}), got {x.shape}")
        y = self.lora(x)                                            # (..., out) low-rank path
        y += (x.reshape(-1, W.shape[0]) @ W).reshape(y.shape)       # (N, in) @ (in, out)
        if self.linear.bias is not None:
            y += self.linear.bias.data
        if self._need_cache() and self.linear.any_trainable():
            self._cache = x                                         # only for an unfrozen W or b
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dL/dx = dy @ W.T + (LoRA path's dL/dx); dL/dA and dL/dB come from ``LoRALayer.backward``.
        dL/dW = x.T @ dy and dL/db = sum(dy) are not computed while W and b are frozen. With the adapter
        switched off (``lora_disabled``, for the forward this backward belongs to) it is the Linear's."""
        if not self.enabled:
            return self.linear.backward(dy)
        W, b = self.linear.weight, self.linear.bias
        dy2d = dy.reshape(-1, W.shape[1])                           # (N, out)
        if W.trainable or (b is not None and b.trainable):
            x2d = self._pop_cache().reshape(-1, W.shape[0])         # (N, in)
            if W.trainable:
                W.add_grad(x2d.T @ dy2d)
            if b is not None and b.trainable:
                b.add_grad(dy2d.sum(axis=0))
        dx = self.lora.backward(dy)                                 # (..., in), also fills A/B grads
        dx += (dy2d @ W.data.T).reshape(dx.shape)                   # (N, out) @ (out, in)
        return dx

    def merge(self) -> Linear:
        """Fold the update into the wrapped layer, W <- W + (alpha / rank) * A @ B, and return that plain
        ``Linear`` (same output, one matmul). B is reset to zero, so this wrapper stays correct too."""
        self.linear.weight.data += self.lora.delta_weight()
        self.lora.B.data.fill(0)
        return self.linear

    def extra_repr(self) -> str:
        return f"rank={self.lora.rank}, alpha={self.lora.alpha}"


def _parents_of(model: Module, kind: type) -> list[tuple[Module, str]]:
    """(parent module, attribute name) of every child of type ``kind`` (not looking inside a
    ``LinearWithLoRA``, whose own linear is already wrapped), found before any change."""
    return [(parent, name) for _, parent in model.named_modules() if not isinstance(parent, LinearWithLoRA)
            for name, child in parent.named_children() if type(child) is kind]


def replace_linear_with_lora(model: Module, rank: int, alpha: float, *,
                             rng: np.random.Generator | None = None, seed: int | None = None) -> Module:
    """Wrap every ``Linear`` of ``model`` (attention projections, feed-forward layers, output head)
    in a ``LinearWithLoRA``; returns the model, changed in place.

    As in the book, call it after freezing the model (``model.requires_grad_(False)``): then only the
    LoRA matrices train. The wrapped linears are frozen in any case. The A matrices are drawn from
    ``rng`` (or ``np.random.default_rng(seed)``), in parameter order, so a seed fixes them all.
    """
    if rng is None:
        rng = np.random.default_rng(seed)
    for parent, name in _parents_of(model, Linear):
        setattr(parent, name, LinearWithLoRA(getattr(parent, name), rank, alpha, rng=rng))
    return model


@contextlib.contextmanager
def lora_disabled(model: Module) -> Iterator[Module]:
    """Within the block every ``LinearWithLoRA`` of ``model`` computes its wrapped ``Linear`` alone,
    y = x @ W + b, bit for bit what the model computed before ``replace_linear_with_lora``; the
    adapters are back on afterwards (even after an error). Keep the switch unchanged between a forward
    and its backward."""
    layers = [m for m in model.modules() if isinstance(m, LinearWithLoRA)]
    previous = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, enabled in zip(layers, previous, strict=True):
            m.enabled = enabled


def merge_lora(model: Module) -> Module:
    """Replace every ``LinearWithLoRA`` of ``model`` by its merged ``Linear`` (for inference or to save a
    plain checkpoint); returns the model, changed in place. The merged layers stay frozen."""
    for parent, name in _parents_of(model, LinearWithLoRA):
        setattr(parent, name, getattr(parent, name).merge())
    return model
