"""Multi-head self-attention with a hand-written backward, causal (GPT) or bidirectional (BERT),
and its KV cache (chapter 3).

This is the book's final ``MultiHeadAttention`` (section 3.6.2), the one GPT-2 uses: one query, key
and value projection for all heads at once, the heads split out of the projected features, scaled
dot-product attention under a causal mask, dropout on the attention weights, the heads merged back
and an output projection. The step-by-step teaching versions (SelfAttention_v0 ... the
MultiHeadAttentionWrapper) live in ``numpy_gpt/attention_steps.py``.

Notation (shapes): B batch, T tokens, C = d_out, H heads, hd = C / H head size.

    Q, K, V = x Wq, x Wk, x Wv                      (B, T, C) -> split heads -> (B, H, T, hd)
    S = (Q / sqrt(hd)) K^T                          (B, H, T, T)  scores
    S[i, j] = -inf for j > i                        causal: token i sees only tokens 0..i
    P = softmax(S) over the last axis               (B, H, T, T)  attention weights
    Pd = dropout(P)                                 (B, H, T, T)
    ctx = Pd V                                      (B, H, T, hd) -> merge heads -> (B, T, C)
    out = ctx Wo + bo                               (B, T, C)

GPT or BERT: the one switch. ``causal=True`` (GPT, the default) applies the causal mask above: a
decoder predicts the next token, so token i must not see the tokens it is trained to predict.
``causal=False`` (BERT's encoder) drops that line: every token sees every token, left and right,
which is what filling in a blank needs ("The cat [MASK] on the mat" uses "on the mat"). Either way
an optional padding mask ``attention_mask`` (B, T), 1 for a real token and 0 for padding, hides the
padded keys from every query, so a padded batch gives each real token the output it would have
alone:

    S[b, :, i, j] = min_float   where attention_mask[b, j] == 0     padded key j gets no weight

Inference with a KV cache (the book's bonus material): when text is generated token by token, the
keys and values of the earlier tokens never change (a token only attends backwards), so each layer
keeps them in a ``KVCache`` and a forward pass only computes the new tokens' projections, then lets
the new queries attend to every cached position plus the new ones.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, no_grad
from numpy_gpt.nn.softmax import softmax, softmax_backward


@functools.lru_cache(maxsize=8)
def causal_mask(context_length: int) -> np.ndarray:
    """Boolean (context_length, context_length) array, True above the diagonal (the future).

    Row i, column j is True when j > i: token i must not see token j. Boolean, not a float 0/-inf
    matrix: a float64 mask added to float32 scores would silently turn everything into float64.
    Shared read-only by every attention layer of the same context length (the book's buffer).
    """
    mask = np.triu(np.ones((context_length, context_length), dtype=bool), k=1)
    mask.flags.writeable = False
    return mask


class KVCache:
    """Keys and values of ONE attention layer, kept across forward passes while generating.

    ``keys`` and ``values`` are preallocated arrays (B, H, max_len, hd); the first ``length``
    positions along axis 2 are filled. ``append`` writes the next chunk of keys/values after them
    and returns views of everything filled so far. A GPTModel's cache is a list with one KVCache
    per TransformerBlock (``GPTModel.new_kv_cache``); all of them advance together, one chunk per
    forward pass, and the model reads the position of the next token from ``length``.
    """

    def __init__(self, batch_size: int, num_heads: int, max_len: int, head_dim: int,
                 dtype: np.dtype | type = np.float32):
        for name, value in (("batch_size", batch_size), ("num_heads", num_heads),
                            ("max_len", max_len), ("head_dim", head_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"KVCache {name} must be a positive integer, got {value!r}")
        shape = (batch_size, num_heads, max_len, head_dim)
        self.keys = np.zeros(shape, dtype=dtype)        # (B, H, max_len, hd)
        self.values = np.zeros(shape, dtype=dtype)      # (B, H, max_len, hd)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store new keys/values k, v (B, H, T_new, hd) at positions length .. length+T_new-1.

        Returns views (B, H, length+T_new, hd) of all keys and values so far. Checks shapes and
        room first, so a failed call leaves the cache untouched.
        """
        b, h, max_len, hd = self.keys.shape
        if k.shape != v.shape or k.ndim != 4 or (k.shape[0], k.shape[1], k.shape[3]) != (b, h, hd):
            raise ValueError(f"KVCache holds (batch={b}, heads={h}, *, head_dim={hd}) entries; got keys "
                             f"{k.shape} and values {v.shape}")
        start, stop = self.length, self.length + k.shape[2]
        if stop > max_len:
            raise ValueError(f"KVCache is full: it holds {start} of {max_len} positions and cannot take "
                             f"{k.shape[2]} more; start a new cache (GPTModel.new_kv_cache) with a "
                             f"larger max_len or a shorter sequence")
        self.keys[:, :, start:stop] = k
        self.values[:, :, start:stop] = v
        self.length = stop
        return self.keys[:, :, :stop], self.values[:, :, :stop]

    def __repr__(self) -> str:
        b, h, max_len, hd = self.keys.shape
        return (f"KVCache(batch_size={b}, num_heads={h}, head_dim={hd}, length={self.length}, "
                f"max_len={max_len}, dtype={self.keys.dtype})")


class MultiHeadAttention(Module):
    """Multi-head self-attention (B, T, d_in) -> (B, T, d_out), as in the book's chapter 3.

    Parameters: W_query, W_key, W_value (Linear d_in -> d_out, bias iff ``qkv_bias``) and out_proj
    (Linear d_out -> d_out, with bias). ``dropout`` drops attention weights in training.
    ``causal=True`` (GPT) masks the future; ``causal=False`` (BERT) lets every token see every
    token. ``forward(x, attention_mask=...)`` also hides padded keys (see the module docstring).

    What forward caches for backward (only when gradients are wanted):
      q (scaled by 1/sqrt(hd)), k, v   (B, H, T, hd) each
      P  = softmax(S)                  (B, H, T, T)   the softmax backward needs the weights
      Pd = dropout(P)                  (B, H, T, T)   dV = Pd^T dctx; the same array as P when
                                                      dropout is inactive
      padded                           (B, 1, 1, T)   bool, True at padded keys (None: no mask)
    plus whatever the four Linear layers and the Dropout keep (their inputs, the dropout mask).
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, *, causal: bool = True, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        if num_heads < 1 or d_out % num_heads != 0:
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads}): each head "
                             f"gets d_out // num_heads features")
        if context_length < 1:
            raise ValueError(f"context_length must be positive, got {context_length}")
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.causal = bool(causal)
        self.dtype = np.dtype(dtype)
        self.W_query = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias, rng=rng, dtype=dtype)
        self.out_proj = Linear(d_out, d_out, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout)
        # 1/sqrt(hd) as a scalar of the layer's dtype (an np.float64 scalar would upcast float32 arrays)
        self.scale = self.dtype.type(1.0 / math.sqrt(self.head_dim))
        self._cache = None

    # -- helpers -----------------------------------------------------------------------------
    def _split_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, T, C) -> (B, H, T, hd), C-contiguous so the batched matmuls run at full BLAS speed."""
        b, t, _ = x.shape
        return np.ascontiguousarray(x.reshape(b, t, self.num_heads, self.head_dim).transpose(0, 2, 1, 3))

    def _merge_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, H, T, hd) -> (B, T, C): the inverse of _split_heads (the reshape copies)."""
        b, _, t, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(b, t, self.d_out)

    def _check_input(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != 3 or x.shape[-1] != self.d_in:
            got = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"MultiHeadAttention expects x of shape (batch, tokens, d_in={self.d_in}), "
                             f"got {got}")

    def _padded_keys(self, attention_mask: np.ndarray | None, x: np.ndarray) -> np.ndarray | None:
        """The padding mask (B, T) of 1 (real token) and 0 (pad) as a boolean (B, 1, 1, T), True at
        the padded keys, ready to broadcast over heads and queries; None when there is no mask."""
        if attention_mask is None:
            return None
        mask = np.asarray(attention_mask)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"attention_mask must have shape (batch, tokens) = {x.shape[:2]}, "
                             f"got {mask.shape}")
        whole = mask.dtype == bool or np.issubdtype(mask.dtype, np.integer)
        if not whole or not np.isin(mask, (0, 1)).all():
            raise ValueError("attention_mask must hold 1 (real token) and 0 (padding) only, as integers or "
                             "booleans")
        return (mask == 0)[:, None, None, :]

    def _attention_weights(self, q: np.ndarray, k: np.ndarray, past: int,
                           padded: np.ndarray | None = None) -> np.ndarray:
        """P = softmax(q k^T) over the keys each query may see.

        q (B, H, T, hd) is already scaled by 1/sqrt(hd); k (B, H, past+T, hd). Causal: the queries
        are the tokens at positions past .. past+T-1, so query i may see keys 0 .. past+i: the rows
        past .. past+T-1 of the causal mask. ``padded`` (B, 1, 1, T), True at padded keys: their
        scores become the smallest float (not -inf, as in transformers: a query whose keys are all
        padding then averages them instead of dividing 0 by 0). Returns P (B, H, T, past+T).
        """
        t, n_keys = q.shape[2], k.shape[2]
        scores = q @ k.swapaxes(-1, -2)                               # (B, H, T, past+T)
        if padded is not None:
            scores = np.where(padded, np.finfo(scores.dtype).min, scores)   # exp(min - max) = 0
        if self.causal:
            future = causal_mask(self.context_length)[past:past + t, :n_keys]   # (T, past+T), True: j > i
            scores = np.where(future, -np.inf, scores)                # exp(-inf) = 0: no weight
        rows = scores.reshape(-1, n_keys)                             # (B*H*T, past+T)
        return softmax(rows).reshape(scores.shape)                    # per row

    # -- forward / backward ------------------------------------------------------------------
    def forward(self, x: np.ndarray, kv_cache: KVCache | None = None,
                attention_mask: np.ndarray | None = None) -> np.ndarray:
        """x (B, T, d_in) -> (B, T, d_out). With ``kv_cache`` (causal inference), see
        ``_forward_cached``. ``attention_mask`` (B, T): 1 for real tokens, 0 for padded ones."""
        self._check_input(x)
        if kv_cache is not None:
            if not self.causal or attention_mask is not None:
                raise ValueError("a KV cache serves causal attention without a padding mask only: a "
                                 "bidirectional layer's earlier outputs change with every new token")
            return self._forward_cached(x, kv_cache)
        padded = self._padded_keys(attention_mask, x)                 # (B, 1, 1, T) or None
        t = x.shape[1]
        if t > self.context_length:
            raise ValueError(f"sequence of {t} tokens is longer than context_length={self.context_length}; "
                             f"crop it to the last {self.context_length} tokens")
        q = self._split_heads(self.W_query(x))                        # (B, H, T, hd)
        k = self._split_heads(self.W_key(x))                          # (B, H, T, hd)
        v = self._split_heads(self.W_value(x))                        # (B, H, T, hd)
        # Scale the queries rather than the (T x larger) scores: (q/sqrt(hd)) k^T = (q k^T)/sqrt(hd).
        q *= self.scale
        P = self._attention_weights(q, k, 0, padded)                  # (B, H, T, T)
        Pd = self.dropout(P)                                          # (B, H, T, T)
        ctx = Pd @ v                                                  # (B, H, T, hd)
        out = self.out_proj(self._merge_heads(ctx))                   # (B, T, d_out)
        self._cache = (q, k, v, P, Pd, padded) if self._need_cache() else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (B, T, d_out) -> dx (B, T, d_in); adds into the four Linear layers' grads.

        Going back through ctx = Pd V (per batch and head, ordinary matrix products):
            dPd = dctx V^T        dV = Pd^T dctx
        through dropout: dP = dPd * mask / (1 - p) (Dropout.backward). Through the row-wise
        softmax P = softmax(S): its Jacobian is dP_i/dS_j = P_i (delta_ij - P_j), so for each row
            dS_j = sum_i dP_i P_i (delta_ij - P_j) = P_j (dP_j - sum_i dP_i P_i),
        i.e. dS = P * (dP - sum(dP * P, -1)) (``softmax_backward``) without ever forming the
        (T x T) Jacobian.

        The masks. Unmasked (bidirectional, no padding), every S[i, j] = q_s[i] . K[j] and the
        formula above is the whole story. A masked entry was not computed from q and K: it was
        replaced by a constant (-inf for the future, the smallest float for a padded key), so no
        gradient may flow from it into q or K; its dS must be 0. For the causal mask that is
        automatic: P = 0 there, so dS = P * (...) = 0 and -inf never enters the arithmetic. For a
        padded key too, as long as its query sees one real key (exp(min - max) underflows to
        P = 0); only a query whose every key is padding gives its padded keys P = 1/T, and those
        dS are set to 0 explicitly (``np.where(padded, 0, dS)``). Through S = q_s K^T with
        q_s = q / sqrt(hd), over the unmasked entries:
            dq_s = dS K,   dK = dS^T q_s,   dq = dq_s / sqrt(hd).
        Finally x feeds all three projections, so dx is the sum of their three input gradients.
        """
        if self._cache is None:
            raise RuntimeError("MultiHeadAttention.backward called before forward: run forward first "
                               "(without a kv_cache and not inside numpy_gpt.no_grad(), which keep "
                               "nothing for backward)")
        q, k, v, P, Pd, padded = self._pop_cache()
        dctx = self._split_heads(self.out_proj.backward(dout))        # (B, H, T, hd)
        dv = Pd.swapaxes(-1, -2) @ dctx                               # (B, H, T, hd)
        dPd = dctx @ v.swapaxes(-1, -2)                               # (B, H, T, T)
        dP = self.dropout.backward(dPd)                               # (B, H, T, T)
        t = P.shape[-1]
        dS = softmax_backward(P.reshape(-1, t), dP.reshape(-1, t))    # per row of P
        dS = dS.reshape(P.shape)                                      # (B, H, T, T)
        if padded is not None:
            dS = np.where(padded, dS.dtype.type(0), dS)               # constant scores: no gradient
        dq = dS @ k                                                   # (B, H, T, hd) = d(q_s)
        dq *= self.scale
        dk = dS.swapaxes(-1, -2) @ q                                  # (B, H, T, hd)
        dx = self.W_query.backward(self._merge_heads(dq))             # (B, T, d_in)
        dx += self.W_key.backward(self._merge_heads(dk))
        dx += self.W_value.backward(self._merge_heads(dv))
        return dx

    def _forward_cached(self, x: np.ndarray, kv_cache: KVCache) -> np.ndarray:
        """Inference step with a KV cache: x holds the T new tokens (B, T, d_in), at positions
        kv_cache.length .. kv_cache.length+T-1.

        Their keys and values are appended to the cache; their queries attend to every cached
        position and, causally, to the new tokens (query i sees the new tokens 0..i). The first
        call with the whole prompt is the "prefill", later calls usually pass one token. Nothing is
        kept for backward: this path runs under ``no_grad``, and a later backward raises.
        """
        if not isinstance(kv_cache, KVCache):
            raise TypeError(f"kv_cache must be a KVCache, got {type(kv_cache).__name__}")
        b, t, _ = x.shape
        past = kv_cache.length
        if past + t > self.context_length:
            raise ValueError(f"KV cache holds {past} positions; {t} more would exceed "
                             f"context_length={self.context_length}")
        if kv_cache.keys.dtype != self.dtype:
            raise TypeError(f"KVCache dtype {kv_cache.keys.dtype} does not match the layer's {self.dtype}")
        self._cache = None
        with no_grad():
            q = self._split_heads(self.W_query(x))                    # (B, H, T, hd)
            q *= self.scale
            k, v = kv_cache.append(self._split_heads(self.W_key(x)),  # (B, H, past+T, hd) each
                                   self._split_heads(self.W_value(x)))
            P = self._attention_weights(q, k, past)                   # (B, H, T, past+T)
            ctx = self.dropout(P) @ v                                 # (B, H, T, hd)
            return self.out_proj(self._merge_heads(ctx))              # (B, T, d_out)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KVCache for this layer (max_len defaults to context_length)."""
        max_len = self.context_length if max_len is None else max_len
        if max_len > self.context_length:
            raise ValueError(f"max_len={max_len} exceeds context_length={self.context_length}")
        return KVCache(batch_size, self.num_heads, max_len, self.head_dim, self.dtype)

    def extra_repr(self) -> str:
        return (f"d_in={self.d_in}, d_out={self.d_out}, num_heads={self.num_heads}, "
                f"context_length={self.context_length}, causal={self.causal}")
