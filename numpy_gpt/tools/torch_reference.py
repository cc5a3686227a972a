"""An independent PyTorch GPT-2, the yardstick for numpy_gpt's hand-written gradients and speed.

This is the book's chapter-4 ``GPTModel`` written plainly with ``torch.nn`` and autograd: nothing is
shared with the NumPy code except the architecture and the parameter names. The parity tests copy a
numpy_gpt state dict into it and compare logits, losses and every gradient; the benchmark script
times its training step against ours.

torch is an optional dependency (the ``test`` extra): nothing in numpy_gpt imports this module, and
importing it without torch installed raises an ImportError saying how to install it.

Two forms of the same model, with the same parameters (``GPTModel(cfg, builtin_kernels=...)``):

* the book's (default): LayerNorm, GELU and the attention softmax written out of elementwise torch
  operations, as chapters 3-4 write them. Autograd then records and replays each of them;
* ``builtin_kernels=True``: ``F.layer_norm``, ``F.gelu(approximate="tanh")`` and
  ``F.scaled_dot_product_attention``, the fused kernels a PyTorch user would call (nanoGPT does).
  Same maths, so the same logits and gradients up to float rounding, and much less time on a small
  model. ``numpy-gpt bench`` times numpy_gpt against both.

Layout difference: numpy_gpt stores a Linear weight as (in, out) (``y = x @ W``), ``nn.Linear`` as
(out, in) (``y = x @ W.T``), so Linear weights are transposed when copying, and their gradients when
reading back. Embedding tables and LayerNorm vectors have the same layout in both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("numpy_gpt.tools.torch_reference needs PyTorch, an optional test/benchmark dependency: "
                      "install it with `pip install numpy_gpt[test]` (or `pip install torch`)") from exc


class LayerNorm(nn.Module):
    """Normalise over the last dim with the biased variance, then scale and shift (book, ch. 4)."""

    def __init__(self, emb_dim: int, eps: float = 1e-5, builtin_kernels: bool = False):
        super().__init__()
        self.eps = eps
        self.builtin_kernels = builtin_kernels
        self.scale = nn.Parameter(torch.ones(emb_dim))
        self.shift = nn.Parameter(torch.zeros(emb_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.builtin_kernels:
            return F.layer_norm(x, self.scale.shape, self.scale, self.shift, self.eps)
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class GELU(nn.Module):
    """The tanh approximation of GELU used by GPT-2."""

    def __init__(self, builtin_kernels: bool = False):
        super().__init__()
        self.builtin_kernels = builtin_kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.builtin_kernels:
            return F.gelu(x, approximate="tanh")
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


class FeedForward(nn.Module):
    def __init__(self, cfg: Mapping, builtin_kernels: bool = False):
        super().__init__()
        c = cfg["emb_dim"]
        h = cfg.get("hidden_dim", 4 * c)                  # the feed-forward width (GPT-2: 4C)
        self.layers = nn.Sequential(nn.Linear(c, h), GELU(builtin_kernels), nn.Linear(h, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MultiHeadAttention(nn.Module):
    """Causal multi-head self-attention with a boolean upper-triangular mask (book, ch. 3)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False, builtin_kernels: bool = False):
        super().__init__()
        assert d_out % num_heads == 0, "d_out must be divisible by num_heads"
        self.builtin_kernels = builtin_kernels
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1),
            persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        # (B, T, d_out) -> (B, H, T, hd)
        queries = self.W_query(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        keys = self.W_key(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        values = self.W_value(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        if self.builtin_kernels:            # the same scale, mask, softmax, dropout and mix, fused
            context = F.scaled_dot_product_attention(queries, keys, values, is_causal=True,
                                                     dropout_p=self.dropout.p if self.training else 0.0)
            return self.out_proj(context.transpose(1, 2).reshape(b, t, self.d_out))
        attn_scores = queries @ keys.transpose(2, 3)                       # (B, H, T, T)
        attn_scores = attn_scores.masked_fill(self.mask[:t, :t], -torch.inf)
        attn_weights = torch.softmax(attn_scores / self.head_dim ** 0.5, dim=-1)
        attn_weights = self.dropout(attn_weights)
        context = (attn_weights @ values).transpose(1, 2).reshape(b, t, self.d_out)
        return self.out_proj(context)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + drop(att(norm1(x))), then + drop(ff(norm2(x)))."""

    def __init__(self, cfg: Mapping, builtin_kernels: bool = False):
        super().__init__()
        self.att = MultiHeadAttention(cfg["emb_dim"], cfg["emb_dim"], cfg["context_length"],
                                      cfg["drop_rate"], cfg["n_heads"], cfg["qkv_bias"], builtin_kernels)
        self.ff = FeedForward(cfg, builtin_kernels)
        self.norm1 = LayerNorm(cfg["emb_dim"], builtin_kernels=builtin_kernels)
        self.norm2 = LayerNorm(cfg["emb_dim"], builtin_kernels=builtin_kernels)
        self.drop_shortcut = nn.Dropout(cfg["drop_rate"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class GPTModel(nn.Module):
    """Token + position embeddings, n_layers TransformerBlocks, final LayerNorm, untied output head.
    ``builtin_kernels``: torch's fused LayerNorm, GELU and attention instead of the book's (module
    docstring)."""

    def __init__(self, cfg: Mapping, builtin_kernels: bool = False):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg, builtin_kernels)
                                          for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"], builtin_kernels=builtin_kernels)
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        _, t = in_idx.shape
        x = self.tok_emb(in_idx) + self.pos_emb(torch.arange(t, device=in_idx.device))
        x = self.drop_emb(x)
        x = self.trf_blocks(x)
        return self.out_head(self.final_norm(x))


def _linear_weight_names(model: nn.Module) -> set[str]:
    """Names of the parameters stored (out, in) in torch and (in, out) in numpy_gpt."""
    return {f"{name}.weight" if name else "weight" for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear)}


def load_numpy_state_dict(model: nn.Module, state: Mapping[str, np.ndarray]) -> nn.Module:
    """Copy a numpy_gpt state dict ({name: ndarray}) into a torch model with the same names.

    Linear weights are transposed from (in, out) to (out, in); values are cast to each torch
    parameter's dtype. Every parameter must be present and shapes must match, else a clear error.
    """
    params = dict(model.named_parameters())
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise KeyError(f"state dict does not match the torch model: missing {missing[:10]}, "
                       f"unexpected {unexpected[:10]}")
    transposed = _linear_weight_names(model)
    with torch.no_grad():
        for name, p in params.items():
            source = torch.from_numpy(np.asarray(state[name]))
            if name in transposed:
                source = source.T                                 # a strided view; copy_ reads it
            if tuple(source.shape) != tuple(p.shape):
                raise ValueError(f"{name}: numpy shape {tuple(source.shape)} (after layout change) does "
                                 f"not match torch shape {tuple(p.shape)}")
            p.copy_(source)
    return model


def numpy_grads(model: nn.Module) -> dict[str, np.ndarray]:
    """{name: gradient in numpy_gpt's layout} for every parameter with a gradient. The arrays
    share memory with the torch gradients (Linear ones are transposed views): copy to keep them."""
    transposed = _linear_weight_names(model)
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            g = p.grad.detach().cpu().numpy()
            grads[name] = g.T if name in transposed else g
    return grads


def forward_backward(fn, x: np.ndarray, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Autograd's answer for one layer: y = fn(x) and dL/dx for the upstream gradient ``dout``,
    both as NumPy arrays, where ``fn`` maps a torch tensor to a torch tensor (a module, a function)."""
    tx = torch.from_numpy(x).requires_grad_()
    ty = fn(tx)
    ty.backward(torch.from_numpy(dout))
    return ty.detach().numpy(), tx.grad.numpy()


def torch_gpt_from_numpy(numpy_model, dtype: torch.dtype = torch.float32,
                         builtin_kernels: bool = False) -> GPTModel:
    """A torch GPTModel with numpy_model's config and weights (``numpy_model.cfg``, ``.state_dict()``),
    in the book's form or with torch's fused kernels (``builtin_kernels``, module docstring).

    The model is built on the "meta" device (shapes only) and then given uninitialised CPU memory,
    which the copy fills: torch's own random initialisation of 163M parameters would be wasted.
    """
    with torch.device("meta"):
        model = GPTModel(numpy_model.cfg, builtin_kernels)
    model = model.to_empty(device="cpu").to(dtype)
    model.trf_blocks.apply(_rebuild_mask)
    return load_numpy_state_dict(model, numpy_model.state_dict())


def _rebuild_mask(module: nn.Module) -> None:
    """Buffers are not in the state dict, so after ``to_empty`` the causal masks hold garbage."""
    if isinstance(module, MultiHeadAttention):
        n = module.mask.shape[0]
        module.mask = torch.triu(torch.ones(n, n, dtype=torch.bool), diagonal=1)
