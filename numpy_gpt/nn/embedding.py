"""Token and positional embeddings (the book's chapter 2.7-2.8 and the first lines of GPTModel).

An embedding is a lookup table: row ``i`` of ``weight`` (V, C) is the vector of token id ``i``.
Looking rows up is the same as multiplying a one-hot matrix by ``weight``, so the gradient of a row
is the sum of the output gradients at every position where that id occurs: backward is a
scatter-add.

* ``Embedding``            the token embedding ``tok_emb`` (and anything else indexed by integer ids).
* ``PositionalEmbedding``  GPT-2's learned absolute positions ``pos_emb``: row ``t`` is added to the
                           token at position ``t``.
* ``sinusoidal_positional_encoding``  the fixed sin/cos table of the 2017 Transformer paper, shown for
                           comparison (GPT-2 does not use it; it has no parameters).
"""

from __future__ import annotations

import numpy as np

from numpy_gpt.nn.linear import normal_init
from numpy_gpt.nn.module import Module, Parameter


def _check_ids(ids: np.ndarray, num_embeddings: int, what: str) -> np.ndarray:
    """Return ``ids`` as an integer ndarray, or raise naming the first bad id and the valid range."""
    ids = np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{what} must be integers, got an array of dtype {ids.dtype} "
                        f"(convert with .astype(np.int64) if the values are whole numbers)")
    if ids.size and (ids.min() < 0 or ids.max() >= num_embeddings):
        bad = np.flatnonzero((ids.ravel() < 0) | (ids.ravel() >= num_embeddings))[0]
        position = np.unravel_index(bad, ids.shape)
        raise IndexError(f"{what} contain {ids.ravel()[bad]} at position {tuple(map(int, position))}, "
                         f"outside [0, {num_embeddings}): the table has {num_embeddings} rows "
                         f"(was the text encoded with a tokenizer of a larger vocabulary?)")
    return ids


def scatter_add_rows(num_rows: int, ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The (num_rows, C) gradient of a lookup table: row v is the sum of ``rows[n]`` over every n
    with ``ids[n] == v``.

    ``grad[ids] += rows`` alone would be wrong: with a repeated id, NumPy's buffered fancy
    assignment keeps only the last write. ``np.add.at`` is the unbuffered form that adds every one.
    """
    ids = ids.ravel()                                               # (N,)
    grad = np.zeros((num_rows, rows.shape[-1]), dtype=rows.dtype)   # (V, C)
    np.add.at(grad, ids, rows.reshape(ids.size, grad.shape[1]))     # grad[ids[n]] += rows[n]
    return grad


class Embedding(Module):
    """Lookup table ``weight`` (num_embeddings, embedding_dim), initialised N(0, 0.02^2) as GPT-2.

    forward(idx) with integer ids of any shape (B, T) returns ``weight[idx]`` (B, T, C) and caches
    ``idx`` for backward.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = Parameter(normal_init(rng, (num_embeddings, embedding_dim), 0.02, dtype))
        self._cache = None

    def forward(self, idx: np.ndarray) -> np.ndarray:
        idx = _check_ids(idx, self.num_embeddings, "token ids")
        if self._need_cache():
            self._cache = idx
        return self.weight.data[idx]                                # (B, T) -> (B, T, C)

    def backward(self, dout: np.ndarray) -> None:
        """dL/dweight[v] = sum of dout[b, t] over every (b, t) with idx[b, t] == v. Returns None:
        there is no gradient with respect to integer ids."""
        idx = self._pop_cache()
        if self.weight.trainable:
            self.weight.add_grad(scatter_add_rows(self.num_embeddings, idx, dout))
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


class PositionalEmbedding(Module):
    """GPT-2's learned absolute position embedding ``weight`` (context_length, C).

    forward(T) returns the rows of positions 0..T-1, shape (T, C); forward(positions) with an
    integer array (T,) returns those rows (generation with a KV cache asks for positions
    start..start+T-1). The result broadcasts against token embeddings (B, T, C); backward accepts
    dout of shape (T, C) or (B, T, C) and sums over the batch.
    """

    def __init__(self, context_length: int, emb_dim: int, *,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.context_length = context_length
        self.emb_dim = emb_dim
        self.weight = Parameter(normal_init(rng, (context_length, emb_dim), 0.02, dtype))
        self._cache = None

    def forward(self, positions: int | np.ndarray) -> np.ndarray:
        if isinstance(positions, (int, np.integer)):
            if positions < 0:
                raise ValueError(f"sequence length must be >= 0, got {positions}")
            if positions > self.context_length:
                raise ValueError(f"sequence length {positions} exceeds context_length "
                                 f"{self.context_length}: truncate the input to its last "
                                 f"{self.context_length} tokens")
            positions = slice(0, int(positions))
            out = self.weight.data[positions]                       # (T, C), a view
            out.flags.writeable = False                             # callers must not edit the table
        else:
            positions = _check_ids(positions, self.context_length,
                                   f"positions (context_length {self.context_length})")
            if positions.ndim != 1:
                raise ValueError(f"positions must be 1-D (T,), got shape {positions.shape}")
            out = self.weight.data[positions]                       # (T, C), a copy
        if self._need_cache():
            self._cache = positions
        return out

    def backward(self, dout: np.ndarray) -> None:
        """dL/dweight[p_t] = sum over the batch of dout[..., t, :], where p_t is the t-th position
        (t itself for forward(T)); repeated positions accumulate, as in Embedding."""
        positions = self._pop_cache()
        if not self.weight.trainable:
            return None
        dpos = dout.reshape(-1, *dout.shape[-2:]).sum(axis=0) if dout.ndim > 2 else dout   # (T, C)
        if isinstance(positions, slice):                            # positions 0..T-1
            grad = np.zeros_like(self.weight.data)
            grad[positions] = dpos
        else:
            grad = scatter_add_rows(self.context_length, positions, dpos)
        self.weight.add_grad(grad)
        return None

    def extra_repr(self) -> str:
        return f"{self.context_length}, {self.emb_dim}"


def sinusoidal_positional_encoding(context_length: int, emb_dim: int,
                                   dtype: np.dtype | type = np.float32) -> np.ndarray:
    """The fixed encoding of "Attention Is All You Need" (2017), shape (context_length, emb_dim):

        PE[pos, 2i]   = sin(pos / 10000^(2i / emb_dim))
        PE[pos, 2i+1] = cos(pos / 10000^(2i / emb_dim))

    Each pair of columns is a rotation at its own frequency, so PE[pos + k] is a linear function of
    PE[pos]. GPT-2 learns its table instead (``PositionalEmbedding``). Computed in float64, returned
    in ``dtype``.
    """
    pos = np.arange(context_length, dtype=np.float64)[:, None]             # (T, 1)
    two_i = np.arange(0, emb_dim, 2, dtype=np.float64)                      # (ceil(C/2),)
    angles = pos / 10000.0 ** (two_i / emb_dim)                             # (T, ceil(C/2))
    pe = np.empty((context_length, emb_dim), dtype=np.float64)
    pe[:, 0::2] = np.sin(angles)
    pe[:, 1::2] = np.cos(angles[:, : emb_dim // 2])
    return pe.astype(dtype)
