"""The transformer's position-wise feed-forward network (chapter 4, section 4.3).

Each token's vector is processed on its own (no mixing between tokens, that is attention's job):
it is expanded to 4x the embedding size, passed through GELU, and projected back:

    FeedForward(x) = GELU(x W1 + b1) W2 + b2      (B, T, C) -> (B, T, 4C) -> (B, T, C)

The expansion gives the model a wider space in which to combine features; in GPT-2 about two thirds
of a block's parameters live here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from numpy_gpt.nn.gelu import GELU
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, Sequential


class FeedForward(Module):
    """Linear(C, 4C) -> GELU -> Linear(4C, C), with C = cfg["emb_dim"], as ``self.layers``.

    The Sequential runs the three layers forward and, in backward, in reverse, each layer turning
    the gradient of its output into the gradient of its input.
    """

    def __init__(self, cfg: Mapping, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        emb_dim = cfg["emb_dim"]
        self.layers = Sequential(
            Linear(emb_dim, 4 * emb_dim, rng=rng, dtype=dtype),    # (B, T, C) -> (B, T, 4C)
            GELU(),
            Linear(4 * emb_dim, emb_dim, rng=rng, dtype=dtype),    # (B, T, 4C) -> (B, T, C)
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.layers(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.layers.backward(dout)
