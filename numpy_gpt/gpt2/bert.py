"""Hugging Face's BERT checkpoints in numpy_gpt: the name map, ``load_bert`` and the way back.

A BERT folder as ``transformers`` writes it (``model.save_pretrained(folder)``, or bert-base-uncased
from the Hub) holds ``config.json`` and ``model.safetensors``. ``load_bert(folder)`` reads both
with numpy_gpt's own safetensors reader (gpt2/safetensors.py) into an ``EncoderModel``
(numpy_gpt/encoder.py), or an ``EncoderClassifier`` for a ``BertForSequenceClassification``.

The mapping, written out in full below (``_EMBEDDINGS``, ``_LAYER``, ``_MLM_HEAD``, ``_CLASSIFIER``):

* transformers names BERT's tensors ``bert.encoder.layer.3.attention.self.query.weight``; ours are
  GPT's names (``blocks.3.att.W_query.weight``) plus the encoder's own (``type_emb``, ``emb_norm``,
  ``mlm_head``).
* transformers' ``nn.Linear`` stores its weight (out, in); numpy_gpt's Linear stores (in, out), so
  every Linear weight is transposed (the flag in the tables). Embeddings and LayerNorms are copied.
* the MLM decoder is tied to the word embedding: ``cls.predictions.decoder.weight``, when a file
  has it, must equal ``bert.embeddings.word_embeddings.weight`` and is not read twice.
* older checkpoints (bert-base-uncased itself) name LayerNorm parameters ``gamma``/``beta``
  instead of ``weight``/``bias``; both are accepted. Tensors numpy_gpt does not use (the
  next-sentence head ``cls.seq_relationship``, the pooler of a masked-LM model, ``position_ids``
  buffers) are skipped.
* config.json: ``hidden_act`` "gelu" is the erf GELU, "gelu_new"/"gelu_pytorch_tanh" the tanh one;
  ``intermediate_size`` is the feed-forward width (``hidden_dim``; TinyBERT's 312 -> 1200 loads),
  ``hidden_dropout_prob`` and ``attention_probs_dropout_prob`` the two dropout rates (``drop_rate``
  and ``drop_rate_attn``); only absolute position embeddings are supported.
* the masked-language-model head is read when the file has one. A bare ``BertModel`` (no
  ``cls.predictions.*``) loads as an ``EncoderModel`` without a head, as transformers' BertModel
  is: it encodes exactly, and fill-mask refuses it rather than guess with a random head.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from numpy_gpt.encoder import (
    EncoderClassifier,
    EncoderModel,
    encoder_parameter_shapes,
    validate_encoder_config,
)
from numpy_gpt.gpt2.hf import check_hf_tensors, copy_hf_tensors, folder_model_type, read_hf_config
from numpy_gpt.gpt2.safetensors import SafetensorsError, SafetensorsReader, open_safetensors
from numpy_gpt.model_files import ENCODERS, Format, ModelFile, add_format, read_model_file

# numpy_gpt name -> (transformers name, transpose?). {i} is the layer index.
_EMBEDDINGS = {
    "tok_emb.weight": ("bert.embeddings.word_embeddings.weight", False),          # (V, C)
    "pos_emb.weight": ("bert.embeddings.position_embeddings.weight", False),      # (T, C)
    "type_emb.weight": ("bert.embeddings.token_type_embeddings.weight", False),   # (2, C)
    "emb_norm.scale": ("bert.embeddings.LayerNorm.weight", False),
    "emb_norm.shift": ("bert.embeddings.LayerNorm.bias", False),
}
_LAYER = {
    "blocks.{i}.att.W_query.weight": ("bert.encoder.layer.{i}.attention.self.query.weight", True),
    "blocks.{i}.att.W_query.bias": ("bert.encoder.layer.{i}.attention.self.query.bias", False),
    "blocks.{i}.att.W_key.weight": ("bert.encoder.layer.{i}.attention.self.key.weight", True),
    "blocks.{i}.att.W_key.bias": ("bert.encoder.layer.{i}.attention.self.key.bias", False),
    "blocks.{i}.att.W_value.weight": ("bert.encoder.layer.{i}.attention.self.value.weight", True),
    "blocks.{i}.att.W_value.bias": ("bert.encoder.layer.{i}.attention.self.value.bias", False),
    "blocks.{i}.att.out_proj.weight": ("bert.encoder.layer.{i}.attention.output.dense.weight", True),
    "blocks.{i}.att.out_proj.bias": ("bert.encoder.layer.{i}.attention.output.dense.bias", False),
    "blocks.{i}.norm1.scale": ("bert.encoder.layer.{i}.attention.output.LayerNorm.weight", False),
    "blocks.{i}.norm1.shift": ("bert.encoder.layer.{i}.attention.output.LayerNorm.bias", False),
    "blocks.{i}.ff.layers.0.weight": ("bert.encoder.layer.{i}.intermediate.dense.weight", True),   # (C, 4C)
    "blocks.{i}.ff.layers.0.bias": ("bert.encoder.layer.{i}.intermediate.dense.bias", False),
    "blocks.{i}.ff.layers.2.weight": ("bert.encoder.layer.{i}.output.dense.weight", True),         # (4C, C)
    "blocks.{i}.ff.layers.2.bias": ("bert.encoder.layer.{i}.output.dense.bias", False),
    "blocks.{i}.norm2.scale": ("bert.encoder.layer.{i}.output.LayerNorm.weight", False),
    "blocks.{i}.norm2.shift": ("bert.encoder.layer.{i}.output.LayerNorm.bias", False),
}
_MLM_HEAD = {
    "mlm_head.dense.weight": ("cls.predictions.transform.dense.weight", True),
    "mlm_head.dense.bias": ("cls.predictions.transform.dense.bias", False),
    "mlm_head.norm.scale": ("cls.predictions.transform.LayerNorm.weight", False),
    "mlm_head.norm.shift": ("cls.predictions.transform.LayerNorm.bias", False),
    "mlm_head.bias": ("cls.predictions.bias", False),                              # (V,)
}
_CLASSIFIER = {
    "pooler.0.weight": ("bert.pooler.dense.weight", True),
    "pooler.0.bias": ("bert.pooler.dense.bias", False),
    "classifier.weight": ("classifier.weight", True),                             # (C, num_classes)
    "classifier.bias": ("classifier.bias", False),
}
TIED_DECODER = "cls.predictions.decoder.weight"
HF_GELU = {"gelu": "erf", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


def bert_name_map(n_layers: int, head: str = "mlm") -> dict[str, tuple[str, bool]]:
    """{numpy_gpt name: (transformers name, transpose)} for a model of ``n_layers`` layers with the
    ``head`` "mlm" (BertForMaskedLM) or "classifier" (BertForSequenceClassification, [CLS] pooler)."""
    names = {}
    for ours, theirs in _EMBEDDINGS.items():
        names["encoder." + ours if head == "classifier" else ours] = theirs
    for i in range(n_layers):
        for ours, (theirs, transpose) in _LAYER.items():
            prefix = "encoder." if head == "classifier" else ""
            names[prefix + ours.format(i=i)] = (theirs.format(i=i), transpose)
    names.update(_MLM_HEAD if head == "mlm" else _CLASSIFIER)
    return names


def to_hf_state_dict(model: EncoderModel | EncoderClassifier) -> dict[str, np.ndarray]:
    """The model's weights under transformers' names and layouts (Linear weights transposed), as a
    ``BertForMaskedLM`` / ``BertForSequenceClassification`` state dict in NumPy."""
    head = "classifier" if isinstance(model, EncoderClassifier) else "mlm"
    n_layers = model.cfg["n_layers"]
    params = dict(model.named_parameters())
    return {theirs: np.ascontiguousarray(params[ours].data.T if transpose else params[ours].data)
            for ours, (theirs, transpose) in bert_name_map(n_layers, head).items()}


def encoder_config_from_hf(config: Mapping, where: str = "config.json") -> dict:
    """numpy_gpt's encoder config for a transformers ``BertConfig`` (as a dict from config.json)."""
    def need(key: str):
        if key not in config:
            raise ValueError(f"{where} has no {key!r}: it is not a BERT config")
        return config[key]

    act = need("hidden_act")
    if act not in HF_GELU:
        raise ValueError(f"{where}: hidden_act {act!r} is not supported; numpy_gpt has {sorted(HF_GELU)}")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{where}: position_embedding_type {config['position_embedding_type']!r} is not "
                         f"supported (only 'absolute', BERT's learned positions)")
    if config.get("is_decoder", False):
        raise ValueError(f"{where}: is_decoder is true; load_bert reads encoders only")
    cfg = {"vocab_size": need("vocab_size"), "context_length": need("max_position_embeddings"),
           "emb_dim": need("hidden_size"), "n_heads": need("num_attention_heads"),
           "n_layers": need("num_hidden_layers"), "hidden_dim": need("intermediate_size"),
           "drop_rate": config.get("hidden_dropout_prob", 0.1), "qkv_bias": True,
           "type_vocab_size": need("type_vocab_size"), "norm": "post", "gelu": HF_GELU[act],
           "ln_eps": config.get("layer_norm_eps", 1e-12),
           "drop_rate_attn": config.get("attention_probs_dropout_prob", 0.1)}
    try:
        return validate_encoder_config(cfg)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err.args[0]}") from None


def _stored_name(reader: SafetensorsReader, name: str) -> str | None:
    """The name under which the file stores transformers' ``name``: as is, without the ``bert.``
    prefix (a bare BertModel), or with LayerNorm's old ``gamma``/``beta``."""
    candidates = [name]
    if name.startswith("bert."):
        candidates.append(name[len("bert."):])
    for c in list(candidates):
        if ".LayerNorm.weight" in c or ".LayerNorm.bias" in c:
            candidates.append(c.replace(".LayerNorm.weight", ".LayerNorm.gamma")
                              .replace(".LayerNorm.bias", ".LayerNorm.beta"))
    return next((c for c in candidates if c in reader), None)


def load_bert(path: str | os.PathLike, dtype: np.dtype | type = np.float32
              ) -> EncoderModel | EncoderClassifier:
    """An HF BERT folder (config.json + model.safetensors) -> EncoderModel (BertForMaskedLM or a
    bare BertModel) or EncoderClassifier (BertForSequenceClassification: a file with
    ``classifier.weight``); or the encoder of a numpy_gpt checkpoint (pretrain-mlm's model.npz).

    It goes the way ``numpy_gpt.load`` goes (model_files.py: the folder's metadata, then the weights);
    a file of another kind (a GPT) is refused with the command that takes it. All or nothing: the
    config, every tensor's presence, shape and dtype are checked from the headers before the model is
    allocated, and every value must be finite; a failed load raises with the file and the tensor
    named. A bare BertModel (no ``cls.predictions.*``) gives an EncoderModel without a head
    (``mlm_head`` None): ``encode`` is exact, and ``model(idx)`` and fill-mask refuse in one line
    instead of running a random head. The model is returned in eval mode, as transformers'
    ``from_pretrained`` returns it: call ``.train()`` to fine-tune.
    """
    return read_model_file(path, expect=ENCODERS, use="load_bert").load_model(dtype=dtype)


# -- the BERT folder, one format of numpy_gpt.load (model_files.py) ---------------------------------------
def _is_bert_folder(path: Path) -> bool:
    return folder_model_type(path) == "bert"


def _bert_config(folder: Path) -> tuple[dict, SafetensorsReader]:
    """(numpy_gpt's encoder config, the weights' reader) of a BERT folder, checked (headers only)."""
    config = encoder_config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    return config, open_safetensors(folder)


def _read_bert_folder(folder: Path) -> ModelFile:
    cfg, reader = _bert_config(folder)
    kind = "encoder-classifier" if "classifier.weight" in reader else "encoder"
    return ModelFile(folder, BERT_FOLDER, kind, cfg, None)


def _load_bert_folder(file: ModelFile, drop_rate: float, dtype: np.dtype | None
                      ) -> EncoderModel | EncoderClassifier:
    """The model of a BERT folder; ``drop_rate`` is the config's own (hidden_dropout_prob)."""
    dtype = np.float32 if dtype is None else dtype
    cfg, reader = _bert_config(file.path)

    is_classifier = "classifier.weight" in reader
    head = "classifier" if is_classifier else "mlm"
    names = bert_name_map(cfg["n_layers"], head)
    # Any cls.predictions tensor means an MLM head, which must then be whole; none: a bare BertModel.
    has_mlm_head = not is_classifier and any(_stored_name(reader, theirs) is not None
                                             for theirs, _ in _MLM_HEAD.values())
    if not is_classifier and not has_mlm_head:
        names = {k: v for k, v in names.items() if not k.startswith("mlm_head.")}
    expected = encoder_parameter_shapes(cfg, mlm_head=has_mlm_head)
    if is_classifier:
        expected = {"encoder." + k: v for k, v in expected.items()}
        num_classes = reader.entries["classifier.weight"].shape[0]
        expected.update({"pooler.0.weight": (cfg["emb_dim"],) * 2, "pooler.0.bias": (cfg["emb_dim"],),
                         "classifier.weight": (cfg["emb_dim"], num_classes),
                         "classifier.bias": (num_classes,)})

    # each tensor under the name this file stores it by (old files: LayerNorm gamma/beta, no "bert.")
    stored = {ours: (_stored_name(reader, theirs) or theirs, transpose)
              for ours, (theirs, transpose) in names.items()}
    check_hf_tensors(reader, stored, expected, others_ok=True)   # BERT files keep heads numpy_gpt skips

    if is_classifier:
        model: EncoderModel | EncoderClassifier = EncoderClassifier(cfg, num_classes, "cls", dtype=dtype,
                                                                    init=False)
    else:
        model = EncoderModel(cfg, dtype=dtype, init=False, mlm_head=has_mlm_head)
    copy_hf_tensors(reader, stored, model)
    params = dict(model.named_parameters())
    tied = _stored_name(reader, TIED_DECODER)
    if tied is not None and not is_classifier:
        decoder = reader.read(tied)
        if decoder.shape != params["tok_emb.weight"].shape or not np.allclose(
                decoder, params["tok_emb.weight"].data, rtol=0, atol=1e-6):
            raise SafetensorsError(f"{reader.path}: {tied} differs from the word embedding; numpy_gpt's "
                                   f"MLM head is tied to it (as BERT's)")
    model.eval()                                   # as from_pretrained: no dropout until model.train()
    return model


BERT_FOLDER = Format("bert", "a transformers BERT folder (config.json + model.safetensors)",
                     _is_bert_folder, _read_bert_folder, _load_bert_folder)
add_format(BERT_FOLDER)
