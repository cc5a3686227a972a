"""Save and resume training: a model (and optionally its AdamW state) in one .npz file.

Chapter 5 of the book saves ``model.state_dict()`` and ``optimizer.state_dict()`` with
``torch.save`` and restores them with ``torch.load`` to continue pretraining. ``torch.save`` is a
pickle, and unpickling runs arbitrary code; numpy_gpt writes a plain NumPy ``.npz`` (a zip of
``.npy`` arrays) instead and reads it with ``allow_pickle=False``. Its entries are

* ``model/<name>``       every parameter, by its state-dict name (``trf_blocks.0.att.W_query.weight``);
* ``optimizer/<key>``    the optimizer's arrays (``state.3.exp_avg`` ...), when an optimizer is saved;
* ``__meta__``           a JSON document encoded as a uint8 array: format name and version, the
                         model's ``cfg`` and dtype, the training step, the dropout RNG state, the
                         optimizer's non-array state (hyperparameters, step counts), the alpha
                         of each LoRA adapter the model keeps (``lora``; their ranks are the
                         arrays' shapes) and a free ``extra`` dict (tokenizer, losses so far, ...).

``read_checkpoint_meta`` reads the metadata and every array's shape without reading an array;
``numpy_gpt.load`` (model_files.py) uses it to tell what a file holds before building its model.

The file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash or a full disk never leaves a half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.fileio import ZIP_READ_ERRORS, atomic_write, read_json
from numpy_gpt.model import GPTModel, validate_config
from numpy_gpt.nn.block import config_option
from numpy_gpt.nn.feedforward import ff_hidden_dim
from numpy_gpt.nn.lora import LinearWithLoRA
from numpy_gpt.nn.module import Module
from numpy_gpt.optim import AdamW

FORMAT_NAME = "numpy_gpt-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
MODEL_PREFIX = "model/"
OPTIMIZER_PREFIX = "optimizer/"
GPT_CLASS = "GPTModel"            # the model_class of GPT checkpoints: language models and classifiers
# cfg entries that may differ between a checkpoint and the model it is loaded into: they change
# training behaviour, not the network's function or shapes.
TRAINING_ONLY_CFG_KEYS = frozenset({"drop_rate", "drop_rate_attn"})


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, truncated, or not matching the model."""


class NonFiniteStateError(ValueError):
    """``save_checkpoint`` refused to write weights or optimizer state holding NaN or inf: such a
    file could only poison a later run, and writing it would replace a good checkpoint."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns. ``optimizer_state`` is ready for ``AdamW.load_state_dict``
    (None when the file has none or it was not requested); ``rng_state`` is the dropout generator's
    ``bit_generator.state`` (None when the model had no ``dropout_rng``)."""

    model: Module
    step: int
    optimizer_state: dict[str, Any] | None
    extra: dict[str, Any]
    rng_state: dict[str, Any] | None
    cfg: dict[str, Any] | None
    dtype: str
    path: Path


# -- JSON helpers ---------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _encode_json(document: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(document, default=_json_default).encode("utf-8"), dtype=np.uint8)


def _rng_state_to_json(state: Any) -> Any:
    """bit_generator.state with its arrays (MT19937 keeps one) turned into tagged lists."""
    if isinstance(state, dict):
        return {k: _rng_state_to_json(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return {"__ndarray__": state.tolist(), "dtype": state.dtype.name}
    return state


def _rng_state_from_json(state: Any) -> Any:
    """The inverse of ``_rng_state_to_json``. Only integer arrays are rebuilt (a bit generator's
    state holds nothing else); any other tagged value is a ValueError."""
    if isinstance(state, dict):
        if "__ndarray__" in state:
            values, dtype = state["__ndarray__"], np.dtype(state["dtype"])
            if dtype.kind not in "iu" or not isinstance(values, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise ValueError(f"an RNG state array must be a list of integers of an integer dtype, "
                                 f"got {str(values)[:60]} of dtype {dtype}")
            return np.array(values, dtype=dtype)
        return {k: _rng_state_from_json(v) for k, v in state.items()}
    return state


# -- saving ---------------------------------------------------------------------------------------
def model_config(model: Module) -> dict[str, Any] | None:
    """The config dict a model was built from (``model.cfg``), or None for a model without one."""
    cfg = getattr(model, "cfg", None)
    return cfg if isinstance(cfg, dict) else None


def save_checkpoint(path: str | os.PathLike, model: Module, optimizer: AdamW | None = None, *,
                    step: int = 0, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and ``optimizer``'s state) to the .npz file ``path``, atomically.

    ``step`` is the training step to resume from; ``extra`` is any JSON-serialisable dict stored
    alongside (tokenizer name, tokens seen, losses...). The file is written exactly at ``path`` (no
    suffix is added); an existing file there is replaced only once the new one is complete.
    Weights or optimizer arrays holding NaN or inf raise ``NonFiniteStateError`` and nothing is
    written. Returns the path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save checkpoint {path}: folder {path.parent} does not exist")
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")

    arrays = {MODEL_PREFIX + name: data for name, data in model.state_dict().items()}
    if not arrays:
        raise ValueError(f"{type(model).__name__} has no parameters to save")
    dtype = getattr(model, "dtype", None)
    dtype = next(iter(arrays.values())).dtype if dtype is None else dtype
    rng = getattr(model, "dropout_rng", None)
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "cfg": model_config(model),
        "dtype": np.dtype(dtype).name,
        "step": int(step),
        "extra": extra,
        "dropout_rng_state": (_rng_state_to_json(rng.bit_generator.state)
                              if isinstance(rng, np.random.Generator) else None),
        "optimizer": None,
    }
    lora = {name: float(m.lora.alpha) for name, m in model.named_modules() if isinstance(m, LinearWithLoRA)}
    if lora:                                 # kept adapters: their ranks are in A's shape, not their alpha
        meta["lora"] = lora
    if optimizer is not None:
        meta["optimizer"] = {}
        for key, value in optimizer.state_dict().items():
            if isinstance(value, np.ndarray):
                arrays[OPTIMIZER_PREFIX + key] = value
            else:
                meta["optimizer"][key] = value
    for key, value in arrays.items():
        if np.issubdtype(value.dtype, np.inexact) and not np.isfinite(value).all():
            raise NonFiniteStateError(f"cannot save checkpoint {path}: {key} holds NaN or infinite values "
                                      f"(the weights diverged); the file was not written")
    try:
        arrays[META_KEY] = _encode_json(meta)
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot save checkpoint {path}: extra and cfg must be JSON-serialisable "
                        f"(numbers, strings, lists, dicts): {err}") from None
    with atomic_write(path, "wb", fsync=True) as f:      # a file object: np.savez adds no ".npz"
        np.savez(f, allow_pickle=False, **arrays)
    return path


# -- loading --------------------------------------------------------------------------------------
# Nothing in a checkpoint is trusted before it is checked. The zip's central directory and each
# entry's .npy header (a few hundred bytes) say every array's shape, dtype and size; they are read
# first and checked against each other, against the file's real size and against the saved cfg, so
# neither a lying cfg (vocab_size=10**9) nor a lying header makes us allocate more than the file
# holds. __meta__ is read only up to MAX_META_BYTES.
MAX_META_BYTES = 32 * 2**20
# Deflate cannot expand data more than 1032 times; an entry that claims more is lying.
_MAX_DEFLATE_RATIO = 1100
_READ_ERRORS = (*ZIP_READ_ERRORS, ValueError, OSError, KeyError)


def _corrupt(path: Path, what: str, err: BaseException | None = None) -> CheckpointError:
    detail = f": {err}" if err is not None else ""
    return CheckpointError(f"checkpoint {path} is corrupt or truncated ({what}{detail}); re-save it or "
                           f"use an older copy")


@dataclass(frozen=True)
class _Entry:
    """One array of the archive, as its zip and .npy headers describe it (no data read)."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool


def _read_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> _Entry:
    """Parse one entry's .npy header and check it against the zip's sizes."""
    key = info.filename[:-len(".npy")]
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _corrupt(path, f"entry {key!r} says it is packed with zip compression method "
                             f"{info.compress_type}; a .npz uses only 0 (stored) or 8 (deflate)")
    stored = info.compress_type == zipfile.ZIP_STORED
    if (stored and info.file_size != info.compress_size) or (
            not stored and info.file_size > _MAX_DEFLATE_RATIO * max(info.compress_size, 1)):
        raise _corrupt(path, f"entry {key!r} claims {info.file_size} bytes from {info.compress_size} "
                             f"stored, which no zip compression gives")
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
            header_size = f.tell()
    except _READ_ERRORS as err:
        raise _corrupt(path, f"header of entry {key!r} cannot be read", err) from err
    if dtype.hasobject or dtype.itemsize == 0:
        raise CheckpointError(f"checkpoint {path}: entry {key!r} has dtype {dtype}; a checkpoint holds "
                              f"only numbers (objects would need unpickling, which numpy_gpt never does)")
    if header_size + math.prod(shape) * dtype.itemsize != info.file_size:
        raise _corrupt(path, f"entry {key!r} says {dtype} {tuple(shape)} but holds "
                             f"{info.file_size - header_size} bytes of data")
    return _Entry(key, info, tuple(shape), dtype, fortran_order)


def _read_into(zf: zipfile.ZipFile, entry: _Entry, out: np.ndarray, path: Path) -> np.ndarray:
    """Read ``entry``'s data into ``out`` (same shape; cast if the dtypes differ); returns ``out``.
    The zip's CRC-32 of the entry is checked once its last byte is read."""
    direct = entry.dtype == out.dtype and out.flags.c_contiguous and not entry.fortran_order
    buffer = out if direct else np.empty(entry.shape[::-1] if entry.fortran_order else entry.shape,
                                         dtype=entry.dtype)
    view = buffer.reshape(-1).view(np.uint8)
    try:
        with zf.open(entry.info) as f:
            f.seek(entry.info.file_size - view.nbytes)            # skip the .npy header
            filled = 0
            while filled < view.nbytes:
                n = f.readinto(view[filled:])
                if not n:
                    raise EOFError(f"the data ends after {filled} of {view.nbytes} bytes")
                filled += n
            if f.read(1):                                         # also makes zipfile check the CRC
                raise ValueError("more data than the header says")
    except _READ_ERRORS as err:
        raise _corrupt(path, f"entry {entry.key!r} cannot be read", err) from err
    if not direct:
        out[...] = buffer.T if entry.fortran_order else buffer
    return out


def _read_finite(zf: zipfile.ZipFile, entry: _Entry, out: np.ndarray, path: Path) -> np.ndarray:
    _read_into(zf, entry, out, path)
    if not np.isfinite(out).all():
        raise CheckpointError(f"checkpoint {path}: tensor {entry.key!r} holds NaN or infinite values (it was "
                              f"saved from diverged weights); use an earlier checkpoint")
    return out


def _field_error(path: Path, field: str, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: field {field!r} of {META_KEY} {problem}")


def _parse_meta(zf: zipfile.ZipFile, entries: dict[str, _Entry], path: Path) -> dict[str, Any]:
    """Read __meta__ (bounded), parse its JSON and check every field's type."""
    entry = entries.get(META_KEY)
    if entry is None:
        raise CheckpointError(f"{path} has no {META_KEY!r} entry: it is an .npz file but not a numpy_gpt "
                              f"checkpoint (write one with save_checkpoint)")
    if entry.dtype != np.uint8 or len(entry.shape) != 1:
        raise _corrupt(path, f"{META_KEY} should be a 1-D uint8 array, not {entry.dtype} {entry.shape}")
    if entry.shape[0] > MAX_META_BYTES:
        raise CheckpointError(f"checkpoint {path}: {META_KEY} is {entry.shape[0]:,} bytes, more than the "
                              f"{MAX_META_BYTES:,} a numpy_gpt checkpoint's metadata may take")
    raw = _read_into(zf, entry, np.empty(entry.shape, np.uint8), path)
    try:
        meta = read_json(raw.tobytes(), where=f"checkpoint {path}, entry {META_KEY}")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(meta, dict):
        raise _corrupt(path, f"{META_KEY} is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a numpy_gpt checkpoint (format {meta.get('format')!r:.100})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r:.100}; this numpy_gpt reads "
                              f"version {FORMAT_VERSION} (upgrade numpy_gpt to read newer files)")
    step = meta.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise _field_error(path, "step", f"must be an integer >= 0, got {step!r:.100}")
    for field, kind in (("extra", dict), ("cfg", dict), ("dropout_rng_state", dict), ("optimizer", dict),
                        ("lora", dict), ("dtype", str), ("model_class", str)):
        value = meta.get(field)
        if value is not None and not isinstance(value, kind):
            raise _field_error(path, field, f"must be a JSON {'object' if kind is dict else 'string'} or "
                                            f"null, got {type(value).__name__}")
    if meta.get("cfg") is not None and meta.get("model_class", GPT_CLASS) == GPT_CLASS:
        try:                          # other models' configs are checked by their loaders (model_files.py)
            validate_config(meta["cfg"])
        except (KeyError, TypeError, ValueError) as err:
            raise _field_error(path, "cfg", f"is not a valid GPT config: {err}") from None
    for name, alpha in (meta.get("lora") or {}).items():
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not math.isfinite(alpha):
            raise _field_error(path, "lora", f"must map each adapted layer to its alpha, a number; got "
                                             f"{name!r:.60}: {alpha!r:.60}")
    return meta


def _open(path: Path) -> tuple[zipfile.ZipFile, dict[str, _Entry], dict[str, Any]]:
    """Open the archive and read, check and return every entry header and the metadata."""
    with open(path, "rb") as f:
        if f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX:
            raise _corrupt(path, "it holds a single .npy array, not a checkpoint .npz archive")
    try:
        zf = zipfile.ZipFile(path)
    except _READ_ERRORS as err:
        raise _corrupt(path, "not a readable .npz archive", err) from err
    try:
        entries = {}
        for info in zf.infolist():
            if not info.filename.endswith(".npy") or info.filename[:-4] in entries:
                raise CheckpointError(f"{path} has an unexpected entry {info.filename!r:.200}: it is not "
                                      f"a numpy_gpt checkpoint")
            entry = _read_header(zf, info, path)
            entries[entry.key] = entry
        meta = _parse_meta(zf, entries, path)
        strays = sorted(k for k in entries if k != META_KEY and not k.startswith((MODEL_PREFIX,
                                                                                   OPTIMIZER_PREFIX)))
        if strays:
            raise CheckpointError(f"{path} has unexpected entries {strays[:10]}")
    except BaseException:
        zf.close()
        raise
    return zf, entries, meta


def block_parameter_shapes(prefix: str, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """{state-dict name: shape} of one ``TransformerBlock(cfg)`` whose names start with ``prefix``:
    attention, feed-forward, two norms, with the config's decoder switches (nn/block.py's
    ``DECODER_DEFAULTS``: heads, widths, biases, norms). The same for GPT's blocks and the encoder's."""
    C, H = cfg["emb_dim"], ff_hidden_dim(cfg)                            # noqa: N806 (the math's names)
    hd = config_option(cfg, "head_dim")
    q_width, kv_width = cfg["n_heads"] * hd, config_option(cfg, "n_kv_heads") * hd
    shapes: dict[str, tuple[int, ...]] = {}
    for name, width in (("W_query", q_width), ("W_key", kv_width), ("W_value", kv_width)):
        shapes[f"{prefix}att.{name}.weight"] = (C, width)
        if cfg["qkv_bias"]:
            shapes[f"{prefix}att.{name}.bias"] = (width,)
    shapes[f"{prefix}att.out_proj.weight"] = (q_width, C)
    if config_option(cfg, "out_bias"):
        shapes[f"{prefix}att.out_proj.bias"] = (C,)
    if config_option(cfg, "qk_norm"):
        shapes.update({f"{prefix}att.q_norm.scale": (hd,), f"{prefix}att.k_norm.scale": (hd,)})
    swiglu = config_option(cfg, "feed_forward") == "swiglu"
    layers = (("gate", C, H), ("up", C, H), ("down", H, C)) if swiglu else \
        (("layers.0", C, H), ("layers.2", H, C))
    for name, fan_in, fan_out in layers:
        shapes[f"{prefix}ff.{name}.weight"] = (fan_in, fan_out)
        if config_option(cfg, "ff_bias"):
            shapes[f"{prefix}ff.{name}.bias"] = (fan_out,)
    for norm in ("norm1", "norm2"):
        shapes.update(norm_parameter_shapes(f"{prefix}{norm}.", C, cfg))
    return shapes


def norm_parameter_shapes(prefix: str, C: int, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:  # noqa: N803
    """A LayerNorm's scale and shift, or an RMSNorm's scale alone."""
    if config_option(cfg, "normalization") == "rmsnorm":
        return {f"{prefix}scale": (C,)}
    return {f"{prefix}scale": (C,), f"{prefix}shift": (C,)}


def gpt_parameter_shapes(cfg: dict[str, Any], num_classes: int | None = None) -> dict[str, tuple[int, ...]]:
    """{state-dict name: shape} of ``GPTModel(cfg)`` (with ``num_classes``: of the classifier that
    ``add_classification_head`` makes), computed without building it."""
    V, T, C = cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"]    # noqa: N806 (the math's names)
    shapes: dict[str, tuple[int, ...]] = {"tok_emb.weight": (V, C)}
    if config_option(cfg, "positions") == "learned":
        shapes["pos_emb.weight"] = (T, C)
    for i in range(cfg["n_layers"]):
        shapes.update(block_parameter_shapes(f"trf_blocks.{i}.", cfg))
    shapes.update(norm_parameter_shapes("final_norm.", C, cfg))
    if num_classes is not None:
        shapes.update({"out_head.weight": (C, num_classes), "out_head.bias": (num_classes,)})
    elif not config_option(cfg, "tie_embeddings"):
        shapes["out_head.weight"] = (C, V)
    return shapes


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint holds, read from its headers alone: the checked ``__meta__`` document and
    the shape and dtype of every stored parameter, by state-dict name. No array has been read."""

    path: Path
    meta: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]

    @property
    def dtype(self) -> np.dtype:
        """The dtype the model was saved in (float32 or float64; float32 when not recorded)."""
        dtype = self.meta.get("dtype", "float32")
        if dtype not in ("float32", "float64"):
            raise _field_error(self.path, "dtype", f"must be 'float32' or 'float64', got {dtype!r:.100}")
        return np.dtype(dtype)

    def check_fit(self, expected: dict[str, tuple[int, ...]], what: str) -> None:
        """Every expected parameter is stored, floating point, with its shape, and nothing else is
        (else CheckpointError): a model of that description then allocates no more than the file holds."""
        missing = sorted(set(expected) - set(self.shapes))
        unexpected = sorted(set(self.shapes) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{self.path} does not match {what}: missing parameters {missing[:10]}, "
                                  f"unexpected parameters {unexpected[:10]}")
        problems = []
        for name, shape in expected.items():
            if self.shapes[name] != tuple(shape):
                problems.append(f"{name}: checkpoint {self.shapes[name]} vs model {tuple(shape)}")
            elif not np.issubdtype(self.dtypes[name], np.floating):
                problems.append(f"{name}: checkpoint dtype {self.dtypes[name]} is not floating point")
        if problems:
            raise CheckpointError(f"{self.path} does not fit {what}: " + "; ".join(problems[:10]))


def _not_a_language_model(header: CheckpointHeader) -> str | None:
    """What a checkpoint holds when it is not a plain GPTModel language model, else None."""
    model_class = header.meta.get("model_class", GPT_CLASS)
    if model_class != GPT_CLASS:
        return f"a model of class {model_class:.60}"
    if header.meta.get("cfg") is None:
        return "a model without its cfg"
    if "out_head.bias" in header.shapes or "out_head.linear.bias" in header.shapes:
        return "a GPT classifier (a small head in place of the output layer)"
    if header.meta.get("lora") or any(name.endswith(".lora.A") for name in header.shapes):
        return "a GPT with LoRA adapters kept beside its weights"
    return None


def _header(path: Path, entries: dict[str, _Entry], meta: dict[str, Any]) -> CheckpointHeader:
    params = {k[len(MODEL_PREFIX):]: e for k, e in entries.items() if k.startswith(MODEL_PREFIX)}
    return CheckpointHeader(path, meta, {k: e.shape for k, e in params.items()},
                            {k: e.dtype for k, e in params.items()})


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    absent = "<absent>"
    keys = sorted((set(saved) | set(current)) - TRAINING_ONLY_CFG_KEYS)
    return [f"{k}: checkpoint {saved.get(k, absent)!r} vs model {current.get(k, absent)!r}"
            for k in keys if saved.get(k, absent) != current.get(k, absent)]


def _checked_rng_state(path: Path, state: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """The saved dropout RNG state, decoded and proven to fit ``rng``'s bit generator (on a scratch
    generator of the same type, so ``rng`` itself is not touched yet)."""
    current = type(rng.bit_generator).__name__
    if state.get("bit_generator") != current:
        raise CheckpointError(f"the saved dropout RNG state is for {state.get('bit_generator')!r:.100}, "
                              f"but the model's generator is {current}")
    try:
        decoded = _rng_state_from_json(state)
        type(rng.bit_generator)().state = decoded
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise _field_error(path, "dropout_rng_state", f"is not a valid {current} state ({err})") from None
    return decoded


def restore_dropout_rng(model: Module, state: dict[str, Any]) -> None:
    """Put ``model.dropout_rng`` back in a saved ``bit_generator.state``, in place (every Dropout of
    the model shares that generator, so they all continue the saved random stream)."""
    rng = getattr(model, "dropout_rng", None)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{type(model).__name__} has no dropout_rng generator to restore")
    current = type(rng.bit_generator).__name__
    if state.get("bit_generator") != current:
        raise CheckpointError(f"the saved dropout RNG state is for {state.get('bit_generator')!r}, but the "
                              f"model's generator is {current}")
    rng.bit_generator.state = state


ShapesFromMeta = Callable[[dict[str, Any]], dict[str, tuple[int, ...]]]


def read_checkpoint_header(path: str | os.PathLike) -> CheckpointHeader:
    """The metadata and parameter shapes of a checkpoint, read without any array: the zip's
    directory, each entry's .npy header and the bounded ``__meta__`` entry, all checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" +
                                ("" if path.suffix else " (checkpoints are .npz files: add the suffix?)"))
    zf, entries, meta = _open(path)
    zf.close()
    return _header(path, entries, meta)


def read_checkpoint_meta(path: str | os.PathLike, shapes_from_meta: ShapesFromMeta | None = None
                         ) -> dict[str, Any]:
    """The checked ``__meta__`` document of a checkpoint, read without any array.

    With ``shapes_from_meta``, the parameter shapes it derives from the metadata (for instance
    ``gpt_parameter_shapes`` of the cfg) are checked against the shapes the archive really holds,
    so a model built from the metadata afterwards allocates no more than the file contains.
    """
    header = read_checkpoint_header(path)
    if shapes_from_meta is not None:
        header.check_fit(shapes_from_meta(header.meta), "the model its metadata describes")
    return header.meta


def load_checkpoint(path: str | os.PathLike, model: Module | None = None, *,
                    load_optimizer: bool = True) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    Without ``model``, a GPTModel is built from the saved cfg and dtype; with one, its cfg is
    checked against the saved cfg (``drop_rate`` may differ) and the parameters are copied into it.
    The model's dropout RNG is restored when the file has its state. With ``load_optimizer`` the
    optimizer arrays are read into ``Checkpoint.optimizer_state`` (pass False for inference, to
    skip them).

    All or nothing: every header, the metadata's fields, the RNG state and every array (readable,
    CRC-32 intact, finite) are checked before the model passed in changes at all; a failed load
    raises ``CheckpointError`` and leaves it exactly as it was. Nothing is allocated before the
    saved cfg has been checked against the shapes the file really holds.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" +
                                ("" if path.suffix else " (checkpoints are .npz files: add the suffix?)"))
    zf, entries, meta = _open(path)
    with zf:
        header = _header(path, entries, meta)
        cfg = meta.get("cfg")
        fresh = model is None
        if fresh:
            other = _not_a_language_model(header)
            if other is not None:
                raise CheckpointError(f"{path} holds {other}, which load_checkpoint(path) does not build: "
                                      f"numpy_gpt.load(path) builds the model any numpy_gpt checkpoint "
                                      f"describes (or pass one: load_checkpoint(path, model))")
            header.check_fit(gpt_parameter_shapes(cfg), f"the GPTModel its cfg describes {cfg}")
            model = GPTModel(cfg, dtype=header.dtype, init=False)
        else:
            if cfg is not None and isinstance(getattr(model, "cfg", None), dict):
                differences = _config_differences(cfg, model.cfg)
                if differences:
                    raise CheckpointError(f"{path} was saved from a model with a different config: "
                                          + "; ".join(differences))
        params = dict(model.named_parameters())
        header.check_fit({name: p.shape for name, p in params.items()}, type(model).__name__)

        rng = getattr(model, "dropout_rng", None)
        rng_state = meta.get("dropout_rng_state")
        if rng_state is not None and isinstance(rng, np.random.Generator):
            rng_state = _checked_rng_state(path, rng_state, rng)

        optimizer_state = None
        if load_optimizer and meta.get("optimizer") is not None:
            optimizer_state = dict(meta["optimizer"])
            for key, entry in entries.items():
                if key.startswith(OPTIMIZER_PREFIX):
                    optimizer_state[key[len(OPTIMIZER_PREFIX):]] = _read_finite(
                        zf, entry, np.empty(entry.shape, entry.dtype.newbyteorder("=")), path)

        # A model built here is thrown away if a read fails, so it is filled directly; a model passed
        # in is only written once every array has been read and checked.
        staged = {name: _read_finite(zf, entries[MODEL_PREFIX + name],
                                     p.data if fresh else np.empty(p.shape, p.data.dtype), path)
                  for name, p in params.items()}
    if not fresh:
        for name, p in params.items():
            p.data[...] = staged[name]
    if isinstance(rng_state, dict) and isinstance(rng, np.random.Generator):
        rng.bit_generator.state = rng_state
    return Checkpoint(model=model, step=meta.get("step", 0), optimizer_state=optimizer_state,
                      extra=meta.get("extra") or {}, rng_state=rng_state, cfg=cfg,
                      dtype=str(meta.get("dtype")), path=path)
