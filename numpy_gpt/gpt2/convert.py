"""OpenAI's pretrained GPT-2 in numpy_gpt: download, name mapping, loading and export (chapter 5.5).

The book downloads GPT-2 with ``download_and_load_gpt2`` (TensorFlow reads the checkpoint) and
copies each array into its GPTModel with ``load_weights_into_gpt``. This module does the same with
NumPy alone, from any of three sources:

* OpenAI's original TensorFlow checkpoint folder (``gpt2/124M``: read by ``openai_tf.py``);
* a safetensors file, such as Hugging Face's ``gpt2`` ``model.safetensors`` (``safetensors.py``);
* numpy_gpt's own ``.npz`` checkpoint (``checkpoint.py``).

The mapping, written out in full below (``_DIRECT``, ``_QKV``), is the book's:

* OpenAI names a tensor ``model/h3/attn/c_attn/w``, Hugging Face ``[transformer.]h.3.attn.c_attn.weight``;
  ours is the book's ``trf_blocks.3.att.W_query.weight`` and so on.
* ``c_attn`` packs the query, key and value projections side by side: its weight (C, 3C) is
  ``[W_query | W_key | W_value]`` and its bias (3C,) likewise, so GPT-2 needs ``qkv_bias=True``.
* OpenAI's projections are 1x1 convolutions stored (1, in, out); the leading axis is squeezed away.
  Otherwise no transposes: our Linear weights are (in, out) like GPT-2's, unlike PyTorch's nn.Linear.
* GPT-2 has no separate output layer: it reuses the token embedding (weight tying), so
  ``out_head.weight`` (C, V) is a copy of ``tok_emb.weight`` (V, C) transposed.
* GPT-2's context is 1024 tokens; the LayerNorm epsilon is 1e-5 and GELU the tanh approximation,
  as in numpy_gpt.

Loading reads each tensor straight into the model's parameter array (except c_attn, read into one
temporary (C, 3C) array and split), so it never holds a second copy of the weights. The safetensors
and OpenAI formats are two entries of ``numpy_gpt.load``'s table (model_files.py), and ``load_gpt2``
goes through that same path.

``save_safetensors`` goes the other way: it writes the layout ``transformers.GPT2LMHeadModel``
loads (with a ``config.json`` beside it), so a model trained here can move to PyTorch.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from numpy_gpt.checkpoint import save_checkpoint
from numpy_gpt.download import DownloadError, download_file, gather_downloads
from numpy_gpt.fileio import write_text_atomic
from numpy_gpt.gpt2.openai_tf import TFCheckpointReader, checkpoint_prefix, read_hparams
from numpy_gpt.gpt2.safetensors import SafetensorsReader, save_file
from numpy_gpt.model import GPTModel, validate_config
from numpy_gpt.model_files import GPT2_SPEC, LANGUAGE_MODELS, Format, ModelFile, add_format, read_model_file
from numpy_gpt.tokenizers.spec import check_tokenizer_spec

# -- downloading ---------------------------------------------------------------------------------
GPT2_BASE_URLS = (
    "https://openaipublic.blob.core.windows.net/gpt-2/models",    # OpenAI's original location
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2",   # the book's mirror
)
GPT2_FILES = ("checkpoint", "encoder.json", "hparams.json", "model.ckpt.data-00000-of-00001",
              "model.ckpt.index", "model.ckpt.meta", "vocab.bpe")
GPT2_SIZES = ("124M", "355M", "774M", "1558M")
TOKENIZER_METADATA_KEY = "numpy_gpt.tokenizer"     # safetensors metadata: the tokenizer spec as JSON

# Byte sizes of OpenAI's files, as both URLs serve them (the book's repository checks 124M and
# 355M against both). For 774M and 1558M only the files shared by every size are listed; their
# weights are still verified tensor by tensor (crc32c) when loaded.
_SHARED_FILE_SIZES = {"checkpoint": 77, "encoder.json": 1042301, "vocab.bpe": 456318}
GPT2_FILE_SIZES = {
    "124M": {**_SHARED_FILE_SIZES, "hparams.json": 90, "model.ckpt.data-00000-of-00001": 497759232,
             "model.ckpt.index": 5215, "model.ckpt.meta": 471155},
    "355M": {**_SHARED_FILE_SIZES, "hparams.json": 91, "model.ckpt.data-00000-of-00001": 1419292672,
             "model.ckpt.index": 10399, "model.ckpt.meta": 926519},
    "774M": dict(_SHARED_FILE_SIZES),
    "1558M": dict(_SHARED_FILE_SIZES),
}


def _check_model_size(model_size: str) -> None:
    if model_size not in GPT2_SIZES:
        raise ValueError(f"unknown GPT-2 size {model_size!r}; choose one of {list(GPT2_SIZES)}")


def download_gpt2(model_size: str = "124M", models_dir: str | os.PathLike = "gpt2", *,
                  base_urls: Sequence[str] = GPT2_BASE_URLS, retries: int = 3,
                  progress: bool = True) -> Path:
    """Download OpenAI's seven GPT-2 files into ``models_dir/model_size`` and return that folder.

    Each file is tried at every base URL in turn (``{base}/{model_size}/{file}``: OpenAI's, then
    the book's mirror), resumed if interrupted, and checked against its size in
    ``GPT2_FILE_SIZES``. Files already in place with the right size are kept. Offline, the error
    says where to put the files by hand.
    """
    _check_model_size(model_size)
    model_dir = Path(models_dir) / model_size
    expected = GPT2_FILE_SIZES[model_size]
    jobs = [lambda name=name: download_file(
                [f"{base.rstrip('/')}/{model_size}/{name}" for base in base_urls], model_dir / name,
                size=expected.get(name), retries=retries, progress=progress,
                desc=f"GPT-2 {model_size} {name}")
            for name in GPT2_FILES]
    try:
        gather_downloads(jobs)                      # offline: every missing file named at once
    except DownloadError as err:
        raise DownloadError(
            f"{err}\n\nGPT-2 {model_size} is these {len(GPT2_FILES)} files, all in {model_dir}: "
            f"{', '.join(GPT2_FILES)} (from {base_urls[0]}/{model_size}/<file>). Once they are "
            f"there, load_gpt2({str(model_dir)!r}) reads them without the network.",
            err.missing, err.offline) from None
    return model_dir


# -- the name mapping ------------------------------------------------------------------------------
# numpy_gpt name -> (OpenAI TensorFlow name, Hugging Face name), for tensors copied as they are
# (after squeezing OpenAI's leading conv axis). {i} is the transformer block's index.
_DIRECT = {
    "tok_emb.weight": ("model/wte", "wte.weight"),                        # (V, C)
    "pos_emb.weight": ("model/wpe", "wpe.weight"),                        # (T, C)
    "trf_blocks.{i}.norm1.scale": ("model/h{i}/ln_1/g", "h.{i}.ln_1.weight"),
    "trf_blocks.{i}.norm1.shift": ("model/h{i}/ln_1/b", "h.{i}.ln_1.bias"),
    "trf_blocks.{i}.att.out_proj.weight": ("model/h{i}/attn/c_proj/w", "h.{i}.attn.c_proj.weight"),
    "trf_blocks.{i}.att.out_proj.bias": ("model/h{i}/attn/c_proj/b", "h.{i}.attn.c_proj.bias"),
    "trf_blocks.{i}.norm2.scale": ("model/h{i}/ln_2/g", "h.{i}.ln_2.weight"),
    "trf_blocks.{i}.norm2.shift": ("model/h{i}/ln_2/b", "h.{i}.ln_2.bias"),
    "trf_blocks.{i}.ff.layers.0.weight": ("model/h{i}/mlp/c_fc/w", "h.{i}.mlp.c_fc.weight"),      # (C, 4C)
    "trf_blocks.{i}.ff.layers.0.bias": ("model/h{i}/mlp/c_fc/b", "h.{i}.mlp.c_fc.bias"),
    "trf_blocks.{i}.ff.layers.2.weight": ("model/h{i}/mlp/c_proj/w", "h.{i}.mlp.c_proj.weight"),  # (4C, C)
    "trf_blocks.{i}.ff.layers.2.bias": ("model/h{i}/mlp/c_proj/b", "h.{i}.mlp.c_proj.bias"),
    "final_norm.scale": ("model/ln_f/g", "ln_f.weight"),
    "final_norm.shift": ("model/ln_f/b", "ln_f.bias"),
}
# c_attn = [W_query | W_key | W_value] along its last axis: weight (C, 3C), bias (3C,).
_QKV = {
    "weight": ("model/h{i}/attn/c_attn/w", "h.{i}.attn.c_attn.weight"),
    "bias": ("model/h{i}/attn/c_attn/b", "h.{i}.attn.c_attn.bias"),
}
_QKV_PARTS = ("W_query", "W_key", "W_value")
# Hugging Face keeps an untied output head (V, C) under this name; GPT-2 itself has none.
_HF_LM_HEAD = "lm_head.weight"
# Buffers (the causal mask) that older Hugging Face files store beside the weights: not weights.
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")
_GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}   # n_heads of GPT-2's four sizes, by emb_dim


def _block_names(table: Mapping[str, tuple[str, str]], n_layers: int) -> list[tuple[str, str, str]]:
    """Expand {i} in a name table: [(ours, openai, hf)] for every block (or once if no {i})."""
    rows = []
    for ours, (openai, hf) in table.items():
        blocks = range(n_layers) if "{i}" in ours else [None]
        rows += [(ours.format(i=i), openai.format(i=i), hf.format(i=i)) for i in blocks]
    return rows


def _copy_transposed(src: np.ndarray, dst: np.ndarray, rows: int = 256) -> None:
    """dst[...] = src.T, a block of src's rows at a time. In one go, the copy strides across memory
    at every element and is 5-10x slower for GPT-2's (50257, 768) token embedding."""
    for start in range(0, src.shape[0], rows):
        dst[:, start:start + rows] = src[start:start + rows].T


def _is_transposed(a: np.ndarray, b: np.ndarray, rows: int = 256) -> bool:
    """np.array_equal(a, b.T) for a (C, V), b (V, C), by blocks of rows, stopping at the first difference."""
    return a.shape == b.shape[::-1] and all(
        np.array_equal(a[:, start:start + rows], b[start:start + rows].T)
        for start in range(0, b.shape[0], rows))


def _squeeze_conv(shape: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """OpenAI's 1x1 conv weights (1, in, out) -> (in, out); other shapes unchanged."""
    return shape[1:] if len(shape) == ndim + 1 and shape[0] == 1 else shape


class _Source:
    """Uniform access to a TF checkpoint or a safetensors file under its own tensor names."""

    def __init__(self, reader: TFCheckpointReader | SafetensorsReader):
        self.reader = reader
        if isinstance(reader, TFCheckpointReader):
            self.style, self.prefix, self.where = "openai", "", str(reader.prefix)
        elif isinstance(reader, SafetensorsReader):
            self.style, self.where = "hf", str(reader.path)
            if "transformer.wte.weight" in reader:
                self.prefix = "transformer."        # what GPT2LMHeadModel.save_pretrained writes
            elif "wte.weight" in reader:
                self.prefix = ""                    # the hub's own gpt2 file (GPT2Model names)
            else:
                raise KeyError(f"{self.where} has no 'wte.weight' or 'transformer.wte.weight': it is "
                               f"not a GPT-2 checkpoint (first keys: {list(reader)[:5]})")
        else:
            raise TypeError(f"expected a TFCheckpointReader or SafetensorsReader, got "
                            f"{type(reader).__name__}")

    def key(self, openai: str, hf: str) -> str:
        return openai if self.style == "openai" else self.prefix + hf

    def shape(self, key: str) -> tuple[int, ...]:
        if key not in self.reader:
            raise KeyError(f"{self.where} has no tensor {key!r}")
        return self.reader.entries[key].shape

    def check(self, expected: Mapping[str, tuple[int, ...]]) -> None:
        """Every expected tensor is there with its shape (conv axis squeezed), and nothing else is
        (apart from the causal-mask buffers of old Hugging Face files)."""
        missing = [k for k in expected if k not in self.reader]
        if missing:
            raise KeyError(f"{self.where} lacks {missing[:10]}{'...' if len(missing) > 10 else ''}: "
                           f"is it a GPT-2 checkpoint with the layers the config says?")
        unexpected = [k for k in self.reader if k not in expected and not k.endswith(_HF_BUFFERS)]
        if unexpected:
            raise ValueError(f"{self.where} holds tensors GPTModel has no place for: {unexpected[:10]}"
                             f"{'...' if len(unexpected) > 10 else ''} (a different architecture?)")
        bad = [f"{k}: {self.shape(k)} vs model {shape}" for k, shape in expected.items()
               if _squeeze_conv(self.shape(k), len(shape)) != shape]
        if bad:
            raise ValueError(f"{self.where} does not match the model config, tensor shapes differ: "
                             + "; ".join(bad[:10]))
        # One rule for every format (.npz, safetensors, TensorFlow): weights are floating point.
        not_float = [f"{k}: {self.reader.entries[k].dtype}" for k in expected
                     if self.reader.entries[k].dtype is None
                     or not np.issubdtype(self.reader.entries[k].dtype, np.floating)]
        if not_float:
            raise ValueError(f"{self.where}: weights must be floating point, but "
                             + "; ".join(not_float[:10]) + " (integer weights are refused in every format)")

    def read_into(self, key: str, target: np.ndarray) -> None:
        """Copy tensor ``key`` into ``target``, reading straight into it when the dtypes agree."""
        if self.reader.entries[key].dtype == target.dtype and target.flags.c_contiguous:
            self.reader.read(key, out=target)
        else:
            target[...] = self.reader.read(key).reshape(target.shape)

    def read(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        return self.reader.read(key).reshape(shape)


def load_weights_into_gpt(gpt: GPTModel, checkpoint: TFCheckpointReader | SafetensorsReader) -> None:
    """Copy GPT-2's weights from an open checkpoint into ``gpt`` (the book's function of this name).

    ``gpt`` must have GPT-2's shapes and ``qkv_bias=True``. Every name, shape and dtype (floating
    point only) is checked first, and the checkpoint may not hold weights the model has no place
    for (the causal-mask buffers of old Hugging Face files are ignored). All or nothing: every
    tensor is read (checksums verified) and checked finite into a separate buffer before ``gpt``
    changes, so a failed load leaves it as it was. Without an ``lm_head.weight``, the output head
    is tied to the token embedding: ``out_head.weight = tok_emb.weight.T``.
    """
    _load_weights(gpt, checkpoint, in_place=False)


def _finite(key: str, array: np.ndarray, where: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: tensor {key!r} holds NaN or infinite values; the file is corrupt or "
                         f"was saved from diverged weights")
    return array


def _load_weights(gpt: GPTModel, checkpoint: TFCheckpointReader | SafetensorsReader, *,
                  in_place: bool) -> None:
    """``load_weights_into_gpt``; with ``in_place`` (a model built just for this load, discarded if it
    fails) each tensor is read straight into its parameter, so the weights are never held twice."""
    if not gpt.cfg["qkv_bias"]:
        raise ValueError("GPT-2's weights include query/key/value biases: build the model with "
                         "qkv_bias=True")
    source = _Source(checkpoint)
    params = dict(gpt.named_parameters())
    n_layers = gpt.cfg["n_layers"]
    direct = [(source.key(openai, hf), params[ours].data)
              for ours, openai, hf in _block_names(_DIRECT, n_layers)]
    packed = [(source.key(openai.format(i=i), hf.format(i=i)),
               [getattr(getattr(gpt.trf_blocks[i].att, part), kind).data for part in _QKV_PARTS])
              for kind, (openai, hf) in _QKV.items() for i in range(n_layers)]
    head = _HF_LM_HEAD if source.style == "hf" and _HF_LM_HEAD in checkpoint else None

    expected = {key: target.shape for key, target in direct}
    for key, (query, _, _) in packed:                              # c_attn: (C, 3C) and (3C,)
        expected[key] = (*query.shape[:-1], 3 * query.shape[-1])
    if head is not None:
        expected[head] = gpt.out_head.weight.shape[::-1]           # (V, C)
    source.check(expected)

    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}        # id(parameter array) -> (it, buffer)

    def into(target: np.ndarray) -> np.ndarray:
        """Where a parameter's values go: the parameter itself, or a buffer copied in at the end."""
        if in_place:
            return target
        return buffers.setdefault(id(target), (target, np.empty_like(target)))[1]

    for key, target in direct:
        source.read_into(key, into(target))
        _finite(key, into(target), source.where)
    for key, targets in packed:
        qkv = _finite(key, source.read(key, expected[key]), source.where)   # squeezes OpenAI's (1, C, 3C)
        width = targets[0].shape[-1]
        for j, target in enumerate(targets):                       # [W_query | W_key | W_value]
            into(target)[...] = qkv[..., j * width:(j + 1) * width]
    head_target = into(gpt.out_head.weight.data)
    if head is not None:                                           # untied head
        _copy_transposed(_finite(head, source.read(head, expected[head]), source.where), head_target)
    else:                                                          # weight tying
        _copy_transposed(into(gpt.tok_emb.weight.data), head_target)
    for target, buffer in buffers.values():                        # all read and checked: now assign
        target[...] = buffer


# -- configs ------------------------------------------------------------------------------------------
def _hidden_dim(n_inner: int | None) -> dict:
    """GPT-2's ``n_inner`` (the feed-forward width; None: 4 * n_embd) as numpy_gpt's ``hidden_dim``."""
    return {} if n_inner is None else {"hidden_dim": n_inner}


def gpt2_config(hparams: Mapping[str, int], drop_rate: float = 0.0) -> dict:
    """numpy_gpt config for OpenAI's hparams.json ({n_vocab, n_ctx, n_embd, n_head, n_layer}, and
    ``n_inner`` when the feed-forward block is not 4 x n_embd wide)."""
    return {"vocab_size": hparams["n_vocab"], "context_length": hparams["n_ctx"],
            "emb_dim": hparams["n_embd"], "n_heads": hparams["n_head"], "n_layers": hparams["n_layer"],
            "drop_rate": drop_rate, "qkv_bias": True, **_hidden_dim(hparams.get("n_inner"))}


def _settings(cfg: Mapping) -> dict[str, int]:
    """The book's ``settings`` (OpenAI's hparams names) for a numpy_gpt config (``n_inner`` only for a
    feed-forward width other than 4 * n_embd)."""
    settings = {"n_vocab": cfg["vocab_size"], "n_ctx": cfg["context_length"], "n_embd": cfg["emb_dim"],
                "n_head": cfg["n_heads"], "n_layer": cfg["n_layers"]}
    return {**settings, "n_inner": cfg["hidden_dim"]} if "hidden_dim" in cfg else settings


def _config_from_hf(path: Path, drop_rate: float) -> dict:
    """numpy_gpt config from a Hugging Face GPT-2 config.json, refusing what GPTModel cannot run."""
    from numpy_gpt.gpt2.hf import read_hf_config  # (hf.py adds its format after this module's)
    hf = read_hf_config(path.parent)
    problems = []
    if hf.get("model_type", "gpt2") != "gpt2":
        problems.append(f"model_type is {hf['model_type']!r}, not 'gpt2'")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function {hf['activation_function']!r} is not GPT-2's tanh GELU")
    if hf.get("layer_norm_epsilon", 1e-5) != 1e-5:
        problems.append(f"layer_norm_epsilon is {hf['layer_norm_epsilon']}, numpy_gpt uses 1e-5")
    n_inner = hf.get("n_inner")
    if n_inner is not None and (not isinstance(n_inner, int) or isinstance(n_inner, bool) or n_inner < 1):
        problems.append(f"n_inner is {n_inner!r}, not a positive integer or null")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag):
            problems.append(f"{flag} is set")
    if hf.get("scale_attn_weights", True) is not True:
        problems.append("scale_attn_weights is false")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer") if k not in hf]
    if missing:
        problems.append(f"the keys {missing} are missing")
    if problems:
        raise ValueError(f"{path} describes a model GPTModel cannot run: " + "; ".join(problems))
    return {"vocab_size": hf["vocab_size"], "context_length": hf["n_positions"],
            "emb_dim": hf["n_embd"], "n_heads": hf["n_head"], "n_layers": hf["n_layer"],
            "drop_rate": drop_rate, "qkv_bias": True, **_hidden_dim(n_inner)}


def _config_from_shapes(reader: SafetensorsReader, drop_rate: float) -> dict:
    """Infer GPT-2's config from tensor shapes; n_heads from the four GPT-2 sizes' widths."""
    source = _Source(reader)
    vocab_size, emb_dim = source.shape(source.prefix + "wte.weight")
    context_length = source.shape(source.prefix + "wpe.weight")[0]
    n_layers = 0
    while source.prefix + f"h.{n_layers}.ln_1.weight" in reader:
        n_layers += 1
    if emb_dim not in _GPT2_HEADS:
        raise ValueError(f"{reader.path}: emb_dim {emb_dim} is not one of GPT-2's sizes, so the number "
                         f"of attention heads cannot be inferred; put the model's config.json beside "
                         f"the file or pass cfg=")
    fc = source.prefix + "h.0.mlp.c_fc.weight"                     # (C, H): the feed-forward width
    n_inner = source.shape(fc)[-1] if fc in reader else None
    return {"vocab_size": vocab_size, "context_length": context_length, "emb_dim": emb_dim,
            "n_heads": _GPT2_HEADS[emb_dim], "n_layers": n_layers, "drop_rate": drop_rate,
            "qkv_bias": True, **_hidden_dim(n_inner)}


# -- loading ------------------------------------------------------------------------------------------
def load_openai_checkpoint(model_dir: str | os.PathLike, *, drop_rate: float = 0.0,
                           dtype: np.dtype | type = np.float32) -> GPTModel:
    """GPTModel (in eval mode) from OpenAI's checkpoint folder: hparams.json + model.ckpt.*."""
    model_dir = Path(model_dir)
    reader = TFCheckpointReader(model_dir)
    gpt = GPTModel(gpt2_config(read_hparams(model_dir), drop_rate), dtype=dtype, init=False)
    _load_weights(gpt, reader, in_place=True)         # a fresh model: read straight into it
    return gpt.eval()


def load_safetensors(path: str | os.PathLike, cfg: Mapping | None = None, *, drop_rate: float = 0.0,
                     dtype: np.dtype | type = np.float32) -> GPTModel:
    """GPTModel (in eval mode) from a GPT-2 safetensors file, with or without ``transformer.`` prefix.

    The config is ``cfg`` if given, else the ``config.json`` beside the file (Hugging Face's), else
    inferred from the tensor shapes (for GPT-2's four sizes).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    reader = SafetensorsReader(path)
    config_json = path.parent / "config.json"
    if cfg is None:
        cfg = (_config_from_hf(config_json, drop_rate) if config_json.is_file()
               else _config_from_shapes(reader, drop_rate))
    gpt = GPTModel(cfg, dtype=dtype, init=False)
    _load_weights(gpt, reader, in_place=True)         # a fresh model: read straight into it
    return gpt.eval()


def _is_openai_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    try:
        return Path(f"{checkpoint_prefix(path)}.index").is_file()
    except ValueError:
        return False


# -- the two GPT-2 formats of numpy_gpt.load (model_files.py) -------------------------------------------
def _safetensors_path(path: Path) -> Path:
    return path / "model.safetensors" if path.is_dir() else path


def _is_safetensors(path: Path) -> bool:
    """A .safetensors file (by its suffix or its first bytes: a u64 size, then the JSON header's "{"),
    or a folder holding model.safetensors whose config.json, if any, describes a GPT-2."""
    if path.is_dir():
        from numpy_gpt.gpt2.hf import folder_model_type
        config = path / "config.json"
        return (path / "model.safetensors").is_file() and (
            not config.is_file() or folder_model_type(path) in (None, "gpt2"))
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    header_size = int.from_bytes(head[:8], "little")
    return len(head) == 9 and head[8:9] == b"{" and 2 <= header_size <= path.stat().st_size


def _metadata_tokenizer(reader: SafetensorsReader) -> dict | None:
    """The tokenizer description ``save_safetensors`` stored in the file's metadata, checked; or None."""
    text = reader.metadata.get(TOKENIZER_METADATA_KEY)
    if text is None:
        return None
    try:
        spec = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError(f"{reader.path}: the tokenizer in its metadata ({TOKENIZER_METADATA_KEY}) is not "
                         f"valid JSON") from None
    check_tokenizer_spec(spec, f"{reader.path}'s tokenizer (metadata {TOKENIZER_METADATA_KEY})")
    return spec


def _read_safetensors(path: Path) -> ModelFile:
    file = _safetensors_path(path)
    reader = SafetensorsReader(file)                                  # its JSON header, no tensor
    config_json = file.parent / "config.json"
    cfg = _config_from_hf(config_json, 0.0) if config_json.is_file() else _config_from_shapes(reader, 0.0)
    try:
        cfg = validate_config(cfg)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{config_json if config_json.is_file() else file}: {err}") from None
    return ModelFile(path, SAFETENSORS, "gpt", cfg, _metadata_tokenizer(reader), build={"file": file})


def _load_safetensors(file: ModelFile, drop_rate: float, dtype: np.dtype | None) -> GPTModel:
    return load_safetensors(file.build["file"], {**file.cfg, "drop_rate": drop_rate},
                            dtype=np.float32 if dtype is None else dtype)


def _read_openai(path: Path) -> ModelFile:
    return ModelFile(path, OPENAI, "gpt", gpt2_config(read_hparams(path)), dict(GPT2_SPEC))


def _load_openai(file: ModelFile, drop_rate: float, dtype: np.dtype | None) -> GPTModel:
    return load_openai_checkpoint(file.path, drop_rate=drop_rate,
                                  dtype=np.float32 if dtype is None else dtype)


SAFETENSORS = Format("safetensors", "a GPT-2 .safetensors file (or a folder holding model.safetensors)",
                     _is_safetensors, _read_safetensors, _load_safetensors)
OPENAI = Format("openai", "an OpenAI GPT-2 folder (hparams.json, checkpoint, model.ckpt.*)",
                _is_openai_dir, _read_openai, _load_openai)
add_format(SAFETENSORS)
add_format(OPENAI)


def load_model(path: str | os.PathLike, *, drop_rate: float = 0.0,
               dtype: np.dtype | type = np.float32) -> GPTModel:
    """GPTModel (in eval mode) from any GPT file: kept for one release, use ``load_gpt2(path)`` (the
    same path, with the book's settings) or ``numpy_gpt.load(path)`` (with the tokenizer)."""
    warnings.warn("numpy_gpt.gpt2.convert.load_model is deprecated: use load_gpt2(path) or "
                  "numpy_gpt.load(path)", DeprecationWarning, stacklevel=2)
    return load_gpt2(path, drop_rate=drop_rate, dtype=dtype)[0]


def load_gpt2(model_size_or_path: str | os.PathLike = "124M", models_dir: str | os.PathLike = "gpt2", *,
              drop_rate: float = 0.0, dtype: np.dtype | type = np.float32,
              base_urls: Sequence[str] = GPT2_BASE_URLS) -> tuple[GPTModel, dict[str, int]]:
    """Pretrained GPT-2, ready to generate: ``(model in eval mode, settings)``.

    ``model_size_or_path`` is a size ("124M", "355M", "774M", "1558M": downloaded into
    ``models_dir/<size>`` unless already there, then read with NumPy) or the path of any GPT language
    model numpy_gpt reads: an OpenAI folder, a .safetensors file (or a folder holding one), a numpy_gpt
    .npz. It goes the way ``numpy_gpt.load`` goes (``read_model_file``, then the weights); another kind
    of file (a classifier, an encoder) is refused, with the command that takes it. ``settings`` is the
    book's hparams dict: n_vocab, n_ctx, n_embd, n_head, n_layer. ``drop_rate`` only matters once you
    train (the book's chapter 5 uses 0.1, chapters 6-7 use 0.0); a .npz keeps its saved config and dtype.
    """
    path = model_size_or_path
    if str(model_size_or_path) in GPT2_SIZES:
        path = download_gpt2(str(model_size_or_path), models_dir, base_urls=base_urls)
    file = read_model_file(path, expect=LANGUAGE_MODELS, use="load_gpt2")
    gpt = file.load_model(drop_rate=drop_rate, dtype=dtype)
    return gpt, _settings(gpt.cfg)


# -- export ---------------------------------------------------------------------------------------------
def _hf_config(gpt: GPTModel, tied: bool) -> dict:
    c = gpt.cfg
    eot = 50256 if c["vocab_size"] > 50256 else None          # GPT-2's <|endoftext|>, if it fits
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c["vocab_size"], "n_positions": c["context_length"], "n_embd": c["emb_dim"],
        "n_head": c["n_heads"], "n_layer": c["n_layers"], "n_inner": c.get("hidden_dim"),
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "embd_pdrop": c["drop_rate"], "attn_pdrop": c["drop_rate"], "resid_pdrop": c["drop_rate"],
        "initializer_range": 0.02, "scale_attn_weights": True, "use_cache": True,
        "bos_token_id": eot, "eos_token_id": eot, "tie_word_embeddings": tied,
        "dtype": gpt.dtype.name,
    }


def gpt_to_hf_tensors(gpt: GPTModel) -> tuple[dict[str, np.ndarray], bool]:
    """Hugging Face GPT2LMHeadModel tensors for ``gpt`` and whether its head is tied to wte.

    The reverse of ``load_weights_into_gpt``: W_query/W_key/W_value are concatenated into c_attn
    (with zero biases if the model has none, which computes the same), and ``lm_head.weight`` is
    written only when ``out_head`` differs from ``tok_emb`` transposed (a model trained here with
    its own head, as the book's GPTModel has).
    """
    params = dict(gpt.named_parameters())
    tensors = {}
    for ours, _, hf in _block_names(_DIRECT, gpt.cfg["n_layers"]):
        tensors["transformer." + hf] = params[ours].data
    for i, block in enumerate(gpt.trf_blocks):
        parts = [getattr(block.att, part) for part in _QKV_PARTS]
        tensors[f"transformer.h.{i}.attn.c_attn.weight"] = np.concatenate(
            [p.weight.data for p in parts], axis=1)                                   # (C, 3C)
        tensors[f"transformer.h.{i}.attn.c_attn.bias"] = np.concatenate(
            [p.bias.data if p.bias is not None else np.zeros(p.out_features, gpt.dtype) for p in parts])
    tied = _is_transposed(gpt.out_head.weight.data, gpt.tok_emb.weight.data)
    if not tied:
        lm_head = np.empty(gpt.out_head.weight.shape[::-1], dtype=gpt.dtype)          # (V, C)
        _copy_transposed(gpt.out_head.weight.data, lm_head)
        tensors[_HF_LM_HEAD] = lm_head
    return tensors, tied


def read_tokenizer_spec(path: str | os.PathLike) -> dict | None:
    """The tokenizer a model file records: kept for one release, use ``read_model_file(path).tokenizer_spec``
    (numpy_gpt.model_files), which reads a .npz's metadata without its weights."""
    warnings.warn("read_tokenizer_spec is deprecated: use numpy_gpt.model_files.read_model_file(path)"
                  ".tokenizer_spec", DeprecationWarning, stacklevel=2)
    return read_model_file(path).tokenizer_spec


def save_safetensors(gpt: GPTModel, path: str | os.PathLike, tokenizer: Mapping | None = None) -> Path:
    """Write ``gpt`` for ``transformers.GPT2LMHeadModel.from_pretrained``; return the file's path.

    ``path`` is a ``.safetensors`` file or a folder (then ``model.safetensors`` inside it). A
    ``config.json`` is written beside the file; with the default name, the folder loads with
    ``GPT2LMHeadModel.from_pretrained(folder)``. ``tokenizer`` (a tokenizer spec, see
    tokenizers/spec.py) is stored as JSON in the file's metadata, so a model with its own
    tokenizer converts back without loss.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors, tied = gpt_to_hf_tensors(gpt)
    metadata = {"format": "pt"}                             # transformers requires format "pt"
    if tokenizer is not None:
        metadata[TOKENIZER_METADATA_KEY] = json.dumps(dict(tokenizer), separators=(",", ":"))
    save_file(tensors, path, metadata=metadata)
    write_text_atomic(path.parent / "config.json", json.dumps(_hf_config(gpt, tied), indent=2) + "\n",
                      newline=None)
    return path


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, models_dir: str | os.PathLike = "gpt2",
            dtype: np.dtype | type = np.float32) -> Path:
    """Convert a GPT-2 checkpoint between formats; return the path written.

    ``src``: an OpenAI folder, a .safetensors file (or folder with model.safetensors), a numpy_gpt
    .npz, or a size name (downloaded into ``models_dir``). ``dst``: a ``.npz`` (numpy_gpt checkpoint), a
    ``.safetensors`` file, or a folder (model.safetensors + config.json, for transformers).
    Writing OpenAI's TensorFlow format is not supported: TensorFlow and transformers both read
    safetensors folders.
    """
    dst = Path(dst)
    if _is_openai_dir(dst):
        raise ValueError(f"{dst} holds an OpenAI checkpoint: writing OpenAI's TensorFlow format is not "
                         f"supported; convert to a .safetensors file, a new folder (model.safetensors + "
                         f"config.json) or a .npz instead")
    if str(src) in GPT2_SIZES:
        src = download_gpt2(str(src), models_dir)
    file = read_model_file(src, expect=LANGUAGE_MODELS, use="convert")
    gpt = file.load_model(dtype=dtype)
    # The tokenizer travels with the weights, so `numpy-gpt generate` reads the result as the source.
    tokenizer = file.tokenizer_description()               # GPT-2's for Hugging Face's gpt2 file
    if dst.suffix == ".npz":
        dst.parent.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(dst, gpt, extra={} if tokenizer is None else {"tokenizer": tokenizer})
    return save_safetensors(gpt, dst, tokenizer)
