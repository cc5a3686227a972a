"""GELU and Dropout (the book's chapters 4.3 and 3.5.2).

GELU is the smooth non-linearity between the two linear layers of GPT-2's feed-forward block.
Dropout randomly zeroes activations during training (after the embeddings, on the attention
weights, and on each residual branch); it does nothing at inference.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_gpt.nn.module import Module
from numpy_gpt.runtime import parallel_for, slices

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_COEF = 0.044715


BLOCK = 65536      # elements per slice of GELU's passes: its few arrays (256 KB each) stay in cache


def _gelu_forward(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> None:
    """y = GELU(x) and t = tanh(u), written into y and t (all three the same shape)."""
    np.multiply(x, x, out=t)                                         # building u in place:
    t *= _GELU_COEF
    t += 1.0
    t *= x
    t *= _SQRT_2_OVER_PI                                             # u = sqrt(2/pi) (x + 0.044715 x^3)
    np.tanh(t, out=t)                                                # t = tanh(u)
    np.add(t, 1.0, out=y)
    y *= x
    y *= 0.5                                                         # y = 0.5 x (1 + t)


def _gelu_backward(x: np.ndarray, t: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
    """dx = dy * GELU'(x), written into dx; t = tanh(u) from forward."""
    du_dx = x * x
    du_dx *= 3.0 * _GELU_COEF
    du_dx += 1.0
    du_dx *= _SQRT_2_OVER_PI                              # du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
    np.multiply(t, t, out=dx)
    np.subtract(1.0, dx, out=dx)                                     # 1 - t^2 = tanh'(u)
    dx *= du_dx
    dx *= x
    dx += 1.0 + t                                                    # 0.5 factor applied to both terms
    dx *= 0.5
    dx *= dy


class GELU(Module):
    """GELU, tanh approximation as in GPT-2 and the book:

        y = 0.5 * x * (1 + tanh(u)),   u = sqrt(2/pi) * (x + 0.044715 * x^3).

    Caches x and t = tanh(u) for backward.

    Speed: the formula is a chain of ten elementwise NumPy passes. Run over a whole (B*T, 4C)
    activation (6 MB at GPT-2 size) each pass would stream it from memory again; run over slices
    of ``BLOCK`` elements the chain stays in the CPU cache, and the slices, being independent, are
    shared out to ``numpy_gpt.runtime.num_threads()`` threads. The maths is in ``_gelu_forward``
    and ``_gelu_backward``; forward and backward only cut the arrays into slices.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, order="C")
        y, t = np.empty_like(x), np.empty_like(x)
        xf, yf, tf = x.reshape(-1), y.reshape(-1), t.reshape(-1)     # flat views, same memory
        parallel_for(slices(x.size, BLOCK), lambda s, worker: _gelu_forward(xf[s], yf[s], tf[s]))
        if self._need_cache():
            self._cache = (x, t)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """dy/dx = 0.5 * (1 + t) + 0.5 * x * (1 - t^2) * du/dx,
        with t = tanh(u) (tanh' = 1 - tanh^2) and du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 * x^2)."""
        x, t = self._pop_cache()
        dy = np.asarray(dy, dtype=x.dtype, order="C")
        dx = np.empty_like(x)
        xf, tf, dyf, dxf = x.reshape(-1), t.reshape(-1), dy.reshape(-1), dx.reshape(-1)
        parallel_for(slices(x.size, BLOCK), lambda s, worker: _gelu_backward(xf[s], tf[s], dyf[s], dxf[s]))
        return dx


class Dropout(Module):
    """Inverted dropout: in training each element is kept with probability 1 - p and divided by
    1 - p, so the expected output equals the input and inference needs no rescaling. Identity in
    eval mode or when p == 0.

    Masks are drawn from ``self.rng``, an ``np.random.Generator`` that a model shares between all
    its Dropouts (one seed reproduces a whole run); a fresh ``default_rng()`` when none is given.
    The uniform numbers are drawn in the input's dtype, so a float32 path never touches float64.
    """

    def __init__(self, p: float, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            if self._need_cache():
                self._cache = (None, None)                           # no mask: backward passes dy on
            return x
        draw_dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
        keep = self.rng.random(x.shape, dtype=draw_dtype) >= self.p  # bool, P(keep) = 1 - p
        scale = x.dtype.type(1.0 / (1.0 - self.p))                   # x's dtype: no float64 leak
        # y = x * keep * scale. Caching the bool mask and the scalar instead of a float mask
        # keep / (1 - p) gives the same y and dL/dx with a quarter of the memory per element.
        if self._need_cache():
            self._cache = (keep, scale)
        y = np.multiply(x, keep)
        y *= scale
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """y = x * keep / (1 - p), so dL/dx = dL/dy * keep / (1 - p) (the same mask as forward)."""
        keep, scale = self._pop_cache()
        if keep is None:
            return dy
        dx = np.multiply(dy, keep)
        dx *= scale
        return dx

    def extra_repr(self) -> str:
        return f"p={self.p}"
