"""Rotary position embeddings (RoPE), how Llama, SmolLM2 and Qwen3 tell positions apart (the book's
bonus chapters "GPT to Llama").

GPT-2 adds a learned vector to each token's embedding, one per absolute position (embedding.py's
``PositionalEmbedding``). RoPE (Su et al., 2021) adds nothing: inside every attention layer it
*rotates* each query and each key by an angle proportional to the token's position, so that the
score between two tokens depends only on how far apart they are.

The rotation. Split a head's hd features into hd/2 pairs; pair i is a point in a plane, and at
position m it is turned by the angle m * theta_i, with one frequency per pair

    theta_i = base^(-2i / hd),   i = 0 .. hd/2 - 1          (base 10000; 500000 for Llama 3)

from one turn per ~6 positions (i = 0) to one per ~base positions (the last pairs). For a pair
(x1, x2) at position m, with c = cos(m theta_i) and s = sin(m theta_i):

    y1 = x1 * c - x2 * s          [y1]   [c  -s] [x1]
    y2 = x2 * c + x1 * s          [y2] = [s   c] [x2]   = R(m theta_i) x

Why it encodes relative position: a rotation preserves dot products and R(a)^T R(b) = R(b - a), so
for a query at position m and a key at position n, pair by pair,

    (R(m theta) q) . (R(n theta) k) = q . R((n - m) theta) k,

a function of the offset n - m alone. No parameters are learned, and nothing is added to the
residual stream.

The pairing. The paper pairs features (2i, 2i+1). Hugging Face's Llama and Qwen code (and the
book's) pairs feature i with feature i + hd/2, the "rotate half" form: x1 is the first half of the
head, x2 the second half. Both are the same model once the rows of W_query and W_key are permuted,
and Hugging Face's checkpoints are stored for the rotate-half form, so that is the one used here.

The backward is the inverse rotation. y = R x with R orthogonal, so dL/dx = R^T dL/dy, and
R(a)^T = R(-a): the gradient is rotated back by the same angle (``rotate`` with sin negated). The
norm of the gradient is preserved, as that of the vector was.

Llama 3's frequency scaling (``scaling``, config.json's ``rope_scaling`` with ``rope_type``
"llama3"). Llama 3.1 and 3.2 stretch a context trained at ``original_max_position_embeddings``
(8192) to 131072 tokens by slowing the slow pairs down. Pair i turns once every
wavelength_i = 2 pi / theta_i positions:

* wavelength < original / high_freq_factor: a fast pair, it has turned many times within the
  original context; it is kept as it is;
* wavelength > original / low_freq_factor: a slow pair, it never completed a turn in pretraining;
  its frequency is divided by ``factor`` (8 or 32), so the longer context maps onto angles it saw;
* in between: a smooth blend, theta' = (1 - t) * theta / factor + t * theta with
  t = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from numpy_gpt.nn.module import Module

LLAMA3_SCALING_KEYS = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")


def check_rope_scaling(scaling: Mapping | None, where: str = "rope_scaling") -> dict | None:
    """A checked plain-dict copy of Llama 3's scaling settings (or None): the four
    ``LLAMA3_SCALING_KEYS``, positive numbers, low_freq_factor < high_freq_factor. A
    ``rope_type`` key, when present, must be "llama3"; other scaling types are refused."""
    if scaling is None:
        return None
    if not isinstance(scaling, Mapping):
        raise ValueError(f"{where} must be a dict with the keys {list(LLAMA3_SCALING_KEYS)}, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type", "llama3"))
    if kind != "llama3":
        raise ValueError(f"{where}: rope_type {kind!r} is not supported; numpy_gpt has Llama 3's "
                         f"frequency scaling ('llama3') only")
    missing = [k for k in LLAMA3_SCALING_KEYS if k not in scaling]
    if missing:
        raise ValueError(f"{where} lacks {missing}: Llama 3's scaling needs {list(LLAMA3_SCALING_KEYS)}")
    out = {}
    for key in LLAMA3_SCALING_KEYS:
        value = scaling[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{where}: {key} must be a positive number, got {value!r}")
        out[key] = value
    if not out["low_freq_factor"] < out["high_freq_factor"]:
        raise ValueError(f"{where}: low_freq_factor ({out['low_freq_factor']}) must be below "
                         f"high_freq_factor ({out['high_freq_factor']})")
    return {"rope_type": "llama3", **out}


def rope_frequencies(head_dim: int, theta_base: float = 10000.0,
                     scaling: Mapping | None = None) -> np.ndarray:
    """theta_i = theta_base^(-2i / head_dim) for i = 0 .. head_dim/2 - 1, float64 (head_dim/2,),
    with Llama 3's scaling applied when ``scaling`` is given (see the module docstring)."""
    if head_dim < 2 or head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim (features are rotated in pairs), got {head_dim}")
    theta = theta_base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)   # (hd/2,)
    scaling = check_rope_scaling(scaling)
    if scaling is None:
        return theta
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    original = scaling["original_max_position_embeddings"]
    wavelength = 2 * math.pi / theta
    t = (original / wavelength - low) / (high - low)               # 0 at the slow end, 1 at the fast end
    blended = (1 - t) * theta / factor + t * theta
    return np.where(wavelength < original / high, theta,           # fast pairs: unchanged
                    np.where(wavelength > original / low, theta / factor, blended))


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Turn each pair (x1, x2) = (first half, second half) of x's last axis by the angles whose
    cosines and sines are ``cos``, ``sin`` (T, hd/2); x is (..., T, hd). Returns a new array."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]                          # (..., T, hd/2) each
    y = np.empty_like(x)
    y[..., :half] = x1 * cos - x2 * sin
    y[..., half:] = x2 * cos + x1 * sin
    return y


class RoPE(Module):
    """Rotary position embedding for heads of ``head_dim`` features, positions 0 .. context_length-1.

    No parameters. Holds the frequencies ``theta`` (head_dim/2,); the cosines and sines of the angles
    m * theta_i are computed for the positions a call asks for (in float64, returned in ``dtype``)
    and the last ones are kept, so a model builds one RoPE and every attention layer of a forward
    pass reuses them (as GPT-2's layers share one causal mask). No table of context_length rows is
    ever built: Llama 3.2's context is 131072 positions.

    ``rotate(x, start)`` rotates x (..., T, hd) as the tokens at positions start .. start+T-1 and
    ``rotate_backward(dy, start)`` is its backward; both keep nothing, so one RoPE can serve the
    queries and keys of every layer. ``forward(x, start=0)`` / ``backward(dy)`` are the same pair in
    the Module protocol (forward caches ``start``), for using and checking the layer on its own.
    """

    def __init__(self, head_dim: int, context_length: int, theta_base: float = 10000.0,
                 scaling: Mapping | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.head_dim = head_dim
        self.context_length = context_length
        self.theta_base = theta_base
        self.scaling = check_rope_scaling(scaling)
        self.dtype = np.dtype(dtype)
        self.theta = rope_frequencies(head_dim, theta_base, self.scaling)         # (hd/2,) float64
        self._rows_of: tuple[tuple[int, int], np.ndarray, np.ndarray] | None = None
        self._cache = None

    def _rows(self, start: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        """cos and sin (T, hd/2) of the angles m * theta_i for m = start .. start+T-1."""
        if start < 0 or start + t > self.context_length:
            raise ValueError(f"RoPE: positions {start} .. {start + t - 1} are outside "
                             f"0 .. {self.context_length - 1} (context_length {self.context_length})")
        if self._rows_of is None or self._rows_of[0] != (start, t):
            angles = np.arange(start, start + t, dtype=np.float64)[:, None] * self.theta   # (T, hd/2)
            cos, sin = np.cos(angles).astype(self.dtype), np.sin(angles).astype(self.dtype)
            cos.flags.writeable = sin.flags.writeable = False
            self._rows_of = ((start, t), cos, sin)
        return self._rows_of[1], self._rows_of[2]

    def _check(self, x: np.ndarray) -> None:
        if x.ndim < 2 or x.shape[-1] != self.head_dim:
            raise ValueError(f"RoPE expects input of shape (..., tokens, head_dim={self.head_dim}), "
                             f"got {x.shape}")

    def rotate(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        """x (..., T, hd) -> the same, pair i of the token at position start + t turned by
        (start + t) * theta_i."""
        self._check(x)
        cos, sin = self._rows(start, x.shape[-2])
        return rotate(x, cos, sin)

    def rotate_backward(self, dy: np.ndarray, start: int = 0) -> np.ndarray:
        """dL/dx for dL/dy = dy: the inverse rotation, R(-a) = R(a)^T, i.e. ``rotate`` with the
        sines negated (module docstring)."""
        self._check(dy)
        cos, sin = self._rows(start, dy.shape[-2])
        return rotate(dy, cos, -sin)

    def forward(self, x: np.ndarray, start: int = 0) -> np.ndarray:
        y = self.rotate(x, start)
        if self._need_cache():
            self._cache = (start,)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        (start,) = self._pop_cache()
        return self.rotate_backward(dy, start)

    def extra_repr(self) -> str:
        scaled = ", scaling=llama3" if self.scaling else ""
        return (f"head_dim={self.head_dim}, context_length={self.context_length}, "
                f"base={self.theta_base:g}{scaled}")
