"""Hugging Face model folders in numpy_gpt: Llama 3, SmolLM2 and Qwen3, and the one entry point
``load_hf`` that also takes GPT-2's and BERT's (the book's bonus chapters "GPT to Llama").

A model on the Hugging Face Hub is a folder, the same layout for every family:

    config.json                  the architecture: model_type and sizes
    model.safetensors            the weights; a large model has shards instead,
                                 model-00001-of-00002.safetensors ... and model.safetensors.index.json
    tokenizer.json               the tokenizer (byte-level BPE for these models)
    tokenizer_config.json        its special tokens and the chat template

``load_hf(folder)`` reads all of it with NumPy and the standard library (no torch, no transformers)
and returns ``(model, tokenizer)``. It knows four ``model_type``s and refuses any other:

* gpt2           GPT-2 (gpt2/convert.py), the book's model;
* bert           BERT (gpt2/bert.py), the encoder of docs/encoder.md;
* llama, qwen3   Llama 3.x, SmolLM2 (a Llama) and Qwen3: numpy_gpt's GPTModel with the switches of
                 docs/gpt2-to-llama.md (RMSNorm, SwiGLU, RoPE, grouped-query attention, QK-norm).

config.json -> numpy_gpt's config (``decoder_config_from_hf``), for llama and qwen3:

    vocab_size, hidden_size, num_attention_heads,    vocab_size, emb_dim, n_heads, n_layers
    num_hidden_layers
    max_position_embeddings                          context_length
    num_key_value_heads, head_dim                    n_kv_heads, head_dim
    intermediate_size                                hidden_dim
    rms_norm_eps                                     norm_eps
    rope_theta, rope_scaling (transformers 5:        rope_base, rope_scaling (Llama 3's "llama3"
      both inside rope_parameters)                     frequency scaling only)
    attention_bias, mlp_bias                         qkv_bias and out_bias, ff_bias
    tie_word_embeddings                              tie_embeddings
    model_type qwen3                                 qk_norm
    hidden_act "silu", no sliding window             (required)

The tensor names (``decoder_name_map``), written out below (``_DECODER``, ``_LAYER``): transformers'
``nn.Linear`` stores its weight (out, in) and numpy_gpt's Linear (in, out), so every projection is
transposed; embeddings and norm scales are copied. A tied head has no ``lm_head.weight`` (a file that
still stores one has it ignored, as transformers does); old Llama files' ``rotary_emb.inv_freq``
buffers are not weights and are skipped. bf16 weights become float32 on load (safetensors.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.checkpoint import CheckpointError, gpt_parameter_shapes
from numpy_gpt.fileio import read_json
from numpy_gpt.gpt2.safetensors import (
    INDEX_NAME,
    SINGLE_NAME,
    SafetensorsError,
    SafetensorsReader,
    open_safetensors,
)
from numpy_gpt.model import GPTModel
from numpy_gpt.model_files import Format, ModelFile, add_format, checkpoint_tokenizer, read_model_file
from numpy_gpt.nn.module import Module
from numpy_gpt.nn.rope import check_rope_scaling

HF_MODEL_TYPES = ("gpt2", "bert", "llama", "qwen3")
DECODER_MODEL_TYPES = ("llama", "qwen3")
MAX_CONFIG_BYTES = 4 << 20

# numpy_gpt name -> (transformers name, transpose?). {i} is the layer index. Entries whose numpy_gpt
# parameter the config does not have (biases, q/k norms, an untied head) are left out.
_DECODER = {
    "tok_emb.weight": ("model.embed_tokens.weight", False),                       # (V, C)
    "final_norm.scale": ("model.norm.weight", False),                             # (C,)
    "out_head.weight": ("lm_head.weight", True),                                  # (C, V) untied only
}
_LAYER = {
    "trf_blocks.{i}.norm1.scale": ("model.layers.{i}.input_layernorm.weight", False),
    "trf_blocks.{i}.att.W_query.weight": ("model.layers.{i}.self_attn.q_proj.weight", True),   # (C, H*hd)
    "trf_blocks.{i}.att.W_query.bias": ("model.layers.{i}.self_attn.q_proj.bias", False),
    "trf_blocks.{i}.att.W_key.weight": ("model.layers.{i}.self_attn.k_proj.weight", True),     # (C, Hkv*hd)
    "trf_blocks.{i}.att.W_key.bias": ("model.layers.{i}.self_attn.k_proj.bias", False),
    "trf_blocks.{i}.att.W_value.weight": ("model.layers.{i}.self_attn.v_proj.weight", True),   # (C, Hkv*hd)
    "trf_blocks.{i}.att.W_value.bias": ("model.layers.{i}.self_attn.v_proj.bias", False),
    "trf_blocks.{i}.att.out_proj.weight": ("model.layers.{i}.self_attn.o_proj.weight", True),  # (H*hd, C)
    "trf_blocks.{i}.att.out_proj.bias": ("model.layers.{i}.self_attn.o_proj.bias", False),
    "trf_blocks.{i}.att.q_norm.scale": ("model.layers.{i}.self_attn.q_norm.weight", False),    # (hd,) Qwen3
    "trf_blocks.{i}.att.k_norm.scale": ("model.layers.{i}.self_attn.k_norm.weight", False),
    "trf_blocks.{i}.norm2.scale": ("model.layers.{i}.post_attention_layernorm.weight", False),
    "trf_blocks.{i}.ff.gate.weight": ("model.layers.{i}.mlp.gate_proj.weight", True),          # (C, H)
    "trf_blocks.{i}.ff.gate.bias": ("model.layers.{i}.mlp.gate_proj.bias", False),
    "trf_blocks.{i}.ff.up.weight": ("model.layers.{i}.mlp.up_proj.weight", True),              # (C, H)
    "trf_blocks.{i}.ff.up.bias": ("model.layers.{i}.mlp.up_proj.bias", False),
    "trf_blocks.{i}.ff.down.weight": ("model.layers.{i}.mlp.down_proj.weight", True),          # (H, C)
    "trf_blocks.{i}.ff.down.bias": ("model.layers.{i}.mlp.down_proj.bias", False),
}
_SKIPPED = (".rotary_emb.inv_freq",)        # buffers some older Llama files store beside the weights


class HFFolderError(ValueError):
    """A Hugging Face folder numpy_gpt cannot load: the message names the file and what to do."""


def read_hf_config(folder: str | os.PathLike) -> dict:
    """The JSON object of ``folder/config.json``, checked to be one (and not huge)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: a Hugging Face model folder holds config.json, "
                                f"model.safetensors (or its shards) and tokenizer.json")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise HFFolderError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MB: not a model's config.json")
    config = read_json(path)
    if not isinstance(config, dict):
        raise HFFolderError(f"{path} must hold a JSON object")
    return config


def folder_model_type(path: Path) -> str | None:
    """The ``model_type`` of the config.json in folder ``path``, for telling formats apart (each
    format's ``matches``); None when ``path`` is no folder with a readable config.json (the format's
    reader then says what is wrong)."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    try:
        config = read_hf_config(path)
    except (ValueError, OSError):
        return None
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) else None


def hf_model_type(config: Mapping, where: str = "config.json") -> str:
    """config.json's ``model_type``, if numpy_gpt loads it (``HF_MODEL_TYPES``); else one line saying so."""
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise HFFolderError(f"{where}: model_type {model_type!r:.60} is not one numpy_gpt loads; it reads "
                            f"{', '.join(HF_MODEL_TYPES)}")
    return model_type


def _rope_settings(config: Mapping, where: str) -> tuple[float, dict | None]:
    """(rope_base, rope_scaling) from config.json. transformers 4 writes ``rope_theta`` and
    ``rope_scaling`` side by side; transformers 5 writes both inside ``rope_parameters``."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or params                # transformers 4's field, else 5's
    if not isinstance(params, Mapping) or not isinstance(scaling, Mapping):
        raise HFFolderError(f"{where}: rope_parameters and rope_scaling must be JSON objects")
    base = params.get("rope_theta", config.get("rope_theta", 10000.0))
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 1:
        raise HFFolderError(f"{where}: rope_theta must be a number above 1, got {base!r:.60}")
    if scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None                                             # plain RoPE
    try:
        scaling = check_rope_scaling(scaling, f"{where}: rope_scaling")
    except ValueError as err:
        raise HFFolderError(str(err)) from None
    return float(base), scaling


def decoder_config_from_hf(config: Mapping, where: str = "config.json") -> dict:
    """numpy_gpt's GPTModel config for a transformers ``LlamaConfig`` or ``Qwen3Config`` (config.json
    as a dict); anything GPTModel would compute differently is refused with one line."""
    model_type = hf_model_type(config, where)
    if model_type not in DECODER_MODEL_TYPES:
        raise HFFolderError(f"{where}: model_type {model_type!r} is not a Llama-style decoder")

    def need(key: str):
        if key not in config:
            raise HFFolderError(f"{where} has no {key!r}: it is not a complete {model_type} config")
        return config[key]

    if config.get("hidden_act", "silu") != "silu":
        raise HFFolderError(f"{where}: hidden_act {config['hidden_act']!r:.40} is not SwiGLU's silu")
    if model_type == "qwen3" and config.get("use_sliding_window", False):
        raise HFFolderError(f"{where}: use_sliding_window is true; numpy_gpt's attention sees the whole "
                            f"context")
    base, scaling = _rope_settings(config, where)
    emb_dim, n_heads = need("hidden_size"), need("num_attention_heads")
    head_dim = config.get("head_dim") or (emb_dim // n_heads if n_heads else None)
    attention_bias = bool(config.get("attention_bias", False))
    cfg = {
        "vocab_size": need("vocab_size"), "context_length": need("max_position_embeddings"),
        "emb_dim": emb_dim, "n_heads": n_heads, "n_layers": need("num_hidden_layers"),
        "drop_rate": 0.0, "qkv_bias": attention_bias,
        "hidden_dim": need("intermediate_size"),
        "n_kv_heads": config.get("num_key_value_heads") or n_heads, "head_dim": head_dim,
        "normalization": "rmsnorm", "feed_forward": "swiglu", "positions": "rope",
        "qk_norm": model_type == "qwen3", "norm_eps": float(need("rms_norm_eps")),
        "rope_base": base, "rope_scaling": scaling,
        "out_bias": attention_bias, "ff_bias": bool(config.get("mlp_bias", False)),
        "tie_embeddings": bool(config.get("tie_word_embeddings", False)),
    }
    from numpy_gpt.model import validate_config
    try:
        return validate_config(cfg)
    except (KeyError, TypeError, ValueError) as err:
        raise HFFolderError(f"{where}: {err}") from None


def decoder_name_map(cfg: Mapping) -> dict[str, tuple[str, bool]]:
    """{numpy_gpt parameter name: (transformers name, transpose)} for every parameter of
    ``GPTModel(cfg)``, cfg from ``decoder_config_from_hf`` (``LlamaForCausalLM``/``Qwen3ForCausalLM``)."""
    params = gpt_parameter_shapes(cfg)
    names = {ours: theirs for ours, theirs in _DECODER.items() if ours in params}
    for i in range(cfg["n_layers"]):
        for ours, (theirs, transpose) in _LAYER.items():
            if ours.format(i=i) in params:
                names[ours.format(i=i)] = (theirs.format(i=i), transpose)
    unmapped = sorted(set(params) - set(names))
    if unmapped:
        raise ValueError(f"the model has parameters no Hugging Face tensor maps to: {unmapped[:5]}")
    return names


def check_hf_tensors(reader: SafetensorsReader, names: Mapping[str, tuple[str, bool]],
                     shapes: Mapping[str, tuple[int, ...]], *, ignored: tuple[str, ...] = (),
                     others_ok: bool = False, where: str | None = None) -> None:
    """Before anything is allocated: every tensor ``names`` maps ({ours: (theirs, transpose)}) is
    stored, floating point, with the shape ``shapes[ours]`` (transposed if flagged), and the file
    stores nothing else (apart from names ending in ``ignored``; anything, with ``others_ok``).
    Else one SafetensorsError listing the problems."""
    where = str(reader.path) if where is None else where
    problems = []
    for ours, (theirs, transpose) in names.items():
        if theirs not in reader:
            problems.append(f"{theirs} is missing")
            continue
        entry = reader.entries[theirs]
        if tuple(entry.shape[::-1] if transpose else entry.shape) != tuple(shapes[ours]):
            wanted = tuple(shapes[ours])[::-1] if transpose else tuple(shapes[ours])
            problems.append(f"{theirs} has shape {entry.shape}, the config needs {wanted}")
        elif entry.dtype.kind != "f":
            problems.append(f"{theirs} is {entry.stored_dtype}, not floating point")
    wanted = {theirs for theirs, _ in names.values()}
    unexpected = [] if others_ok else [name for name in reader
                                       if name not in wanted and not name.endswith(ignored)]
    if unexpected:
        problems.append(f"it holds tensors the model has no place for: {unexpected[:5]} (another "
                        f"architecture?)")
    if problems:
        raise SafetensorsError(f"{where} does not fit the model its config.json describes: "
                               + "; ".join(problems[:10]))


def copy_hf_tensors(reader: SafetensorsReader, names: Mapping[str, tuple[str, bool]], model: Module, *,
                    where: str | None = None) -> None:
    """Copy the tensors ``names`` maps (checked by ``check_hf_tensors``) into ``model``'s parameters,
    all or nothing: each is read (bf16 widened to float32), checked finite and cast to its
    parameter's dtype; the parameters are assigned only once every tensor is read."""
    where = str(reader.path) if where is None else where
    params = dict(model.named_parameters())
    staged = {}
    for ours, (theirs, transpose) in names.items():
        array = reader.read(theirs)
        if not np.isfinite(array).all():
            raise SafetensorsError(f"{where}: tensor {theirs!r} holds NaN or infinite values")
        staged[ours] = np.ascontiguousarray(array.T if transpose else array, dtype=params[ours].data.dtype)
    for ours, array in staged.items():
        params[ours].data = array


def load_hf_decoder(folder: str | os.PathLike, *, dtype: np.dtype | type = np.float32,
                    drop_rate: float = 0.0) -> GPTModel:
    """The GPTModel (in eval mode) of a Llama, SmolLM2 or Qwen3 folder: config.json and
    model.safetensors or its shards (see the module docstring). Every tensor's name, shape and dtype
    is checked against the config before the model is built; ``drop_rate`` matters once you train."""
    folder = Path(folder)
    cfg = decoder_config_from_hf(read_hf_config(folder), str(folder / "config.json"))
    cfg = {**cfg, "drop_rate": drop_rate}
    reader = open_safetensors(folder)
    names = decoder_name_map(cfg)
    ignored = (*_SKIPPED, *(("lm_head.weight",) if cfg.get("tie_embeddings") else ()))
    check_hf_tensors(reader, names, gpt_parameter_shapes(cfg), ignored=ignored)
    model = GPTModel(cfg, dtype=dtype, init=False)
    copy_hf_tensors(reader, names, model)
    return model.eval()


# -- the folder's tokenizer, and the Llama/Qwen3 folder as one format of numpy_gpt.load ----------------
def folder_tokenizer_spec(folder: str | os.PathLike, model_type: str | None = None) -> dict[str, Any] | None:
    """The tokenizer description (tokenizers/spec.py) of a Hugging Face folder, read without building
    the tokenizer: its ``tokenizer.json`` as the spec kind "hf" (a byte-level BPE, built by
    tokenizers/hf_json.py, with tokenizer_config.json's chat template and special tokens); for
    model_type "bert", ``vocab.txt`` as "wordpiece" (lowercase as tokenizer_config.json's
    ``do_lower_case`` says, default true). None when the folder has no such file."""
    from numpy_gpt.tokenizers.hf_json import MAX_FILE_BYTES, read_tokenizer_config
    from numpy_gpt.tokenizers.spec import tokenizer_spec
    from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer

    folder = Path(folder)
    if model_type == "bert":
        vocab = folder / "vocab.txt"
        if not vocab.is_file():
            return None
        config_path = folder / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        lowercase = config.get("do_lower_case", True) if isinstance(config, dict) else True
        return tokenizer_spec(WordPieceTokenizer.from_file(vocab, lowercase=bool(lowercase)))
    file = folder / "tokenizer.json"
    if not file.is_file():
        return None
    if file.stat().st_size > MAX_FILE_BYTES:
        raise HFFolderError(f"{file} is larger than {MAX_FILE_BYTES >> 20} MB, more than any model's "
                            f"tokenizer.json")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HFFolderError(f"{file} is not UTF-8 text ({err.reason})") from None
    return {"kind": "hf", "tokenizer_json": text, "tokenizer_config": read_tokenizer_config(folder)}


def _is_hf_decoder(path: Path) -> bool:
    return folder_model_type(path) in DECODER_MODEL_TYPES


def _read_hf_decoder(path: Path) -> ModelFile:
    cfg = decoder_config_from_hf(read_hf_config(path), str(path / "config.json"))
    open_safetensors(path)                                          # the headers only: no tensor read
    return ModelFile(path, HF_DECODER, "gpt", cfg, folder_tokenizer_spec(path))


def _load_hf_decoder(file: ModelFile, drop_rate: float, dtype: np.dtype | None) -> GPTModel:
    return load_hf_decoder(file.path, dtype=np.float32 if dtype is None else dtype, drop_rate=drop_rate)


HF_DECODER = Format("hf", f"a Hugging Face Llama, SmolLM2 or Qwen3 folder (config.json, {SINGLE_NAME} or "
                          f"{INDEX_NAME} and its shards, tokenizer.json)",
                    _is_hf_decoder, _read_hf_decoder, _load_hf_decoder)
add_format(HF_DECODER)


def load_hf(path: str | os.PathLike, *, dtype: np.dtype | type = np.float32,
            drop_rate: float = 0.0) -> tuple[Module, Any]:
    """``(model in eval mode, tokenizer)`` from a Hugging Face model folder, with NumPy alone.

    config.json's ``model_type`` decides (one line refuses any other than ``HF_MODEL_TYPES``):
    gpt2 -> GPTModel (gpt2/convert.py's format), bert -> EncoderModel or EncoderClassifier
    (gpt2/bert.py's), llama and qwen3 -> GPTModel with Llama's switches (this module). It is the
    path ``numpy_gpt.load`` takes, with the folder's own tokenizer: tokenizer.json (GPT-2, Llama,
    SmolLM2, Qwen3: tokenizers/hf_json.py, chat template included) or BERT's vocab.txt.
    ``dtype`` float32 (bf16 and float16 weights are widened to it) or float64; ``drop_rate`` only
    matters once you train."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: load_hf reads a Hugging Face model folder "
                                f"(config.json, {SINGLE_NAME} or its shards, tokenizer.json)")
    model_type = hf_model_type(read_hf_config(folder), str(folder / "config.json"))
    file = read_model_file(folder)
    spec = folder_tokenizer_spec(folder, model_type)
    if spec is not None:
        file = dataclasses.replace(file, tokenizer_spec=spec)
    elif file.tokenizer_description() is None:
        wanted = "vocab.txt" if model_type == "bert" else "tokenizer.json"
        raise CheckpointError(f"{folder} has no {wanted}: copy the model's tokenizer files into the folder")
    tokenizer = checkpoint_tokenizer(file)
    return file.load_model(drop_rate=drop_rate, dtype=dtype), tokenizer
