"""The transformer's position-wise feed-forward network (chapter 4, section 4.3).

Each token's vector is processed on its own (no mixing between tokens, that is attention's job):
it is expanded to ``hidden_dim`` features, passed through GELU, and projected back:

    FeedForward(x) = GELU(x W1 + b1) W2 + b2      (B, T, C) -> (B, T, H) -> (B, T, C)

GPT-2 and BERT-base expand 4x, H = 4C, the default; a config's ``hidden_dim`` (the name of the
book's Llama chapter; transformers' ``intermediate_size`` and ``n_inner``) sets any other width
(TinyBERT: C = 312, H = 1200). The expansion gives the model a wider space in which to combine
features; in GPT-2 about two thirds of a block's parameters live here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from numpy_gpt.nn.gelu import GELU, ErfGELU
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, Sequential

GELUS = {"tanh": GELU, "erf": ErfGELU}      # GPT-2's tanh approximation, BERT's exact erf form


def ff_hidden_dim(cfg: Mapping) -> int:
    """The feed-forward width H of a config: ``cfg["hidden_dim"]`` if present, else 4 * emb_dim."""
    return cfg.get("hidden_dim", 4 * cfg["emb_dim"])


class FeedForward(Module):
    """Linear(C, H) -> GELU -> Linear(H, C), with C = cfg["emb_dim"] and H = ``ff_hidden_dim(cfg)``,
    as ``self.layers``. ``gelu``: "tanh" (GPT-2) or "erf" (BERT); ``bias``: the two Linears' biases.

    The Sequential runs the three layers forward and, in backward, in reverse, each layer turning
    the gradient of its output into the gradient of its input.
    """

    def __init__(self, cfg: Mapping, *, gelu: str = "tanh", bias: bool = True,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32):
        super().__init__()
        if gelu not in GELUS:
            raise ValueError(f"gelu must be one of {sorted(GELUS)}, got {gelu!r}")
        emb_dim, hidden_dim = cfg["emb_dim"], ff_hidden_dim(cfg)
        self.layers = Sequential(
            Linear(emb_dim, hidden_dim, bias=bias, rng=rng, dtype=dtype),    # (B, T, C) -> (B, T, H)
            GELUS[gelu](),
            Linear(hidden_dim, emb_dim, bias=bias, rng=rng, dtype=dtype),    # (B, T, H) -> (B, T, C)
        )

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.layers(x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return self.layers.backward(dout)
