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

Llama 3, SmolLM2 and Qwen3 keep GPT-2's pre-norm block and switch the layers inside it, each a key
of the config (``DECODER_DEFAULTS`` below; docs/gpt2-to-llama.md maps each to its reason):

    normalization="rmsnorm"   norm1, norm2 are RMSNorms (nn/rmsnorm.py): no centring, no shift
    feed_forward="swiglu"     ff is SwiGLU (nn/swiglu.py): gate, up and down projections
    n_kv_heads, head_dim      grouped-query attention, and heads of any width
    qk_norm=True              Qwen3's RMSNorm on every query and key head
    out_bias, ff_bias=False   no biases in out_proj and the feed-forward projections

and the ``rope`` keyword: the model's one RoPE (nn/rope.py), with which attention rotates queries
and keys by their positions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from numpy_gpt.nn.attention import KVCache, MultiHeadAttention
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.feedforward import FeedForward, ff_hidden_dim
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.module import Module
from numpy_gpt.nn.rmsnorm import RMSNorm
from numpy_gpt.nn.rope import RoPE
from numpy_gpt.nn.swiglu import SwiGLU

NORMS = {"layernorm": LayerNorm, "rmsnorm": RMSNorm}   # GPT-2's and BERT's, Llama's and Qwen3's

# The switches that make GPT's block (and GPTModel) a Llama 3, SmolLM2 or Qwen3 one
# (docs/gpt2-to-llama.md): optional keys of model.py's config, GPT-2's values as defaults. None
# means "computed from the sizes": hidden_dim 4 * emb_dim, n_kv_heads n_heads, head_dim
# emb_dim // n_heads. A config stores a key only where it differs from its default, so the book's
# configs, and old checkpoints', have none of them.
DECODER_DEFAULTS = {
    "hidden_dim": None,            # feed-forward width H (nn/feedforward.py, nn/swiglu.py)
    "n_kv_heads": None,            # key/value heads: fewer than n_heads is grouped-query attention
    "head_dim": None,              # features per head; Qwen3's exceed emb_dim // n_heads
    "normalization": "layernorm",  # "rmsnorm": Llama's RMSNorm (nn/rmsnorm.py), no shift
    "feed_forward": "gelu",        # "swiglu": Llama's gated feed-forward (nn/swiglu.py)
    "positions": "learned",        # "rope": rotary positions in attention (nn/rope.py), no pos_emb
    "qk_norm": False,              # Qwen3's RMSNorm on every query and key head
    "norm_eps": 1e-5,              # the norms' epsilon (Llama 3: 1e-5, Qwen3: 1e-6)
    "rope_base": 10000.0,          # RoPE's theta base (Llama 3: 500000)
    "rope_scaling": None,          # Llama 3's frequency scaling, {"factor": 32.0, ...} (nn/rope.py)
    "out_bias": True,              # bias in attention's out_proj (False for Llama and Qwen3)
    "ff_bias": True,               # biases in the feed-forward projections (False for Llama and Qwen3)
    "tie_embeddings": False,       # the output head reuses tok_emb.weight (GPT-2, SmolLM2, Llama 3.2 1B)
}


def sized_default(key: str, cfg: Mapping) -> object:
    """The default of a DECODER_DEFAULTS key, the sizes ones computed from cfg."""
    computed = {"hidden_dim": lambda: ff_hidden_dim({"emb_dim": cfg["emb_dim"]}),
                "n_kv_heads": lambda: cfg["n_heads"], "head_dim": lambda: cfg["emb_dim"] // cfg["n_heads"]}
    return computed[key]() if key in computed else DECODER_DEFAULTS[key]


def config_option(cfg: Mapping, key: str) -> object:
    """``cfg[key]`` for a DECODER_DEFAULTS key, or its default when the config leaves it out."""
    return cfg[key] if cfg.get(key) is not None else sized_default(key, cfg)


class TransformerBlock(Module):
    """norm1 -> att -> dropout -> + shortcut, then norm2 -> ff -> dropout -> + shortcut (GPT-2).

    ``TransformerBlock(cfg)`` is the book's block. The switches (see the module docstring):
    ``causal`` (True: GPT), ``pre_norm`` (True: GPT-2; False: BERT's post-LN), ``gelu`` ("tanh":
    GPT-2; "erf": BERT), ``eps`` (the norms'), ``rope`` (a RoPE: Llama's positions), and the
    config's decoder switches (``DECODER_DEFAULTS``). The attention weights' dropout rate is
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
                 eps: float = 1e-5, rope: RoPE | None = None, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.pre_norm = bool(pre_norm)
        emb_dim = cfg["emb_dim"]
        self.att = MultiHeadAttention(d_in=emb_dim, d_out=emb_dim, context_length=cfg["context_length"],
                                      dropout=cfg.get("drop_rate_attn", cfg["drop_rate"]),
                                      num_heads=cfg["n_heads"], qkv_bias=cfg["qkv_bias"], causal=causal,
                                      num_kv_heads=config_option(cfg, "n_kv_heads"),
                                      head_dim=config_option(cfg, "head_dim"),
                                      out_bias=config_option(cfg, "out_bias"), rope=rope,
                                      qk_norm=config_option(cfg, "qk_norm"), norm_eps=eps, rng=rng,
                                      dtype=dtype)
        if config_option(cfg, "feed_forward") == "swiglu":
            self.ff = SwiGLU(emb_dim, ff_hidden_dim(cfg), bias=config_option(cfg, "ff_bias"), rng=rng,
                             dtype=dtype)
        else:
            self.ff = FeedForward(cfg, gelu=gelu, bias=config_option(cfg, "ff_bias"), rng=rng, dtype=dtype)
        norm = NORMS[config_option(cfg, "normalization")]
        self.norm1 = norm(emb_dim, eps=eps, dtype=dtype)
        self.norm2 = norm(emb_dim, eps=eps, dtype=dtype)
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
