"""Dropout (the book's chapters 3.5.2 and 4): randomly zero activations during training.

GPT-2 drops after the embeddings, on the attention weights and on each residual branch, so that no
unit can rely on any single other one. At inference dropout does nothing.
"""

from __future__ import annotations

import numpy as np

from numpy_gpt.nn.module import Module


class Dropout(Module):
    """Inverted dropout: in training each element is kept with probability 1 - p and divided by
    1 - p, so the expected output equals the input and inference needs no rescaling. Identity in
    eval mode or when p == 0.

        keep ~ Bernoulli(1 - p) per element,   y = x * keep / (1 - p)

    Masks are drawn from ``self.rng``, an ``np.random.Generator`` that a model shares between all
    its Dropouts (one seed reproduces a whole run); a fresh ``default_rng()`` when none is given.
    The uniforms are float32 whatever x's dtype (no float64 array at float32 sizes).

    Caches the boolean mask ``keep`` (a quarter of the memory of a float mask) and the scale.
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
                self._cache = (None, None)                   # nothing dropped: backward passes dy on
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p     # True with probability 1 - p
        scale = x.dtype.type(1.0 / (1.0 - self.p))                      # x's dtype: no float64 leak
        if self._need_cache():
            self._cache = (keep, scale)
        return x * keep * scale

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """y = x * keep / (1 - p) is linear in x, so dL/dx = dL/dy * keep / (1 - p): the same mask."""
        keep, scale = self._pop_cache()
        if keep is None:
            return dy
        return dy * keep * scale

    def extra_repr(self) -> str:
        return f"p={self.p}"
