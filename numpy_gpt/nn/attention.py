"""Multi-head self-attention with a hand-written backward, causal (GPT) or bidirectional (BERT),
and its KV cache (chapter 3).

This is the book's final ``MultiHeadAttention`` (section 3.6.2), the one GPT-2 uses: one query, key
and value projection for all heads at once, the heads split out of the projected features, scaled
dot-product attention under a causal mask, dropout on the attention weights, the heads merged back
and an output projection. The step-by-step teaching versions (SelfAttention_v0 ... the
MultiHeadAttentionWrapper) live in ``numpy_gpt/attention_steps.py``.

Notation (shapes): B batch, T tokens, C = d_out, H heads, hd = C / H head size (unless given).

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

From GPT-2 to Llama 3 and Qwen3 (the book's bonus chapters), three more switches, all off for GPT:

* Grouped-query attention, ``num_kv_heads`` (Ainslie et al., 2023). H query heads but only
  Hkv = H / G key/value heads: each key/value head serves a group of G consecutive query heads
  (query head h reads key/value head h // G). W_key and W_value shrink to Hkv * hd outputs and so
  does the KV cache, which is what limits generation's memory: Llama 3.2 1B has H = 32, Hkv = 8.
  A group's G query heads are stacked along the token axis, (B, H, T, hd) viewed as
  (B, Hkv, G*T, hd) without a copy, so one matrix product per key/value head serves the whole
  group; in backward the same product's sum over those G*T rows adds up the gradients that the
  group's query heads send into their shared keys and values. With G = 1 (``num_kv_heads`` =
  ``num_heads``, the default) the view changes nothing: this is GPT-2's multi-head attention.
* Rotary positions, ``rope`` (a ``RoPE``, nn/rope.py): the queries and keys of each head are
  rotated by their token's position before the scores are taken, instead of GPT-2's position
  embeddings being added at the bottom of the model. The cached keys are stored rotated.
* QK-norm, ``qk_norm`` (Qwen3): an RMSNorm (nn/rmsnorm.py) over the hd features of every query
  and key head, before the rotation, which keeps the scores from growing large in training.

A head's width ``head_dim`` may also be given: then H * hd need not equal the model width C
(Qwen3-0.6B: C = 1024, H = 16, hd = 128), and out_proj maps H * hd back to C.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, no_grad
from numpy_gpt.nn.rmsnorm import RMSNorm
from numpy_gpt.nn.rope import RoPE
from numpy_gpt.nn.softmax import softmax, softmax_backward


@functools.lru_cache(maxsize=8)
def causal_mask(context_length: int) -> np.ndarray:
    """Boolean (context_length, context_length) array, True above the diagonal (the future).

    Row i, column j is True when j > i: token i must not see token j. Boolean, not a float 0/-inf
    matrix: a float64 mask added to float32 scores would silently turn everything into float64.
    Shared read-only by every attention layer (the book's buffer), cached for the last 8 sizes.
    """
    mask = np.triu(np.ones((context_length, context_length), dtype=bool), k=1)
    mask.flags.writeable = False
    return mask


class KVCache:
    """Keys and values of ONE attention layer, kept across forward passes while generating.

    ``keys`` and ``values`` are preallocated arrays (B, H, max_len, hd), H the layer's key/value
    heads (fewer than its query heads with grouped-query attention); the first ``length``
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

    Parameters: W_query (Linear d_in -> H * hd), W_key, W_value (Linear d_in -> Hkv * hd), bias iff
    ``qkv_bias``, and out_proj (Linear H * hd -> d_out, bias iff ``out_bias``). ``dropout`` drops
    attention weights in training. ``causal=True`` (GPT) masks the future; ``causal=False`` (BERT)
    lets every token see every token. ``forward(x, attention_mask=...)`` also hides padded keys (see
    the module docstring). ``num_kv_heads`` (Hkv, default H), ``head_dim`` (hd, default d_out / H),
    ``rope`` and ``qk_norm`` (with RMSNorm's ``norm_eps``) are Llama's and Qwen3's switches (module
    docstring); with ``qk_norm`` the children q_norm and k_norm (RMSNorm(hd)) hold its scales.

    What forward caches for backward (only when gradients are wanted):
      q (rotated, scaled by 1/sqrt(hd))  (B, H, T, hd)
      k (rotated), v                     (B, Hkv, T, hd) each
      P  = softmax(S)                  (B, H, T, T)   the softmax backward needs the weights
      Pd = dropout(P)                  (B, H, T, T)   dV = Pd^T dctx; the same array as P when
                                                      dropout is inactive
      padded                           (B, 1, 1, T)   bool, True at padded keys (None: no mask)
    plus whatever the four Linear layers, the Dropout and the q/k RMSNorms keep (their inputs, the
    dropout mask, the normalised heads).

    To look at the weights (transformers' ``output_attentions``): with ``keep_attn_weights = True``
    each forward keeps its P, before dropout, in ``attn_weights`` (B, H, T, T); otherwise that is
    None. ``plots.attention_weights`` switches it on for every layer of a model, runs the model once
    and reads them: the numbers the layers computed, whatever the model's embeddings, norms, RoPE or
    grouped heads.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, *, causal: bool = True, num_kv_heads: int | None = None,
                 head_dim: int | None = None, out_bias: bool = True, rope: RoPE | None = None,
                 qk_norm: bool = False, norm_eps: float = 1e-6, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        if num_heads < 1 or (head_dim is None and d_out % num_heads != 0):
            raise ValueError(f"d_out ({d_out}) must be divisible by num_heads ({num_heads}): each head "
                             f"gets d_out // num_heads features (or give head_dim)")
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_kv_heads < 1 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads}): "
                             f"each key/value head serves a group of num_heads // num_kv_heads query heads")
        if head_dim is not None and head_dim < 1:
            raise ValueError(f"head_dim must be positive, got {head_dim}")
        if context_length < 1:
            raise ValueError(f"context_length must be positive, got {context_length}")
        self.d_in = d_in
        self.d_out = d_out
        self.context_length = context_length
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.group_size = num_heads // num_kv_heads                    # G query heads per key/value head
        self.head_dim = d_out // num_heads if head_dim is None else head_dim
        self.causal = bool(causal)
        self.dtype = np.dtype(dtype)
        q_width, kv_width = num_heads * self.head_dim, num_kv_heads * self.head_dim
        self.W_query = Linear(d_in, q_width, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_key = Linear(d_in, kv_width, bias=qkv_bias, rng=rng, dtype=dtype)
        self.W_value = Linear(d_in, kv_width, bias=qkv_bias, rng=rng, dtype=dtype)
        self.out_proj = Linear(q_width, d_out, bias=out_bias, rng=rng, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.q_norm = RMSNorm(self.head_dim, norm_eps, dtype=dtype) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, norm_eps, dtype=dtype) if qk_norm else None
        if rope is not None and (rope.head_dim != self.head_dim or rope.context_length < context_length):
            raise ValueError(f"rope is for head_dim {rope.head_dim} and {rope.context_length} positions; "
                             f"this layer needs head_dim {self.head_dim} and {context_length} positions")
        self.rope = rope
        # 1/sqrt(hd) as a scalar of the layer's dtype (an np.float64 scalar would upcast float32 arrays)
        self.scale = self.dtype.type(1.0 / math.sqrt(self.head_dim))
        self.keep_attn_weights = False        # True: forward keeps P in attn_weights (class docstring)
        self.attn_weights: np.ndarray | None = None
        self._cache = None

    # -- helpers -----------------------------------------------------------------------------
    def _split_heads(self, x: np.ndarray, num_heads: int | None = None) -> np.ndarray:
        """(B, T, n * hd) -> (B, n, T, hd) for n = num_heads (default H), C-contiguous so the
        batched matmuls run at full BLAS speed."""
        b, t, _ = x.shape
        n = self.num_heads if num_heads is None else num_heads
        return np.ascontiguousarray(x.reshape(b, t, n, self.head_dim).transpose(0, 2, 1, 3))

    def _merge_heads(self, x: np.ndarray) -> np.ndarray:
        """(B, n, T, hd) -> (B, T, n * hd): the inverse of _split_heads (the reshape copies)."""
        b, n, t, hd = x.shape
        return x.transpose(0, 2, 1, 3).reshape(b, t, n * hd)

    def _grouped(self, x: np.ndarray) -> np.ndarray:
        """(B, H, T, X) -> (B, Hkv, G*T, X): the G query heads that share a key/value head stacked
        along the token axis. A view of the same memory when x is C-contiguous (head h = j*G + g
        and its row t become group j's row g*T + t); for G = 1 it changes nothing."""
        b, _, t, last = x.shape
        return x.reshape(b, self.num_kv_heads, self.group_size * t, last)

    def _project_qkv(self, x: np.ndarray, past: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """q (B, H, T, hd) and k, v (B, Hkv, T, hd) of the tokens at positions past .. past+T-1:
        projected, split into heads, q and k normalised (qk_norm) and rotated (rope), q scaled."""
        q = self._split_heads(self.W_query(x))                         # (B, H, T, hd)
        k = self._split_heads(self.W_key(x), self.num_kv_heads)        # (B, Hkv, T, hd)
        v = self._split_heads(self.W_value(x), self.num_kv_heads)      # (B, Hkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope.rotate(q, past), self.rope.rotate(k, past)
        # Scale the queries rather than the (T x larger) scores: (q/sqrt(hd)) k^T = (q k^T)/sqrt(hd).
        q *= self.scale
        return q, k, v

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

        q (B, H, T, hd) is already scaled by 1/sqrt(hd); k (B, Hkv, past+T, hd), one key head per
        group of G query heads (``_grouped``). Causal: the queries are the tokens at positions
        past .. past+T-1, so query i may see keys 0 .. past+i: the rows past .. past+T-1 of the
        causal mask of past+T tokens, which is causal_mask(T) over its last T columns (a long
        context never allocates a context x context mask). ``padded`` (B, 1, 1, T), True at padded
        keys: their scores become the smallest float (not -inf, as in transformers: a query whose
        keys are all padding then averages them instead of dividing 0 by 0). Returns P
        (B, H, T, past+T).
        """
        t, n_keys = q.shape[2], k.shape[2]
        scores = self._grouped(q) @ k.swapaxes(-1, -2)                # (B, Hkv, G*T, past+T)
        scores = scores.reshape(*q.shape[:3], n_keys)                 # (B, H, T, past+T), a view
        if padded is not None:
            scores = np.where(padded, np.finfo(scores.dtype).min, scores)   # exp(min - max) = 0
        if self.causal:
            # query i, at position past+i, sees every cached key and the new keys 0..i: no mask
            # over the first past columns, the usual triangle over the last T
            future = causal_mask(t)                                   # (T, T), True: j > i
            np.copyto(scores[..., past:], -np.inf, where=future)      # exp(-inf) = 0: no weight
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
        q, k, v = self._project_qkv(x, 0)                             # (B, H|Hkv, T, hd)
        P = self._attention_weights(q, k, 0, padded)                  # (B, H, T, T)
        self.attn_weights = P if self.keep_attn_weights else None     # to look at, not for backward
        Pd = self.dropout(P)                                          # (B, H, T, T)
        ctx = (self._grouped(Pd) @ v).reshape(q.shape)                # (B, H, T, hd)
        out = self.out_proj(self._merge_heads(ctx))                   # (B, T, d_out)
        self._cache = (q, k, v, P, Pd, padded) if self._need_cache() else None
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (B, T, d_out) -> dx (B, T, d_in); adds into the four Linear layers' grads (and the q/k
        RMSNorms' with qk_norm).

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
        With grouped keys and values (G > 1) the products run on the group views (``_grouped``):
        dV = Pd^T dctx and dK = dS^T q_s contract over the group's G*T rows, which sums the
        gradients of the G query heads that read the same key/value head. Back through the
        scaling, the rotation (its inverse, ``RoPE.rotate_backward``) and the q/k RMSNorms, in the
        reverse order of ``_project_qkv``. Finally x feeds all three projections, so dx is the sum
        of their three input gradients.
        """
        if self._cache is None:
            raise RuntimeError("MultiHeadAttention.backward called before forward: run forward first "
                               "(without a kv_cache and not inside numpy_gpt.no_grad(), which keep "
                               "nothing for backward)")
        q, k, v, P, Pd, padded = self._pop_cache()
        dctx = self._grouped(self._split_heads(self.out_proj.backward(dout)))   # (B, Hkv, G*T, hd)
        dv = self._grouped(Pd).swapaxes(-1, -2) @ dctx                # (B, Hkv, T, hd), summed over G
        dPd = (dctx @ v.swapaxes(-1, -2)).reshape(P.shape)            # (B, H, T, T)
        dP = self.dropout.backward(dPd)                               # (B, H, T, T)
        t = P.shape[-1]
        dS = softmax_backward(P.reshape(-1, t), dP.reshape(-1, t))    # per row of P
        dS = dS.reshape(P.shape)                                      # (B, H, T, T)
        if padded is not None:
            dS = np.where(padded, dS.dtype.type(0), dS)               # constant scores: no gradient
        dq = (self._grouped(dS) @ k).reshape(q.shape)                 # (B, H, T, hd) = d(q_s)
        dq *= self.scale
        dk = self._grouped(dS).swapaxes(-1, -2) @ self._grouped(q)    # (B, Hkv, T, hd), summed over G
        if self.rope is not None:
            dq, dk = self.rope.rotate_backward(dq, 0), self.rope.rotate_backward(dk, 0)
        if self.q_norm is not None:
            dq, dk = self.q_norm.backward(dq), self.k_norm.backward(dk)
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
            q, k_new, v_new = self._project_qkv(x, past)              # (B, H|Hkv, T, hd)
            k, v = kv_cache.append(k_new, v_new)                      # (B, Hkv, past+T, hd) each
            P = self._attention_weights(q, k, past)                   # (B, H, T, past+T)
            self.attn_weights = P if self.keep_attn_weights else None
            ctx = (self._grouped(self.dropout(P)) @ v).reshape(q.shape)   # (B, H, T, hd)
            return self.out_proj(self._merge_heads(ctx))              # (B, T, d_out)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KVCache for this layer (max_len defaults to context_length): Hkv key and value
        heads per position, not H, so grouped-query attention stores G times less."""
        max_len = self.context_length if max_len is None else max_len
        if max_len > self.context_length:
            raise ValueError(f"max_len={max_len} exceeds context_length={self.context_length}")
        return KVCache(batch_size, self.num_kv_heads, max_len, self.head_dim, self.dtype)

    def extra_repr(self) -> str:
        grouped = f", num_kv_heads={self.num_kv_heads}" if self.group_size > 1 else ""
        return (f"d_in={self.d_in}, d_out={self.d_out}, num_heads={self.num_heads}{grouped}, "
                f"head_dim={self.head_dim}, context_length={self.context_length}, causal={self.causal}")
