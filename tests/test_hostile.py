"""Faults and hostile files across modules (issue 14): training that diverges must not poison the
checkpoint on disk; a small hostile .npz must be refused before it allocates; deeply nested JSON
is a one-line error everywhere; token ids must be integers."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile

import numpy as np
import pytest
from helpers import reference, tiny_cfg
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpy_gpt.data import create_dataloader_v1
from numpy_gpt.finetune.classifier import add_classification_head, load_classifier, save_classifier
from numpy_gpt.finetune.data import load_instruction_data
from numpy_gpt.gpt2.openai_tf import TFCheckpointError, read_hparams
from numpy_gpt.gpt2.safetensors import SafetensorsError, read_header
from numpy_gpt.model import GPTModel
from numpy_gpt.model_files import load
from numpy_gpt.optim import AdamW
from numpy_gpt.tokenizers.train_bpe import BPETokenizer
from numpy_gpt.train import NonFiniteLossError, train_model

tiktoken = reference("tiktoken")

CFG = tiny_cfg(vocab_size=29, context_length=8, n_layers=1)
DEEP = 100_000          # far beyond Python's recursion limit


def loaders():
    ids = np.arange(400) % CFG["vocab_size"]
    train = create_dataloader_v1(ids[:300], batch_size=2, max_length=8, stride=8, shuffle=False)
    val = create_dataloader_v1(ids[300:], batch_size=2, max_length=8, stride=8, shuffle=False)
    return train, val


def assert_finite_checkpoint(path, step):
    saved = load_checkpoint(path)
    assert saved.step == step
    assert all(np.isfinite(p.data).all() for p in saved.model.parameters())
    assert all(np.isfinite(v).all() for v in saved.optimizer_state.values() if isinstance(v, np.ndarray))


# -- 1. a diverging run never overwrites the good checkpoint ------------------------------------------
@pytest.mark.parametrize("bad_lr", [float("nan"), float("inf"), -1.0])
def test_schedule_returning_a_bad_lr_at_step_k_is_refused_and_the_file_on_disk_stays_good(tmp_path, bad_lr):
    k = 3
    model = GPTModel(CFG, seed=0)
    train, val = loaders()
    path = tmp_path / "model.npz"

    def schedule(step):
        return bad_lr if step == k else 1e-3

    with pytest.raises(ValueError, match=rf"lr_schedule\({k}\) returned .*last good checkpoint is "
                                         rf".*model.npz \(step {k}\)"):
        train_model(model, train, val, AdamW(model.parameters(), lr=1e-3), max_steps=6, eval_freq=100,
                    eval_iter=1, lr_schedule=schedule, checkpoint_path=path, checkpoint_freq=1,
                    progress=False)
    assert_finite_checkpoint(path, k)


class PoisonedAdamW(AdamW):
    """AdamW whose ``poison_at``-th step leaves a NaN behind in the weights or in its own state."""

    def __init__(self, params, where, poison_at, **kwargs):
        super().__init__(params, **kwargs)
        self.where, self.poison_at, self.calls = where, poison_at, 0

    def step(self):
        super().step()
        self.calls += 1
        if self.calls == self.poison_at:
            if self.where == "weights":
                self.param_groups[0]["params"][-1].data[0, 0] = np.inf
            else:
                next(iter(self.state.values()))["exp_avg_sq"].flat[0] = np.nan


@pytest.mark.parametrize("where", ["weights", "optimizer"])
def test_a_checkpoint_is_never_written_from_non_finite_state(tmp_path, where):
    model = GPTModel(CFG, seed=0)
    train, val = loaders()
    path = tmp_path / "model.npz"
    optimizer = PoisonedAdamW(model.parameters(), where, poison_at=4, lr=1e-3)
    with pytest.raises(NonFiniteLossError, match=r"not finite after step 3.*last good checkpoint is "
                                                 r".*model.npz \(step 3\)"):
        train_model(model, train, val, optimizer, max_steps=8, eval_freq=100, eval_iter=1,
                    checkpoint_path=path, checkpoint_freq=1, progress=False)
    assert_finite_checkpoint(path, 3)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_run_that_diverges_before_any_save_names_no_file_as_good(tmp_path):
    model = GPTModel(CFG, seed=0)
    train, val = loaders()
    path = tmp_path / "model.npz"
    optimizer = PoisonedAdamW(model.parameters(), "weights", poison_at=1, lr=1e-3)
    with pytest.raises(NonFiniteLossError) as info:
        train_model(model, train, val, optimizer, max_steps=4, eval_freq=100, eval_iter=1,
                    checkpoint_path=path, checkpoint_freq=1, progress=False)
    assert "last good" not in str(info.value) and "No checkpoint was written" in str(info.value)
    assert not path.exists()


# -- 2. a small hostile .npz is refused before it allocates ---------------------------------------------
def rewrite_meta(path, out, change=None, raw: bytes | None = None, compress=False):
    """Copy the checkpoint ``path`` to ``out`` with its __meta__ changed (or replaced by ``raw``)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if raw is None:
        meta = json.loads(arrays["__meta__"].tobytes())
        change(meta)
        raw = json.dumps(meta).encode()
    arrays["__meta__"] = np.frombuffer(raw, dtype=np.uint8)
    (np.savez_compressed if compress else np.savez)(out, **arrays)
    return out


def peak_bytes(fn):
    """Peak memory Python and NumPy allocate while ``fn`` runs (tracemalloc sees NumPy's buffers)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def expect_refusal(loader, path, match):
    def run():
        with pytest.raises((CheckpointError, ValueError), match=match):
            loader(path)
    assert peak_bytes(run) < 100 * 2**20


@pytest.mark.parametrize("loader", [load_checkpoint, load_classifier, load], ids=["checkpoint", "classifier",
                                                                              "load"])
def test_a_lying_cfg_is_refused_before_anything_is_allocated(tmp_path, loader):
    model = add_classification_head(GPTModel(CFG, seed=0), 2)
    good = save_classifier(tmp_path / "good.npz", model, max_length=8)

    def inflate(meta):
        meta["cfg"]["vocab_size"] = 10**9
        meta["cfg"]["emb_dim"] = 4096
    hostile = rewrite_meta(good, tmp_path / "hostile.npz", inflate)
    assert hostile.stat().st_size < 100_000
    expect_refusal(loader, hostile, r"hostile.npz (does not (fit|match)|holds a GPT classifier)")


@pytest.mark.parametrize("loader", [load_checkpoint, load_classifier], ids=["checkpoint", "classifier"])
def test_a_meta_entry_that_inflates_hugely_is_refused_unread(tmp_path, loader):
    good = save_checkpoint(tmp_path / "good.npz", GPTModel(CFG, seed=0))
    hostile = tmp_path / "bomb.npz"
    chunk, n_chunks = b" " * (1 << 20), 1024                 # 1 GiB of spaces, streamed
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(hostile, "w", zipfile.ZIP_DEFLATED,
                                                       compresslevel=1) as dst:
        for info in src.infolist():
            if info.filename != "__meta__.npy":
                dst.writestr(info.filename, src.read(info))
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                      "shape": (len(chunk) * n_chunks,)})
        with dst.open("__meta__.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            for _ in range(n_chunks):
                f.write(chunk)
    assert hostile.stat().st_size < 5 * 2**20
    expect_refusal(loader, hostile, r"__meta__ is 1,073,741,824 bytes")


def test_a_zip_entry_that_lies_about_its_size_is_refused(tmp_path):
    good = save_checkpoint(tmp_path / "good.npz", GPTModel(CFG, seed=0))
    hostile = tmp_path / "lying.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(hostile, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "__meta__.npy":             # the header says 64 GiB of uint8
                header = io.BytesIO()
                np.lib.format.write_array_header_2_0(header, {"descr": "|u1", "fortran_order": False,
                                                              "shape": (64 << 30,)})
                data = header.getvalue() + b"{}"
            dst.writestr(info.filename, data)
    expect_refusal(load_checkpoint, hostile, "corrupt or truncated")


# -- 7. deeply nested JSON is one clear line ----------------------------------------------------------
def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_meta_is_a_checkpoint_error(tmp_path):
    good = save_checkpoint(tmp_path / "good.npz", GPTModel(CFG, seed=0))
    hostile = rewrite_meta(good, tmp_path / "deep.npz", raw=nested(DEEP))
    with pytest.raises(CheckpointError, match=r"deep.npz.*nested too deeply"):
        load_checkpoint(hostile)


def test_deeply_nested_safetensors_header_is_a_safetensors_error(tmp_path):
    header = b'{"a": ' + nested(DEEP) + b"}"
    path = tmp_path / "deep.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(SafetensorsError, match=r"deep.safetensors.*nested too deeply"):
        read_header(path)


def test_deeply_nested_instruction_data_and_hparams_name_the_file(tmp_path):
    path = tmp_path / "instruction-data.json"
    path.write_bytes(nested(DEEP))
    with pytest.raises(ValueError, match=r"instruction-data.json.*nested too deeply"):
        load_instruction_data(path)
    (tmp_path / "hparams.json").write_bytes(nested(DEEP))
    with pytest.raises(TFCheckpointError, match=r"hparams.json.*nested too deeply"):
        read_hparams(tmp_path)


# -- 8. decode takes integers only ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def byte_tokenizer():
    return BPETokenizer([])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 255), min_size=1, max_size=5), st.integers(0, 4),
       st.sampled_from([float, bool, np.float32, np.bool_]))
def test_decode_refuses_floats_and_booleans_among_ids(byte_tokenizer, ids, position, kind):
    """tiktoken raises TypeError for 1.0 (measured: tiktoken 0.x also accepts a Python True, which
    numpy_gpt refuses as well: a boolean is never a token id)."""
    bad = list(ids)
    bad.insert(min(position, len(bad)), kind(1))
    with pytest.raises(TypeError, match="token ids must be integers"):
        byte_tokenizer.decode(bad)
    assert byte_tokenizer.decode([np.int64(i) for i in ids]) == byte_tokenizer.decode(ids)


def test_decode_float_error_matches_tiktoken():
    reference = tiktoken.Encoding("bytes", pat_str=r"\S+|\s+",
                                  mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={})
    with pytest.raises(TypeError):
        reference.decode([1.0])
    with pytest.raises(TypeError):
        BPETokenizer([]).decode([1.0])
