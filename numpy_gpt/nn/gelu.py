"""GELU, the smooth non-linearity between the two linear layers of GPT-2's feed-forward block
(the book's chapter 4.3).

GPT-2 and the book use the tanh approximation of x * Phi(x) (Phi the standard normal CDF):

    GELU(x) = 0.5 * x * (1 + tanh(u)),   u = sqrt(2/pi) * (x + 0.044715 * x^3)

Unlike ReLU it is smooth at 0 and lets a little gradient through for negative x.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_gpt.fast import map_chunks
from numpy_gpt.nn.module import Module

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)     # Python floats: they keep float32 arrays float32


def gelu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = GELU(x), and t = tanh(u), which the backward needs."""
    t = np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
    return 0.5 * x * (1.0 + t), t


def gelu_backward(x: np.ndarray, t: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dL/dx = dy * GELU'(x), with t = tanh(u) from forward (see GELU.backward)."""
    du_dx = SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


class GELU(Module):
    """y = 0.5 * x * (1 + tanh(u)), u = sqrt(2/pi) * (x + 0.044715 * x^3), elementwise on any shape.

    Caches x and t = tanh(u): with t known, the derivative needs no second tanh.

    The formula is the function ``gelu`` above. ``map_chunks(gelu, x)`` computes exactly
    ``gelu(x)``, in cache-sized chunks on every core (numpy_gpt/fast: NumPy's elementwise
    operations use one core, and a chain of eight passes over a 6 MB activation would stream it
    from memory eight times).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x2d = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)    # (N, C) rows for the chunks
        y, t = map_chunks(gelu, x2d)                                        # y, t = gelu(x2d)
        if self._need_cache():
            self._cache = (x2d, t)
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """By the product and chain rules, with t = tanh(u) and tanh' = 1 - tanh^2:

            dy/dx = 0.5 * (1 + t) + 0.5 * x * (1 - t^2) * du/dx,
            du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 * x^2).
        """
        x2d, t = self._pop_cache()
        dx = map_chunks(gelu_backward, x2d, t, dy.reshape(x2d.shape))     # gelu_backward(x, t, dy)
        return dx.reshape(dy.shape)
