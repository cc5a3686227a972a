"""EncoderModel: the other half of the transformer, a BERT-style encoder built from GPT's layers.

The book builds GPT, a decoder: it reads left to right and predicts the next token. BERT (Devlin et
al., 2018) keeps the same blocks and changes four things, each a few lines below:

1. attention is bidirectional: GPT's ``TransformerBlock(..., causal=False)`` (nn/block.py), plus a
   padding mask so a padded batch equals its sentences run one by one;
2. a third embedding, the token type (segment A or B of a sentence pair), and a LayerNorm right
   after the embedding sum (``EncoderModel.encode``);
3. the original BERT normalises after each residual sum (post-LN, config ``norm="post"``, the
   block's ``pre_norm=False``) where GPT-2 normalises the branch input (pre-LN, ``norm="pre"``);
   BERT's GELU is the exact one, with erf (``gelu="erf"``, nn/gelu.py's ``ErfGELU``);
4. the output is not a next-token head but a masked-language-model head that fills in blanks
   (``MLMHead``: dense -> GELU -> LayerNorm -> the token embedding again, with its own bias), and
   classification reads the [CLS] token through a pooler, or the mean of the tokens
   (``EncoderClassifier``).

Forward, as transformers' ``BertForMaskedLM`` computes it:

    idx, token_type_ids, attention_mask (B, T)
      -> emb_norm(tok_emb(idx) + pos_emb(0..T-1) + type_emb(token_type_ids))   (B, T, C)
      -> drop_emb
      -> blocks: n_layers x TransformerBlock(causal=False, ...), all real tokens  (B, T, C)
      -> final_norm (pre-LN only: post-LN blocks end normalised)                 (B, T, C)
      -> mlm_head                                                                 (B, T, V) logits

Masked-language-model pretraining (numpy_gpt/mlm.py) and the WordPiece tokenizer
(numpy_gpt/tokenizers/wordpiece.py) complete the picture; ``load_bert`` (numpy_gpt/gpt2/bert.py)
reads Hugging Face's BERT checkpoints into this class. docs/encoder.md maps each difference from
GPT to its line of code.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping

import numpy as np

from numpy_gpt.checkpoint import block_parameter_shapes
from numpy_gpt.model import check_token_ids, model_dtype, model_generators, share_dropout_rng, validate_config
from numpy_gpt.nn.block import DECODER_DEFAULTS, TransformerBlock
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding
from numpy_gpt.nn.feedforward import GELUS
from numpy_gpt.nn.gelu import ErfGELU, erf, gelu_erf, gelu_erf_backward  # noqa: F401 (their home was here)
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.linear import Linear, TiedLinear, skip_init
from numpy_gpt.nn.module import Module, Parameter, Sequential
from numpy_gpt.plots import attention_weights

# The keys GPT's config has, plus five. bert-base-uncased is this config with vocab_size 30522
# (its feed-forward is 4 x 768 = 3072 wide, the default; another width is GPT's optional hidden_dim).
BERT_CONFIG_BASE = {
    "vocab_size": 30522,       # WordPiece vocabulary of bert-base-uncased
    "context_length": 512,     # max_position_embeddings
    "emb_dim": 768,            # hidden_size
    "n_heads": 12,
    "n_layers": 12,
    "drop_rate": 0.1,          # hidden_dropout_prob: embeddings, residual branches, classifier
    "qkv_bias": True,          # BERT's query/key/value projections have biases
    "type_vocab_size": 2,      # segments A and B
    "norm": "post",            # "post": LayerNorm after each residual sum (BERT); "pre": GPT-2's
    "gelu": "erf",             # "erf": exact GELU (BERT); "tanh": GPT-2's approximation
    "ln_eps": 1e-12,           # BERT's LayerNorm epsilon (GPT-2: 1e-5)
    "drop_rate_attn": 0.1,     # attention_probs_dropout_prob (the book's exercise 4.2 name)
}
ENCODER_DEFAULTS = {"type_vocab_size": 2, "norm": "post", "gelu": "erf", "ln_eps": 1e-12}
ENCODER_KEYS = (*ENCODER_DEFAULTS, "drop_rate_attn")     # drop_rate_attn defaults to drop_rate


def validate_encoder_config(cfg: Mapping) -> dict:
    """A checked copy of an encoder config: GPT's keys (checked as GPT's, ``hidden_dim`` included)
    plus ``type_vocab_size``, ``norm`` ("pre" | "post"), ``gelu`` ("tanh" | "erf") and ``ln_eps``,
    which default to BERT's, and ``drop_rate_attn``, which defaults to ``drop_rate``."""
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg must be a dict like BERT_CONFIG_BASE, got {type(cfg).__name__}")
    gpt_keys = {k: v for k, v in cfg.items() if k not in ENCODER_KEYS}
    try:
        checked = validate_config(gpt_keys)
    except (KeyError, ValueError) as err:
        raise type(err)(str(err).replace("GPT config", "encoder config")
                        .strip("'\"") + f"; plus optional {sorted(ENCODER_KEYS)}") from None
    switches = sorted(k for k in checked if k in DECODER_DEFAULTS and k != "hidden_dim")
    if switches:
        raise ValueError(f"encoder config: {switches} are switches of the decoder (Llama, Qwen3: "
                         f"docs/gpt2-to-llama.md); an encoder keeps BERT's layers")
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
    attn = cfg.get("drop_rate_attn", checked["drop_rate"])
    if isinstance(attn, bool) or not isinstance(attn, (int, float)) or not 0.0 <= attn < 1.0:
        raise ValueError(f"encoder config: drop_rate_attn must be a number in [0, 1), got {attn!r}")
    return {**checked, **extra, "ln_eps": float(eps), "drop_rate_attn": attn}


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


# -- the masked-language-model head ----------------------------------------------------------------
class MLMHead(Module):
    """BERT's ``cls.predictions``: h (B, T, C) -> logits (B, T, V) over the vocabulary.

        z = norm(gelu(h W_d + b_d))             (B, T, C)   dense, GELU, LayerNorm ("transform")
        logits = z E^T + bias                   (B, T, V)   E = tok_emb.weight (V, C), tied

    The decoder reuses the token embedding E (weight tying, nn/linear.py's ``TiedLinear``, as a tied
    GPT's output head) and has its own bias (V,). E is the same Parameter as ``tok_emb.weight``: it
    is listed once in ``named_parameters`` and its gradient is the sum of both uses, this head's
    dE = dlogits^T z (V, C) and the embedding's scatter-add (each ``add_grad``: the first stores, the
    second adds). Caches the shape of the logits; the decoder caches z.
    """

    def __init__(self, cfg: Mapping, embedding: Parameter, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        super().__init__()
        self.dense = Linear(cfg["emb_dim"], cfg["emb_dim"], rng=rng, dtype=dtype)
        self.act = GELUS[cfg["gelu"]]()                                # as the blocks' GELU
        self.norm = LayerNorm(cfg["emb_dim"], eps=cfg["ln_eps"], dtype=dtype)
        self.decoder = TiedLinear(embedding)                             # tied: tok_emb.weight (V, C)
        self.bias = Parameter(np.zeros(cfg["vocab_size"], dtype=dtype))

    @property
    def decoder_weight(self) -> Parameter:
        """E, the token embedding the decoder reuses."""
        return self.decoder.weight

    def forward(self, h: np.ndarray) -> np.ndarray:
        z = self.norm(self.act(self.dense(h)))                           # (B, T, C)
        logits = self.decoder(z)                                         # z E^T: (B, T, C) @ (C, V)
        logits += self.bias.data
        return logits

    def backward(self, dlogits: np.ndarray) -> np.ndarray:
        """dE += dlogits^T z (V, C) and dz = dlogits E (``TiedLinear.backward``); dbias = the sum
        of dlogits over tokens."""
        if self.bias.trainable:
            self.bias.add_grad(dlogits.reshape(-1, dlogits.shape[-1]).sum(axis=0))
        dz = self.decoder.backward(dlogits)                              # (B, T, C)
        return self.dense.backward(self.act.backward(self.norm.backward(dz)))


# -- the model -------------------------------------------------------------------------------------
class EncoderModel(Module):
    """A BERT-style encoder with its masked-language-model head (``transformers.BertForMaskedLM``).

    ``EncoderModel(cfg, seed=None, dtype=np.float32, *, init=True, mlm_head=True)``: cfg is GPT's
    config plus ``type_vocab_size``, ``norm``, ``gelu``, ``ln_eps`` and ``drop_rate_attn`` (see
    BERT_CONFIG_BASE), kept checked as ``self.cfg`` as GPTModel's. Every weight N(0, 0.02^2) as BERT
    initialises, biases 0, LayerNorms 1/0; seed, dtype and the shared dropout generator as GPTModel.
    ``mlm_head=False`` builds the encoder alone (for ``EncoderClassifier``, and for a bare BertModel).

    ``forward(idx, token_type_ids=None, attention_mask=None)`` -> MLM logits (B, T, V);
    ``backward(dlogits)`` adds into every parameter's grad. ``encode`` / ``encode_backward`` are the
    same without the head: hidden states (B, T, C) for classifiers. token_type_ids default to 0
    (one segment), attention_mask to all ones (no padding).
    """

    def __init__(self, cfg: Mapping, seed: int | None = None, dtype: np.dtype | type = np.float32, *,
                 init: bool = True, mlm_head: bool = True):
        super().__init__()
        self.cfg = validate_encoder_config(cfg)
        self.dtype = model_dtype(dtype, "EncoderModel")
        rng, self.dropout_rng = model_generators(seed)
        c = self.cfg
        with contextlib.nullcontext() if init else skip_init():
            self.tok_emb = Embedding(c["vocab_size"], c["emb_dim"], rng=rng, dtype=dtype)
            self.pos_emb = PositionalEmbedding(c["context_length"], c["emb_dim"], rng=rng, dtype=dtype)
            self.type_emb = Embedding(c["type_vocab_size"], c["emb_dim"], rng=rng, dtype=dtype)
            self.emb_norm = LayerNorm(c["emb_dim"], eps=c["ln_eps"], dtype=dtype)
            self.drop_emb = Dropout(c["drop_rate"])
            # GPT's block, with BERT's switches: every token sees every token, post-LN, exact GELU
            self.blocks = Sequential(*[
                TransformerBlock(c, causal=False, pre_norm=c["norm"] == "pre", gelu=c["gelu"],
                                 eps=c["ln_eps"], rng=rng, dtype=dtype)
                for _ in range(c["n_layers"])])
            self.final_norm = LayerNorm(c["emb_dim"], eps=c["ln_eps"], dtype=dtype) if c["norm"] == "pre" \
                else None
            self.mlm_head = MLMHead(c, self.tok_emb.weight, rng=rng, dtype=dtype) if mlm_head else None
        share_dropout_rng(self)
        self._cache = None

    def _check_inputs(self, idx, token_type_ids, attention_mask):
        idx = check_token_ids(idx, self.cfg, "EncoderModel")
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
            x = block(x, attention_mask=attention_mask)                  # (B, T, C), all tokens see all
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
        return f"norm={self.cfg['norm']!r}, gelu={self.cfg['gelu']!r}"


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
        shapes.update(block_parameter_shapes(block, c))
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
        self.cfg = self.encoder.cfg
        self.dtype = self.encoder.dtype
        self.dropout_rng = self.encoder.dropout_rng
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        c = self.cfg
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
    right: the full square that a GPT layer cuts to its lower triangle. The layer's own weights, from
    ``numpy_gpt.plots.attention_weights`` (one forward pass, in eval mode, under no_grad)."""
    if not 0 <= layer < model.cfg["n_layers"]:
        raise ValueError(f"layer must be in [0, {model.cfg['n_layers']}), got {layer}")
    return attention_weights(model, np.asarray(idx))[layer]


# -- deprecated names, kept for code written against the earlier encoder --------------------------------
def _deprecated_config(model_class: type) -> property:
    """``.config``, the earlier name of the encoder models' ``.cfg`` (every model's config is .cfg)."""
    message = f"{model_class.__name__}.config is deprecated: every numpy_gpt model's config is .cfg"

    def get(self):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return self.cfg

    def set_(self, value):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        self.cfg = value

    return property(get, set_, doc=message)


EncoderModel.config = _deprecated_config(EncoderModel)
EncoderClassifier.config = _deprecated_config(EncoderClassifier)


class EncoderBlock(TransformerBlock):
    """Deprecated: BERT's block is GPT's ``TransformerBlock`` with BERT's switches, as
    ``EncoderModel`` builds it. ``EncoderBlock(cfg)`` (an encoder config) still builds that block,
    and its ``forward(x, attention_mask)`` still takes the mask second."""

    def __init__(self, cfg: Mapping, *, rng: np.random.Generator | None = None,
                 dtype: np.dtype | type = np.float32):
        warnings.warn("EncoderBlock is deprecated: use TransformerBlock(cfg, causal=False, "
                      "pre_norm=cfg['norm'] == 'pre', gelu=cfg['gelu'], eps=cfg['ln_eps'])",
                      DeprecationWarning, stacklevel=2)
        super().__init__(cfg, causal=False, pre_norm=cfg["norm"] == "pre", gelu=cfg["gelu"],
                         eps=cfg["ln_eps"], rng=rng, dtype=dtype)

    def forward(self, x: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:
        return super().forward(x, attention_mask=attention_mask)
