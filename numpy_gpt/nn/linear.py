"""Linear layer: y = x @ W + b (the book's ``nn.Linear``, chapters 3-4).

Every projection in GPT-2 is one of these: the query/key/value and output projections of attention,
the two layers of the feed-forward block and the output head. The weight is stored as
(in_features, out_features), the layout of the OpenAI/TensorFlow checkpoints (and of Hugging Face's
``Conv1D``), so ``y = x @ W`` needs no transpose. PyTorch's ``nn.Linear`` stores the transpose.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from numpy_gpt.nn.module import Module, Parameter

_SKIP_INIT = False


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Inside this context, layers allocate their weights as zeros instead of drawing them.

    For a model whose weights are loaded right after (GPT-2's checkpoints, a saved model): drawing
    the 163M normal samples of GPT-2 124M only to overwrite them costs seconds, while ``np.zeros``
    maps its pages lazily and costs nothing until the weights are copied in.
    """
    global _SKIP_INIT
    previous = _SKIP_INIT
    _SKIP_INIT = True
    try:
        yield
    finally:
        _SKIP_INIT = previous


def normal_init(rng: np.random.Generator | None, shape: tuple[int, ...], std: float,
                dtype: np.dtype | type = np.float32) -> np.ndarray:
    """N(0, std^2) samples of ``dtype`` drawn without a float64 temporary for float32 weights
    (the (768, 50257) output head would otherwise allocate 300 MB of float64 first); zeros
    inside ``skip_init()``."""
    if _SKIP_INIT:
        return np.zeros(shape, dtype=dtype)
    rng = np.random.default_rng() if rng is None else rng
    dtype = np.dtype(dtype)
    draw_dtype = dtype if dtype in (np.float32, np.float64) else np.float32
    w = rng.standard_normal(shape, dtype=draw_dtype)
    w *= std
    return w.astype(dtype, copy=False)


class Linear(Module):
    """y = x @ W + b with W of shape (in_features, out_features), initialised N(0, 0.02^2), b = 0.

    forward accepts any leading dimensions (..., in_features): the matmul runs on a 2-D view
    (N, in_features) with N the product of the leading dims, which is one big BLAS call.
    Caches the input x for backward.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(normal_init(rng, (in_features, out_features), 0.02, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expects input of shape (..., {self.in_features}), got {x.shape}")
        y = x.reshape(-1, self.in_features) @ self.weight.data        # (N, in) @ (in, out) -> (N, out)
        if self.bias is not None:
            y += self.bias.data
        if self._need_cache():
            self._cache = x
        return y.reshape(*x.shape[:-1], self.out_features)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """With x2d = x as (N, in) and dy2d = dy as (N, out):
        dL/dW = x2d.T @ dy2d (in, out);  dL/db = sum of dy2d over N (out,);  dL/dx = dy @ W.T (..., in).
        """
        x = self._pop_cache()
        x2d = x.reshape(-1, self.in_features)                        # (N, in)
        dy2d = dy.reshape(-1, self.out_features)                     # (N, out)
        if self.weight.trainable:
            self.weight.add_grad(x2d.T @ dy2d)                       # (in, N) @ (N, out)
        if self.bias is not None and self.bias.trainable:
            self.bias.add_grad(dy2d.sum(axis=0))                     # (out,)
        return (dy2d @ self.weight.data.T).reshape(x.shape)          # (N, out) @ (out, in)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class TiedLinear(Module):
    """y = x @ W^T with W a Parameter of shape (out_features, in_features) owned by another layer:
    the output head that reuses the token embedding (weight tying, GPT-2's and SmolLM2's
    ``tie_word_embeddings``), W = ``tok_emb.weight`` (V, C).

    W is the same Parameter object as the embedding's, so it is listed once in
    ``named_parameters`` (under the embedding's name) and its gradient is the sum of both uses:
    this layer adds dL/dW = dy^T x (V, C), the embedding its scatter-add, each through ``add_grad``.
    Caches the input x (N, C).
    """

    def __init__(self, weight: Parameter):
        super().__init__()
        self.weight = weight                                         # (out, in), shared
        self.out_features, self.in_features = weight.shape
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"TiedLinear expects input of shape (..., {self.in_features}), got {x.shape}")
        x2d = x.reshape(-1, self.in_features)                       # (N, in)
        if self._need_cache():
            self._cache = x2d
        return (x2d @ self.weight.data.T).reshape(*x.shape[:-1], self.out_features)   # (N, in) @ (in, out)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dL/dW = dy2d^T x2d (out, in);  dL/dx = dy W (..., in)."""
        x2d = self._pop_cache()
        dy2d = dy.reshape(-1, self.out_features)                    # (N, out)
        if self.weight.trainable:
            self.weight.add_grad(dy2d.T @ x2d)                      # (out, N) @ (N, in)
        return (dy2d @ self.weight.data).reshape(*dy.shape[:-1], self.in_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied"
