"""The transformer block, GPT-2's repeated unit (chapter 4, section 4.5).

Pre-LayerNorm: each of the two sub-layers reads a normalised copy of the residual stream x and
adds its result back onto x (a shortcut, or residual, connection, section 4.4):

    x = x + drop_shortcut(att(norm1(x)))          (B, T, C)  tokens exchange information
    x = x + drop_shortcut_ff(ff(norm2(x)))        (B, T, C)  each token is processed on its own
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from numpy_gpt.nn.attention import KVCache, MultiHeadAttention
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.feedforward import FeedForward
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.module import Module


class TransformerBlock(Module):
    """norm1 -> att -> dropout -> + shortcut, then norm2 -> ff -> dropout -> + shortcut.

    Children: att (MultiHeadAttention), ff (FeedForward), norm1, norm2 (LayerNorm) and the two
    shortcut dropouts. The book applies one ``drop_shortcut`` module twice; here a Dropout keeps its
    mask for backward, so the feed-forward branch has its own, ``drop_shortcut_ff`` (no parameters,
    same rate, same shared generator).

    Backward of a residual y = x + f(x): x reaches y along two paths, directly and through f, and
    the chain rule adds the two: dL/dx = dL/dy + f'(x)^T dL/dy. So each half of the block sends the
    incoming gradient down its branch (dropout, sub-layer, LayerNorm in reverse) and adds the
    result to the same gradient passed along the shortcut unchanged. The shortcut is why deep
    stacks train: the gradient always has a path that no layer can shrink.
    """

    def __init__(self, cfg: Mapping, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.att = MultiHeadAttention(d_in=cfg["emb_dim"], d_out=cfg["emb_dim"],
                                      context_length=cfg["context_length"], dropout=cfg["drop_rate"],
                                      num_heads=cfg["n_heads"], qkv_bias=cfg["qkv_bias"],
                                      rng=rng, dtype=dtype)
        self.ff = FeedForward(cfg, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(cfg["emb_dim"], dtype=dtype)
        self.norm2 = LayerNorm(cfg["emb_dim"], dtype=dtype)
        self.drop_shortcut = Dropout(cfg["drop_rate"])
        self.drop_shortcut_ff = Dropout(cfg["drop_rate"])

    def forward(self, x: np.ndarray, kv_cache: KVCache | None = None) -> np.ndarray:
        """x (B, T, C) -> (B, T, C). ``kv_cache``: this block's KVCache when generating."""
        x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache))         # (B, T, C)
        h = self.drop_shortcut_ff(self.ff(self.norm2(x)))                     # (B, T, C)
        h += x
        return h

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (B, T, C) -> dx (B, T, C): each branch's gradient plus the shortcut's (see above)."""
        # second half: out = x1 + drop(ff(norm2(x1)))  ->  dx1 = dout + branch gradient
        dx = self.norm2.backward(self.ff.backward(self.drop_shortcut_ff.backward(dout)))
        dx += dout
        # first half: x1 = x + drop(att(norm1(x)))  ->  dx = dx1 + branch gradient
        dbranch = self.norm1.backward(self.att.backward(self.drop_shortcut.backward(dx)))
        dbranch += dx
        return dbranch
