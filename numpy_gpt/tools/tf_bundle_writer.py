"""A minimal writer of TensorFlow's checkpoint bundle, the mirror image of ``openai_tf``'s reader.

It exists for two jobs: the tests build bundles with features the TensorFlow-written fixture does
not have (other dtypes, big-endian or compressed markers, sliced entries, wrong dtype codes), and
``scripts/bench_load_gpt2.py`` writes a full-size GPT-2 124M checkpoint to time the loader on. It
writes what the reader needs and nothing more: one data shard, uncompressed SSTable blocks whose
every entry is a restart point (no key-prefix sharing), and no meta-index entries. TensorFlow's own
files differ in those details but use the same format; reading a bundle written here proves
nothing about TensorFlow's files, which is why the reader is tested on the fixture first.

Layout (see ``openai_tf`` for the reader's side):

* ``<prefix>.data-00000-of-00001``: the raw tensor bytes, one after another;
* ``<prefix>.index``: an SSTable whose first entry (empty key) is the BundleHeaderProto
  (num_shards = 1, endianness) and whose other entries, sorted by name, are BundleEntryProtos
  (dtype, shape, shard 0, offset, size, masked crc32c of the bytes); then an empty meta-index
  block, an index block pointing at the data block, and the 48-byte footer with the magic number.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from numpy_gpt.fileio import atomic_write
from numpy_gpt.gpt2.openai_tf import crc32c, mask_crc32c

TABLE_MAGIC = 0xDB4775248B80FB57          # LevelDB's table magic number, the footer's last 8 bytes

# TensorFlow DataType enum values for the NumPy dtypes this writer picks by itself.
DTYPE_CODES = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3,
               np.dtype(np.uint8): 4, np.dtype(np.int16): 5, np.dtype(np.int8): 6,
               np.dtype(np.int64): 9, np.dtype(np.bool_): 10, np.dtype(np.uint16): 17,
               np.dtype(np.float16): 19}


def varint(n: int) -> bytes:
    """Protocol-buffer base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    """One protocol-buffer field: a varint, a length-delimited bytes value, or a fixed32."""
    if fixed32:
        return varint(number << 3 | 5) + int(value).to_bytes(4, "little")
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def block(entries: list[tuple[bytes, bytes]], compression: int = 0) -> bytes:
    """One SSTable block (every entry a restart point, no prefix sharing) plus its 5-byte trailer:
    the compression byte and the masked crc32c of contents + that byte."""
    body, restarts = b"", []
    for key, value in entries:
        restarts.append(len(body))
        body += varint(0) + varint(len(key)) + varint(len(value)) + key + value
    content = body + b"".join(r.to_bytes(4, "little") for r in restarts) + len(restarts).to_bytes(4, "little")
    kind = bytes([compression])
    return content + kind + mask_crc32c(crc32c(content + kind)).to_bytes(4, "little")


def write_tf_bundle(prefix: str | os.PathLike, tensors: Mapping[str, np.ndarray], *,
                    dtype_codes: Mapping[str, int] | None = None, endianness: int = 0,
                    compression: int = 0, entry_extra: bytes = b"") -> None:
    """Write ``tensors`` as the bundle ``<prefix>.index`` + ``<prefix>.data-00000-of-00001``.

    Each tensor's DataType comes from ``DTYPE_CODES`` unless ``dtype_codes`` names it (the tests
    use that to write deliberately wrong codes). ``endianness``, ``compression`` and
    ``entry_extra`` (bytes appended to every BundleEntryProto) are for building the unusual files
    the reader must refuse. The data file is written tensor by tensor, so a 500 MB checkpoint is
    never held in memory twice; both files appear atomically.
    """
    codes = dict(dtype_codes or {})
    entries = [(b"", field(1, 1) + field(2, endianness))]          # header: num_shards = 1
    offset = 0
    with atomic_write(f"{prefix}.data-00000-of-00001") as f:
        for name in sorted(tensors):
            array = np.array(tensors[name], order="C", copy=None)       # (ascontiguousarray makes 0-d 1-d)
            code = codes.get(name, DTYPE_CODES.get(array.dtype))
            if code is None:
                raise TypeError(f"no TensorFlow DataType known for {name!r} of dtype {array.dtype}; "
                                f"pass it in dtype_codes")
            raw = memoryview(array.reshape(-1).view(np.uint8))
            f.write(raw)
            shape = b"".join(field(2, field(1, d)) for d in array.shape)
            entry = (field(1, code) + field(2, shape) + field(4, offset) + field(5, raw.nbytes)
                     + field(6, mask_crc32c(crc32c(array)), fixed32=True) + entry_extra)
            entries.append((name.encode(), entry))
            offset += raw.nbytes
    data_block, meta_block = block(entries, compression), block([])
    index_block = block([(entries[-1][0], varint(0) + varint(len(data_block) - 5))])
    meta_at, index_at = len(data_block), len(data_block) + len(meta_block)
    footer = varint(meta_at) + varint(len(meta_block) - 5) + varint(index_at) + varint(len(index_block) - 5)
    footer += bytes(40 - len(footer)) + TABLE_MAGIC.to_bytes(8, "little")
    with atomic_write(Path(f"{prefix}.index")) as f:
        f.write(data_block + meta_block + index_block + footer)
