"""RMSNorm, the normalisation of Llama, SmolLM2 and Qwen3 (the book's bonus chapters "GPT to Llama").

LayerNorm (layernorm.py) does two things to each token's vector: it centres it (subtracts the
mean) and rescales it (divides by the standard deviation), then applies a learned scale and shift.
RMSNorm (Zhang & Sennrich, 2019) keeps only the rescaling: it divides by the root mean square of
the features, with no centring and no shift,

    y = scale * x / sqrt(mean(x^2) + eps)

which is cheaper (one reduction per row instead of two) and, in practice, trains as well. Llama
puts one before attention and one before the feed-forward block of every block and one after the
last block, exactly where GPT-2 has its LayerNorms; Qwen3 also puts one on every query and key head
(MultiHeadAttention's ``qk_norm``).
"""

from __future__ import annotations

import numpy as np

from numpy_gpt.nn.module import Module, Parameter


class RMSNorm(Module):
    """y = scale * x * rstd over the last axis, rstd = 1 / sqrt(mean(x^2) + eps).

    ``eps`` is 1e-6 for Qwen3 and 1e-5 for Llama 3 (config.json's ``rms_norm_eps``). Caches
    x_hat = x * rstd (N, C) and rstd (N, 1), as LayerNorm does: backward needs nothing else.
    """

    def __init__(self, emb_dim: int, eps: float = 1e-6, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.emb_dim = emb_dim
        self.eps = eps
        self.scale = Parameter(np.ones(emb_dim, dtype=dtype))
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.emb_dim:
            raise ValueError(f"RMSNorm expects input of shape (..., {self.emb_dim}), got {x.shape}")
        x2d = x.reshape(-1, self.emb_dim)                           # (N, C)
        # mean of the squares (N, 1), as einsum's row-wise dot product (no (N, C) array of squares)
        ms = np.einsum("nc,nc->n", x2d, x2d)[:, None] / x2d.dtype.type(self.emb_dim)
        rstd = 1.0 / np.sqrt(ms + x2d.dtype.type(self.eps))          # (N, 1)
        x_hat = x2d * rstd                                          # (N, C) unit root mean square
        y = x_hat * self.scale.data
        if self._need_cache():
            self._cache = (x_hat, rstd)
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Per row (one token), with g = dL/dx_hat = dy * scale:

            dL/dscale = sum over rows of dy * x_hat,
            dL/dx     = rstd * (g - x_hat * mean(g * x_hat)),   the mean over the C features.

        Derivation: x_hat_i = x_i * rstd with rstd = (ms + eps)^(-1/2), ms = mean(x^2). Then
        d ms/dx_j = 2 x_j / C, so d rstd/dx_j = -rstd^3 x_j / C = -rstd * x_hat_j * rstd / C and

            d x_hat_i / d x_j = rstd * (delta_ij - x_hat_i * x_hat_j / C).

        Summing g_i times this over i gives the formula for dL/dx_j above. It is LayerNorm's
        backward without the ``- mean(g)`` term, the one the centring put there.
        """
        x_hat, rstd = self._pop_cache()
        dy2d = dy.reshape(x_hat.shape)                              # (N, C)
        if self.scale.trainable:
            self.scale.add_grad(np.einsum("nc,nc->c", dy2d, x_hat))
        g = dy2d * self.scale.data                                  # (N, C) dL/dx_hat
        g_xhat_mean = np.einsum("nc,nc->n", g, x_hat)[:, None] / g.dtype.type(self.emb_dim)   # (N, 1)
        dx = g
        dx -= x_hat * g_xhat_mean
        dx *= rstd
        return dx.reshape(dy.shape)

    def extra_repr(self) -> str:
        return f"{self.emb_dim}, eps={self.eps}"
