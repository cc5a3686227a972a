"""save_checkpoint / load_checkpoint: exact round trips, atomic writes and clear errors on bad files."""

from __future__ import annotations

import errno
import json
import zipfile

import numpy as np
import pytest
from helpers import tiny_cfg, with_meta
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy_gpt.checkpoint as checkpoint_module
from numpy_gpt.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
    restore_dropout_rng,
    save_checkpoint,
)
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import no_grad
from numpy_gpt.optim import AdamW, configure_param_groups

CFG = tiny_cfg(context_length=8, drop_rate=0.1, qkv_bias=True)


@pytest.fixture
def model() -> GPTModel:
    return GPTModel(CFG, seed=1)


@pytest.fixture
def idx() -> np.ndarray:
    return np.random.default_rng(0).integers(0, CFG["vocab_size"], size=(2, CFG["context_length"]))


def random_grads(model, seed: int, steps: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(np.float32) for p in model.parameters()]
            for _ in range(steps)]


def train_steps(model, optimizer, grads_per_step) -> None:
    for grads in grads_per_step:
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.copy()
        optimizer.step()


def rewrite(path, change) -> None:
    """Re-save the .npz at path after change(entries) edits its dict of arrays (to forge bad files)."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    change(entries)
    with open(path, "wb") as f:
        np.savez(f, **entries)


def edit_meta(entries, **updates) -> None:
    meta = json.loads(entries["__meta__"].tobytes())
    meta.update(updates)
    entries["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


# -- round trips ----------------------------------------------------------------------------------
def test_round_trip_builds_identical_model(tmp_path, model, idx):
    path = save_checkpoint(tmp_path / "ckpt.npz", model, step=42, extra={"tokenizer": "gpt2", "loss": 3.5})
    assert path == tmp_path / "ckpt.npz"
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.model, GPTModel)
    assert ckpt.step == 42 and ckpt.extra == {"tokenizer": "gpt2", "loss": 3.5}
    assert ckpt.cfg == CFG and ckpt.dtype == "float32" and ckpt.optimizer_state is None
    loaded = dict(ckpt.model.named_parameters())
    original = dict(model.named_parameters())
    assert list(loaded) == list(original)
    for name, p in original.items():
        assert loaded[name].data.dtype == np.float32
        np.testing.assert_array_equal(loaded[name].data, p.data, err_msg=name)
    model.eval()
    ckpt.model.eval()
    with no_grad():
        np.testing.assert_array_equal(ckpt.model(idx), model(idx))


def test_load_into_existing_model_and_no_suffix_added(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt", model)            # np.savez alone would write ckpt.npz
    assert path == tmp_path / "ckpt" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    other = GPTModel({**CFG, "drop_rate": 0.0}, seed=2)        # drop_rate may differ
    ckpt = load_checkpoint(path, other)
    assert ckpt.model is other
    for (name, p), q in zip(model.named_parameters(), other.parameters(), strict=True):
        np.testing.assert_array_equal(q.data, p.data, err_msg=name)


def test_file_needs_no_pickle(tmp_path, model):
    optimizer = AdamW(model.parameters(), lr=1e-3)
    train_steps(model, optimizer, random_grads(model, seed=3, steps=1))
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer)
    with np.load(path, allow_pickle=False) as npz:
        for key in npz.files:
            value = npz[key]
            assert value.dtype != object and (value.dtype.kind in "fiu"), key
        assert npz["__meta__"].dtype == np.uint8
        assert {"model/tok_emb.weight", "model/trf_blocks.1.att.W_query.bias",
                "optimizer/state.0.exp_avg"} <= set(npz.files)
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None


def test_optimizer_and_dropout_rng_resume_exactly(tmp_path, model, idx):
    optimizer = AdamW(configure_param_groups(model, weight_decay=0.1), lr=1e-3)
    grads = random_grads(model, seed=4, steps=6)
    train_steps(model, optimizer, grads[:3])
    model.dropout_rng.random(7)                                 # advance the dropout stream
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer, step=3)

    ckpt = load_checkpoint(path)
    resumed = ckpt.model
    resumed_optimizer = AdamW(configure_param_groups(resumed, weight_decay=0.1), lr=123.0)
    resumed_optimizer.load_state_dict(ckpt.optimizer_state)
    assert ckpt.step == 3 and resumed_optimizer.param_groups[0]["lr"] == 1e-3

    train_steps(model, optimizer, grads[3:])
    train_steps(resumed, resumed_optimizer, grads[3:])
    for (name, p), q in zip(model.named_parameters(), resumed.parameters(), strict=True):
        np.testing.assert_array_equal(q.data, p.data, err_msg=name)
    model.train()
    resumed.train()
    with no_grad():                                             # same dropout masks after the reload
        np.testing.assert_array_equal(resumed(idx), model(idx))


def test_restore_dropout_rng_helper(tmp_path, model):
    state = model.dropout_rng.bit_generator.state
    expected = model.dropout_rng.random(4)
    restore_dropout_rng(model, state)
    np.testing.assert_array_equal(model.dropout_rng.random(4), expected)
    with pytest.raises(CheckpointError, match="MT19937"):
        restore_dropout_rng(model, np.random.MT19937(0).state)


def test_load_optimizer_false_skips_it(tmp_path, model):
    optimizer = AdamW(model.parameters(), lr=1e-3)
    train_steps(model, optimizer, random_grads(model, seed=5, steps=1))
    path = save_checkpoint(tmp_path / "ckpt.npz", model, optimizer)
    assert load_checkpoint(path, load_optimizer=False).optimizer_state is None
    assert load_checkpoint(path).optimizer_state is not None


# -- atomic writes --------------------------------------------------------------------------------
def test_failed_write_keeps_existing_file_and_leaves_no_temp(tmp_path, model, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt.npz", model, step=1)
    path = save_checkpoint(path, model, step=2)                  # overwriting works
    good = path.read_bytes()

    def disk_full(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model, step=3)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]
    assert load_checkpoint(path).step == 2


def test_unserialisable_extra_writes_nothing(tmp_path, model):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "ckpt.npz", model, extra={"tokenizer": object()})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "ckpt.npz", model)


# -- bad files ------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n" * 10, b"\x93NUMPY garbage"])
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"ckpt\.npz is corrupt or truncated"):
        load_checkpoint(path)


def test_truncated_file(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt.npz", model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_corrupt_parameter_bytes(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt.npz", model)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model/tok_emb.weight.npy")
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
    data[info.header_offset + 30 + name_len + extra_len + 300] ^= 0xFF   # inside the array data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"corrupt or truncated.*model/tok_emb\.weight"):
        load_checkpoint(path)


@pytest.mark.parametrize("method", [99, 12], ids=["aes-99", "bzip2-12"])
def test_an_unknown_compression_method_is_one_line_naming_the_file(tmp_path, model, method):
    """Issue 24 item 18: method 99 in an entry's headers gave zipfile's NotImplementedError traceback."""
    path = save_checkpoint(tmp_path / "ckpt.npz", model)
    data = bytearray(path.read_bytes())
    central = data.rfind(b"PK\x01\x02")                     # the first entry's two headers
    for offset in (8, central + 10):
        data[offset:offset + 2] = method.to_bytes(2, "little")
    path.write_bytes(bytes(data))
    for read in (load_checkpoint, read_checkpoint_meta):
        with pytest.raises(CheckpointError, match=rf"ckpt.npz is corrupt .*compression method {method}; a "
                                                  rf".npz uses only 0 \(stored\) or 8 \(deflate\)"):
            read(path)


def test_single_npy_and_foreign_npz(tmp_path):
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3, dtype=np.float32))
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_checkpoint(npy)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3, dtype=np.float32))
    with pytest.raises(CheckpointError, match="not a numpy_gpt checkpoint"):
        load_checkpoint(foreign)


def test_wrong_shape_names_the_parameter(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt.npz", model)

    def change(entries):
        entries["model/trf_blocks.0.ff.layers.0.weight"] = np.zeros((16, 32), dtype=np.float32)
    rewrite(path, change)
    target = GPTModel(CFG, seed=3)
    before = target.tok_emb.weight.data.copy()
    with pytest.raises(CheckpointError, match=r"trf_blocks\.0\.ff\.layers\.0\.weight: checkpoint \(16, 32\) "
                                              r"vs model \(16, 64\)"):
        load_checkpoint(path, target)
    np.testing.assert_array_equal(target.tok_emb.weight.data, before)   # nothing was overwritten


def test_config_mismatch_names_the_keys(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt.npz", model)
    with pytest.raises(CheckpointError, match=r"n_layers: checkpoint 2 vs model 1.*vocab_size: checkpoint 50 "
                                              r"vs model 60"):
        load_checkpoint(path, GPTModel({**CFG, "n_layers": 1, "vocab_size": 60}))


def test_missing_and_unexpected_keys(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt.npz", model)

    def change(entries):
        del entries["model/final_norm.scale"]
        entries["model/final_norm.gain"] = np.ones(16, dtype=np.float32)
    rewrite(path, change)
    with pytest.raises(CheckpointError, match=r"missing parameters \['final_norm\.scale'\], unexpected "
                                              r"parameters \['final_norm\.gain'\]"):
        load_checkpoint(path)

    rewrite(path, lambda entries: entries.update(stray=np.zeros(1)))
    with pytest.raises(CheckpointError, match=r"unexpected entries \['stray'\]"):
        load_checkpoint(path)


def test_unsupported_format_version_and_bad_meta(tmp_path, model):
    path = save_checkpoint(tmp_path / "ckpt.npz", model)
    rewrite(path, lambda entries: edit_meta(entries, format_version=99))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)
    rewrite(path, lambda entries: entries.update(__meta__=np.frombuffer(b"{not json", dtype=np.uint8)))
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)


# -- issue 14: hostile metadata, all-or-nothing loads, finite weights -----------------------------------
def with_array(path, out, key, value):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[key] = value
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize(("field", "value", "message"), [
    ("step", -5, "'step'.*integer >= 0"), ("step", 1.5, "'step'.*integer >= 0"), ("step", "3", "'step'"),
    ("extra", [1, 2], "'extra'.*JSON object"), ("cfg", [1], "'cfg'.*JSON object"),
    ("cfg", {"vocab_size": 50}, "'cfg'.*not a valid GPT config"),
    ("dropout_rng_state", "abc", "'dropout_rng_state'"),
    ("dropout_rng_state", {"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}},
     "'dropout_rng_state'.*not a valid PCG64 state"),
    ("dropout_rng_state", {"bit_generator": "PCG64", "state": {"__ndarray__": [1], "dtype": "object"}},
     "'dropout_rng_state'"),
    ("optimizer", [], "'optimizer'"), ("dtype", 3, "'dtype'"),
])
def test_malformed_metadata_fields_are_one_line_checkpoint_errors(tmp_path, model, field, value, message):
    good = save_checkpoint(tmp_path / "good.npz", model, step=2)
    bad = with_meta(good, tmp_path / "bad.npz", lambda meta: meta.__setitem__(field, value))
    for target in (None, GPTModel(CFG, seed=5)):
        with pytest.raises(CheckpointError, match=rf"bad.npz.*{message}"):
            load_checkpoint(bad, target)


def snapshot(model):
    return {name: p.data.copy() for name, p in model.named_parameters()}


def assert_unchanged(model, before):
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.data, before[name], err_msg=name)


@pytest.mark.parametrize("fault", ["crc", "nan", "rng"])
def test_a_failed_load_leaves_the_model_passed_in_unchanged(tmp_path, model, fault):
    """The last parameter is corrupt (its bytes flipped, or NaN), or the RNG state is bad: the
    load fails, and not one parameter of the model passed in, nor its dropout RNG, has changed."""
    good = save_checkpoint(tmp_path / "good.npz", GPTModel(CFG, seed=2))
    last = "model/" + list(dict(model.named_parameters()))[-1]
    bad = tmp_path / "bad.npz"
    if fault == "crc":
        data = bytearray(good.read_bytes())
        with zipfile.ZipFile(good) as zf:
            info = zf.getinfo(last + ".npy")
        data[info.header_offset + info.compress_size + 20] ^= 0xFF   # inside the entry's data
        bad.write_bytes(bytes(data))
    elif fault == "nan":
        with np.load(good) as npz:
            poisoned = npz[last].copy()
        poisoned.flat[-1] = np.nan
        with_array(good, bad, last, poisoned)
    else:
        with_meta(good, bad, lambda meta: meta["dropout_rng_state"]["state"].__setitem__("state", "x"))
    before, rng_before = snapshot(model), model.dropout_rng.bit_generator.state
    with pytest.raises(CheckpointError, match="bad.npz"):
        load_checkpoint(bad, model)
    assert_unchanged(model, before)
    assert model.dropout_rng.bit_generator.state == rng_before


def test_nan_weights_are_refused_naming_the_tensor(tmp_path, model):
    good = save_checkpoint(tmp_path / "good.npz", model)
    poisoned = np.full((CFG["emb_dim"],), np.nan, np.float32)
    bad = with_array(good, tmp_path / "bad.npz", "model/final_norm.scale", poisoned)
    with pytest.raises(CheckpointError, match=r"bad.npz: tensor 'model/final_norm.scale' holds NaN"):
        load_checkpoint(bad)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_save_refuses_non_finite_weights_and_keeps_the_old_file(tmp_path, model, value):
    path = save_checkpoint(tmp_path / "model.npz", model, step=1)
    before = path.read_bytes()
    model.trf_blocks[1].ff.layers[2].bias.data[3] = value
    with pytest.raises(checkpoint_module.NonFiniteStateError,
                       match=r"trf_blocks.1.ff.layers.2.bias holds NaN"):
        save_checkpoint(path, model, step=2)
    assert path.read_bytes() == before


def test_integer_weights_are_refused(tmp_path, model):
    good = save_checkpoint(tmp_path / "good.npz", model)
    integers = np.zeros(CFG["emb_dim"], np.int32)
    bad = with_array(good, tmp_path / "bad.npz", "model/final_norm.shift", integers)
    with pytest.raises(CheckpointError, match="final_norm.shift: checkpoint dtype int32 is not floating"):
        load_checkpoint(bad)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 70), st.integers(1, 9), st.integers(1, 4), st.integers(1, 3), st.booleans(),
       st.one_of(st.none(), st.integers(1, 5)), st.one_of(st.none(), st.integers(1, 40)))
def test_gpt_parameter_shapes_are_the_models_own(vocab, context, heads, layers, qkv_bias, num_classes,
                                                 hidden_dim):
    """The shapes checked against a file before building the model are exactly the model's."""
    from numpy_gpt.finetune.classifier import add_classification_head
    width = {} if hidden_dim is None else {"hidden_dim": hidden_dim}
    cfg = tiny_cfg(vocab_size=vocab, context_length=context, emb_dim=4 * heads, n_heads=heads,
                   n_layers=layers, qkv_bias=qkv_bias, **width)
    cfg = GPTModel(cfg, init=False).cfg           # as a checkpoint stores it (4 x emb_dim: no key)
    gpt = GPTModel(cfg, init=False)
    if num_classes is not None:
        add_classification_head(gpt, num_classes)
    assert checkpoint_module.gpt_parameter_shapes(cfg, num_classes) == {
        name: p.shape for name, p in gpt.named_parameters()}


def test_feed_forward_width_is_saved_checked_and_optional(tmp_path, idx):
    """hidden_dim travels with the checkpoint; the shape checks read it (a cfg that lies about the
    width is refused before anything is built); stating the default width equals leaving it out, so
    an old checkpoint, which has no such key, loads into a model built either way."""
    wide = GPTModel(tiny_cfg(context_length=8, hidden_dim=24), seed=2)
    path = save_checkpoint(tmp_path / "wide.npz", wide)
    back = load_checkpoint(path).model
    assert back.cfg["hidden_dim"] == 24 and back.trf_blocks[0].ff.layers[0].weight.shape == (16, 24)
    with no_grad():
        np.testing.assert_array_equal(back(idx), wide(idx))

    rewrite(path, lambda entries: edit_meta(entries, cfg={**wide.cfg, "hidden_dim": 40}))
    with pytest.raises(CheckpointError, match=r"ff\.layers\.0\.weight: checkpoint \(16, 24\) vs model "
                                              r"\(16, 40\)"):
        load_checkpoint(path)

    old = save_checkpoint(tmp_path / "old.npz", GPTModel(CFG, seed=1))
    with np.load(old, allow_pickle=False) as npz:
        assert "hidden_dim" not in json.loads(npz["__meta__"].tobytes())["cfg"]
    stated = GPTModel({**CFG, "hidden_dim": 4 * CFG["emb_dim"]}, seed=5)
    assert stated.cfg == CFG
    load_checkpoint(old, stated)
