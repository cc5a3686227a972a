"""Read and write safetensors files with NumPy alone.

safetensors is the format Hugging Face uses for model weights (``model.safetensors``), chosen
because, unlike a pickle (``torch.save``), loading it cannot run code. It is simple enough to read
by hand:

    [8 bytes]  N, the header's length, a little-endian uint64
    [N bytes]  the header: a UTF-8 JSON object (may end in spaces that pad it to a multiple of 8)
                 {"__metadata__": {"format": "pt"},                       <- optional, str -> str
                  "transformer.wte.weight": {"dtype": "F32", "shape": [50257, 768],
                                             "data_offsets": [0, 154389504]},
                  ...}
    [rest]     the data: every tensor's raw bytes, little-endian, row-major, one after another.
               ``data_offsets`` are [begin, end) byte offsets counted from the start of this part.

This module is the NumPy counterpart of ``safetensors.numpy.load_file`` / ``save_file`` (the same
names), plus ``SafetensorsReader`` to read one tensor at a time straight into an existing array.
It validates like the reference implementation: the header must be a JSON object of well-formed
entries, and the tensors must tile the data part exactly (sorted by offset, no gap, no overlap, no
trailing bytes), each with exactly as many bytes as its dtype and shape need. It also refuses a
name given twice, which the reference silently accepts. It is used in chapter
5's role of loading pretrained GPT-2 weights (Hugging Face's copy of them) and to export a
numpy_gpt model to the PyTorch ecosystem (see convert.py).

A large model is stored in shards (``model-00001-of-00004.safetensors`` ...) beside an index,
``model.safetensors.index.json``, whose ``weight_map`` names the shard of every tensor:

    {"metadata": {"total_size": 2471645184},
     "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors", ...}}

``ShardedSafetensorsReader`` reads such a set as one file; ``open_safetensors(path)`` opens either
kind from a file, an index or a model folder.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpy_gpt.fileio import atomic_write, read_json


class SafetensorsError(ValueError):
    """A safetensors file is malformed or truncated, or a tensor cannot be stored in one."""


# safetensors dtype name -> how NumPy stores it (little-endian). BF16 has no NumPy dtype: it is read
# as its raw 16 bits and widened exactly to float32 (a bfloat16 is the top half of a float32).
_DTYPES = {
    "BOOL": np.dtype("?"), "U8": np.dtype("u1"), "I8": np.dtype("i1"), "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"), "F32": np.dtype("<f4"), "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
}
_NAMES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items() if k != "BF16"}
_MAX_HEADER = 100_000_000       # the reference implementation's limit
_HEADER_FIELDS = {"dtype", "shape", "data_offsets"}


@dataclass(frozen=True)
class SafetensorsEntry:
    """One tensor of the header. ``dtype`` is the NumPy dtype ``read`` returns (float32 for BF16);
    ``begin``/``end`` are absolute byte offsets in the file."""

    name: str
    stored_dtype: str
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int
    end: int


def _check_entry(name: str, info: object, where: str) -> tuple[str, tuple[int, ...], int, int]:
    """Validate one header entry; return (dtype name, shape, begin, end) relative to the data part."""
    if not isinstance(info, dict) or not _HEADER_FIELDS <= set(info):
        raise SafetensorsError(f"{where}: entry {name!r} must be an object with the keys "
                               f"{sorted(_HEADER_FIELDS)}, got {info!r:.200}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in _DTYPES:
        raise SafetensorsError(f"{where}: tensor {name!r} has dtype {dtype!r}; supported: "
                               f"{sorted(_DTYPES)}")

    def is_count(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0

    if not isinstance(shape, list) or not all(is_count(d) for d in shape):
        raise SafetensorsError(f"{where}: tensor {name!r} has shape {shape!r}; expected a list of "
                               f"non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(is_count(o) for o in offsets)
            or offsets[0] > offsets[1]):
        raise SafetensorsError(f"{where}: tensor {name!r} has data_offsets {offsets!r}; expected "
                               f"[begin, end] with 0 <= begin <= end")
    nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise SafetensorsError(f"{where}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes but "
                               f"{dtype} {tuple(shape)} needs {nbytes}")
    return dtype, tuple(shape), offsets[0], offsets[1]


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise SafetensorsError(f"the header names {dup} more than once")
    return dict(pairs)


def read_header(path: str | os.PathLike) -> tuple[dict[str, SafetensorsEntry], dict[str, str]]:
    """Parse and validate a safetensors header: ({name: entry}, metadata)."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise SafetensorsError(f"{where} is {file_size} bytes, too short to be a safetensors file "
                                   f"(it starts with an 8-byte header length); truncated?")
        header_size = int.from_bytes(prefix, "little")
        if header_size > min(_MAX_HEADER, file_size - 8):
            raise SafetensorsError(f"{where}: the header length field says {header_size} bytes, but the "
                                   f"file has {file_size - 8} after it (limit {_MAX_HEADER}); the file "
                                   f"is truncated or not a safetensors file")
        raw = f.read(header_size)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SafetensorsError(f"{where}: the header is not valid UTF-8 JSON ({err})") from err
    except RecursionError:
        raise SafetensorsError(f"{where}: the header's JSON is nested too deeply to parse; the file is "
                               f"corrupt or hostile") from None
    except SafetensorsError as err:
        raise SafetensorsError(f"{where}: {err}") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{where}: the header must be a JSON object, got {type(header).__name__}")

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SafetensorsError(f"{where}: __metadata__ must map strings to strings, got {metadata!r:.200}")

    data_start = 8 + header_size
    data_size = file_size - data_start
    checked = {name: _check_entry(name, info, where) for name, info in header.items()}
    position = 0
    for name, (_, _, begin, end) in sorted(checked.items(), key=lambda item: item[1][2:]):
        if begin != position:
            problem = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise SafetensorsError(f"{where}: tensor {name!r} starts at data offset {begin}, which "
                                   f"{problem} (expected {position}); tensors must be stored back to "
                                   f"back")
        position = end
    if position != data_size:
        raise SafetensorsError(f"{where}: the tensors need {position} bytes of data but the file has "
                               f"{data_size}; it is {'truncated' if position > data_size else 'padded'}"
                               f" (download or write it again)")
    entries = {
        name: SafetensorsEntry(name=name, stored_dtype=dtype,
                               dtype=np.dtype(np.float32) if dtype == "BF16" else _DTYPES[dtype],
                               shape=shape, begin=data_start + begin, end=data_start + end)
        for name, (dtype, shape, begin, end) in checked.items()}
    return entries, metadata


class SafetensorsReader:
    """The tensors of one safetensors file, read on demand:

        reader = SafetensorsReader("model.safetensors")
        reader.entries["transformer.wte.weight"].shape     # (50257, 768)
        wte = reader.read("transformer.wte.weight")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.entries, self.metadata = read_header(self.path)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """Read tensor ``name``. With ``out`` (C-contiguous, of the entry's ``dtype``, same number of
        elements; its shape may differ) the bytes go straight into it; returns ``out`` or a new
        array of the stored shape."""
        if name not in self.entries:
            close = difflib.get_close_matches(name, list(self.entries), n=3)
            raise KeyError(f"{name!r} is not in {self.path}{f'; did you mean {close}?' if close else ''}")
        entry = self.entries[name]
        count = math.prod(entry.shape)
        if out is None:
            out = np.empty(entry.shape, dtype=entry.dtype)
        elif (not isinstance(out, np.ndarray) or not out.flags.c_contiguous or out.dtype != entry.dtype
              or out.size != count):
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise ValueError(f"out must be a C-contiguous {entry.dtype} array with {count} elements "
                             f"(shape {entry.shape}) to hold {name!r}, got {got}")
        raw = np.empty(count, np.uint16) if entry.stored_dtype == "BF16" else out.reshape(-1)
        view = raw.view(np.uint8)
        with open(self.path, "rb") as f:
            f.seek(entry.begin)
            filled = 0
            while filled < len(view):
                n = f.readinto(view[filled:])
                if not n:
                    raise SafetensorsError(f"{self.path} ended inside tensor {name!r}: the file is "
                                           f"truncated (was it changed while reading?)")
                filled += n
        if entry.stored_dtype == "BF16":
            out.reshape(-1).view(np.uint32)[:] = raw.astype(np.uint32) << 16   # bf16 = top 16 bits
        return out

    def read_all(self) -> dict[str, np.ndarray]:
        return {name: self.read(name) for name in self.entries}


INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
_MAX_INDEX_BYTES = 64 << 20          # Llama 3.1 405B's index is about 100 kB


class ShardedSafetensorsReader(SafetensorsReader):
    """The tensors of a sharded safetensors set, read through its index as one file:

        reader = ShardedSafetensorsReader("Llama-3.2-3B/model.safetensors.index.json")
        reader.entries["model.norm.weight"].shape    # from whichever shard holds it
        reader.read("model.norm.weight")

    Checked before anything is read: every shard is a plain file name in the index's folder (no
    path leads elsewhere), every shard is a valid safetensors file (``read_header``), and the index
    and the shards agree exactly: each tensor is in the shard the index names, and no shard holds a
    tensor the index does not list. ``metadata`` is the index's own (``total_size``).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        where = str(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist")
        if self.path.stat().st_size > _MAX_INDEX_BYTES:
            raise SafetensorsError(f"{where} is larger than {_MAX_INDEX_BYTES >> 20} MB: not a safetensors "
                                   f"index")
        index = read_json(self.path)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise SafetensorsError(f"{where} must be a JSON object whose 'weight_map' maps each tensor name "
                                   f"to the shard file holding it")
        metadata = index.get("metadata", {})
        self.metadata = metadata if isinstance(metadata, dict) else {}
        shards: dict[str, SafetensorsReader] = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or Path(shard).name != shard or shard in ("", ".", "..") \
                    or "\\" in shard or not shard.endswith(".safetensors"):
                raise SafetensorsError(f"{where}: tensor {name!r} is mapped to {shard!r:.100}; a shard must "
                                       f"be the name of a .safetensors file beside the index")
            if shard not in shards:
                shards[shard] = SafetensorsReader(self.path.parent / shard)
        self.entries: dict[str, SafetensorsEntry] = {}
        self._shard_of: dict[str, SafetensorsReader] = {}
        for shard, reader in shards.items():
            stray = [name for name in reader.entries if weight_map.get(name) != shard]
            if stray:
                raise SafetensorsError(f"{reader.path} holds {stray[:5]}, which {where} does not map to it; "
                                       f"the index and its shards do not belong together")
            for name, entry in reader.entries.items():
                self.entries[name] = entry
                self._shard_of[name] = reader
        missing = [name for name in weight_map if name not in self.entries]
        if missing:
            raise SafetensorsError(f"{where} lists {missing[:5]}, which their shards do not hold; a shard is "
                                   f"missing or from another download")

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        if name not in self._shard_of:
            return super().read(name, out)                          # the KeyError with close names
        return self._shard_of[name].read(name, out)


def open_safetensors(path: str | os.PathLike) -> SafetensorsReader:
    """The reader of a safetensors file, of a sharded set's index (``*.index.json``), or of the
    weights of a model folder (``model.safetensors``, else ``model.safetensors.index.json``)."""
    path = Path(path)
    if path.is_dir():
        single, index = path / SINGLE_NAME, path / INDEX_NAME
        if not single.is_file() and not index.is_file():
            raise FileNotFoundError(f"{path} holds neither {SINGLE_NAME} nor {INDEX_NAME}: no weights to "
                                    f"read")
        path = single if single.is_file() else index
    if path.name.endswith(".index.json"):
        return ShardedSafetensorsReader(path)
    return SafetensorsReader(path)


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{name: array} of every tensor in a safetensors file (like ``safetensors.numpy.load_file``)."""
    return SafetensorsReader(path).read_all()


def save_file(tensors: Mapping[str, np.ndarray], path: str | os.PathLike,
              metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` to a safetensors file (like ``safetensors.numpy.save_file``), atomically.

    Tensors are stored in name order, little-endian; the header is padded with spaces to a multiple
    of 8 bytes so every tensor starts 8-byte aligned.
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for name in sorted(tensors):
        array = tensors[name]
        if not isinstance(name, str) or name == "__metadata__":
            raise SafetensorsError(f"tensor names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(array, np.ndarray) or array.dtype.newbyteorder("=") not in _NAMES:
            what = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise SafetensorsError(f"tensor {name!r} is {what}; safetensors stores NumPy arrays of "
                                   f"{sorted(str(d) for d in _NAMES)}")
        arrays[name] = array
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in metadata.items()):
        raise SafetensorsError(f"metadata must map strings to strings, got {dict(metadata)!r:.200}")

    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, array in arrays.items():
        header[name] = {"dtype": _NAMES[array.dtype.newbyteorder("=")], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)

    with atomic_write(path, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for array in arrays.values():
            little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
            f.write(memoryview(little.reshape(-1).view(np.uint8)))
