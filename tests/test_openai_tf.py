"""Tests for numpy_gpt.gpt2.openai_tf: crc32c, the SSTable/bundle parser, and the reader's errors.

References: the crc32c check values of RFC 3720 and a bit-at-a-time CRC written here from the
definition; the gpt2-tiny checkpoint written by TensorFlow (its stored crc32c values and its
safetensors copy written by transformers, read with the safetensors library).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gpt2.openai_tf import (
    TFCheckpointError,
    TFCheckpointReader,
    checkpoint_prefix,
    crc32c,
    load_tf_checkpoint,
    mask_crc32c,
    read_hparams,
    unmask_crc32c,
)
from numpy_gpt.tools.tf_bundle_writer import field, write_tf_bundle

reference_load_file = reference("safetensors.numpy", "load_file")

DATA = "model.ckpt.data-00000-of-00001"
INDEX = "model.ckpt.index"


# -- crc32c -------------------------------------------------------------------------------------------
def bitwise_crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C straight from the definition: reflected, polynomial 0x82F63B78, one bit at a time."""
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("data, expected", [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),                   # the standard check value
    (bytes(32), 0x8A9136AA),                      # RFC 3720 B.4: 32 bytes of zeros
    (b"\xff" * 32, 0x62A8AB43),                   # 32 bytes of 0xFF
    (bytes(range(32)), 0x46DD794E),               # 0x00 .. 0x1F
    (bytes(range(31, -1, -1)), 0x113FDB5C),       # 0x1F .. 0x00
])
def test_crc32c_check_values(data, expected):
    assert crc32c(data) == expected


@given(st.binary(max_size=1200), st.integers(0, 0xFFFFFFFF))
def test_crc32c_matches_bitwise_definition(data, start):
    assert crc32c(data, start) == bitwise_crc32c(data, start)


@pytest.mark.parametrize("n", [127, 128, 129, 128 * 3, 128 * 1023 + 5, 200_003])
def test_crc32c_long_inputs_match_definition(n):
    # Lengths around the 128-byte chunks and odd chunk counts exercise every step of the pairwise merge.
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8)
    expected = bitwise_crc32c(data.tobytes()[:n])
    assert crc32c(data) == expected
    assert crc32c(data.tobytes()) == expected
    assert crc32c(memoryview(data.tobytes())) == expected


def test_crc32c_extends_and_reads_any_array():
    data = np.random.default_rng(0).standard_normal((50, 33)).astype(np.float32)   # 6600 bytes
    raw = data.tobytes()
    assert crc32c(data) == crc32c(raw) == bitwise_crc32c(raw)
    assert crc32c(raw[1000:], crc32c(raw[:1000])) == crc32c(raw)
    with pytest.raises(ValueError, match="contiguous"):
        crc32c(data.T)


@given(st.integers(0, 0xFFFFFFFF))
def test_mask_is_invertible(crc):
    masked = mask_crc32c(crc)
    assert 0 <= masked <= 0xFFFFFFFF
    assert unmask_crc32c(masked) == crc


# -- the TensorFlow-written fixture ---------------------------------------------------------------------
def hf_name(tf_name: str) -> str:
    """TensorFlow name -> the name transformers gives the same weight."""
    parts = tf_name.split("/")[1:]                # drop "model"
    if parts[0].startswith("h"):
        parts = ["h", parts[0][1:], *parts[1:]]
    leaf = {"w": "weight", "g": "weight", "b": "bias"}
    name = ".".join(parts[:-1] + [leaf[parts[-1]]]) if parts[-1] in leaf else f"{parts[0]}.weight"
    return "transformer." + name


def test_reader_returns_exactly_what_tensorflow_wrote(gpt2_tiny_dir):
    tensors = load_tf_checkpoint(gpt2_tiny_dir / "openai")        # every crc32c is verified here
    reference = reference_load_file(str(gpt2_tiny_dir / "hf" / "model.safetensors"))
    assert len(tensors) == 28
    assert {hf_name(k) for k in tensors} == set(reference)
    for name, array in tensors.items():
        expected = reference[hf_name(name)]
        if name.endswith("/w"):                                   # OpenAI's 1x1 conv: (1, in, out)
            assert array.shape == (1, *expected.shape)
            array = array[0]
        assert array.dtype == np.float32
        np.testing.assert_array_equal(array, expected, err_msg=name)


def test_entries_describe_the_data_file(gpt2_tiny_dir):
    reader = TFCheckpointReader(gpt2_tiny_dir / "openai")
    assert reader.num_shards == 1
    entries = sorted(reader.entries.values(), key=lambda e: e.offset)
    assert entries[0].offset == 0
    for before, after in zip(entries[:-1], entries[1:], strict=True):   # back to back, no gaps
        assert after.offset == before.offset + before.size
    assert entries[-1].offset + entries[-1].size == (gpt2_tiny_dir / "openai" / DATA).stat().st_size
    assert reader.entries["model/wte"].shape == (50257, 32)
    assert reader.entries["model/h1/mlp/c_proj/w"].shape == (1, 128, 32)


def test_stored_checksums_are_crc32c_of_the_data(gpt2_tiny_dir):
    # TensorFlow stored these checksums masked; unmasked they are the CRC of each tensor's bytes.
    reader = TFCheckpointReader(gpt2_tiny_dir / "openai")
    data = (gpt2_tiny_dir / "openai" / DATA).read_bytes()
    small = [e for e in reader.entries.values() if e.size <= 16384]
    assert len(small) == 27                                      # all but wte
    for entry in small:
        assert entry.crc32c == bitwise_crc32c(data[entry.offset:entry.offset + entry.size]), entry.name


def test_read_into_existing_array(gpt2_tiny_dir):
    reader = TFCheckpointReader(gpt2_tiny_dir / "openai")
    expected = reader.read("model/h0/attn/c_attn/w")
    out = np.full((32, 96), np.nan, dtype=np.float32)            # squeezed shape, same elements
    assert reader.read("model/h0/attn/c_attn/w", out=out) is out
    np.testing.assert_array_equal(out, expected[0])
    with pytest.raises(ValueError, match="float32"):
        reader.read("model/h0/attn/c_attn/w", out=np.empty((32, 96), np.float64))
    with pytest.raises(ValueError, match="3072 elements"):
        reader.read("model/h0/attn/c_attn/w", out=np.empty((32, 95), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        reader.read("model/h0/attn/c_attn/w", out=np.empty((96, 32), np.float32).T)


def test_unknown_name_suggests_close_ones(gpt2_tiny_dir):
    reader = TFCheckpointReader(gpt2_tiny_dir / "openai")
    with pytest.raises(KeyError, match="model/wte"):
        reader.read("model/wtee")


def test_prefix_resolution(gpt2_tiny_dir, tmp_path):
    folder = gpt2_tiny_dir / "openai"
    assert checkpoint_prefix(folder) == folder / "model.ckpt"               # via the 'checkpoint' file
    assert checkpoint_prefix(folder / INDEX) == folder / "model.ckpt"
    assert checkpoint_prefix(folder / "model.ckpt") == folder / "model.ckpt"
    copy = tmp_path / "nockptfile"
    shutil.copytree(folder, copy)
    (copy / "checkpoint").unlink()
    assert checkpoint_prefix(copy) == copy / "model.ckpt"                  # the only *.index
    (copy / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/run7/model.ckpt"\n')
    assert checkpoint_prefix(copy) == copy / "model.ckpt"                  # saved on another machine
    with pytest.raises(TFCheckpointError, match="no TensorFlow checkpoint found"):
        checkpoint_prefix(tmp_path)
    with pytest.raises(TFCheckpointError, match="does not exist"):
        TFCheckpointReader(tmp_path / "missing.ckpt")


def test_read_hparams(gpt2_tiny_dir, tmp_path):
    assert read_hparams(gpt2_tiny_dir / "openai") == {"n_vocab": 50257, "n_ctx": 128, "n_embd": 32,
                                                      "n_head": 4, "n_layer": 2}
    with pytest.raises(TFCheckpointError, match="does not exist"):
        read_hparams(tmp_path)
    (tmp_path / "hparams.json").write_text('{"n_vocab": 10, "n_ctx": 8, "n_embd": "32"}')
    with pytest.raises(TFCheckpointError, match="n_embd"):
        read_hparams(tmp_path)
    (tmp_path / "hparams.json").write_text('{"n_vocab": 10')
    with pytest.raises(TFCheckpointError, match="not valid JSON"):
        read_hparams(tmp_path)


# -- damaged files ----------------------------------------------------------------------------------------
@pytest.fixture
def ckpt_copy(gpt2_tiny_dir, tmp_path) -> Path:
    folder = tmp_path / "openai"
    shutil.copytree(gpt2_tiny_dir / "openai", folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


@pytest.mark.parametrize("name", ["model/wte", "model/h1/attn/c_attn/w", "model/ln_f/b"])
def test_flipped_byte_in_data_is_caught(ckpt_copy, name):
    entry = TFCheckpointReader(ckpt_copy).entries[name]
    data = bytearray((ckpt_copy / DATA).read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x01                 # one bit of one float
    (ckpt_copy / DATA).write_bytes(bytes(data))
    reader = TFCheckpointReader(ckpt_copy)
    with pytest.raises(TFCheckpointError, match=f"checksum mismatch for tensor '{name}'"):
        reader.read(name)
    reader.read(name, verify=False)                              # the crc check is what caught it
    with pytest.raises(TFCheckpointError, match="download it again"):
        load_tf_checkpoint(ckpt_copy)


@pytest.mark.parametrize("keep", [0, 1, 12345, -1])
def test_truncated_data_file(ckpt_copy, keep):
    data = (ckpt_copy / DATA).read_bytes()
    (ckpt_copy / DATA).write_bytes(data[:keep if keep >= 0 else len(data) + keep])
    with pytest.raises(TFCheckpointError, match="truncated") as err:
        TFCheckpointReader(ckpt_copy)
    assert DATA in str(err.value)


def test_missing_data_file(ckpt_copy):
    (ckpt_copy / DATA).unlink()
    with pytest.raises(TFCheckpointError, match="is missing"):
        TFCheckpointReader(ckpt_copy)


@pytest.mark.parametrize("keep", [0, 5, 47, 500, -1, -8])
def test_truncated_index_file(ckpt_copy, keep):
    index = (ckpt_copy / INDEX).read_bytes()
    (ckpt_copy / INDEX).write_bytes(index[:keep if keep >= 0 else len(index) + keep])
    with pytest.raises(TFCheckpointError, match="truncated"):
        TFCheckpointReader(ckpt_copy)


@pytest.mark.parametrize("position", [20, 300, 880])
def test_corrupted_index_block_is_caught(ckpt_copy, position):
    index = bytearray((ckpt_copy / INDEX).read_bytes())
    index[position] ^= 0x40
    (ckpt_copy / INDEX).write_bytes(bytes(index))
    with pytest.raises(TFCheckpointError, match="checksum mismatch in the block"):
        TFCheckpointReader(ckpt_copy)


# -- hand-built bundles: features the fixture does not have ------------------------------------------------
def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], dtype_codes: dict[str, int],
                 **options) -> None:
    write_tf_bundle(prefix, tensors, dtype_codes=dtype_codes, **options)


def test_hand_built_bundle_of_many_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"a/f64": rng.standard_normal((3, 4)), "b/i64": np.arange(-5, 5, dtype=np.int64),
               "c/f16": rng.standard_normal(7).astype(np.float16), "d/bool": np.array([True, False]),
               "e/scalar": np.array(2.5, dtype=np.float32), "f/empty": np.zeros((0, 3), np.int32),
               "g/u8": np.arange(256, dtype=np.uint8).reshape(16, 16)}
    codes = {"a/f64": 2, "b/i64": 9, "c/f16": 19, "d/bool": 10, "e/scalar": 1, "f/empty": 3, "g/u8": 4}
    write_bundle(tmp_path / "model.ckpt", tensors, codes)
    got = load_tf_checkpoint(tmp_path / "model.ckpt")
    assert list(got) == sorted(tensors)
    for name, array in tensors.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape
        np.testing.assert_array_equal(got[name], array)


@pytest.mark.parametrize("code, name", [(14, "DT_BFLOAT16"), (7, "DT_STRING"), (99, "unknown DataType 99")])
def test_unsupported_dtype_is_named(tmp_path, code, name):
    write_bundle(tmp_path / "model.ckpt", {"w": np.zeros(4, np.uint16), "ok": np.ones(2, np.float32)},
                 {"w": code, "ok": 1})
    reader = TFCheckpointReader(tmp_path)                       # other tensors stay readable
    np.testing.assert_array_equal(reader.read("ok"), np.ones(2, np.float32))
    with pytest.raises(TFCheckpointError, match=name):
        reader.read("w")


def test_big_endian_compressed_and_sliced_bundles_are_refused(tmp_path):
    tensors, codes = {"w": np.ones(3, np.float32)}, {"w": 1}
    write_bundle(tmp_path / "big", tensors, codes, endianness=1)
    with pytest.raises(TFCheckpointError, match="big-endian"):
        TFCheckpointReader(tmp_path / "big")
    write_bundle(tmp_path / "snappy", tensors, codes, compression=1)
    with pytest.raises(TFCheckpointError, match="compressed"):
        TFCheckpointReader(tmp_path / "snappy")
    write_bundle(tmp_path / "sliced", tensors, codes, entry_extra=field(7, b""))
    with pytest.raises(TFCheckpointError, match="partitioned"):
        TFCheckpointReader(tmp_path / "sliced")


def test_size_that_disagrees_with_shape_is_refused(tmp_path):
    write_bundle(tmp_path / "model.ckpt", {"w": np.ones(3, np.float32)}, {"w": 2})   # float32 bytes as f64
    with pytest.raises(TFCheckpointError, match="needs 24"):
        TFCheckpointReader(tmp_path)


def test_gpt_loader_with_a_corrupt_last_tensor_leaves_the_model_unchanged(gpt2_tiny_dir, tmp_path):
    """The c_attn bias of the last block is read after every other tensor: flip a byte of it, and the
    crc32c error must come before any parameter of the model passed in has changed."""
    import shutil

    from numpy_gpt.gpt2.convert import load_openai_checkpoint, load_weights_into_gpt
    folder = tmp_path / "openai"
    shutil.copytree(gpt2_tiny_dir / "openai", folder)
    reader = TFCheckpointReader(folder)
    n_layers = read_hparams(folder)["n_layer"]
    entry = reader.entries[f"model/h{n_layers - 1}/attn/c_attn/b"]
    data = folder / "model.ckpt.data-00000-of-00001"
    data.chmod(0o644)
    raw = bytearray(data.read_bytes())
    raw[entry.offset] ^= 0xFF
    data.write_bytes(bytes(raw))
    model = load_openai_checkpoint(gpt2_tiny_dir / "openai")
    model.tok_emb.weight.data[:] = 0.5                      # differs from the file everywhere it matters
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    with pytest.raises(TFCheckpointError, match="checksum mismatch"):
        load_weights_into_gpt(model, TFCheckpointReader(folder))
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)
