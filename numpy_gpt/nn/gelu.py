"""GELU and Dropout (the book's chapters 4.3 and 3.5.2).

GELU is the smooth non-linearity between the two linear layers of GPT-2's feed-forward block.
Dropout randomly zeroes activations during training (after the embeddings, on the attention
weights, and on each residual branch); it does nothing at inference.
"""

from __future__ import annotations

import math

import numpy as np

from numpy_gpt.nn.module import Module
from numpy_gpt.runtime import BLOCK, parallel_for, slices

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_COEF = 0.044715


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
        parallel_for(slices(x.size, BLOCK), lambda s, worker: _gelu_forward(xf[s], yf[s], tf[s]), x.size)
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
        parallel_for(slices(x.size, BLOCK), lambda s, worker: _gelu_backward(xf[s], tf[s], dyf[s], dxf[s]),
                     x.size)
        return dx


def _dropout_threshold(p: float) -> np.uint32:
    """The uint32 t with P(u >= t) = 1 - p for uniform 32-bit u: t = p * 2^32, rounded (the kept
    fraction is then within 2^-33 of 1 - p, finer than a float32 uniform's 2^-24 steps)."""
    return np.uint32(min(round(p * 2.0 ** 32), 2 ** 32 - 1))


def _mask_and_scale(a: np.ndarray, keep: np.ndarray, scale: np.generic, out: np.ndarray) -> None:
    """out = a * keep * scale: dropout's forward (a = x) and, with the same mask, its backward
    (a = dL/dy)."""
    np.multiply(a, keep, out=out)
    out *= scale


# Bit generators whose advance(k) skips exactly k 64-bit words (Philox's counts blocks of four).
_SKIP_AHEAD = (np.random.PCG64, np.random.PCG64DXSM)


class Dropout(Module):
    """Inverted dropout: in training each element is kept with probability 1 - p and divided by
    1 - p, so the expected output equals the input and inference needs no rescaling. Identity in
    eval mode or when p == 0.

    Masks are drawn from ``self.rng``, an ``np.random.Generator`` that a model shares between all
    its Dropouts (one seed reproduces a whole run); a fresh ``default_rng()`` when none is given.

    How the mask is drawn: element i is kept when the i-th 32-bit number of ``self.rng``'s bit
    generator stream (its ``random_raw`` 64-bit words viewed as pairs of 32-bit numbers) is
    >= p * 2^32. Integers are compared directly, with no float conversion: about 1.4x faster than
    ``rng.random`` on one thread, and no float64 anywhere. Generators that can skip ahead one word
    at a time (``advance``: NumPy's default PCG64, and PCG64DXSM) also let the draw run on several
    threads: each ``BLOCK``-sized slice of the mask gets its own copy of the generator moved ahead
    to that slice's place in the stream. The mask is therefore the same, bit for bit, for any number of
    threads, and afterwards ``self.rng`` stands exactly where one long draw would have left it.
    """

    def __init__(self, p: float, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng() if rng is None else rng
        self._cache = None
        # per (worker, generator type): the copy of self.rng a parallel_for worker draws its slices from
        self._worker_bitgens: dict[tuple[int, type], np.random.BitGenerator] = {}

    def _draw_and_apply(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.generic]:
        """keep (bool, x's shape), y = x * keep / (1 - p) and the scale 1 / (1 - p)."""
        x = np.asarray(x, order="C")
        threshold = _dropout_threshold(self.p)
        scale = x.dtype.type(1.0 / (1.0 - self.p))                   # x's dtype: no float64 leak
        keep, y = np.empty(x.shape, dtype=bool), np.empty_like(x)
        xf, keepf, yf = x.reshape(-1), keep.reshape(-1), y.reshape(-1)
        n_words = (x.size + 1) // 2                                  # two 32-bit numbers per word
        bitgen = self.rng.bit_generator

        def apply(s: slice, u: np.ndarray) -> None:                  # u: the slice's 32-bit numbers
            np.greater_equal(u, threshold, out=keepf[s])             # P(keep) = 1 - p
            _mask_and_scale(xf[s], keepf[s], scale, yf[s])

        if not isinstance(bitgen, _SKIP_AHEAD):                      # e.g. MT19937: one draw, one thread
            u = bitgen.random_raw(n_words).view(np.uint32)
            apply(slice(0, x.size), u[:x.size])
            return keep, y, scale
        start = bitgen.state

        def block(s: slice, worker: int) -> None:
            key = (worker, type(bitgen))                             # self.rng may be replaced
            if key not in self._worker_bitgens:
                self._worker_bitgens[key] = type(bitgen)()
            gen = self._worker_bitgens[key]
            gen.state = start
            gen.advance(s.start // 2)                                # BLOCK is even: s.start // 2 words in
            u = gen.random_raw((s.stop - s.start + 1) // 2).view(np.uint32)
            apply(s, u[:s.stop - s.start])

        parallel_for(slices(x.size, BLOCK), block, x.size)
        bitgen.advance(n_words)                                      # as if it had drawn them all
        return keep, y, scale

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            if self._need_cache():
                self._cache = (None, None)                           # no mask: backward passes dy on
            return x
        keep, y, scale = self._draw_and_apply(x)
        # y = x * keep * scale. Caching the bool mask and the scalar instead of a float mask
        # keep / (1 - p) gives the same y and dL/dx with a quarter of the memory per element.
        if self._need_cache():
            self._cache = (keep, scale)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """y = x * keep / (1 - p), so dL/dx = dL/dy * keep / (1 - p) (the same mask as forward)."""
        keep, scale = self._pop_cache()
        if keep is None:
            return dy
        dy = np.asarray(dy, order="C")
        dx = np.empty_like(dy)
        dyf, keepf, dxf = dy.reshape(-1), keep.reshape(-1), dx.reshape(-1)

        parallel_for(slices(dy.size, BLOCK),
                     lambda s, worker: _mask_and_scale(dyf[s], keepf[s], scale, dxf[s]), dy.size)
        return dx

    def extra_repr(self) -> str:
        return f"p={self.p}"
