"""The chapter-3 road to multi-head attention, one small Module per step, each with its backward.

The book builds attention in stages, and so does this file; read it top to bottom next to chapter 3:

1. ``SelfAttention_v0`` (section 3.3): no trainable weights. Every token scores every token by a dot
   product, the scores become weights by a softmax, and each output is a weighted sum of the inputs.
2. ``SelfAttention_v1`` (3.4.2): trainable matrices W_query, W_key, W_value project the inputs to
   queries, keys and values; the scores are scaled by 1/sqrt(d_k) ("scaled dot-product attention").
3. ``SelfAttention_v2`` (3.4.2): the same with ``Linear`` layers (optionally with bias) in place of
   the raw matrices, which is how the book continues.
4. ``CausalAttention`` (3.5): batched input, a causal mask so a token cannot look at later tokens,
   and dropout on the attention weights.
5. ``MultiHeadAttentionWrapper`` (3.6.1): several CausalAttention heads side by side, their outputs
   concatenated.

The efficient version GPT-2 actually uses, with all heads in one set of matrices, is
``numpy_gpt.nn.attention.MultiHeadAttention`` (3.6.2). These classes are for learning: they favour
plain lines over speed, and the tests prove they compute the same thing.

Every backward below uses the same two facts:

* For a matrix product C = A B, given dC = dL/dC:  dA = dC B^T  and  dB = A^T dC.
* For a row-wise softmax P = softmax(S), the Jacobian of one row is dP_i/dS_j = P_i (delta_ij - P_j),
  so dS_j = sum_i dP_i P_i (delta_ij - P_j) = P_j (dP_j - sum_i dP_i P_i), which is
  ``softmax_backward`` (numpy_gpt/nn/softmax.py): dS = P * (dP - sum(dP * P, -1)).
"""

from __future__ import annotations

import math

import numpy as np

from numpy_gpt.nn.attention import causal_mask
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, Parameter, Sequential
from numpy_gpt.nn.softmax import softmax, softmax_backward


def _transpose(a: np.ndarray) -> np.ndarray:
    """Swap the last two axes: the matrix transpose, batched over any leading axes."""
    return a.swapaxes(-1, -2)


class SelfAttention_v0(Module):
    """Simplified self-attention without trainable weights (section 3.3), x (..., T, d) -> (..., T, d).

        scores  = x x^T                 (T, T): token i's query is x_i, token j's key is x_j
        weights = softmax(scores)       each row sums to 1
        context = weights x             (T, d): token i's output mixes all inputs by its weights

    x plays all three roles at once (query, key and value), so in backward its gradient collects
    three contributions.
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        attn_scores = x @ _transpose(x)                   # (..., T, T)
        attn_weights = softmax(attn_scores)               # (..., T, T)
        context = attn_weights @ x                        # (..., T, d)
        self._cache = (x, attn_weights) if self._need_cache() else None
        return context

    def backward(self, dcontext: np.ndarray) -> np.ndarray:
        """context = P x gives dP = dcontext x^T and, for x as the values, dx = P^T dcontext.
        scores = x x^T gives, with dS = softmax_backward(P, dP), dx += dS x (x as the queries)
        and dx += dS^T x (x as the keys)."""
        x, P = self._pop_cache()
        dP = dcontext @ _transpose(x)                     # (..., T, T)
        dS = softmax_backward(P, dP)                      # (..., T, T)
        return _transpose(P) @ dcontext + dS @ x + _transpose(dS) @ x


class SelfAttention_v1(Module):
    """Scaled dot-product self-attention with trainable matrices (section 3.4.2).

        queries = x W_query,  keys = x W_key,  values = x W_value        (..., T, d_out)
        weights = softmax(queries keys^T / sqrt(d_k))                    (..., T, T), d_k = d_out
        context = weights values                                         (..., T, d_out)

    Dividing by sqrt(d_k) keeps the scores' spread independent of the head size: a dot product of
    d_k unit-variance terms has variance d_k, and a softmax of large scores is nearly one-hot, with
    vanishing gradients. As in the book, the matrices start uniform in [0, 1) (``torch.rand``).
    """

    def __init__(self, d_in: int, d_out: int, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self.d_out = d_out
        self.W_query = Parameter(rng.random((d_in, d_out), dtype=dtype))
        self.W_key = Parameter(rng.random((d_in, d_out), dtype=dtype))
        self.W_value = Parameter(rng.random((d_in, d_out), dtype=dtype))
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        queries = x @ self.W_query.data                   # (..., T, d_out)
        keys = x @ self.W_key.data
        values = x @ self.W_value.data
        attn_scores = queries @ _transpose(keys)          # (..., T, T)
        attn_weights = softmax(attn_scores / math.sqrt(self.d_out))
        context = attn_weights @ values                   # (..., T, d_out)
        self._cache = (x, queries, keys, values, attn_weights) if self._need_cache() else None
        return context

    def backward(self, dcontext: np.ndarray) -> np.ndarray:
        """Back through context = P V, the softmax, the scaling and scores = Q K^T:
        dV = P^T dcontext, dP = dcontext V^T, dS = softmax_backward(P, dP) / sqrt(d_k),
        dQ = dS K, dK = dS^T Q. Then each projection, e.g. Q = x W_query:
        dW_query = x^T dQ (summed over the batch), and dx = dQ W_query^T + dK W_key^T + dV W_value^T.
        """
        x, Q, K, V, P = self._pop_cache()
        dV = _transpose(P) @ dcontext                     # (..., T, d_out)
        dS = softmax_backward(P, dcontext @ _transpose(V)) / math.sqrt(self.d_out)
        dQ = dS @ K
        dK = _transpose(dS) @ Q
        x2d = x.reshape(-1, x.shape[-1])                  # (N, d_in), N = all tokens of the batch
        dx = np.zeros_like(x)
        for W, dproj in ((self.W_query, dQ), (self.W_key, dK), (self.W_value, dV)):
            if W.trainable:
                W.add_grad(x2d.T @ dproj.reshape(-1, self.d_out))   # W.grad += x^T dproj
            dx += dproj @ W.data.T
        return dx


class SelfAttention_v2(Module):
    """SelfAttention_v1 with ``Linear`` projections (section 3.4.2): the same math, but W_query,
    W_key and W_value are Linear layers, which bring an optional bias (``qkv_bias``) and the
    N(0, 0.02) initialisation, and which do their own backward."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False, *,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.d_out = d_out
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        queries = self.W_query(x)                         # (..., T, d_out)
        keys = self.W_key(x)
        values = self.W_value(x)
        attn_weights = softmax(queries @ _transpose(keys) / math.sqrt(self.d_out))   # (..., T, T)
        context = attn_weights @ values                   # (..., T, d_out)
        self._cache = (queries, keys, values, attn_weights) if self._need_cache() else None
        return context

    def backward(self, dcontext: np.ndarray) -> np.ndarray:
        """As SelfAttention_v1.backward; each Linear turns dQ, dK, dV into its weight gradients
        and its share of dx, and x received all three shares."""
        Q, K, V, P = self._pop_cache()
        dV = _transpose(P) @ dcontext
        dS = softmax_backward(P, dcontext @ _transpose(V)) / math.sqrt(self.d_out)
        dQ = dS @ K
        dK = _transpose(dS) @ Q
        return self.W_query.backward(dQ) + self.W_key.backward(dK) + self.W_value.backward(dV)


class CausalAttention(Module):
    """Single-head causal self-attention on a batch (section 3.5), x (B, T, d_in) -> (B, T, d_out).

    A language model predicts the next token, so token i may only look at tokens 0..i. Before the
    softmax, every score above the diagonal is set to -inf; exp(-inf) = 0, so those weights are 0
    and each row still sums to 1 over the visible tokens. (Masking after the softmax and
    renormalising gives the same weights; masking before is one step.) Dropout then zeroes random
    attention weights in training and scales the rest by 1/(1-p).

        S = Q K^T / sqrt(d_k);  S[i, j] = -inf for j > i;  P = softmax(S);  context = dropout(P) V
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float,
                 qkv_bias: bool = False, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.d_out = d_out
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout)
        # True above the diagonal = "this key is in the future". The book registers it as a buffer.
        self.mask = causal_mask(context_length)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3:
            raise ValueError(f"CausalAttention expects a batch (batch, tokens, d_in), got shape {x.shape}; "
                             f"add a batch axis with x[None]")
        num_tokens = x.shape[1]
        if num_tokens > self.mask.shape[0]:
            raise ValueError(f"{num_tokens} tokens exceed context_length={self.mask.shape[0]}")
        queries = self.W_query(x)                                  # (B, T, d_out)
        keys = self.W_key(x)
        values = self.W_value(x)
        attn_scores = queries @ _transpose(keys) / math.sqrt(self.d_out)               # (B, T, T)
        attn_scores[:, self.mask[:num_tokens, :num_tokens]] = -np.inf
        attn_weights = softmax(attn_scores)                        # (B, T, T)
        dropped = self.dropout(attn_weights)                       # (B, T, T)
        context = dropped @ values                                 # (B, T, d_out)
        self._cache = (queries, keys, values, attn_weights, dropped) if self._need_cache() else None
        return context

    def backward(self, dcontext: np.ndarray) -> np.ndarray:
        """As SelfAttention_v2.backward with two more steps: dropout's backward multiplies the
        gradient by the same mask (and 1/(1-p)); the masked scores need nothing, because their
        weight P is 0 and softmax_backward multiplies by P."""
        Q, K, V, P, dropped = self._pop_cache()
        dV = _transpose(dropped) @ dcontext
        dP = self.dropout.backward(dcontext @ _transpose(V))
        dS = softmax_backward(P, dP) / math.sqrt(self.d_out)
        dQ = dS @ K
        dK = _transpose(dS) @ Q
        return self.W_query.backward(dQ) + self.W_key.backward(dK) + self.W_value.backward(dV)


class MultiHeadAttentionWrapper(Module):
    """``num_heads`` independent CausalAttention heads, outputs concatenated (section 3.6.1).

    x (B, T, d_in) -> (B, T, num_heads * d_out). Each head has its own W_query/W_key/W_value and can
    learn to attend to different things. Backward splits the output gradient back into the heads'
    slices; every head read the same x, so their input gradients add up.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.d_out = d_out
        # Sequential serves only as a named container here (heads.0, heads.1, ...), like the book's
        # nn.ModuleList: the heads run side by side on the same x, not one after another.
        self.heads = Sequential(*[CausalAttention(d_in, d_out, context_length, dropout, qkv_bias,
                                                  rng=rng, dtype=dtype) for _ in range(num_heads)])

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([head(x) for head in self.heads], axis=-1)   # (B, T, num_heads * d_out)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        douts = np.split(dout, len(self.heads), axis=-1)                     # num_heads x (B, T, d_out)
        return sum(head.backward(dhead) for head, dhead in zip(self.heads, douts, strict=True))
