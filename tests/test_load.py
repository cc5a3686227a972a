"""numpy_gpt.load (model_files.py): every model file numpy_gpt writes, read from its metadata, built and
loaded with the tokenizer it was trained with.

The files are written by the writers the commands use (save_checkpoint as pretrain, finetune-instruct and
finetune-dpo call it, save_classifier, save_mlm_checkpoint, save_safetensors); the older layouts are
rewritten to exactly what numpy_gpt 5966d39 wrote (checked against that commit's writers when this test
was made: an encoder kept ``cfg: null`` and ``extra.encoder_config`` / ``extra.wordpiece``; a DPO run with
LoRA kept ``extra.lora = {rank, alpha}`` and no ``lora`` metadata).
"""

from __future__ import annotations

import json
import tracemalloc
import zipfile

import numpy as np
import pytest
from helpers import tiny_cfg

import numpy_gpt
from numpy_gpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from numpy_gpt.encoder import EncoderModel
from numpy_gpt.finetune.classifier import add_classification_head, load_classifier, save_classifier
from numpy_gpt.gpt2.bert import load_bert
from numpy_gpt.gpt2.convert import load_gpt2, save_safetensors
from numpy_gpt.mlm import load_mlm_checkpoint, save_mlm_checkpoint
from numpy_gpt.model import GPTModel
from numpy_gpt.model_files import (
    LANGUAGE_MODELS,
    WrongKindError,
    checkpoint_tokenizer,
    load,
    read_model_file,
)
from numpy_gpt.nn.lora import LinearWithLoRA, merge_lora, replace_linear_with_lora
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
from numpy_gpt.tokenizers.char import CHAR_SPECIALS, CharTokenizer
from numpy_gpt.tokenizers.spec import tokenizer_spec
from numpy_gpt.tokenizers.train_bpe import BPETokenizer
from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer

TEXT = "the cat sat on the mat; the rat sat on the hat. "
IDS = np.array([[1, 5, 2, 7, 3, 0]])


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.from_text(TEXT, CHAR_SPECIALS)


@pytest.fixture(scope="module")
def bpe_tok() -> BPETokenizer:
    return BPETokenizer.train(TEXT * 20, 270)


@pytest.fixture(scope="module")
def wordpiece_tok() -> WordPieceTokenizer:
    words = sorted(set(TEXT.replace(";", " ").replace(".", " ").split()))
    return WordPieceTokenizer([*SPECIAL_TOKENS, *words, ";", "."])


def gpt(tokenizer, seed: int = 0) -> GPTModel:
    return GPTModel(tiny_cfg(vocab_size=tokenizer.n_vocab), seed=seed)


def trained_lora(model, rank: int = 2, alpha: float = 4.0, seed: int = 1):
    """``model`` with LoRA adapters whose B is not zero (as after some training steps)."""
    replace_linear_with_lora(model, rank, alpha, seed=seed)
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, LinearWithLoRA):
            module.lora.B.data[...] = rng.normal(0, 0.1, module.lora.B.shape)
    return model


def rewrite_meta(path, change) -> None:
    """Rewrite ``path``'s __meta__ with ``change(meta)`` (every array kept as it is)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays["__meta__"].tobytes())
    change(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def assert_same_function(model, loaded, *inputs):
    loaded.eval(), model.eval()
    np.testing.assert_array_equal(loaded(*inputs), model(*inputs))


# -- every kind, with its tokenizer ------------------------------------------------------------------------
def written(kind, tmp_path, char_tok, bpe_tok, wordpiece_tok):
    """(path, model as saved, tokenizer it was trained with, kind load must report) for one kind of file."""
    if kind == "pretrain-char":
        model = gpt(char_tok)
        extra = {"tokenizer": tokenizer_spec(char_tok), "corpus": "x", "training": {"history": {}}}
        return save_checkpoint(tmp_path / "model.npz", model, step=3, extra=extra), model, char_tok, "gpt"
    if kind == "pretrain-bpe":
        model = gpt(bpe_tok)
        return (save_checkpoint(tmp_path / "model.npz", model, extra={"tokenizer": tokenizer_spec(bpe_tok)}),
                model, bpe_tok, "gpt")
    if kind == "instruct":
        model = gpt(bpe_tok)
        extra = {"task": "instruct", "tokenizer": tokenizer_spec(bpe_tok), "init": "checkpoint"}
        return save_checkpoint(tmp_path / "instruct.npz", model, extra=extra), model, bpe_tok, "instruct"
    if kind == "dpo-merged":
        model = trained_lora(gpt(bpe_tok))
        merge_lora(model)
        extra = {"task": "dpo", "tokenizer": tokenizer_spec(bpe_tok), "init": "x", "lora": None}
        return save_checkpoint(tmp_path / "dpo.npz", model, extra=extra), model, bpe_tok, "dpo"
    if kind == "dpo-lora-kept":                       # dpo-train.npz: the run's state, adapters beside W
        model = trained_lora(gpt(bpe_tok))
        extra = {"task": "dpo", "tokenizer": tokenizer_spec(bpe_tok), "lora": {"rank": 2, "alpha": 4.0},
                 "dpo": {"history": {}}}
        return save_checkpoint(tmp_path / "dpo-train.npz", model, extra=extra), model, bpe_tok, "dpo"
    if kind == "classifier":
        model = add_classification_head(gpt(char_tok), 2, seed=3)
        path = save_classifier(tmp_path / "spam-classifier.npz", model, max_length=6,
                               pad_token_id=char_tok.eot_token, extra={"tokenizer": tokenizer_spec(char_tok)})
        return path, model, char_tok, "classifier"
    if kind == "classifier-lora-kept":                # spam-train.npz of --trainable lora
        model = trained_lora(add_classification_head(gpt(char_tok), 2, seed=3))
        path = save_checkpoint(tmp_path / "spam-train.npz", model, step=4,
                               extra={"classifier_training": {"examples_seen": 8}})
        return path, model, None, "classifier-run"
    if kind == "encoder":
        cfg = tiny_cfg(vocab_size=wordpiece_tok.n_vocab, qkv_bias=True)
        model = EncoderModel(cfg, seed=0)
        path = save_mlm_checkpoint(tmp_path / "mlm.npz", model, wordpiece_tok)
        return path, model, wordpiece_tok, "encoder"
    if kind == "safetensors":                         # what `numpy-gpt convert` writes: GPT-2's layout
        model = GPTModel(tiny_cfg(vocab_size=bpe_tok.n_vocab, qkv_bias=True), seed=0)
        return (save_safetensors(model, tmp_path / "m.safetensors", tokenizer_spec(bpe_tok)), model, bpe_tok,
                "gpt")
    raise AssertionError(kind)


KINDS_WRITTEN = ["pretrain-char", "pretrain-bpe", "instruct", "dpo-merged", "dpo-lora-kept", "classifier",
                 "classifier-lora-kept", "encoder", "safetensors"]


@pytest.mark.parametrize("kind", KINDS_WRITTEN)
def test_load_round_trips_every_kind_and_its_tokenizer(kind, tmp_path, char_tok, bpe_tok, wordpiece_tok):
    path, model, tokenizer, expected_kind = written(kind, tmp_path, char_tok, bpe_tok, wordpiece_tok)
    assert read_model_file(path).kind == expected_kind
    if tokenizer is None:                 # a training state recording no tokenizer, of no GPT-2 vocabulary
        with pytest.raises(CheckpointError, match="does not record its tokenizer"):
            load(path)
        loaded = read_model_file(path).load_model()
    else:
        loaded, loaded_tok = load(path)
        assert type(loaded_tok) is type(tokenizer)
        assert loaded_tok.encode(TEXT) == tokenizer.encode(TEXT)
        assert loaded_tok.decode(tokenizer.encode(TEXT)) == tokenizer.decode(tokenizer.encode(TEXT))
    assert type(loaded) is type(model) and not loaded.training
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in model.named_parameters()]
    for (name, p), (_, q) in zip(model.named_parameters(), loaded.named_parameters(), strict=True):
        assert q.data.dtype == p.data.dtype and np.array_equal(q.data, p.data), name
    assert_same_function(model, loaded, IDS)


def test_lora_kept_comes_back_as_adapters_with_their_alpha(tmp_path, bpe_tok):
    model = trained_lora(gpt(bpe_tok), rank=3, alpha=6.0)
    path = save_checkpoint(tmp_path / "run.npz", model, extra={"tokenizer": tokenizer_spec(bpe_tok)})
    loaded, _ = load(path)
    adapters = [m for m in loaded.modules() if isinstance(m, LinearWithLoRA)]
    assert len(adapters) == 2 * (4 + 2) + 1         # 4 attention + 2 feed-forward linears per block, the head
    assert {(m.lora.rank, m.lora.alpha) for m in adapters} == {(3, 6.0)}


def test_the_old_dpo_layout_with_lora_in_extra_loads(tmp_path, bpe_tok):
    path, model, _, _ = written("dpo-lora-kept", tmp_path, None, bpe_tok, None)
    rewrite_meta(path, lambda meta: meta.pop("lora"))          # as 5966d39 wrote it
    loaded, _ = load(path)
    assert_same_function(model, loaded, IDS)


def test_lora_without_its_alpha_is_one_clear_error(tmp_path, bpe_tok):
    path = save_checkpoint(tmp_path / "instruct-train.npz", trained_lora(gpt(bpe_tok)),
                           extra={"tokenizer": tokenizer_spec(bpe_tok)})
    rewrite_meta(path, lambda meta: meta.pop("lora"))          # finetune-instruct --trainable lora, 5966d39
    with pytest.raises(CheckpointError, match="instruct-train.npz keeps LoRA adapters .* not their alpha"):
        read_model_file(path)


def test_the_old_encoder_layout_loads(tmp_path, wordpiece_tok):
    path, model, _, _ = written("encoder", tmp_path, None, None, wordpiece_tok)

    def as_5966d39(meta):
        extra = meta["extra"]
        spec = extra.pop("tokenizer")
        extra["encoder_config"], meta["cfg"] = meta["cfg"], None
        extra["wordpiece"] = {k: spec[k] for k in ("vocab", "lowercase", "strip_accents")}
    rewrite_meta(path, as_5966d39)
    for loaded, tok in (load(path), load_mlm_checkpoint(path)[:2]):
        assert isinstance(loaded, EncoderModel) and tok.inverse == wordpiece_tok.inverse
        assert_same_function(model, loaded, IDS)
    assert isinstance(load_bert(path), EncoderModel)


def test_gpt2_files_get_gpt2s_tokenizer_from_one_constructor(tmp_path, gpt2_vocab_dir):
    model = GPTModel(tiny_cfg(vocab_size=50257, emb_dim=8, n_layers=1), seed=0)
    bare = save_checkpoint(tmp_path / "bare.npz", model)          # records no tokenizer: GPT-2's vocabulary
    loaded, tok = load(bare, vocab_dir=gpt2_vocab_dir)
    assert tok is numpy_gpt.get_gpt2_tokenizer(vocab_dir=gpt2_vocab_dir)   # cached: one tokenizer per folder
    original = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    assert tok.encode(TEXT) == original.encode(TEXT)
    assert_same_function(model, loaded, IDS)


def test_openai_folder_loads_with_gpt2s_tokenizer(gpt2_tiny_dir, gpt2_vocab_dir):
    file = read_model_file(gpt2_tiny_dir / "openai")
    assert (file.format.name, file.kind, file.tokenizer_spec) == ("openai", "gpt", {"kind": "gpt2"})
    model, tok = load(gpt2_tiny_dir / "openai", vocab_dir=gpt2_vocab_dir)
    np.testing.assert_array_equal(model(IDS), load_gpt2(gpt2_tiny_dir / "openai")[0](IDS))
    assert tok.n_vocab == 50257


# -- the metadata alone ------------------------------------------------------------------------------------
def big_checkpoint(tmp_path, char_tok):
    model = GPTModel(tiny_cfg(vocab_size=char_tok.n_vocab, emb_dim=256, n_heads=4, n_layers=4), seed=0)
    path = save_checkpoint(tmp_path / "big.npz", model, extra={"tokenizer": tokenizer_spec(char_tok)})
    assert path.stat().st_size > 12 * 2**20
    return path


def test_the_kind_is_read_without_reading_any_weight(tmp_path, char_tok):
    path = big_checkpoint(tmp_path, char_tok)
    tracemalloc.start()
    try:
        file = read_model_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert file.kind == "gpt" and file.cfg["n_layers"] == 4
    assert peak < 2**20, f"reading the metadata allocated {peak:,} bytes"


def test_corrupt_weights_still_report_their_kind_then_refuse_to_load(tmp_path, char_tok):
    path = big_checkpoint(tmp_path, char_tok)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("model/trf_blocks.3.ff.layers.0.weight.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + 4000] ^= 0xFF          # a byte in the middle of W
    path.write_bytes(bytes(data))
    file = read_model_file(path)
    assert (file.kind, file.tokenizer_spec["kind"]) == ("gpt", "char")
    with pytest.raises(CheckpointError, match=r"big.npz is corrupt .*trf_blocks.3.ff.layers.0.weight"):
        file.load_model()


# -- the wrong kind ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "says", "takes_it"), [
    ("encoder", "is a BERT-style encoder", "`numpy-gpt fill-mask --checkpoint"),
    ("classifier", "is a GPT spam classifier", "`numpy-gpt classify --checkpoint"),
])
def test_a_file_of_another_kind_says_what_it_is_and_which_command_takes_it(kind, says, takes_it, tmp_path,
                                                                           char_tok, wordpiece_tok):
    path = written(kind, tmp_path, char_tok, None, wordpiece_tok)[0]
    with pytest.raises(WrongKindError) as caught:
        read_model_file(path, expect=LANGUAGE_MODELS, use="generate")
    message = str(caught.value)
    assert message.startswith(f"{path} {says}")
    assert ", not a GPT language model, which generate needs: " in message
    assert f"{takes_it} {path}" in message and "\n" not in message
    for loader in (load_gpt2, lambda p: load_checkpoint(p)):
        with pytest.raises(CheckpointError, match=f"{path.name} (is|holds) a "):
            loader(path)


def test_book_loaders_refuse_the_other_side(tmp_path, char_tok, wordpiece_tok):
    gpt_path = written("pretrain-char", tmp_path, char_tok, None, None)[0]
    with pytest.raises(WrongKindError, match="model.npz is a GPT language model, not a BERT-style encoder"):
        load_bert(gpt_path)
    with pytest.raises(WrongKindError, match="not a GPT spam classifier, which load_classifier needs"):
        load_classifier(gpt_path)
    enc_path = written("encoder", tmp_path, None, None, wordpiece_tok)[0]
    with pytest.raises(WrongKindError, match="mlm.npz is a BERT-style encoder"):
        load_classifier(enc_path)


def test_files_that_are_no_model_say_what_they_are(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    with pytest.raises(CheckpointError, match=r"notes.txt is not a model checkpoint \(it is text\): "
                                              r"numpy_gpt reads a numpy_gpt .npz checkpoint; a GPT-2 "):
        load(text)
    with pytest.raises(FileNotFoundError, match="missing.npz does not exist"):
        load(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError, match="folder without a model in it"):
        load(tmp_path)


def test_a_tokenizer_larger_than_the_model_is_refused(tmp_path, bpe_tok):
    model = GPTModel(tiny_cfg(vocab_size=260), seed=0)
    path = save_checkpoint(tmp_path / "small.npz", model, extra={"tokenizer": tokenizer_spec(bpe_tok)})
    with pytest.raises(CheckpointError, match="makes ids up to 269, but the model has embeddings for 260"):
        checkpoint_tokenizer(path)


# -- the commands: issue 24 item 22 -------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "command", "takes_it"), [
    ("encoder", ["generate", "--checkpoint", "{path}"], "`numpy-gpt fill-mask --checkpoint {path} TEXT`"),
    ("encoder", ["evaluate", "--checkpoint", "{path}", "--tasks", "stdlib-cloze"], "`numpy-gpt fill-mask"),
    ("encoder", ["finetune-spam", "--init", "checkpoint", "--checkpoint", "{path}"], "`numpy-gpt fill-mask"),
    ("classifier", ["generate", "--checkpoint", "{path}"], "`numpy-gpt classify --checkpoint {path} TEXT`"),
    ("classifier", ["chat", "--checkpoint", "{path}", "--instruction", "hi"], "`numpy-gpt classify"),
    ("classifier", ["evaluate", "--checkpoint", "{path}", "--tasks", "stdlib-cloze"], "`numpy-gpt classify"),
    ("pretrain-char", ["classify", "--checkpoint", "{path}", "hello"], "`numpy-gpt generate --checkpoint"),
    ("pretrain-char", ["fill-mask", "--checkpoint", "{path}", "a [MASK]"], "`numpy-gpt generate"),
], ids=lambda value: value[0] if isinstance(value, list) else None)
def test_a_command_given_the_wrong_kind_says_what_the_file_is_and_who_takes_it(
        kind, command, takes_it, tmp_path, capsys, char_tok, wordpiece_tok):
    from numpy_gpt.cli import main
    path = written(kind, tmp_path, char_tok, None, wordpiece_tok)[0]
    assert main([part.format(path=path) for part in command]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert f"numpy-gpt {command[0]}: error: {path} is a" in err
    assert f"which `numpy-gpt {command[0]}` needs: {takes_it.format(path=path)}" in err
    assert "load_checkpoint(path, model)" not in err and "unexpected parameters" not in err


def test_the_names_this_replaces_still_work_for_one_release(tmp_path, bpe_tok, gpt2_vocab_dir):
    from numpy_gpt.cli import checkpoint_format
    from numpy_gpt.finetune.tokens import checkpoint_tokenizer_spec, gpt2_tokenizer
    from numpy_gpt.gpt2.convert import load_model, read_tokenizer_spec
    path, model, _, _ = written("pretrain-bpe", tmp_path, None, bpe_tok, None)
    with pytest.warns(DeprecationWarning):
        assert read_tokenizer_spec(path) == tokenizer_spec(bpe_tok)
    with pytest.warns(DeprecationWarning):
        assert checkpoint_tokenizer_spec(path) == tokenizer_spec(bpe_tok)
    with pytest.warns(DeprecationWarning):
        assert_same_function(model, load_model(path), IDS)
    with pytest.warns(DeprecationWarning):
        assert checkpoint_format(path) == "npz"
    with pytest.warns(DeprecationWarning):
        old = gpt2_tokenizer(vocab_dir=gpt2_vocab_dir)
    assert old is numpy_gpt.get_gpt2_tokenizer(vocab_dir=gpt2_vocab_dir)
