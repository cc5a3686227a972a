"""EncoderModel: the other half of the transformer, a BERT-style encoder built from GPT's layers.

The book builds GPT, a decoder: it reads left to right and predicts the next token. BERT (Devlin et
al., 2018) keeps the same blocks and changes four things, each a few lines below:

1. attention is bidirectional: ``MultiHeadAttention(..., causal=False)`` (EncoderBlock), plus a
   padding mask so a padded batch equals its sentences run one by one;
2. a third embedding, the token type (segment A or B of a sentence pair), and a LayerNorm right
   after the embedding sum (``EncoderModel.encode``);
3. the original BERT normalises after each residual sum (post-LN, ``norm="post"``) where GPT-2
   normalises the branch input (pre-LN, ``norm="pre"``); BERT's GELU is the exact one, with erf;
4. the output is not a next-token head but a masked-language-model head that fills in blanks
   (``MLMHead``: dense -> GELU -> LayerNorm -> the token embedding again, with its own bias), and
   classification reads the [CLS] token through a pooler, or the mean of the tokens
   (``EncoderClassifier``).

Forward, as transformers' ``BertForMaskedLM`` computes it:

    idx, token_type_ids, attention_mask (B, T)
      -> emb_norm(tok_emb(idx) + pos_emb(0..T-1) + type_emb(token_type_ids))   (B, T, C)
      -> drop_emb
      -> blocks: n_layers x EncoderBlock, each attending over all real tokens    (B, T, C)
      -> final_norm (pre-LN only: post-LN blocks end normalised)                 (B, T, C)
      -> mlm_head                                                                 (B, T, V) logits

Masked-language-model pretraining (numpy_gpt/mlm.py) and the WordPiece tokenizer
(numpy_gpt/tokenizers/wordpiece.py) complete the picture; ``load_bert`` (numpy_gpt/gpt2/bert.py)
reads Hugging Face's BERT checkpoints into this class. docs/encoder.md maps each difference from
GPT to its line of code.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import numpy as np

from numpy_gpt.checkpoint import block_parameter_shapes
from numpy_gpt.fast import map_chunks
from numpy_gpt.model import validate_config
from numpy_gpt.nn.attention import MultiHeadAttention
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding
from numpy_gpt.nn.feedforward import FeedForward
from numpy_gpt.nn.gelu import GELU
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.linear import Linear, skip_init
from numpy_gpt.nn.module import Module, Parameter, Sequential, no_grad
from numpy_gpt.nn.softmax import softmax

# The keys GPT's config has, plus four. bert-base-uncased is this config with vocab_size 30522.
BERT_CONFIG_BASE = {
    "vocab_size": 30522,       # WordPiece vocabulary of bert-base-uncased
    "context_length": 512,     # max_position_embeddings
    "emb_dim": 768,            # hidden_size
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,
    "qkv_bias": True,          # BERT's query/key/value projections have biases
    "type_vocab_size": 2,      # segments A and B
    "norm": "post",            # "post": LayerNorm after each residual sum (BERT); "pre": GPT-2's
    "gelu": "erf",             # "erf": exact GELU (BERT); "tanh": GPT-2's approximation
    "ln_eps": 1e-12,           # BERT's LayerNorm epsilon (GPT-2: 1e-5)
}
ENCODER_DEFAULTS = {"type_vocab_size": 2, "norm": "post", "gelu": "erf", "ln_eps": 1e-12}


def validate_encoder_config(cfg: Mapping) -> dict:
    """A checked copy of an encoder config: GPT's keys (checked as GPT's) plus ``type_vocab_size``,
    ``norm`` ("pre" | "post"), ``gelu`` ("tanh" | "erf") and ``ln_eps``, which default to BERT's."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg must be a dict like BERT_CONFIG_BASE, got {type(cfg).__name__}")
    gpt_keys = {k: v for k, v in cfg.items() if k not in ENCODER_DEFAULTS}
    try:
        checked = validate_config(gpt_keys)
    except (KeyError, ValueError) as err:
        raise type(err)(str(err).replace("GPT config", "encoder config")
                        .strip("'\"") + f"; plus optional {sorted(ENCODER_DEFAULTS)}") from None
    extra = {**ENCODER_DEFAULTS, **{k: cfg[k] for k in ENCODER_DEFAULTS if k in cfg}}
    types = extra["type_vocab_size"]
    if not isinstance(types, (int, np.integer)) or isinstance(types, bool) or types < 1:
        raise ValueError(f"encoder config: type_vocab_size must be a positive integer, got {types!r}")
    if extra["norm"] not in ("pre", "post"):
        raise ValueError(f"encoder config: norm must be 'pre' or 'post', got {extra['norm']!r}")
    if extra["gelu"] not in ("tanh", "erf"):
        raise ValueError(f"encoder config: gelu must be 'tanh' or 'erf', got {extra['gelu']!r}")
    eps = extra["ln_eps"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"encoder config: ln_eps must be a small positive number, got {eps!r}")
    return {**checked, **extra, "ln_eps": float(eps)}


# -- GELU with erf ---------------------------------------------------------------------------------
# Abramowitz & Stegun, Handbook of Mathematical Functions, formula 7.1.26: for x >= 0,
#   erf(x) = 1 - (a1 t + a2 t^2 + a3 t^3 + a4 t^4 + a5 t^5) exp(-x^2) + e(x),  t = 1 / (1 + p x),
# with |e(x)| <= 1.5e-7 (measured here: 1.4e-7 in float64, 5.3e-7 when evaluated in float32).
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_exact_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in x's dtype.

    float32 (training): Abramowitz-Stegun 7.1.26 above, a dozen vectorised passes, within 5.3e-7
    of the true erf (a few float32 roundings of a value near 1), which is float32's own resolution.
    float64 (the gradchecks): ``math.erf`` per element, exact to the last bit but a Python call per
    element; the float64 check then proves the derivative below, not the approximation's wiggles
    (whose slope errors, ~1e-6, would exceed the checker's 1e-6 tolerance).
    """
    if x.dtype == np.float64:
        return _exact_erf(x).astype(np.float64)
    a = np.abs(x)
    t = 1.0 / (1.0 + _AS_P * a)
    a1, a2, a3, a4, a5 = _AS_A
    poly = t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))        # Horner's rule
    return np.copysign(1.0 - poly * np.exp(-a * a), x)


def gelu_erf(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y = x * Phi(x) with Phi(x) = (1 + erf(x / sqrt 2)) / 2 the standard normal CDF; also Phi."""
    cdf = 0.5 * (1.0 + erf(x * SQRT_HALF))
    return x * cdf, cdf


def gelu_erf_backward(x: np.ndarray, cdf: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """dL/dx = dy * (Phi(x) + x phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    return dy * (cdf + x * INV_SQRT_2PI * np.exp(-0.5 * x * x))


class ErfGELU(Module):
    """The exact GELU of the GELU paper and of BERT: y = x * Phi(x), elementwise on any shape.

    Derivative by the product rule, with Phi' = phi the normal density:
        dy/dx = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
    GPT-2's ``GELU`` replaces Phi(x) by (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) / 2; the two
    differ by less than 1e-3. Caches x and Phi(x).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x2d = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)    # (N, C) rows for the chunks
        y, cdf = map_chunks(gelu_erf, x2d)                                  # y, cdf = gelu_erf(x2d)
        if self._need_cache():
            self._cache = (x2d, cdf)
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x2d, cdf = self._pop_cache()
        return map_chunks(gelu_erf_backward, x2d, cdf, dy.reshape(x2d.shape)).reshape(dy.shape)


def _activation(cfg: Mapping) -> Module:
    return ErfGELU() if cfg["gelu"] == "erf" else GELU()


class Tanh(Module):
    """y = tanh(x), dy/dx = 1 - y^2 (BERT's pooler activation). Caches y."""

    def __init__(self) -> None:
        super().__init__()
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        y = np.tanh(x)
        if self._need_cache():
            self._cache = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        y = self._pop_cache()
        return dy * (1.0 - y * y)


# -- the encoder block -----------------------------------------------------------------------------
class EncoderBlock(Module):
    """GPT's TransformerBlock with bidirectional attention, in BERT's post-LN or GPT-2's pre-LN form.

        post-LN (BERT):   x = norm1(x + drop(att(x)));        x = norm2(x + drop(ff(x)))
        pre-LN  (GPT-2):  x = x + drop(att(norm1(x)));        x = x + drop(ff(norm2(x)))

    Children and their names are the TransformerBlock's (att, ff.layers.0/1/2, norm1, norm2,
    drop_shortcut, drop_shortcut_ff); ``att`` has ``causal=False`` and ``ff``'s GELU is ``ErfGELU``
    when ``cfg["gelu"] == "erf"``.

    Backward, post-LN: y = norm(x + f(x)) gives dz = norm.backward(dy) for z = x + f(x), then
    dx = dz + f'(x)^T dz (the shortcut and the branch add). Pre-LN: see TransformerBlock.
    """

    def __init__(self, cfg: Mapping, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.post_ln = cfg["norm"] == "post"
        self.att = MultiHeadAttention(d_in=cfg["emb_dim"], d_out=cfg["emb_dim"],
                                      context_length=cfg["context_length"], dropout=cfg["drop_rate"],
                                      num_heads=cfg["n_heads"], qkv_bias=cfg["qkv_bias"], causal=False,
                                      rng=rng, dtype=dtype)
        self.ff = FeedForward(cfg, rng=rng, dtype=dtype)
        if cfg["gelu"] == "erf":
            self.ff.layers = Sequential(self.ff.layers[0], ErfGELU(), self.ff.layers[2])
        self.norm1 = LayerNorm(cfg["emb_dim"], eps=cfg["ln_eps"], dtype=dtype)
        self.norm2 = LayerNorm(cfg["emb_dim"], eps=cfg["ln_eps"], dtype=dtype)
        self.drop_shortcut = Dropout(cfg["drop_rate"])
        self.drop_shortcut_ff = Dropout(cfg["drop_rate"])

    def forward(self, x: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        """x (B, T, C) -> (B, T, C); attention_mask (B, T): 1 real token, 0 padding."""
        if self.post_ln:
            x = self.norm1(x + self.drop_shortcut(self.att(x, None, attention_mask)))
            return self.norm2(x + self.drop_shortcut_ff(self.ff(x)))
        x = x + self.drop_shortcut(self.att(self.norm1(x), None, attention_mask))
        return x + self.drop_shortcut_ff(self.ff(self.norm2(x)))

    def backward(self, dout: np.ndarray) -> np.ndarray:
        if self.post_ln:
            dz = self.norm2.backward(dout)                                    # z = x1 + drop(ff(x1))
            dx1 = dz + self.ff.backward(self.drop_shortcut_ff.backward(dz))
            dz = self.norm1.backward(dx1)                                     # z = x + drop(att(x))
            return dz + self.att.backward(self.drop_shortcut.backward(dz))
        dx1 = dout + self.norm2.backward(self.ff.backward(self.drop_shortcut_ff.backward(dout)))
        return dx1 + self.norm1.backward(self.att.backward(self.drop_shortcut.backward(dx1)))


# -- the masked-language-model head ----------------------------------------------------------------
class MLMHead(Module):
    """BERT's ``cls.predictions``: h (B, T, C) -> logits (B, T, V) over the vocabulary.

        z = norm(gelu(h W_d + b_d))             (B, T, C)   dense, GELU, LayerNorm ("transform")
        logits = z E^T + bias                   (B, T, V)   E = tok_emb.weight (V, C), tied

    The decoder reuses the token embedding E (weight tying) and has its own bias (V,). E is the
    same Parameter as ``tok_emb.weight``: it is listed once in ``named_parameters`` and its gradient
    is the sum of both uses, this head's dE = dlogits^T z (V, C) and the embedding's scatter-add
    (each ``add_grad``: the first stores, the second adds). Caches z (N, C).
    """

    def __init__(self, cfg: Mapping, embedding: Parameter, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.dense = Linear(cfg["emb_dim"], cfg["emb_dim"], rng=rng, dtype=dtype)
        self.act = _activation(cfg)
        self.norm = LayerNorm(cfg["emb_dim"], eps=cfg["ln_eps"], dtype=dtype)
        self.decoder_weight = embedding                                  # tied: tok_emb.weight (V, C)
        self.bias = Parameter(np.zeros(cfg["vocab_size"], dtype=dtype))
        self._cache = None

    def forward(self, h: np.ndarray) -> np.ndarray:
        z = self.norm(self.act(self.dense(h)))                           # (B, T, C)
        z2d = z.reshape(-1, z.shape[-1])                                 # (N, C)
        logits = z2d @ self.decoder_weight.data.T                        # (N, C) @ (C, V)
        logits += self.bias.data
        if self._need_cache():
            self._cache = z2d
        return logits.reshape(*h.shape[:-1], -1)

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """dE += dlogits^T z (V, C); dbias = sum of dlogits over tokens; dz = dlogits E (N, C)."""
        z2d = self._pop_cache()
        d2d = dlogits.reshape(z2d.shape[0], -1)                          # (N, V)
        if self.decoder_weight.trainable:
            self.decoder_weight.add_grad(d2d.T @ z2d)                    # (V, N) @ (N, C)
        if self.bias.trainable:
            self.bias.add_grad(d2d.sum(axis=0))
        dz = (d2d @ self.decoder_weight.data).reshape(*dlogits.shape[:-1], -1)   # (B, T, C)
        return self.dense.backward(self.act.backward(self.norm.backward(dz)))


# -- the model -------------------------------------------------------------------------------------
class EncoderModel(Module):
    """A BERT-style encoder with its masked-language-model head (``transformers.BertForMaskedLM``).

    ``EncoderModel(cfg, seed=None, dtype=np.float32, *, init=True, mlm_head=True)``: cfg is GPT's
    config plus ``type_vocab_size``, ``norm``, ``gelu`` and ``ln_eps`` (see BERT_CONFIG_BASE; kept as
    ``self.config``, like transformers' ``model.config``: numpy_gpt's ``.cfg`` means a GPT config to
    the checkpoint code). Every weight N(0, 0.02^2) as BERT initialises, biases 0, LayerNorms 1/0.
    ``mlm_head=False`` builds the encoder alone (for ``EncoderClassifier``).

    ``forward(idx, token_type_ids=None, attention_mask=None)`` -> MLM logits (B, T, V);
    ``backward(dlogits)`` adds into every parameter's grad. ``encode`` / ``encode_backward`` are the
    same without the head: hidden states (B, T, C) for classifiers. token_type_ids default to 0
    (one segment), attention_mask to all ones (no padding).
    """

    def __init__(self, cfg: Mapping, seed: int | None = None, dtype: np.dtype | type = np.float32, *,
                 init: bool = True, mlm_head: bool = True):
        super().__init__()
        self.config = validate_encoder_config(cfg)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"EncoderModel dtype must be float32 or float64, got {self.dtype}")
        weights_seed, dropout_seed = np.random.SeedSequence(seed).spawn(2)
        rng = np.random.default_rng(weights_seed)
        self.dropout_rng = np.random.default_rng(dropout_seed)
        c = self.config
        with contextlib.nullcontext() if init else skip_init():
            self.tok_emb = Embedding(c["vocab_size"], c["emb_dim"], rng=rng, dtype=dtype)
            self.pos_emb = PositionalEmbedding(c["context_length"], c["emb_dim"], rng=rng, dtype=dtype)
            self.type_emb = Embedding(c["type_vocab_size"], c["emb_dim"], rng=rng, dtype=dtype)
            self.emb_norm = LayerNorm(c["emb_dim"], eps=c["ln_eps"], dtype=dtype)
            self.drop_emb = Dropout(c["drop_rate"])
            self.blocks = Sequential(*[EncoderBlock(c, rng=rng, dtype=dtype) for _ in range(c["n_layers"])])
            self.final_norm = LayerNorm(c["emb_dim"], eps=c["ln_eps"], dtype=dtype) if c["norm"] == "pre" \
                else None
            self.mlm_head = MLMHead(c, self.tok_emb.weight, rng=rng, dtype=dtype) if mlm_head else None
        for module in self.modules():
            if isinstance(module, Dropout):
                module.rng = self.dropout_rng
        self._cache = None

    def _check_inputs(self, idx, token_type_ids, attention_mask):
        idx = np.asarray(idx)
        if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 2 or 0 in idx.shape:
            raise ValueError(f"EncoderModel expects a non-empty (batch, tokens) array of integer ids, got "
                             f"{idx.dtype} {idx.shape}")
        if idx.shape[1] > self.config["context_length"]:
            raise ValueError(f"{idx.shape[1]} tokens exceed context_length={self.config['context_length']}; "
                             f"truncate the input")
        if token_type_ids is None:
            token_type_ids = np.zeros(idx.shape, dtype=np.int64)
        token_type_ids = np.asarray(token_type_ids)
        if token_type_ids.shape != idx.shape:
            raise ValueError(f"token_type_ids must have the ids' shape {idx.shape}, "
                             f"got {token_type_ids.shape}")
        if attention_mask is not None and np.shape(attention_mask) != idx.shape:
            raise ValueError(f"attention_mask must have the ids' shape {idx.shape}, "
                             f"got {np.shape(attention_mask)}")
        return idx, token_type_ids

    def encode(self, idx: np.ndarray, token_type_ids: np.ndarray | None = None,
               attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Token ids (B, T) -> the last layer's hidden states (B, T, C)."""
        idx, token_type_ids = self._check_inputs(idx, token_type_ids, attention_mask)
        x = self.tok_emb(idx)                                            # (B, T, C)
        x += self.pos_emb(idx.shape[1])                                  # (T, C) broadcast over B
        x += self.type_emb(token_type_ids)                               # (B, T, C) segment A or B
        x = self.drop_emb(self.emb_norm(x))                              # BERT normalises the sum
        for block in self.blocks:
            x = block(x, attention_mask)                                 # (B, T, C), all tokens see all
        if self.final_norm is not None:
            x = self.final_norm(x)
        self._cache = x.shape if self._need_cache() else None
        return x

    def encode_backward(self, dh: np.ndarray) -> None:
        """dh (B, T, C) = dLoss/dhidden -> adds into every parameter of the encoder; returns None.
        The embedding sum passes the same gradient to the three tables."""
        shape = self._pop_cache()
        if dh.shape != shape:
            raise ValueError(f"the gradient must have the hidden states' shape {shape}, got {dh.shape}")
        dx = dh.astype(self.dtype, copy=False)
        if self.final_norm is not None:
            dx = self.final_norm.backward(dx)
        for block in reversed(list(self.blocks)):
            dx = block.backward(dx)
        dx = self.emb_norm.backward(self.drop_emb.backward(dx))
        self.tok_emb.backward(dx)
        self.pos_emb.backward(dx)
        self.type_emb.backward(dx)

    def forward(self, idx: np.ndarray, token_type_ids: np.ndarray | None = None,
                attention_mask: np.ndarray | None = None) -> np.ndarray:
        """Token ids (B, T) -> masked-language-model logits (B, T, V)."""
        if self.mlm_head is None:
            raise ValueError("this EncoderModel was built with mlm_head=False: use encode()")
        return self.mlm_head(self.encode(idx, token_type_ids, attention_mask))

    def backward(self, dlogits: np.ndarray) -> None:
        """dlogits (B, T, V), e.g. from cross_entropy with ignore_index at the unmasked positions."""
        self.encode_backward(self.mlm_head.backward(dlogits.astype(self.dtype, copy=False)))

    def extra_repr(self) -> str:
        return f"norm={self.config['norm']!r}, gelu={self.config['gelu']!r}"


def encoder_parameter_shapes(cfg: Mapping, mlm_head: bool = True) -> dict[str, tuple[int, ...]]:
    """{state-dict name: shape} of ``EncoderModel(cfg)``, computed without building it (to check a
    checkpoint before allocating anything)."""
    c = validate_encoder_config(cfg)
    V, T, C = c["vocab_size"], c["context_length"], c["emb_dim"]     # noqa: N806 (the math's names)
    shapes: dict[str, tuple[int, ...]] = {
        "tok_emb.weight": (V, C), "pos_emb.weight": (T, C), "type_emb.weight": (c["type_vocab_size"], C),
        "emb_norm.scale": (C,), "emb_norm.shift": (C,)}
    for i in range(c["n_layers"]):
        block = f"blocks.{i}."
        shapes.update(block_parameter_shapes(block, C, c["qkv_bias"]))
    if c["norm"] == "pre":
        shapes.update({"final_norm.scale": (C,), "final_norm.shift": (C,)})
    if mlm_head:
        shapes.update({"mlm_head.dense.weight": (C, C), "mlm_head.dense.bias": (C,),
                       "mlm_head.norm.scale": (C,), "mlm_head.norm.shift": (C,), "mlm_head.bias": (V,)})
    return shapes


# -- classification ----------------------------------------------------------------------------------
class EncoderClassifier(Module):
    """An encoder with a classification head (``transformers.BertForSequenceClassification``).

    ``pooling="cls"`` (BERT): the hidden state of the first token, [CLS], goes through the pooler,
    tanh(h_0 W_p + b_p), then dropout and ``classifier`` (C -> num_classes). ``pooling="mean"``:
    the mean of the hidden states of the real tokens (attention_mask 1), then dropout and
    ``classifier``; no pooler. forward(idx, token_type_ids=None, attention_mask=None) -> logits
    (B, num_classes); backward(dlogits).

    Backward of the pooling: [CLS] puts the pooled gradient on position 0 and zeros elsewhere;
    the masked mean m = sum_t mask_t h_t / n gives dh_t = mask_t dm / n.
    """

    def __init__(self, cfg: Mapping, num_classes: int, pooling: str = "cls", seed: int | None = None,
                 dtype: np.dtype | type = np.float32, *, init: bool = True):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.pooling = pooling
        self.num_classes = int(num_classes)
        self.encoder = EncoderModel(cfg, seed=seed, dtype=dtype, init=init, mlm_head=False)
        self.config = self.encoder.config
        self.dtype = self.encoder.dtype
        self.dropout_rng = self.encoder.dropout_rng
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        c = self.config
        with contextlib.nullcontext() if init else skip_init():
            if pooling == "cls":
                self.pooler = Sequential(Linear(c["emb_dim"], c["emb_dim"], rng=rng, dtype=dtype), Tanh())
            self.dropout = Dropout(c["drop_rate"], rng=self.dropout_rng)
            self.classifier = Linear(c["emb_dim"], self.num_classes, rng=rng, dtype=dtype)
        self._cache = None

    def forward(self, idx: np.ndarray, token_type_ids: np.ndarray | None = None,
                attention_mask: np.ndarray | None = None) -> np.ndarray:
        h = self.encoder.encode(idx, token_type_ids, attention_mask)       # (B, T, C)
        if self.pooling == "cls":
            pooled = self.pooler(h[:, 0])                                  # (B, C) from [CLS]
            weights = None
        else:
            mask = np.ones(h.shape[:2]) if attention_mask is None else np.asarray(attention_mask)
            weights = (mask / np.maximum(mask.sum(axis=1, keepdims=True), 1)).astype(h.dtype)   # (B, T)
            pooled = np.einsum("bt,btc->bc", weights, h)                   # (B, C) masked mean
        if self._need_cache():
            self._cache = (h.shape, weights)
        return self.classifier(self.dropout(pooled))                       # (B, num_classes)

    def backward(self, dlogits: np.ndarray) -> None:
        shape, weights = self._pop_cache()
        dpooled = self.dropout.backward(self.classifier.backward(dlogits.astype(self.dtype, copy=False)))
        if self.pooling == "cls":
            dh = np.zeros(shape, dtype=self.dtype)
            dh[:, 0] = self.pooler.backward(dpooled)                       # only [CLS] was read
        else:
            dh = weights[:, :, None] * dpooled[:, None, :]                 # (B, T, C)
        self.encoder.encode_backward(dh)



def encoder_attention_weights(model: EncoderModel, idx: np.ndarray, layer: int) -> np.ndarray:
    """Attention weights (B, H, T, T) of block ``layer`` for ids ``idx`` (B, T), no padding: entry
    [b, h, i, j] is how much token i attends to token j. Every row sums to 1 over ALL j, left and
    right: the full square that a GPT layer (numpy_gpt.plots.attention_weights) cuts to its lower
    triangle. Recomputed from the block's input as chapter 3 does, in eval mode, under no_grad."""
    if not 0 <= layer < model.config["n_layers"]:
        raise ValueError(f"layer must be in [0, {model.config['n_layers']}), got {layer}")
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            idx, types = model._check_inputs(idx, None, None)
            x = model.drop_emb(model.emb_norm(model.tok_emb(idx) + model.pos_emb(idx.shape[1])
                                              + model.type_emb(types)))
            blocks = list(model.blocks)
            for block in blocks[:layer]:
                x = block(x)
            block = blocks[layer]
            h = x if block.post_ln else block.norm1(x)                           # the attention's input
            att = block.att
            q = att._split_heads(att.W_query(h)) * att.scale                     # (B, H, T, hd)
            k = att._split_heads(att.W_key(h))
            return softmax(q @ k.swapaxes(-1, -2))                                # (B, H, T, T), no mask
    finally:
        model.train(was_training)
