"""SwiGLU, the feed-forward block of Llama, SmolLM2 and Qwen3 (the book's bonus chapters "GPT to
Llama").

GPT-2's feed-forward (feedforward.py) widens each token's vector, applies GELU and projects back.
SwiGLU (Shazeer, 2020, "GLU Variants Improve Transformer") widens it twice, along two separate
projections, and lets one of them open or close the other feature by feature, a *gate*:

    a = x W_gate          (B, T, C) -> (B, T, H)     the gate's pre-activation
    b = x W_up            (B, T, C) -> (B, T, H)     the values it lets through
    h = SiLU(a) * b       (B, T, H)                  elementwise
    out = h W_down        (B, T, H) -> (B, T, C)

with SiLU(a) = a * sigmoid(a) (also called Swish). Three matrices instead of two, so Llama makes H
narrower than GPT-2's 4C to keep the parameter count (Llama 3.2 1B: C = 2048, H = 8192; SmolLM2
135M: C = 576, H = 1536; the width is config.json's ``intermediate_size``, numpy_gpt's
``hidden_dim``). None of the three projections has a bias in these models.
"""

from __future__ import annotations

import numpy as np

from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module


def swiglu(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h = SiLU(a) * b, and s = sigmoid(a), which the backward needs.

    sigmoid(a) = 1 / (1 + exp(-a)) is computed as 0.5 * (1 + tanh(a / 2)), the same number
    without overflow: exp(-a) overflows float32 for a < -88, tanh never does.
    """
    s = 0.5 * (1.0 + np.tanh(0.5 * a))
    return a * s * b, s


def swiglu_backward(a: np.ndarray, b: np.ndarray, s: np.ndarray,
                    dh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(dL/da, dL/db) for h = SiLU(a) * b and dL/dh = dh, with s = sigmoid(a) (see SwiGLU.backward)."""
    return dh * b * s * (1.0 + a * (1.0 - s)), dh * a * s


class SwiGLU(Module):
    """out = (SiLU(x W_gate) * (x W_up)) W_down: (B, T, emb_dim) -> (B, T, hidden_dim) -> (B, T, emb_dim).

    Children ``gate``, ``up`` (Linear emb_dim -> hidden_dim) and ``down`` (Linear hidden_dim ->
    emb_dim), without biases unless ``bias`` (Llama's ``mlp_bias``). Caches a = x W_gate,
    b = x W_up and s = sigmoid(a) (N, H) each, plus what the three Linears keep (x, shared by gate
    and up, and h).

    The elementwise middle is the pair ``swiglu`` / ``swiglu_backward``, called as written.
    """

    def __init__(self, emb_dim: int, hidden_dim: int, bias: bool = False, *,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        self.emb_dim = emb_dim
        self.hidden_dim = hidden_dim
        self.gate = Linear(emb_dim, hidden_dim, bias=bias, rng=rng, dtype=dtype)    # (C, H)
        self.up = Linear(emb_dim, hidden_dim, bias=bias, rng=rng, dtype=dtype)      # (C, H)
        self.down = Linear(hidden_dim, emb_dim, bias=bias, rng=rng, dtype=dtype)    # (H, C)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        a = self.gate(x).reshape(-1, self.hidden_dim)                # (N, H)
        b = self.up(x).reshape(-1, self.hidden_dim)                  # (N, H)
        h, s = swiglu(a, b)                                          # h = SiLU(a) * b, s = sigmoid(a)
        if self._need_cache():
            self._cache = (a, b, s)
        return self.down(h.reshape(*x.shape[:-1], self.hidden_dim))  # (B, T, C)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """dout (B, T, C) -> dx (B, T, C).

        The derivative of SiLU: with s = sigmoid(a) and sigmoid' = s (1 - s),

            d/da [a * s] = s + a * s * (1 - s) = s * (1 + a * (1 - s)).

        So, by the product rule on h = SiLU(a) * b:

            dL/da = dL/dh * b * s * (1 + a * (1 - s)),     dL/db = dL/dh * SiLU(a).

        x feeds both gate and up, so dL/dx is the sum of their two input gradients.
        """
        a, b, s = self._pop_cache()
        dh = self.down.backward(dout).reshape(a.shape)               # (N, H)
        da, db = swiglu_backward(a, b, s, dh)
        dx = self.gate.backward(da.reshape(*dout.shape[:-1], self.hidden_dim))
        dx += self.up.backward(db.reshape(*dout.shape[:-1], self.hidden_dim))
        return dx                                                    # (B, T, C)

    def extra_repr(self) -> str:
        return f"emb_dim={self.emb_dim}, hidden_dim={self.hidden_dim}"
