"""Read OpenAI's GPT-2 checkpoints (TensorFlow's tensor-bundle format) with NumPy alone.

Chapter 5 of the book loads the pretrained GPT-2 weights with ``tf.train.load_variable``, which
means installing TensorFlow just to read seven files. This module reads the same files byte by
byte, so a learner can see what a checkpoint is: a sorted table of names pointing into one big
blob of raw numbers.

The files of a checkpoint called ``model.ckpt`` (its *prefix*)
------------------------------------------------------------------
* ``checkpoint``                      a text file naming the newest prefix:
                                      ``model_checkpoint_path: "model.ckpt"``.
* ``model.ckpt.index``                the table of contents (below): for every tensor its dtype, shape,
                                      which data file holds it, where, how many bytes, and a checksum.
* ``model.ckpt.data-00000-of-00001``  the tensors' raw bytes, one after another, nothing else
                                      (float32, little-endian, row-major). Big checkpoints may be split
                                      into several such *shards*; GPT-2's have one.
* ``model.ckpt.meta``                 the TensorFlow graph. Not needed to read the weights.
* ``hparams.json``                    GPT-2's sizes: n_vocab, n_ctx, n_embd, n_head, n_layer.

The index: a LevelDB "SSTable"
------------------------------
A sorted key -> value table. Keys are tensor names (``model/h0/attn/c_attn/w``); the empty key
``""`` holds the header. Read it from the end:

* **Footer**, the last 48 bytes: two *BlockHandles* (metaindex, index), zero padding up to byte 40,
  then the magic number 0xdb4775248b80fb57 as 8 little-endian bytes. A BlockHandle is two varints:
  the block's offset and size in the file.
* **Block**: ``size`` bytes of content followed by a 5-byte trailer: one byte of compression type
  (0 = none; TensorFlow writes bundles uncompressed) and the *masked* crc32c (below) of the content
  plus that type byte.
* **Block content**: a run of entries, then ``num_restarts`` uint32 "restart" offsets, then
  ``num_restarts`` itself as a uint32. Keys are prefix-compressed: each entry is
  ``varint shared, varint non_shared, varint value_length, key[shared:] (non_shared bytes), value``,
  and its key is the first ``shared`` bytes of the previous key followed by those new bytes. (At a
  restart point ``shared`` is 0; the restarts let a reader binary-search. We read every entry in
  order, so we only need to know where the entries stop.)
* **Index block**: one entry per data block: key = a separator >= that block's last key,
  value = the data block's BlockHandle. The metaindex block is empty here.

The values: protocol buffers, decoded by hand
---------------------------------------------
A protobuf message is a list of fields; each starts with a varint ``field_number << 3 | wire_type``
followed by a varint (wire type 0), 8 bytes (1), a varint length and that many bytes (2: strings and
nested messages) or 4 bytes (5). A *varint* stores 7 bits per byte, least significant group first;
the top bit of a byte says "another byte follows".

* ``BundleHeaderProto`` (key ``""``): 1 num_shards, 2 endianness (0 little, 1 big), 3 version.
* ``BundleEntryProto`` (every other key): 1 dtype (a ``DataType`` enum: 1 = DT_FLOAT ...),
  2 shape (``TensorShapeProto``: repeated field 2 ``Dim`` whose field 1 is the size), 3 shard_id,
  4 offset, 5 size (bytes), 6 crc32c (fixed 4 bytes, masked), 7 slices (only for partitioned
  variables, which GPT-2 does not use).

So reading tensor ``name`` is: look up its entry, open ``<prefix>.data-<shard_id>-of-<num_shards>``,
read ``size`` bytes at ``offset`` straight into an array of ``dtype`` and ``shape``, and check the
crc32c.

crc32c
------
CRC-32C (Castagnoli polynomial 0x1EDC6F41; 0x82F63B78 bit-reversed), as iSCSI, ext4 and LevelDB use
it. TensorFlow stores it *masked* (rotated right by 15 bits plus 0xa282ead8) so that the CRC of
data that itself contains CRCs is not degenerate. The classic byte-at-a-time loop is far too slow
in Python for a 500 MB file, so ``crc32c`` uses the fact that a CRC is linear over GF(2) (XOR is
addition): the CRC of a 128-byte chunk is the XOR of one table entry per byte (the contribution of
byte value b at position i), so one ``np.take`` and one XOR-reduction give the CRCs of thousands of
chunks at once; the chunk CRCs are then merged pairwise with ``crc(A + B) = shift(crc(A), len(B))
^ crc(B)``, where "shift by n zero bytes" is itself linear and so is also a small lookup table.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpy_gpt.fileio import read_json


class TFCheckpointError(ValueError):
    """A TensorFlow checkpoint file is missing, truncated, corrupted or uses an unsupported feature."""


# ---------------------------------------------------------------------------------------------
# crc32c
# ---------------------------------------------------------------------------------------------
_POLY = 0x82F63B78          # Castagnoli polynomial, bit-reversed (CRC-32C shifts bits out at the bottom)
_MASK_DELTA = 0xA282EAD8    # TensorFlow/LevelDB's masking constant
_CHUNK = 128                # bytes per chunk in the vectorised path
_CHUNKS_PER_STEP = 1024     # chunks per np.take call: 128 KiB of data, buffers that stay in cache


def _byte_table() -> np.ndarray:
    """T[b] = the CRC register after feeding byte b into an all-zero register (256,) uint32."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1)
    return t


_TABLE = _byte_table()
_TABLE_LIST = _TABLE.tolist()   # Python ints: the byte loop for the last < 128 bytes is faster on these


def _one_zero_byte(r: np.ndarray) -> np.ndarray:
    """The register after feeding one zero byte: r -> (r >> 8) ^ T[r & 0xFF] (elementwise, uint32)."""
    return (r >> 8) ^ _TABLE[r & 0xFF]


def _position_table() -> np.ndarray:
    """P[i, b] (_CHUNK, 256): raw CRC of a chunk whose only non-zero byte is b at position i.

    A byte at the last position leaves T[b] in the register; every zero byte after it advances the
    register once more. By linearity, the raw CRC of any chunk is the XOR of P[i, chunk[i]].
    """
    p = np.empty((_CHUNK, 256), dtype=np.uint32)
    p[-1] = _TABLE
    for i in range(_CHUNK - 2, -1, -1):
        p[i] = _one_zero_byte(p[i + 1])
    return p


_POSITION_TABLE = _position_table().ravel()                             # flat (_CHUNK * 256,)
_POSITION_OFFSETS = np.arange(_CHUNK, dtype=np.intp) * 256              # row start of each position


def _apply(op: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Apply a linear map of 32-bit registers, stored as four byte tables op (4, 256), to r."""
    return op[0][r & 0xFF] ^ op[1][(r >> 8) & 0xFF] ^ op[2][(r >> 16) & 0xFF] ^ op[3][r >> 24]


@functools.cache
def _zeros_operator(level: int) -> np.ndarray:
    """The map "feed _CHUNK * 2**level zero bytes" as four byte tables (4, 256) uint32.

    Table k holds the images of the registers whose only non-zero byte is byte k. Feeding 2n zeros
    is feeding n zeros twice, so each level squares the one below; level 0 squares the one-byte map
    log2(_CHUNK) times.
    """
    if level > 0:
        half = _zeros_operator(level - 1)
        return _apply(half, half)
    op = _one_zero_byte(np.arange(256, dtype=np.uint32) << np.array([[0], [8], [16], [24]], np.uint32))
    for _ in range(int(math.log2(_CHUNK))):
        op = _apply(op, op)
    return op


def _chunk_crcs(chunks: np.ndarray) -> np.ndarray:
    """Raw CRC (register starting at 0) of every row of chunks (N, _CHUNK) uint8 -> (N,) uint32."""
    out = np.empty(len(chunks), dtype=np.uint32)
    # index[c, i] = i * 256 + chunks[c, i], the flat position of P[i, byte]. The row offsets i * 256
    # are written once; as they are multiples of 256, each step only has to copy the bytes into the
    # lowest byte of each index: a plain byte copy, 2-3x faster than a widening add.
    index = np.tile(_POSITION_OFFSETS, (_CHUNKS_PER_STEP, 1))                # (steps, _CHUNK) intp
    lowest = 0 if sys.byteorder == "little" else index.itemsize - 1
    index_low_bytes = index.view(np.uint8)[:, lowest::index.itemsize]        # (steps, _CHUNK) view
    contributions = np.empty((_CHUNKS_PER_STEP, _CHUNK), dtype=np.uint32)
    for start in range(0, len(chunks), _CHUNKS_PER_STEP):
        step = chunks[start:start + _CHUNKS_PER_STEP]
        n = len(step)
        index_low_bytes[:n] = step
        np.take(_POSITION_TABLE, index[:n], out=contributions[:n], mode="clip")
        np.bitwise_xor.reduce(contributions[:n], axis=1, out=out[start:start + n])
    return out


def _combine(crcs: np.ndarray) -> int:
    """Raw CRC of the concatenation of equal-length chunks, given their raw CRCs in order.

    crc(A + B) = zeros(len(B))(crc(A)) ^ crc(B): pair neighbours, halve the list, double the chunk
    length, repeat. A leading zero "chunk" (raw CRC 0) pads an odd count without changing anything.
    """
    level = 0
    while len(crcs) > 1:
        if len(crcs) % 2:
            crcs = np.concatenate((np.zeros(1, dtype=np.uint32), crcs))
        crcs = _apply(_zeros_operator(level), crcs[0::2]) ^ crcs[1::2]
        level += 1
    return int(crcs[0])


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC-32C of ``data`` (any contiguous bytes-like object or array). Pass the CRC of earlier data
    as ``crc`` to extend it: ``crc32c(b, crc32c(a)) == crc32c(a + b)``.

    ``crc32c(b"123456789") == 0xE3069283`` (the standard check value). Runs at a few hundred MB/s.
    """
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise ValueError("crc32c needs a C-contiguous array (np.ascontiguousarray makes one)")
        buf = data.reshape(-1).view(np.uint8)                          # the array's bytes, no copy
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    register = (crc ^ 0xFFFFFFFF) & 0xFFFFFFFF
    n_chunks = len(buf) // _CHUNK
    if n_chunks:
        crcs = _chunk_crcs(buf[:n_chunks * _CHUNK].reshape(n_chunks, _CHUNK))
        # The starting register is not zero: its bits flow through the first chunk as if they
        # were zeros that follow it, which adds zeros(_CHUNK)(register) to the first chunk's CRC.
        crcs[0] ^= _apply(_zeros_operator(0), np.uint32(register))
        register = _combine(crcs)
    for byte in buf[n_chunks * _CHUNK:].tobytes():
        register = (register >> 8) ^ _TABLE_LIST[(register ^ byte) & 0xFF]
    return register ^ 0xFFFFFFFF


def mask_crc32c(crc: int) -> int:
    """TensorFlow's stored form of a crc32c: rotate right by 15 bits, add 0xa282ead8 (mod 2**32)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask_crc32c(masked: int) -> int:
    """Inverse of ``mask_crc32c``."""
    rotated = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rotated >> 17) | (rotated << 15)) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# varints and protocol buffers
# ---------------------------------------------------------------------------------------------
def _read_varint(buf: bytes, pos: int, end: int, where: str) -> tuple[int, int]:
    """Decode the varint starting at buf[pos]; return (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= end:
            raise TFCheckpointError(f"{where}: a varint runs past the end of its record (corrupted)")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise TFCheckpointError(f"{where}: a varint is longer than 10 bytes (corrupted)")


def _parse_message(buf: bytes, where: str) -> dict[int, list[int | bytes]]:
    """Decode one protobuf message into {field number: [values in order]}.

    Varint and fixed-width fields become ints, length-delimited fields (strings, nested messages)
    bytes. Which fields mean what is up to the caller, as with any protobuf.
    """
    fields: dict[int, list[int | bytes]] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _read_varint(buf, pos, end, where)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(buf, pos, end, where)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            if pos + width > end:
                raise TFCheckpointError(f"{where}: field {number} runs past the end of its record")
            value = int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        elif wire_type == 2:
            length, pos = _read_varint(buf, pos, end, where)
            if pos + length > end:
                raise TFCheckpointError(f"{where}: field {number} runs past the end of its record")
            value = bytes(buf[pos:pos + length])
            pos += length
        else:
            raise TFCheckpointError(f"{where}: unsupported protobuf wire type {wire_type} in field "
                                    f"{number} (corrupted?)")
        fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict[int, list], number: int, default: int | bytes = 0) -> int | bytes:
    """A singular protobuf field: the last value wins; an absent field has its default."""
    return fields[number][-1] if number in fields else default


def _as_int64(value: int) -> int:
    """Varints carry int64 as two's complement in 64 bits."""
    return value - (1 << 64) if value >= 1 << 63 else value


# ---------------------------------------------------------------------------------------------
# The SSTable (.index file)
# ---------------------------------------------------------------------------------------------
_FOOTER_SIZE = 48
_TABLE_MAGIC = 0xDB4775248B80FB57
_BLOCK_TRAILER_SIZE = 5


def _read_block(data: bytes, handle: tuple[int, int], where: str) -> bytes:
    """Check a block's trailer (compression type, masked crc32c) and return its content."""
    offset, size = handle
    if offset + size + _BLOCK_TRAILER_SIZE > len(data) - _FOOTER_SIZE:
        raise TFCheckpointError(f"{where}: a block at bytes [{offset}, {offset + size}) lies beyond the "
                                f"end of the table; the index file is truncated or corrupted, download "
                                f"it again")
    compression = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1:offset + size + 5], "little")
    computed = crc32c(data[offset:offset + size + 1])
    if unmask_crc32c(stored) != computed:
        raise TFCheckpointError(f"{where}: checksum mismatch in the block at byte {offset} (stored "
                                f"{unmask_crc32c(stored):#010x}, computed {computed:#010x}); the index "
                                f"file is corrupted, download it again")
    if compression != 0:
        raise TFCheckpointError(f"{where}: block at byte {offset} is compressed (type {compression}, "
                                f"1 = snappy); TensorFlow writes checkpoint indexes uncompressed and "
                                f"this reader does not decompress")
    return data[offset:offset + size]


def _block_entries(block: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    """Yield the (key, value) entries of one block in order, undoing the key prefix compression."""
    if len(block) < 4:
        raise TFCheckpointError(f"{where}: a block of {len(block)} bytes is too short (corrupted)")
    num_restarts = int.from_bytes(block[-4:], "little")
    entries_end = len(block) - 4 - 4 * num_restarts           # the restart array follows the entries
    if entries_end < 0:
        raise TFCheckpointError(f"{where}: a block claims {num_restarts} restart points but has only "
                                f"{len(block)} bytes (corrupted)")
    pos, key = 0, b""
    while pos < entries_end:
        shared, pos = _read_varint(block, pos, entries_end, where)
        non_shared, pos = _read_varint(block, pos, entries_end, where)
        value_length, pos = _read_varint(block, pos, entries_end, where)
        if shared > len(key) or pos + non_shared + value_length > entries_end:
            raise TFCheckpointError(f"{where}: an entry at byte {pos} of a block has inconsistent "
                                    f"lengths (corrupted)")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_length]
        pos += value_length


def _read_block_handle(buf: bytes, pos: int, end: int, where: str) -> tuple[tuple[int, int], int]:
    offset, pos = _read_varint(buf, pos, end, where)
    size, pos = _read_varint(buf, pos, end, where)
    return (offset, size), pos


def read_sstable(data: bytes, where: str = "index") -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an uncompressed LevelDB-format table, in key order."""
    if len(data) < _FOOTER_SIZE:
        raise TFCheckpointError(f"{where} is {len(data)} bytes, shorter than the 48-byte footer every "
                                f"TensorFlow index ends with; the file is truncated, download it again")
    magic = int.from_bytes(data[-8:], "little")
    if magic != _TABLE_MAGIC:
        raise TFCheckpointError(f"{where} does not end with the table magic number {_TABLE_MAGIC:#x} "
                                f"(found {magic:#x}): it is truncated or not a TensorFlow checkpoint "
                                f"index; download it again")
    footer_start = len(data) - _FOOTER_SIZE
    _, pos = _read_block_handle(data, footer_start, len(data) - 8, where)     # metaindex: unused
    index_handle, _ = _read_block_handle(data, pos, len(data) - 8, where)
    previous = None
    for _, handle_bytes in _block_entries(_read_block(data, index_handle, where), where):
        data_handle, _ = _read_block_handle(handle_bytes, 0, len(handle_bytes), where)
        for key, value in _block_entries(_read_block(data, data_handle, where), where):
            if previous is not None and key <= previous:
                raise TFCheckpointError(f"{where}: keys are not in increasing order at {key!r} "
                                        f"(corrupted)")
            previous = key
            yield key, value


# ---------------------------------------------------------------------------------------------
# The bundle: header and entries
# ---------------------------------------------------------------------------------------------
# TensorFlow's DataType enum (tensorflow/core/framework/types.proto) -> NumPy dtype, little-endian.
_NUMPY_DTYPES = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 8: np.dtype("<c8"), 9: np.dtype("<i8"), 10: np.dtype("?"),
    17: np.dtype("<u2"), 18: np.dtype("<c16"), 19: np.dtype("<f2"), 22: np.dtype("<u4"),
    23: np.dtype("<u8"),
}
_DTYPE_NAMES = {
    1: "DT_FLOAT", 2: "DT_DOUBLE", 3: "DT_INT32", 4: "DT_UINT8", 5: "DT_INT16", 6: "DT_INT8",
    7: "DT_STRING", 8: "DT_COMPLEX64", 9: "DT_INT64", 10: "DT_BOOL", 11: "DT_QINT8", 12: "DT_QUINT8",
    13: "DT_QINT32", 14: "DT_BFLOAT16", 15: "DT_QINT16", 16: "DT_QUINT16", 17: "DT_UINT16",
    18: "DT_COMPLEX128", 19: "DT_HALF", 20: "DT_RESOURCE", 21: "DT_VARIANT", 22: "DT_UINT32",
    23: "DT_UINT64",
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor's BundleEntryProto: where its bytes are and how to check them.

    ``dtype`` is None when TensorFlow's ``dtype_code`` has no NumPy equivalent (strings, bfloat16,
    quantized types...); reading such a tensor raises. ``crc32c`` is unmasked.
    """

    name: str
    dtype_code: int
    dtype: np.dtype | None
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int

    @property
    def dtype_name(self) -> str:
        return _DTYPE_NAMES.get(self.dtype_code, f"unknown DataType {self.dtype_code}")


def _decode_shape(buf: bytes, where: str) -> tuple[int, ...]:
    """TensorShapeProto: repeated field 2 = Dim {1: size, 2: name}; field 3 = unknown_rank."""
    fields = _parse_message(buf, where)
    if _last(fields, 3):
        raise TFCheckpointError(f"{where}: the shape has unknown rank; a saved variable always has a "
                                f"full shape (corrupted?)")
    shape = tuple(_as_int64(_last(_parse_message(dim, where), 1)) for dim in fields.get(2, []))
    if any(d < 0 for d in shape):
        raise TFCheckpointError(f"{where}: the shape {shape} has an unknown (negative) dimension")
    return shape


def _decode_entry(name: str, value: bytes, where: str) -> TensorEntry:
    """BundleEntryProto: 1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size, 6 crc32c, 7 slices."""
    fields = _parse_message(value, where)
    if 7 in fields:
        raise TFCheckpointError(f"{where}: {name!r} is saved as slices of a partitioned variable; this "
                                f"reader handles whole tensors only (GPT-2's checkpoints have no "
                                f"slices)")
    dtype_code = _last(fields, 1)
    entry = TensorEntry(name=name, dtype_code=dtype_code, dtype=_NUMPY_DTYPES.get(dtype_code),
                        shape=_decode_shape(_last(fields, 2, b""), where), shard_id=_last(fields, 3),
                        offset=_last(fields, 4), size=_last(fields, 5),
                        crc32c=unmask_crc32c(_last(fields, 6)))
    if entry.dtype is not None and entry.size != math.prod(entry.shape) * entry.dtype.itemsize:
        raise TFCheckpointError(f"{where}: {name!r} says {entry.size} bytes, but shape {entry.shape} "
                                f"of {entry.dtype_name} needs "
                                f"{math.prod(entry.shape) * entry.dtype.itemsize} (corrupted)")
    return entry


def checkpoint_prefix(path: str | os.PathLike) -> Path:
    """Resolve a checkpoint directory, prefix or ``.index`` path to its prefix.

    For a directory (like ``tf.train.latest_checkpoint``) the ``checkpoint`` text file names the
    prefix; without it, the directory must hold exactly one ``*.index`` file.
    """
    path = Path(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state.read_text(encoding="utf-8"),
                              re.MULTILINE)
            if match is None:
                raise TFCheckpointError(f"{state} has no model_checkpoint_path line; it should read "
                                        f'model_checkpoint_path: "model.ckpt"')
            prefix = Path(match.group(1))
            if prefix.is_absolute() and not Path(f"{prefix}.index").is_file():
                prefix = Path(prefix.name)      # an absolute path from the machine that saved it
            return prefix if prefix.is_absolute() else path / prefix
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise TFCheckpointError(
                f"no TensorFlow checkpoint found in {path}: expected a 'checkpoint' file or exactly one "
                f"*.index file (found {len(indexes)}). OpenAI's GPT-2 folders hold checkpoint, "
                f"hparams.json, model.ckpt.index and model.ckpt.data-00000-of-00001")
        return indexes[0].with_suffix("")
    if path.suffix == ".index":
        return path.with_suffix("")
    return path


class TFCheckpointReader:
    """The tensors of a TensorFlow checkpoint, read with NumPy.

    ``TFCheckpointReader(path)`` takes a checkpoint directory (OpenAI's ``models/124M``), a prefix
    (``.../model.ckpt``) or the ``.index`` file. Opening it parses the whole index and checks that
    every data file exists and is long enough; tensors are read on demand:

        reader = TFCheckpointReader("gpt2/124M")
        reader.entries["model/wte"].shape        # (50257, 768)
        wte = reader.read("model/wte")           # np.ndarray float32, crc32c verified
    """

    def __init__(self, path: str | os.PathLike):
        self.prefix = checkpoint_prefix(path)
        index_path = Path(f"{self.prefix}.index")
        if not index_path.is_file():
            raise TFCheckpointError(f"{index_path} does not exist: a TensorFlow checkpoint needs "
                                    f"{index_path.name} and its .data-* file(s) beside it")
        where = str(index_path)
        header = None
        self.entries: dict[str, TensorEntry] = {}
        for key, value in read_sstable(index_path.read_bytes(), where):
            if key == b"":
                header = _parse_message(value, where)
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TFCheckpointError(f"{where}: a tensor name is not UTF-8 (corrupted)") from err
            self.entries[name] = _decode_entry(name, value, f"{where} ({name})")
        if header is None:
            raise TFCheckpointError(f"{where} has no bundle header (the entry with the empty key); it "
                                    f"is not a TensorFlow V2 checkpoint index")
        self.num_shards = _last(header, 1)
        if _last(header, 2) != 0:
            raise TFCheckpointError(f"{where} was written on a big-endian machine; this reader only "
                                    f"handles little-endian checkpoints")
        self._check_shards()

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def _check_shards(self) -> None:
        """Every entry must point inside an existing data file: catches truncated downloads early."""
        sizes = {}
        for shard_id in range(self.num_shards):
            shard = self.shard_path(shard_id)
            if not shard.is_file():
                raise TFCheckpointError(f"{shard} is missing: the index lists {self.num_shards} data "
                                        f"file(s); place it beside {self.prefix.name}.index")
            sizes[shard_id] = shard.stat().st_size
        for entry in self.entries.values():
            if entry.shard_id not in sizes:
                raise TFCheckpointError(f"{entry.name!r} is in shard {entry.shard_id}, but the header says "
                                        f"there are {self.num_shards} (the index is corrupted)")
            end = entry.offset + entry.size
            if end > sizes[entry.shard_id]:
                raise TFCheckpointError(
                    f"{self.shard_path(entry.shard_id)} is {sizes[entry.shard_id]} bytes, but tensor "
                    f"{entry.name!r} needs bytes [{entry.offset}, {end}): the file is truncated (an "
                    f"interrupted download?); download it again")

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def _entry(self, name: str) -> TensorEntry:
        if name not in self.entries:
            close = difflib.get_close_matches(name, list(self.entries), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"{name!r} is not in the checkpoint {self.prefix}{hint}")
        return self.entries[name]

    def read(self, name: str, out: np.ndarray | None = None, verify: bool = True) -> np.ndarray:
        """Read tensor ``name``; check its crc32c unless ``verify`` is False.

        With ``out`` the bytes are read straight into that array (no intermediate copy): it must be
        C-contiguous, of the tensor's dtype and hold the same number of elements (its shape may
        differ, e.g. GPT-2's (1, C, 3C) conv weights read into a (C, 3C) array). Returns ``out``, or
        a new array of the stored shape.
        """
        entry = self._entry(name)
        if entry.dtype is None:
            raise TFCheckpointError(f"tensor {name!r} has dtype {entry.dtype_name}, which has no NumPy "
                                    f"equivalent; this reader supports "
                                    f"{sorted(_DTYPE_NAMES[c] for c in _NUMPY_DTYPES)}")
        if out is None:
            out = np.empty(entry.shape, dtype=entry.dtype)
        elif (not isinstance(out, np.ndarray) or not out.flags.c_contiguous or out.dtype != entry.dtype
              or out.size != math.prod(entry.shape)):
            got = (f"{out.dtype} {out.shape}{'' if out.flags.c_contiguous else ' non-contiguous'}"
                   if isinstance(out, np.ndarray) else type(out).__name__)
            raise ValueError(f"out must be a C-contiguous {entry.dtype} array with "
                             f"{math.prod(entry.shape)} elements (shape {entry.shape}) to hold "
                             f"{name!r}, got {got}")
        view = out.reshape(-1).view(np.uint8)
        with open(self.shard_path(entry.shard_id), "rb") as f:
            f.seek(entry.offset)
            filled = 0
            while filled < entry.size:
                n = f.readinto(view[filled:])
                if not n:
                    raise TFCheckpointError(f"{self.shard_path(entry.shard_id)} ended inside tensor "
                                            f"{name!r}: the file is truncated, download it again")
                filled += n
        if verify:
            computed = crc32c(view)
            if computed != entry.crc32c:
                raise TFCheckpointError(
                    f"checksum mismatch for tensor {name!r} in {self.shard_path(entry.shard_id)}: "
                    f"stored crc32c {entry.crc32c:#010x}, computed {computed:#010x}. The file is "
                    f"corrupted (a damaged or interrupted download?); delete it and download it again")
        return out

    def read_all(self, verify: bool = True) -> dict[str, np.ndarray]:
        """{name: array} for every tensor, in the index's (sorted) order."""
        return {name: self.read(name, verify=verify) for name in self.entries}


def load_tf_checkpoint(path: str | os.PathLike, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow checkpoint (directory, prefix or .index path) as NumPy arrays:
    what the book gets from ``tf.train.list_variables`` and ``tf.train.load_variable``."""
    return TFCheckpointReader(path).read_all(verify=verify)


_HPARAM_KEYS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")


def read_hparams(model_dir: str | os.PathLike) -> dict[str, int]:
    """GPT-2's ``hparams.json``: {n_vocab, n_ctx, n_embd, n_head, n_layer}, checked, plus ``n_inner``
    (the feed-forward width, as in Hugging Face's config) when the file gives one."""
    path = Path(model_dir) / "hparams.json"
    if not path.is_file():
        raise TFCheckpointError(f"{path} does not exist: OpenAI's GPT-2 folders carry hparams.json "
                                f"beside the checkpoint ({dict.fromkeys(_HPARAM_KEYS, '...')})")
    try:
        hparams = read_json(path)
    except ValueError as err:
        raise TFCheckpointError(f"{err}; download it again") from None
    if not isinstance(hparams, dict):
        raise TFCheckpointError(f"{path} must hold a JSON object, got {type(hparams).__name__}")
    bad = [k for k in _HPARAM_KEYS
           if not isinstance(hparams.get(k), int) or isinstance(hparams.get(k), bool) or hparams[k] < 1]
    if bad:
        raise TFCheckpointError(f"{path}: {bad} missing or not positive integers; expected the keys "
                                f"{list(_HPARAM_KEYS)}")
    n_inner = hparams.get("n_inner")
    if n_inner is None:
        return {k: hparams[k] for k in _HPARAM_KEYS}
    if not isinstance(n_inner, int) or isinstance(n_inner, bool) or n_inner < 1:
        raise TFCheckpointError(f"{path}: n_inner must be a positive integer or null, got {n_inner!r:.100}")
    return {**{k: hparams[k] for k in _HPARAM_KEYS}, "n_inner": n_inner}
