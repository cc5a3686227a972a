"""GELU, the smooth non-linearity between the two linear layers of GPT-2's feed-forward block
(the book's chapter 4.3), in its two forms.

GELU(x) = x * Phi(x), Phi the standard normal CDF. GPT-2 and the book use the tanh approximation:

    GELU(x) = 0.5 * x * (1 + tanh(u)),   u = sqrt(2/pi) * (x + 0.044715 * x^3)       ``GELU``

BERT uses the exact form, with the error function (``ErfGELU``, torch's ``approximate="none"``):

    GELU(x) = x * Phi(x),   Phi(x) = (1 + erf(x / sqrt 2)) / 2                      ``ErfGELU``

The two differ by less than 1e-3. Unlike ReLU, GELU is smooth at 0 and lets a little gradient
through for negative x.
"""

from __future__ import annotations

import math

import numpy as np

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

    The formula is the function ``gelu`` above, called as written (an in-place kernel of it saved
    less than 3 % of a training step: docs/performance.md).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, t = gelu(x)                                                      # x's shape, each
        if self._need_cache():
            self._cache = (x, t)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """By the product and chain rules, with t = tanh(u) and tanh' = 1 - tanh^2:

            dy/dx = 0.5 * (1 + t) + 0.5 * x * (1 - t^2) * du/dx,
            du/dx = sqrt(2/pi) * (1 + 3 * 0.044715 * x^2).
        """
        x, t = self._pop_cache()
        return gelu_backward(x, t, dy)


# -- the exact GELU, with erf (BERT) ---------------------------------------------------------------
# Abramowitz & Stegun, Handbook of Mathematical Functions, formula 7.1.26: for x >= 0,
#   erf(x) = 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-x^2) + e(x),  t = 1 / (1 + p x),
# with |e(x)| <= 1.5e-7 (measured here: 1.4e-7 in float64, 5.3e-7 when evaluated in float32).
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_exact_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in x's dtype.

    float32 (training): Abramowitz-Stegun 7.1.26 above, a dozen vectorised passes, within 5.3e-7
    of the true erf (a few float32 roundings of a value near 1), which is float32's own resolution.
    float64 (the gradchecks): ``math.erf`` per element, exact to the last bit but a Python call per
    element; the float64 check then proves the derivative below, not the approximation's wiggles
    (whose slope errors, ~1e-6, would exceed the checker's 1e-6 tolerance).
    """
    if x.dtype == np.float64:
        return _exact_erf(x).astype(np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    a1, a2, a3, a4, a5 = _AS_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))        # Horner's rule
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


def gelu_erf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 the standard normal CDF; also Phi."""
    cdf = 0.5 * (1.0 + erf(x * SQRT_HALF))
    return x * cdf, cdf


def gelu_erf_backward(x: np.ndarray, cdf: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dL/dx = dy * (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    return dy * (cdf + x * INV_SQRT_2PI * np.exp(-0.5 * x * x))


class ErfGELU(Module):
    """The exact GELU of the GELU paper and of BERT: y = x * Phi(x), elementwise on any shape.

    Derivative by the product rule, with Phi' = phi the normal density:
        dy/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
    GPT-2's ``GELU`` replaces Phi(x) by (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2. Caches x and
    Phi(x).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, cdf = gelu_erf(x)                                                # x's shape, each
        if self._need_cache():
            self._cache = (x, cdf)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, cdf = self._pop_cache()
        return gelu_erf_backward(x, cdf, dy)
