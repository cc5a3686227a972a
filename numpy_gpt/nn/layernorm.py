"""Layer normalization (the book's ``LayerNorm``, chapter 4.2).

Each token's vector of C features is shifted to mean 0 and scaled to variance 1, then given a
learned per-feature ``scale`` and ``shift``. GPT-2 puts one before attention and one before the
feed-forward block of every transformer block (pre-LN) and one after the last block.
"""

from __future__ import annotations

import numpy as np

from numpy_gpt.nn.module import Module, Parameter


class LayerNorm(Module):
    """y = scale * (x - mean) / sqrt(var + eps) + shift over the last axis, with the biased
    variance (divide by C, as ``unbiased=False`` in the book and PyTorch).

    Caches x_hat = (x - mean) * rstd (N, C) and rstd = 1/sqrt(var + eps) (N, 1), as llm.c does:
    backward needs nothing else.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-5, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.emb_dim = emb_dim
        self.eps = eps
        self.scale = Parameter(np.ones(emb_dim, dtype=dtype))
        self.shift = Parameter(np.zeros(emb_dim, dtype=dtype))
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.emb_dim:
            raise ValueError(f"LayerNorm expects input of shape (..., {self.emb_dim}), got {x.shape}")
        x2d = x.reshape(-1, self.emb_dim)                           # (N, C)
        x_hat = x2d - x2d.mean(axis=1, keepdims=True)               # (N, C) centred
        # biased variance (N, 1): mean of the squares, as einsum's row-wise dot product, which
        # forms no (N, C) array of squares
        var = np.einsum("nc,nc->n", x_hat, x_hat)[:, None] / x_hat.dtype.type(self.emb_dim)
        rstd = 1.0 / np.sqrt(var + x_hat.dtype.type(self.eps))      # (N, 1)
        x_hat *= rstd                                               # (N, C) normalized
        y = x_hat * self.scale.data
        y += self.shift.data
        if self._need_cache():
            self._cache = (x_hat, rstd)
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Per row (one token), with g = dL/dx_hat = dy * scale:

            dL/dscale = sum over rows of dy * x_hat,   dL/dshift = sum over rows of dy,
            dL/dx     = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),   means over the C features.

        Derivation: x_hat_i = (x_i - mu) * rstd with mu = mean(x), rstd = (var + eps)^(-1/2),
        var = mean((x - mu)^2). Since sum_i (x_i - mu) = 0, d var/dx_j = 2 (x_j - mu) / C, so
        d rstd/dx_j = -rstd^3 (x_j - mu) / C and

            d x_hat_i / d x_j = rstd * (delta_ij - 1/C - x_hat_i * x_hat_j / C).

        Summing g_i times this over i gives the formula for dL/dx_j above.
        """
        x_hat, rstd = self._pop_cache()
        dy2d = dy.reshape(x_hat.shape)                              # (N, C)
        if self.scale.trainable:
            self.scale.add_grad(np.einsum("nc,nc->c", dy2d, x_hat))
        if self.shift.trainable:
            self.shift.add_grad(dy2d.sum(axis=0))
        g = dy2d * self.scale.data                                  # (N, C) dL/dx_hat
        g_xhat_mean = np.einsum("nc,nc->n", g, x_hat)[:, None] / self.emb_dim   # (N, 1)
        dx = g
        dx -= g.mean(axis=1, keepdims=True)
        dx -= x_hat * g_xhat_mean
        dx *= rstd
        return dx.reshape(dy.shape)

    def extra_repr(self) -> str:
        return f"{self.emb_dim}, eps={self.eps}"
