"""GPTModel: GPT-2 assembled from the layers, with a hand-written backward (chapter 4).

Forward, as the book's figure 4.15 draws it:

    idx (B, T) token ids
      -> tok_emb(idx) + pos_emb(positions)        (B, T, C)
      -> drop_emb                                 (B, T, C)
      -> trf_blocks: n_layers x TransformerBlock  (B, T, C)
      -> final_norm                               (B, T, C)
      -> out_head                                 (B, T, V) logits

Backward runs the same path in reverse, each layer adding into its parameters' ``.grad``. The token
and position embeddings both received x, so both get the same gradient; there is none for the ids.

Activation memory of a training step (float32, N = B*T tokens, C = emb_dim, H = n_heads): what
forward keeps for backward, and why. Per TransformerBlock:

    norm1, norm2   x_hat (N, C) and rstd (N, 1) each     dx needs the normalised input and 1/std
    att            its input (N, C), shared by W_query/W_key/W_value (one array, three references);
                   q, k, v (B, H, T, hd) = 3 (N, C)      dS K, dS^T q, Pd^T dctx
                   P = softmax (B, H, T, T)              the softmax backward
                   Pd = dropout(P) (B, H, T, T) and its bool mask, only while dropout is active
                   out_proj's input, the merged heads (N, C)
    ff             layers.0 input (N, C); GELU input x and tanh t (N, 4C) each; layers.2 input,
                   GELU's output (N, 4C)
    drop_shortcut, drop_shortcut_ff   a bool mask (N, C) each (a quarter of a float mask)

That is 20 N C floats, 2 N C bytes and 4 or 9 bytes per (B, H, T, T) entry: for GPT_CONFIG_124M at
B=2, T=256, about 46 MB per block, 0.56 GB for the 12 blocks. Outside the blocks: the ids, the
embedding dropout mask, final_norm's x_hat and out_head's input (N, C); the logits (N, V) that
forward returns and the dlogits (N, V) of cross_entropy (103 MB each at N = 512). Parameters,
gradients and AdamW's two moments add 4 x 4 bytes per parameter (2.6 GB for 163M). Frozen parts
below the lowest trainable one keep nothing (see GPTModel), and under ``no_grad()`` nothing is kept.

Parameter count: GPTModel(GPT_CONFIG_124M) has 163,009,536 parameters, because out_head has its own
(768, 50257) matrix, as in the book. GPT-2 "124M" ties the output head to the token embedding
(out_head.weight = tok_emb.weight^T): 163,009,536 - 50257 * 768 = 124,412,160.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import numpy as np

from numpy_gpt.nn.attention import KVCache
from numpy_gpt.nn.block import DECODER_DEFAULTS, NORMS, TransformerBlock, config_option, sized_default
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding
from numpy_gpt.nn.linear import Linear, TiedLinear, skip_init
from numpy_gpt.nn.module import Module, Sequential, is_grad_enabled, no_grad
from numpy_gpt.nn.rope import RoPE, check_rope_scaling
from numpy_gpt.nn.swiglu import SwiGLU

GPT_CONFIG_124M = {
    "vocab_size": 50257,     # BPE vocabulary of GPT-2 (tiktoken "gpt2")
    "context_length": 1024,  # longest sequence; also the number of position embeddings
    "emb_dim": 768,          # C, the width of every token vector
    "n_heads": 12,           # attention heads per block (head size 64)
    "n_layers": 12,          # transformer blocks
    "drop_rate": 0.1,        # dropout probability everywhere
    "qkv_bias": False,       # bias in W_query/W_key/W_value (True for OpenAI's weights)
}
GPT_CONFIG_355M = {**GPT_CONFIG_124M, "emb_dim": 1024, "n_layers": 24, "n_heads": 16}
GPT_CONFIG_774M = {**GPT_CONFIG_124M, "emb_dim": 1280, "n_layers": 36, "n_heads": 20}
GPT_CONFIG_1558M = {**GPT_CONFIG_124M, "emb_dim": 1600, "n_layers": 48, "n_heads": 25}

_INT_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")
OPTIONAL_KEYS = tuple(DECODER_DEFAULTS)
_CHOICES = {"normalization": ("layernorm", "rmsnorm"), "feed_forward": ("gelu", "swiglu"),
            "positions": ("learned", "rope")}
_BOOL_KEYS = ("qk_norm", "out_bias", "ff_bias", "tie_embeddings")

# Three of the models the book's bonus chapters build, as numpy_gpt configs (the sizes of their
# config.json files): GPTModel(LLAMA32_CONFIG_1B) is Llama 3.2 1B's architecture, untrained;
# numpy_gpt.load_hf reads the trained weights from a Hugging Face folder.
_LLAMA = {"drop_rate": 0.0, "qkv_bias": False, "normalization": "rmsnorm", "feed_forward": "swiglu",
          "positions": "rope", "out_bias": False, "ff_bias": False}
LLAMA32_CONFIG_1B = {**_LLAMA, "vocab_size": 128256, "context_length": 131072, "emb_dim": 2048,
                     "n_heads": 32, "n_layers": 16, "hidden_dim": 8192, "n_kv_heads": 8, "norm_eps": 1e-5,
                     "rope_base": 500000.0, "tie_embeddings": True,
                     "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
SMOLLM2_CONFIG_135M = {**_LLAMA, "vocab_size": 49152, "context_length": 8192, "emb_dim": 576, "n_heads": 9,
                       "n_layers": 30, "hidden_dim": 1536, "n_kv_heads": 3, "norm_eps": 1e-5,
                       "rope_base": 100000.0, "tie_embeddings": True}
QWEN3_CONFIG_0_6B = {**_LLAMA, "vocab_size": 151936, "context_length": 40960, "emb_dim": 1024, "n_heads": 16,
                     "n_layers": 28, "hidden_dim": 3072, "n_kv_heads": 8, "head_dim": 128, "qk_norm": True,
                     "norm_eps": 1e-6, "rope_base": 1000000.0, "tie_embeddings": True}


def validate_config(cfg: Mapping) -> dict:
    """Return a checked copy of a GPT config dict, or raise an error that says what is wrong.

    The keys are GPT_CONFIG_124M's, plus the optional ``DECODER_DEFAULTS`` (nn/block.py: the
    feed-forward width ``hidden_dim`` and the switches of Llama and Qwen3). Each is kept only where
    it differs from its default, so a config that states the default equals one that leaves it out."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg must be a dict like GPT_CONFIG_124M, got {type(cfg).__name__}")
    expected = set(GPT_CONFIG_124M)
    missing = sorted(expected - set(cfg))
    unknown = sorted(set(cfg) - expected - set(OPTIONAL_KEYS))
    if missing or unknown:
        raise KeyError(f"GPT config: missing keys {missing}, unknown keys {unknown}; "
                       f"expected exactly {sorted(expected)} (see GPT_CONFIG_124M), "
                       f"plus optional {list(OPTIONAL_KEYS)}")
    sized = [k for k in ("hidden_dim", "n_kv_heads", "head_dim") if cfg.get(k) is not None]
    for key in (*_INT_KEYS, *sized):
        value = cfg[key]
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"GPT config: {key} must be a positive integer, got {value!r}")
    if not isinstance(cfg["drop_rate"], (int, float)) or not 0.0 <= cfg["drop_rate"] < 1.0:
        raise ValueError(f"GPT config: drop_rate must be a number in [0, 1), got {cfg['drop_rate']!r}")
    for key in ("qkv_bias", *(k for k in _BOOL_KEYS if k in cfg)):
        if not isinstance(cfg[key], (bool, np.bool_)):
            raise ValueError(f"GPT config: {key} must be True or False, got {cfg[key]!r}")
    for key, choices in _CHOICES.items():
        if cfg.get(key, choices[0]) not in choices:
            raise ValueError(f"GPT config: {key} must be one of {list(choices)}, got {cfg[key]!r}")
    if cfg.get("head_dim") is None and cfg["emb_dim"] % cfg["n_heads"] != 0:
        raise ValueError(f"GPT config: emb_dim ({cfg['emb_dim']}) must be divisible by n_heads "
                         f"({cfg['n_heads']}), each head gets emb_dim // n_heads features (or give head_dim)")
    if cfg["n_heads"] % config_option(cfg, "n_kv_heads") != 0:
        raise ValueError(f"GPT config: n_heads ({cfg['n_heads']}) must be a multiple of n_kv_heads "
                         f"({cfg['n_kv_heads']}): each key/value head serves a group of query heads")
    for key in ("norm_eps", "rope_base"):
        value = cfg.get(key, DECODER_DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"GPT config: {key} must be a positive number, got {value!r}")
    if config_option(cfg, "positions") == "rope" and config_option(cfg, "head_dim") % 2:
        raise ValueError(f"GPT config: RoPE rotates pairs of features, so head_dim must be even, got "
                         f"{config_option(cfg, 'head_dim')}")
    if cfg.get("rope_scaling") is not None and config_option(cfg, "positions") != "rope":
        raise ValueError("GPT config: rope_scaling is set but positions is not 'rope'")
    checked = {key: cfg[key] for key in GPT_CONFIG_124M}
    for key in OPTIONAL_KEYS:
        value = config_option(cfg, key)
        if key == "rope_scaling":
            value = check_rope_scaling(value, "GPT config: rope_scaling")
        elif key in ("norm_eps", "rope_base"):
            value = float(value)
        elif key in _BOOL_KEYS:
            value = bool(value)
        elif key in sized:
            value = int(value)
        if value != sized_default(key, cfg):
            checked[key] = value
    return checked


class GPTModel(Module):
    """GPT-2: embeddings, ``n_layers`` TransformerBlocks, final LayerNorm, linear output head; and,
    with the config's decoder switches (``DECODER_DEFAULTS``), Llama 3, SmolLM2 and Qwen3.

    ``GPTModel(cfg, seed=None, dtype=np.float32)``. Initialisation (GPT-2 paper, as nanoGPT):
    every Linear weight and both embedding tables N(0, 0.02^2), biases 0, LayerNorm scale 1 and
    shift 0, and the two projections that write into the residual stream in each block
    (``att.out_proj`` and ``ff.layers.2``) scaled down by 1/sqrt(2 * n_layers), so the residual sum
    over 2 * n_layers branches does not grow with depth. ``np.random.SeedSequence(seed)`` gives two
    independent streams: the first draws every weight, directly in the model's dtype (the same seed
    gives the same model), the second seeds ``dropout_rng``. With ``init=False`` the weights are
    zeros (allocated lazily, nothing drawn): for a model whose weights are loaded right after.

    Llama's switches, in the same places (docs/gpt2-to-llama.md): with positions "rope" there is no
    ``pos_emb`` and ``rope``, one RoPE, is shared by every block's attention (a token's
    position is its index, or the KV cache's length plus its index); with normalization "rmsnorm"
    the norms are RMSNorms; with tie_embeddings the output head is a ``TiedLinear`` reusing
    ``tok_emb.weight`` (no ``out_head.weight`` of its own). The residual projections scaled at
    init are then ``att.out_proj`` and ``ff.down``.

    Dropout: every Dropout of the model draws its masks from that one generator, ``dropout_rng``;
    ``set_dropout_seed`` reseeds it in place, and a checkpoint saves its ``bit_generator.state``.

    Backward stops early: it only goes down as far as the lowest part (embeddings, a block,
    final_norm, out_head) that has a trainable parameter. When fine-tuning only the last block and
    the head, the other blocks are never back-propagated through, and forward does not even cache
    their activations. Which parts are frozen is read at forward time: call ``requires_grad_``
    before the forward pass it should apply to.
    """

    def __init__(self, cfg: Mapping, seed: int | None = None, dtype: np.dtype | type = np.float32, *,
                 init: bool = True):
        super().__init__()
        self.cfg = validate_config(cfg)
        self.dtype = model_dtype(dtype, "GPTModel")
        rng, self.dropout_rng = model_generators(seed)

        c = self.cfg
        with contextlib.nullcontext() if init else skip_init():
            self.tok_emb = Embedding(c["vocab_size"], c["emb_dim"], rng=rng, dtype=dtype)
            rope = config_option(c, "positions") == "rope"
            self.pos_emb = None if rope else PositionalEmbedding(c["context_length"], c["emb_dim"], rng=rng,
                                                                 dtype=dtype)
            self.rope = RoPE(config_option(c, "head_dim"), c["context_length"], config_option(c, "rope_base"),
                             config_option(c, "rope_scaling"), dtype=dtype) if rope else None
            self.drop_emb = Dropout(c["drop_rate"])
            eps = config_option(c, "norm_eps")
            self.trf_blocks = Sequential(*[TransformerBlock(c, eps=eps, rope=self.rope, rng=rng, dtype=dtype)
                                           for _ in range(c["n_layers"])])
            self.final_norm = NORMS[config_option(c, "normalization")](c["emb_dim"], eps=eps, dtype=dtype)
            self.out_head = (TiedLinear(self.tok_emb.weight) if config_option(c, "tie_embeddings") else
                             Linear(c["emb_dim"], c["vocab_size"], bias=False, rng=rng, dtype=dtype))

        if init:
            residual_scale = self.dtype.type(1.0 / math.sqrt(2 * c["n_layers"]))
            for block in self.trf_blocks:
                block.att.out_proj.weight.data *= residual_scale
                ff_out = block.ff.down if isinstance(block.ff, SwiGLU) else block.ff.layers[2]
                ff_out.weight.data *= residual_scale
        share_dropout_rng(self)
        self._cache = None

    def set_dropout_seed(self, seed: int) -> None:
        """Reseed the shared dropout generator in place (every Dropout of the model sees it)."""
        self.dropout_rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """An empty KV cache for incremental decoding: one KVCache per TransformerBlock, each with
        room for ``max_len`` positions (default: context_length). Pass it to ``forward``."""
        return [block.att.new_kv_cache(batch_size, max_len) for block in self.trf_blocks]

    # -- forward / backward ------------------------------------------------------------------
    def _check_kv_cache(self, kv_cache: list[KVCache]) -> int:
        """Validate a cache from new_kv_cache; return the number of positions it already holds."""
        n_layers = self.cfg["n_layers"]
        if (not isinstance(kv_cache, (list, tuple)) or len(kv_cache) != n_layers
                or not all(isinstance(layer, KVCache) for layer in kv_cache)):
            raise TypeError(f"kv_cache must be the list of {n_layers} KVCache objects made by "
                            f"model.new_kv_cache(batch_size, max_len)")
        past = kv_cache[0].length
        if any(layer.length != past for layer in kv_cache):
            raise ValueError("the KVCache layers hold different lengths (an earlier forward failed "
                             "halfway?); start a new cache with model.new_kv_cache")
        return past

    @staticmethod
    def _check_kv_room(kv_cache: list[KVCache], idx_shape: tuple[int, int]) -> None:
        cache = kv_cache[0]
        if cache.keys.shape[0] != idx_shape[0]:
            raise ValueError(f"kv_cache was made for batch size {cache.keys.shape[0]}, the input has "
                             f"{idx_shape[0]} rows")
        if cache.length + idx_shape[1] > cache.max_len:
            raise ValueError(f"kv_cache holds {cache.length} of {cache.max_len} positions and has no room "
                             f"for {idx_shape[1]} more; make a larger one with "
                             f"model.new_kv_cache(batch_size, max_len)")

    def _lowest_trainable_part(self) -> int:
        """The lowest part, in forward order, that holds a trainable parameter: 0 = the embeddings,
        1 .. n_layers = trf_blocks[0 .. n_layers-1], n_layers+1 = final_norm, n_layers+2 = out_head;
        n_layers+3 when everything is frozen. Backward never needs to go below it."""
        embeddings = (self.tok_emb,) if self.pos_emb is None else (self.tok_emb, self.pos_emb)
        parts = [embeddings, *[(b,) for b in self.trf_blocks], (self.final_norm,), (self.out_head,)]
        for i, modules in enumerate(parts):
            if any(m.any_trainable() for m in modules):
                return i
        return len(parts)

    def forward(self, idx: np.ndarray, kv_cache: list[KVCache] | None = None) -> np.ndarray:
        """Token ids idx (B, T) -> logits (B, T, vocab_size).

        With ``kv_cache`` (from ``new_kv_cache``), idx holds only the new tokens: their positions
        start at the number of positions already cached, their keys/values are appended, and nothing
        is kept for backward (the pass runs as under ``no_grad``).
        """
        self._cache = None
        if kv_cache is not None:
            past = self._check_kv_cache(kv_cache)
            idx = check_token_ids(idx, self.cfg, "GPTModel", past)
            self._check_kv_room(kv_cache, idx.shape)
            with no_grad():
                return self._forward(idx, past, kv_cache, lowest=0)
        idx = check_token_ids(idx, self.cfg, "GPTModel")
        if not is_grad_enabled():
            return self._forward(idx, 0, None, lowest=0)
        lowest = self._lowest_trainable_part()
        logits = self._forward(idx, 0, None, lowest)
        self._cache = (lowest, logits.shape)
        return logits

    def _forward(self, idx: np.ndarray, past: int, kv_cache: list[KVCache] | None,
                 lowest: int) -> np.ndarray:
        """The layers in order; parts below ``lowest`` run under no_grad (they cache nothing)."""
        def grads_for(part: int):
            return no_grad() if part < lowest else contextlib.nullcontext()

        with grads_for(0):
            x = self.tok_emb(idx)                                     # (B, T, C)
            t = idx.shape[1]
            positions = t if past == 0 else np.arange(past, past + t)   # 0..T-1, or after the cache
            if self.pos_emb is not None:                              # GPT-2; RoPE acts in attention
                x += self.pos_emb(positions)                          # (T, C) broadcast over B
            x = self.drop_emb(x)
        for i, block in enumerate(self.trf_blocks):
            with grads_for(i + 1):
                x = block(x, None if kv_cache is None else kv_cache[i])   # (B, T, C)
        n = self.cfg["n_layers"]
        with grads_for(n + 1):
            x = self.final_norm(x)
        with grads_for(n + 2):
            return self.out_head(x)                                   # (B, T, V)

    def backward(self, dlogits: np.ndarray) -> None:
        """dlogits (B, T, V) = dLoss/dlogits, e.g. from cross_entropy. Adds into every trainable
        parameter's .grad; returns None (integer ids have no gradient).

        Each layer's backward maps the gradient of its output to that of its input. The embedding
        sum x = tok_emb(idx) + pos_emb(positions) passes the same dx to both tables: tok_emb
        scatter-adds it into the rows of the ids, pos_emb sums it over the batch. The walk stops
        below the lowest part with a trainable parameter (see the class docstring).
        """
        if self._cache is None:
            raise RuntimeError("GPTModel.backward called without a forward pass to go back through: "
                               "run model(idx) first, with gradients enabled (not inside "
                               "numpy_gpt.no_grad(), and without a kv_cache)")
        lowest, logits_shape = self._cache
        if not isinstance(dlogits, np.ndarray) or dlogits.shape != logits_shape:
            got = dlogits.shape if isinstance(dlogits, np.ndarray) else type(dlogits).__name__
            raise ValueError(f"dlogits must have the logits' shape {logits_shape}, got {got}")
        self._cache = None
        # A float64 gradient from user code would make every activation gradient float64.
        dlogits = dlogits.astype(self.dtype, copy=False)
        blocks = list(self.trf_blocks)
        n = len(blocks)
        if lowest > n + 2:
            return None
        dx = self.out_head.backward(dlogits)                          # (B, T, C)
        if lowest > n + 1:
            return None
        dx = self.final_norm.backward(dx)
        for i in reversed(range(n)):
            if lowest > i + 1:
                return None
            dx = blocks[i].backward(dx)                               # (B, T, C)
        if lowest > 0:
            return None
        dx = self.drop_emb.backward(dx)
        self.tok_emb.backward(dx)
        if self.pos_emb is not None:
            self.pos_emb.backward(dx)
        return None


# -- what every model does around its layers: GPTModel above, EncoderModel (encoder.py) too --------------
def model_generators(seed: int | None) -> tuple[np.random.Generator, np.random.Generator]:
    """(weights, dropout): two independent generators from one seed,
    ``np.random.SeedSequence(seed).spawn(2)``. The first draws every weight, in the order the
    layers are built (the same seed gives the same model); the second is the model's
    ``dropout_rng``, which every Dropout of the model draws its masks from (``share_dropout_rng``)."""
    weights_seed, dropout_seed = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(weights_seed), np.random.default_rng(dropout_seed)


def model_dtype(dtype: np.dtype | type, model_name: str) -> np.dtype:
    """The model's dtype, checked: float32 (training) or float64 (the gradchecks)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"{model_name} dtype must be float32 or float64, got {dtype}")
    return dtype


def share_dropout_rng(model: Module) -> None:
    """Point every Dropout of ``model`` at ``model.dropout_rng``: one generator for the whole model,
    so one seed reproduces a run and a checkpoint saves one ``bit_generator.state``."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.rng = model.dropout_rng


def check_token_ids(idx: np.ndarray, cfg: Mapping, model_name: str, past: int = 0) -> np.ndarray:
    """``idx`` as a non-empty (batch, tokens) integer array that fits the context after ``past``
    cached positions and the vocabulary, or a ValueError/TypeError that says how to fix it."""
    if not isinstance(idx, np.ndarray):
        idx = np.asarray(idx)
    if not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"{model_name} expects integer token ids, got dtype {idx.dtype}; "
                        f"convert with idx.astype(np.int64)")
    if idx.ndim == 1:
        raise ValueError(f"{model_name} expects token ids of shape (batch, tokens), got a 1-D array of "
                         f"shape {idx.shape}; add a batch axis with idx[None]")
    if idx.ndim != 2 or idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"{model_name} expects a non-empty (batch, tokens) array of ids, got shape "
                         f"{idx.shape}")
    context_length, vocab_size = cfg["context_length"], cfg["vocab_size"]
    if past and past + idx.shape[1] > context_length:
        raise ValueError(f"the KV cache holds {past} positions and {idx.shape[1]} more tokens would "
                         f"exceed context_length={context_length}; positions are absolute, so a full "
                         f"cache cannot slide: start a new cache and feed the last tokens again")
    if idx.shape[1] > context_length:
        raise ValueError(f"{idx.shape[1]} tokens exceed context_length={context_length}; crop the "
                         f"input to its last {context_length} tokens (idx[:, -{context_length}:])")
    low, high = idx.min(), idx.max()
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"token id {bad} is outside the vocabulary [0, {vocab_size}); was the text "
                         f"encoded with a tokenizer of a different vocabulary size?")
    return idx
