"""Save and resume training: a model (and optionally its AdamW state) in one .npz file.

Chapter 5 of the book saves ``model.state_dict()`` and ``optimizer.state_dict()`` with
``torch.save`` and restores them with ``torch.load`` to continue pretraining. ``torch.save`` is a
pickle, and unpickling runs arbitrary code; numpy_gpt writes a plain NumPy ``.npz`` (a zip of
``.npy`` arrays) instead and reads it with ``allow_pickle=False``. Its entries are

* ``model/<name>``       every parameter, by its state-dict name (``trf_blocks.0.att.W_query.weight``);
* ``optimizer/<key>``    the optimizer's arrays (``state.3.exp_avg`` ...), when an optimizer is saved;
* ``__meta__``           a JSON document encoded as a uint8 array: format name and version, the
                         model's ``cfg`` and dtype, the training step, the dropout RNG state, the
                         optimizer's non-array state (hyperparameters, step counts) and a free
                         ``extra`` dict (tokenizer name, losses so far, ...).

The file is written atomically (a temporary file in the same folder, then ``os.replace``), so a
crash or a full disk never leaves a half-written checkpoint in place of a good one.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.fileio import atomic_write
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import Module
from numpy_gpt.optim import AdamW

FORMAT_NAME = "numpy_gpt-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"
MODEL_PREFIX = "model/"
OPTIMIZER_PREFIX = "optimizer/"
# cfg entries that may differ between a checkpoint and the model it is loaded into: they change
# training behaviour, not the network's function or shapes.
TRAINING_ONLY_CFG_KEYS = frozenset({"drop_rate"})


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: corrupt, truncated, or not matching the model."""


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
    if isinstance(state, dict):
        if "__ndarray__" in state:
            return np.array(state["__ndarray__"], dtype=state["dtype"])
        return {k: _rng_state_from_json(v) for k, v in state.items()}
    return state


# -- saving ---------------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, model: Module, optimizer: AdamW | None = None, *,
                    step: int = 0, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (and ``optimizer``'s state) to the .npz file ``path``, atomically.

    ``step`` is the training step to resume from; ``extra`` is any JSON-serialisable dict stored
    alongside (tokenizer name, tokens seen, losses...). The file is written exactly at ``path`` (no
    suffix is added); an existing file there is replaced only once the new one is complete.
    Returns the path written.
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
        "cfg": getattr(model, "cfg", None),
        "dtype": np.dtype(dtype).name,
        "step": int(step),
        "extra": extra,
        "dropout_rng_state": (_rng_state_to_json(rng.bit_generator.state)
                              if isinstance(rng, np.random.Generator) else None),
        "optimizer": None,
    }
    if optimizer is not None:
        meta["optimizer"] = {}
        for key, value in optimizer.state_dict().items():
            if isinstance(value, np.ndarray):
                arrays[OPTIMIZER_PREFIX + key] = value
            else:
                meta["optimizer"][key] = value
    try:
        arrays[META_KEY] = _encode_json(meta)
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot save checkpoint {path}: extra and cfg must be JSON-serialisable "
                        f"(numbers, strings, lists, dicts): {err}") from None
    with atomic_write(path, "wb", fsync=True) as f:      # a file object: np.savez adds no ".npz"
        np.savez(f, allow_pickle=False, **arrays)
    return path


# -- loading --------------------------------------------------------------------------------------
_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError)


def _corrupt(path: Path, what: str, err: BaseException) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is corrupt or truncated ({what}: {err}); re-save it or "
                           f"use an older copy")


def _read_entry(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except _READ_ERRORS as err:
        raise _corrupt(path, f"entry {key!r} cannot be read", err) from err


def _entry_header(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of an entry from its .npy header, without reading the data."""
    try:
        with npz.zip.open(key + ".npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f".npy format version {version} is not supported")
    except _READ_ERRORS as err:
        raise _corrupt(path, f"header of entry {key!r} cannot be read", err) from err
    return tuple(shape), dtype


def _read_meta(npz: np.lib.npyio.NpzFile, path: Path) -> dict[str, Any]:
    if META_KEY not in npz.files:
        raise CheckpointError(f"{path} has no {META_KEY!r} entry: it is an .npz file but not a numpy_gpt "
                              f"checkpoint (write one with save_checkpoint)")
    raw = _read_entry(npz, META_KEY, path)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"expected a 1-D uint8 array, got {raw.ndim}-D {raw.dtype}")
        meta = json.loads(raw.tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("the JSON document is not an object")
    except (ValueError, UnicodeDecodeError) as err:
        raise _corrupt(path, f"{META_KEY} is not valid JSON metadata", err) from err
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a numpy_gpt checkpoint (format {meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {version!r}; this numpy_gpt reads "
                              f"version {FORMAT_VERSION} (upgrade numpy_gpt to read newer files)")
    return meta


def _config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    absent = "<absent>"
    keys = sorted((set(saved) | set(current)) - TRAINING_ONLY_CFG_KEYS)
    return [f"{k}: checkpoint {saved.get(k, absent)!r} vs model {current.get(k, absent)!r}"
            for k in keys if saved.get(k, absent) != current.get(k, absent)]


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


def load_checkpoint(path: str | os.PathLike, model: Module | None = None, *,
                    load_optimizer: bool = True) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``.

    Without ``model``, a GPTModel is built from the saved cfg and dtype; with one, its cfg is
    checked against the saved cfg (``drop_rate`` may differ) and the parameters are copied into it.
    Every name, shape and dtype is checked before any parameter is changed. The model's dropout RNG
    is restored when the file has its state. With ``load_optimizer`` the optimizer arrays are read
    into ``Checkpoint.optimizer_state`` (pass False for inference, to skip them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" +
                                ("" if path.suffix else " (checkpoints are .npz files: add the suffix?)"))
    try:
        npz = np.load(path, allow_pickle=False)
    except _READ_ERRORS as err:
        raise _corrupt(path, "not a readable .npz archive", err) from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path} holds a single .npy array, not a checkpoint .npz archive")
    with npz:
        meta = _read_meta(npz, path)
        model_keys = {k[len(MODEL_PREFIX):] for k in npz.files if k.startswith(MODEL_PREFIX)}
        optimizer_keys = {k[len(OPTIMIZER_PREFIX):] for k in npz.files if k.startswith(OPTIMIZER_PREFIX)}
        strays = sorted(k for k in npz.files if k != META_KEY and not k.startswith((MODEL_PREFIX,
                                                                                       OPTIMIZER_PREFIX)))
        if strays:
            raise CheckpointError(f"{path} has unexpected entries {strays[:10]}")

        cfg = meta.get("cfg")
        if model is None:
            if not isinstance(cfg, dict):
                raise CheckpointError(f"{path} stores no model cfg ({meta.get('model_class')} checkpoint): "
                                      f"build the model yourself and pass it as load_checkpoint(path, model)")
            try:
                dtype = np.dtype(meta.get("dtype", "float32"))
            except TypeError as err:
                raise CheckpointError(f"{path} names an unknown dtype {meta.get('dtype')!r}") from err
            model = GPTModel(cfg, dtype=dtype)
        elif isinstance(cfg, dict) and isinstance(getattr(model, "cfg", None), dict):
            differences = _config_differences(cfg, model.cfg)
            if differences:
                raise CheckpointError(f"{path} was saved from a model with a different config: "
                                      + "; ".join(differences))

        params = dict(model.named_parameters())
        missing = sorted(set(params) - model_keys)
        unexpected = sorted(model_keys - set(params))
        if missing or unexpected:
            raise CheckpointError(f"{path} does not match {type(model).__name__}: missing parameters "
                                  f"{missing[:10]}, unexpected parameters {unexpected[:10]}")
        problems = []
        for name, p in params.items():
            shape, dtype = _entry_header(npz, MODEL_PREFIX + name, path)
            if shape != p.shape:
                problems.append(f"{name}: checkpoint {shape} vs model {p.shape}")
            elif not np.issubdtype(dtype, np.floating):
                problems.append(f"{name}: checkpoint dtype {dtype} is not floating point")
        if problems:
            raise CheckpointError(f"{path} does not fit the model: " + "; ".join(problems[:10]))
        for name, p in params.items():
            p.data[...] = _read_entry(npz, MODEL_PREFIX + name, path)

        optimizer_state = None
        if load_optimizer and meta.get("optimizer") is not None:
            optimizer_state = dict(meta["optimizer"])
            for key in sorted(optimizer_keys):
                optimizer_state[key] = _read_entry(npz, OPTIMIZER_PREFIX + key, path)

    rng_state = meta.get("dropout_rng_state")
    rng_state = None if rng_state is None else _rng_state_from_json(rng_state)
    if rng_state is not None and isinstance(getattr(model, "dropout_rng", None), np.random.Generator):
        restore_dropout_rng(model, rng_state)
    return Checkpoint(model=model, step=int(meta.get("step", 0)), optimizer_state=optimizer_state,
                      extra=meta.get("extra") or {}, rng_state=rng_state, cfg=cfg,
                      dtype=str(meta.get("dtype")), path=path)
