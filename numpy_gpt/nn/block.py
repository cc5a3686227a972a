"""The transformer block, GPT-2's repeated unit (chapter 4, section 4.5), and BERT's.

GPT-2's block is pre-LayerNorm: each of the two sub-layers reads a normalised copy of the residual
stream x and adds its result back onto x (a shortcut, or residual, connection, section 4.4):

    x = x + drop_shortcut(att(norm1(x)))          (B, T, C)  tokens exchange information
    x = x + drop_shortcut_ff(ff(norm2(x)))        (B, T, C)  each token is processed on its own

BERT's block (numpy_gpt/encoder.py) is the same layers with three lines switched, each a keyword
of ``TransformerBlock`` whose default is GPT-2's (docs/encoder.md maps each to its reason):

    causal=False     attention sees every token, left and right; a padding mask hides the pads
    pre_norm=False   post-LayerNorm: normalise each residual sum instead of each branch's input,
                         x = norm1(x + drop_shortcut(att(x)))
                         x = norm2(x + drop_shortcut_ff(ff(x)))
    gelu="erf"       the exact GELU, x * Phi(x), instead of the tanh approximation

plus two values: LayerNorm's ``eps`` (BERT 1e-12, GPT-2 1e-5) and the feed-forward width
``cfg["hidden_dim"]`` (default 4 * emb_dim).
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
    """norm1 -> att -> dropout -> + shortcut, then norm2 -> ff -> dropout -> + shortcut (GPT-2).

    ``TransformerBlock(cfg)`` is the book's block. The switches (see the module docstring):
    ``causal`` (True: GPT), ``pre_norm`` (True: GPT-2; False: BERT's post-LN), ``gelu`` ("tanh":
    GPT-2; "erf": BERT), ``eps`` (LayerNorm's). The attention weights' dropout rate is
    ``cfg["drop_rate_attn"]`` when the config has it (BERT's attention_probs_dropout_prob), else
    ``cfg["drop_rate"]`` as everywhere in GPT-2.

    Children: att (MultiHeadAttention), ff (FeedForward), norm1, norm2 (LayerNorm) and the two
    shortcut dropouts. The book applies one ``drop_shortcut`` module twice; here a Dropout keeps its
    mask for backward, so the feed-forward branch has its own, ``drop_shortcut_ff`` (no parameters,
    same rate, same shared generator).

    Backward of a residual y = x + f(x): x reaches y along two paths, directly and through f, and
    the chain rule adds the two: dL/dx = dL/dy + f'(x)^T dL/dy. So each half of the block sends the
    incoming gradient down its branch (dropout, sub-layer, LayerNorm in reverse) and adds the
    result to the same gradient passed along the shortcut unchanged. The shortcut is why deep
    stacks train: the gradient always has a path that no layer can shrink. Post-LN wraps the sum in
    a LayerNorm, y = norm(x + f(x)): first dz = norm's backward of dL/dy, then the same sum,
    dL/dx = dz + f'(x)^T dz (so there every path goes through a LayerNorm).
    """

    def __init__(self, cfg: Mapping, *, causal: bool = True, pre_norm: bool = True, gelu: str = "tanh",
                 eps: float = 1e-5, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.pre_norm = bool(pre_norm)
        self.att = MultiHeadAttention(d_in=cfg["emb_dim"], d_out=cfg["emb_dim"],
                                      context_length=cfg["context_length"],
                                      dropout=cfg.get("drop_rate_attn", cfg["drop_rate"]),
                                      num_heads=cfg["n_heads"], qkv_bias=cfg["qkv_bias"], causal=causal,
                                      rng=rng, dtype=dtype)
        self.ff = FeedForward(cfg, gelu=gelu, rng=rng, dtype=dtype)
        self.norm1 = LayerNorm(cfg["emb_dim"], eps=eps, dtype=dtype)
        self.norm2 = LayerNorm(cfg["emb_dim"], eps=eps, dtype=dtype)
        self.drop_shortcut = Dropout(cfg["drop_rate"])
        self.drop_shortcut_ff = Dropout(cfg["drop_rate"])

    def forward(self, x: np.ndarray, kv_cache: KVCache | None = None,
                attention_mask: np.ndarray | None = None) -> np.ndarray:
        """x (B, T, C) -> (B, T, C). ``kv_cache``: this block's KVCache when generating;
        ``attention_mask`` (B, T): 1 for a real token, 0 for padding (see MultiHeadAttention)."""
        if self.pre_norm:                       # GPT-2: normalise what each branch reads
            x = x + self.drop_shortcut(self.att(self.norm1(x), kv_cache, attention_mask))   # (B, T, C)
            h = self.drop_shortcut_ff(self.ff(self.norm2(x)))                               # (B, T, C)
            h += x
            return h
        # post-LN (BERT): normalise each residual sum
        x = self.norm1(x + self.drop_shortcut(self.att(x, kv_cache, attention_mask)))       # (B, T, C)
        return self.norm2(x + self.drop_shortcut_ff(self.ff(x)))                            # (B, T, C)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (B, T, C) -> dx (B, T, C): each branch's gradient plus the shortcut's (see above)."""
        if self.pre_norm:
            # second half: out = x1 + drop(ff(norm2(x1)))  ->  dx1 = dout + branch gradient
            dx = self.norm2.backward(self.ff.backward(self.drop_shortcut_ff.backward(dout)))
            dx += dout
            # first half: x1 = x + drop(att(norm1(x)))  ->  dx = dx1 + branch gradient
            dbranch = self.norm1.backward(self.att.backward(self.drop_shortcut.backward(dx)))
            dbranch += dx
            return dbranch
        # post-LN, second half: out = norm2(z), z = x1 + drop(ff(x1))  ->  dx1 = dz + branch gradient
        dz = self.norm2.backward(dout)
        dx1 = self.ff.backward(self.drop_shortcut_ff.backward(dz))
        dx1 += dz
        # first half: x1 = norm1(z), z = x + drop(att(x))  ->  dx = dz + branch gradient
        dz = self.norm1.backward(dx1)
        dx = self.att.backward(self.drop_shortcut.backward(dz))
        dx += dz
        return dx

    def extra_repr(self) -> str:
        return "" if self.pre_norm else "pre_norm=False"
