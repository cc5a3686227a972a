"""Tests for numpy_gpt.gpt2.safetensors against the reference implementation (the safetensors library).

The fixture file was written by transformers; files written here must load in
``safetensors.numpy.load_file``; files the library writes must load here; and every malformed file
the reader refuses is refused by the library too.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from numpy_gpt.gpt2.safetensors import (
    SafetensorsError,
    SafetensorsReader,
    load_file,
    read_header,
    save_file,
)

torch = reference("torch")
safe_open = reference("safetensors", "safe_open")
reference_load_file = reference("safetensors.numpy", "load_file")
reference_save_file = reference("safetensors.numpy", "save_file")
torch_save_file = reference("safetensors.torch", "save_file")

DTYPES = [np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.float16, np.uint32, np.int32,
          np.float32, np.uint64, np.int64, np.float64]


def test_reader_agrees_with_library_on_fixture(gpt2_tiny_dir):
    path = gpt2_tiny_dir / "hf" / "model.safetensors"
    ours, theirs = load_file(path), reference_load_file(str(path))
    assert set(ours) == set(theirs) and len(ours) == 28
    for name, array in theirs.items():
        assert ours[name].dtype == array.dtype and ours[name].shape == array.shape, name
        np.testing.assert_array_equal(ours[name], array, err_msg=name)
    with safe_open(str(path), "np") as f:
        assert read_header(path)[1] == f.metadata()


@given(st.dictionaries(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12).filter(
        lambda s: s != "__metadata__"),
    hnp.arrays(st.sampled_from(DTYPES), hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    max_size=5))
def test_writer_output_loads_in_library(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("st") / "x.safetensors"
    save_file(tensors, path, metadata={"format": "pt", "note": "ünïcode"})
    loaded = reference_load_file(str(path))
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    with safe_open(str(path), "np") as f:
        assert f.metadata() == {"format": "pt", "note": "ünïcode"}
    assert os.path.getsize(path) % 8 == sum(a.nbytes for a in tensors.values()) % 8   # header padded


def test_writer_handles_views_and_big_endian(tmp_path):
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    tensors = {"transposed": base.T, "strided": base[:, ::2], "big": base.astype(">f4"),
               "scalar": np.array(3.5), "empty": np.zeros((0, 7), np.int16)}
    save_file(tensors, tmp_path / "v.safetensors")
    loaded = reference_load_file(str(tmp_path / "v.safetensors"))
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].dtype == array.dtype.newbyteorder("=")
    assert [p.name for p in tmp_path.iterdir()] == ["v.safetensors"]   # no temporary file left


@given(st.dictionaries(st.sampled_from(["a", "b.c", "transformer.h.0.w", "z"]),
                       hnp.arrays(st.sampled_from(DTYPES),
                                  hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)),
                       max_size=4))
def test_reader_loads_library_output(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("st") / "lib.safetensors"
    reference_save_file(tensors, str(path), metadata={"k": "v"})
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
    assert read_header(path)[1] == {"k": "v"}


def test_bfloat16_is_widened_exactly_to_float32(tmp_path):
    values = torch.randn(5, 3).to(torch.bfloat16)
    torch_save_file({"w": values}, str(tmp_path / "bf16.safetensors"))
    reader = SafetensorsReader(tmp_path / "bf16.safetensors")
    assert reader.entries["w"].stored_dtype == "BF16"
    got = reader.read("w")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values.float().numpy())


def test_read_into_existing_array(tmp_path):
    save_file({"w": np.arange(12, dtype=np.float32).reshape(1, 3, 4)}, tmp_path / "w.safetensors")
    reader = SafetensorsReader(tmp_path / "w.safetensors")
    out = np.zeros((3, 4), np.float32)
    assert reader.read("w", out=out) is out
    np.testing.assert_array_equal(out, np.arange(12).reshape(3, 4))
    with pytest.raises(ValueError, match="float32"):
        reader.read("w", out=np.zeros((3, 4), np.float64))
    with pytest.raises(KeyError, match="did you mean"):
        reader.read("ww")


# -- malformed files: refused here, and by the reference implementation -----------------------------------
GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


def raw_file(path, header: object = None, data: bytes = bytes(8), header_bytes: bytes | None = None,
             length: int | None = None) -> None:
    text = json.dumps(header).encode() if header_bytes is None else header_bytes
    path.write_bytes((len(text) if length is None else length).to_bytes(8, "little") + text + data)


MALFORMED = {
    "header length beyond the file": (dict(header=GOOD, length=10**6), "header length"),
    "not JSON": (dict(header_bytes=b"{abc"), "not valid UTF-8 JSON"),
    "not UTF-8": (dict(header_bytes=b'{"\xff": 1}'), "not valid UTF-8 JSON"),
    "JSON array": (dict(header=[1, 2]), "must be a JSON object"),
    "missing field": (dict(header={"a": {"dtype": "F32", "shape": [2]}}), "with the keys"),
    "unknown dtype": (dict(header={"a": {**GOOD["a"], "dtype": "F99"}}), "F99"),
    "negative dim": (dict(header={"a": {**GOOD["a"], "shape": [-2]}}), "non-negative integers"),
    "float dim": (dict(header={"a": {**GOOD["a"], "shape": [2.0]}}), "non-negative integers"),
    "size mismatch": (dict(header={"a": {**GOOD["a"], "shape": [3]}}), "needs 12"),
    "reversed offsets": (dict(header={"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}),
                         "0 <= begin <= end"),
    "gap": (dict(header={"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}), "gap"),
    "overlap": (dict(header={**GOOD, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}),
                "overlaps"),
    "truncated data": (dict(header=GOOD, data=bytes(5)), "truncated"),
    "trailing bytes": (dict(header=GOOD, data=bytes(12)), "padded"),
    "metadata not strings": (dict(header={"__metadata__": {"a": 1}, **GOOD}), "__metadata__"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_are_refused(tmp_path, case):
    kwargs, message = MALFORMED[case]
    path = tmp_path / "bad.safetensors"
    raw_file(path, **kwargs)
    with pytest.raises(SafetensorsError, match=message):
        SafetensorsReader(path)
    with pytest.raises(Exception):       # noqa: B017 - the library raises its own error type
        reference_load_file(str(path))


def test_duplicate_names_and_tiny_files_are_refused(tmp_path):
    path = tmp_path / "dup.safetensors"
    entry = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}'
    raw_file(path, header_bytes=f'{{"a":{entry},"a":{entry}}}'.encode())
    with pytest.raises(SafetensorsError, match="more than once"):     # ambiguous: which one is meant?
        SafetensorsReader(path)
    path.write_bytes(b"\x08\x00")
    with pytest.raises(SafetensorsError, match="too short"):
        SafetensorsReader(path)


def test_valid_variants_are_accepted(tmp_path):
    path = tmp_path / "ok.safetensors"
    raw_file(path, header_bytes=b"  " + json.dumps(GOOD).encode() + b"    ")   # whitespace around JSON
    np.testing.assert_array_equal(load_file(path)["a"], np.zeros(2, np.float32))
    raw_file(path, header={"__metadata__": {"format": "pt"}}, data=b"")           # no tensors at all
    assert load_file(path) == {} == reference_load_file(str(path))


def test_writer_refuses_what_safetensors_cannot_hold(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": np.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(SafetensorsError, match="object"):
        save_file({"a": np.ones(2), "b": np.array(["x"], dtype=object)}, path)
    with pytest.raises(SafetensorsError, match="__metadata__"):
        save_file({"__metadata__": np.ones(2)}, path)
    with pytest.raises(SafetensorsError, match="metadata"):
        save_file({"a": np.ones(2)}, path, metadata={"n": 1})
    assert path.read_bytes() == before                                  # the old file is untouched


# -- issue 14: the GPT-2 loaders: one dtype rule, finite weights, all or nothing -------------------------
def _tiny_gpt2_file(tmp_path, change=None):
    from numpy_gpt.gpt2.convert import gpt_to_hf_tensors
    from numpy_gpt.model import GPTModel
    cfg = {"vocab_size": 40, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    tensors, _ = gpt_to_hf_tensors(GPTModel(cfg, seed=3))
    if change is not None:
        change(tensors)
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    return path, cfg


@pytest.mark.parametrize("fault", ["nan", "int"])
def test_gpt_loader_refuses_bad_last_tensor_and_leaves_the_model_unchanged(tmp_path, fault):
    from numpy_gpt.gpt2.convert import load_weights_into_gpt
    from numpy_gpt.model import GPTModel
    last = "transformer.h.1.attn.c_attn.bias"                    # read after every direct tensor

    def poison(tensors):
        if fault == "nan":
            tensors[last] = tensors[last].copy()
            tensors[last][-1] = np.nan
        else:
            tensors[last] = np.zeros(tensors[last].shape, np.int32)
    path, cfg = _tiny_gpt2_file(tmp_path, poison)
    model = GPTModel(cfg, seed=9)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    message = "holds NaN" if fault == "nan" else "weights must be floating point"
    with pytest.raises(ValueError, match=rf"model.safetensors.*{message}"):
        load_weights_into_gpt(model, SafetensorsReader(path))
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)
