"""Tests for numpy_gpt.gpt2.convert and numpy_gpt.cli.weights: GPT-2 weights into and out of GPTModel.

References: the logits and greedy tokens transformers computed for the gpt2-tiny fixture; the
fixture's own files (written by TensorFlow and transformers); transformers' GPT2LMHeadModel loading
what we export. Downloads are served by a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import reference, tiny_cfg

from numpy_gpt.checkpoint import load_checkpoint
from numpy_gpt.cli import main
from numpy_gpt.download import DownloadError
from numpy_gpt.generate import generate
from numpy_gpt.gpt2 import convert as convert_module
from numpy_gpt.gpt2.convert import (
    GPT2_FILES,
    convert,
    download_gpt2,
    load_gpt2,
    load_openai_checkpoint,
    load_safetensors,
    load_weights_into_gpt,
    save_safetensors,
)
from numpy_gpt.gpt2.safetensors import SafetensorsReader, load_file, save_file
from numpy_gpt.model import GPTModel

torch = reference("torch")
reference_load_file = reference("safetensors.numpy", "load_file")
GPT2LMHeadModel = reference("transformers", "GPT2LMHeadModel")
GPT2Config = reference("transformers", "GPT2Config")

ATOL = 1e-4


@pytest.fixture(scope="module")
def fixture(gpt2_tiny_dir):
    return {"ids": np.load(gpt2_tiny_dir / "input_ids.npy"),
            "logits": np.load(gpt2_tiny_dir / "expected_logits.npy"),
            "greedy": np.load(gpt2_tiny_dir / "expected_greedy.npy"),
            "openai": gpt2_tiny_dir / "openai", "hf": gpt2_tiny_dir / "hf" / "model.safetensors"}


def hf_logits(folder: Path, ids: np.ndarray) -> np.ndarray:
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.from_numpy(ids)).logits.numpy()


# -- loading ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["openai", "hf"])
def test_loaded_model_gives_transformers_logits(fixture, source):
    gpt = (load_openai_checkpoint(fixture["openai"]) if source == "openai"
           else load_safetensors(fixture["hf"]))
    assert not gpt.training                                    # ready to generate: no dropout
    assert gpt.cfg == {"vocab_size": 50257, "context_length": 128, "emb_dim": 32, "n_heads": 4,
                       "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}
    np.testing.assert_allclose(gpt(fixture["ids"]), fixture["logits"], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(gpt.out_head.weight.data, gpt.tok_emb.weight.data.T)   # tied


@pytest.mark.parametrize("source", ["openai", "hf"])
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_matches_transformers(fixture, source, use_cache):
    gpt, _ = load_gpt2(fixture[source])
    prompt = fixture["greedy"][:, :8]
    out = generate(gpt, prompt, max_new_tokens=16, context_size=128, temperature=0.0,
                   use_cache=use_cache)
    np.testing.assert_array_equal(out, fixture["greedy"])


def test_load_gpt2_returns_settings_and_reads_every_source(fixture, tmp_path):
    gpt, settings = load_gpt2(fixture["openai"])
    assert settings == {"n_vocab": 50257, "n_ctx": 128, "n_embd": 32, "n_head": 4, "n_layer": 2}
    npz = convert(fixture["openai"], tmp_path / "tiny.npz")
    for source in (fixture["hf"], fixture["hf"].parent, npz):
        other, other_settings = load_gpt2(source)
        assert other_settings == settings
        for name, value in gpt.state_dict().items():
            np.testing.assert_array_equal(other.state_dict()[name], value, err_msg=f"{source}: {name}")
    with pytest.raises(FileNotFoundError, match="nothing-here does not exist"):
        load_gpt2(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a model checkpoint"):
        load_gpt2(tmp_path / "empty")


def test_hub_style_file_without_prefix_and_with_mask_buffers(fixture, tmp_path):
    tensors = {k.removeprefix("transformer."): v for k, v in reference_load_file(str(fixture["hf"])).items()}
    mask = np.tril(np.ones((128, 128), np.uint8))[None, None]    # what old GPT-2 files carry
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = mask
        tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, tmp_path / "gpt2.safetensors")
    with pytest.raises(ValueError, match="config.json"):          # 32 wide: heads cannot be inferred
        load_safetensors(tmp_path / "gpt2.safetensors")
    shutil.copy(fixture["hf"].parent / "config.json", tmp_path / "config.json")
    gpt = load_safetensors(tmp_path / "gpt2.safetensors")
    np.testing.assert_allclose(gpt(fixture["ids"]), fixture["logits"], rtol=0, atol=ATOL)


def test_mismatched_checkpoints_are_refused(fixture, tmp_path):
    tensors = reference_load_file(str(fixture["hf"]))
    config = tiny_cfg(vocab_size=50257, context_length=128, emb_dim=32, n_heads=4, qkv_bias=True)
    save_file({**tensors, "transformer.h.0.attn.extra": np.ones(3, np.float32)}, tmp_path / "a.safetensors")
    gpt = GPTModel(config, seed=0)
    before = {name: value.copy() for name, value in gpt.state_dict().items()}
    with pytest.raises(ValueError, match="no place for.*attn.extra"):
        load_weights_into_gpt(gpt, SafetensorsReader(tmp_path / "a.safetensors"))
    for name, value in gpt.state_dict().items():                 # checked before anything changed
        np.testing.assert_array_equal(value, before[name])
    del tensors["transformer.h.1.mlp.c_fc.bias"]
    save_file(tensors, tmp_path / "b.safetensors")
    with pytest.raises(KeyError, match="h.1.mlp.c_fc.bias"):
        load_safetensors(tmp_path / "b.safetensors", cfg=config)
    with pytest.raises(ValueError, match="shape"):
        load_safetensors(fixture["hf"], cfg={**config, "context_length": 64})
    with pytest.raises(ValueError, match="qkv_bias=True"):
        load_safetensors(fixture["hf"], cfg={**config, "qkv_bias": False})


def test_unsupported_hf_config_is_refused(fixture, tmp_path):
    shutil.copy(fixture["hf"], tmp_path / "model.safetensors")
    config = json.loads((fixture["hf"].parent / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(ValueError, match="activation_function"):
        load_safetensors(tmp_path)


# -- export -------------------------------------------------------------------------------------------------
def test_export_of_loaded_gpt2_is_transformers_layout(fixture, tmp_path):
    gpt = load_openai_checkpoint(fixture["openai"])
    path = save_safetensors(gpt, tmp_path / "export")
    assert path == tmp_path / "export" / "model.safetensors"
    exported, original = reference_load_file(str(path)), reference_load_file(str(fixture["hf"]))
    assert set(exported) == set(original)                        # no lm_head: tied, as transformers
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)
    config = json.loads((path.parent / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["n_positions"] == 128
    np.testing.assert_allclose(hf_logits(path.parent, fixture["ids"]), gpt(fixture["ids"]),
                               rtol=0, atol=ATOL)


def test_export_of_trained_model_round_trips_through_transformers(tmp_path):
    # The book's GPTModel: own output head (not tied), no qkv bias, dropout configured.
    cfg = tiny_cfg(vocab_size=300, context_length=24, emb_dim=48, n_heads=4, drop_rate=0.1)
    gpt = GPTModel(cfg, seed=7).eval()
    ids = np.random.default_rng(0).integers(0, 300, (2, 24))
    path = save_safetensors(gpt, tmp_path / "trained.safetensors")
    assert "lm_head.weight" in load_file(path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    shutil.copy(path, tmp_path / "model.safetensors")
    expected = gpt(ids)
    np.testing.assert_allclose(hf_logits(tmp_path, ids), expected, rtol=0, atol=ATOL)
    back = load_safetensors(path)
    np.testing.assert_array_equal(back.out_head.weight.data, gpt.out_head.weight.data)
    np.testing.assert_allclose(back(ids), expected, rtol=0, atol=1e-6)


def test_gpt2_of_any_feed_forward_width(fixture, tmp_path):
    """n_inner != 4 * n_embd: transformers' folder loads (config.json's n_inner is hidden_dim) and
    gives its logits; the export writes n_inner and transformers reads it back; an OpenAI folder
    whose hparams.json says n_inner loads the same weights; a .npz keeps the width."""
    from numpy_gpt.tools.tf_bundle_writer import write_tf_bundle
    config = GPT2Config(vocab_size=97, n_positions=16, n_embd=16, n_layer=2, n_head=4, n_inner=40)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():                            # GPT-2's 0.02 init gives near-zero logits: widen it
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf")
    ids = np.random.default_rng(0).integers(0, 97, (2, 16))
    with torch.no_grad():
        expected = hf(torch.from_numpy(ids)).logits.numpy()

    gpt, settings = load_gpt2(tmp_path / "hf")
    assert gpt.cfg["hidden_dim"] == 40 and settings["n_inner"] == 40
    assert gpt.trf_blocks[0].ff.layers[0].weight.shape == (16, 40)
    np.testing.assert_allclose(gpt(ids), expected, rtol=0, atol=ATOL)

    path = save_safetensors(gpt, tmp_path / "export")
    assert json.loads((path.parent / "config.json").read_text())["n_inner"] == 40
    np.testing.assert_allclose(hf_logits(path.parent, ids), expected, rtol=0, atol=ATOL)

    openai = tmp_path / "openai"                     # OpenAI's layout of the same weights
    shutil.copytree(fixture["openai"], openai)
    tensors = {}
    for ours, name, _ in convert_module._block_names(convert_module._DIRECT, 2):
        value = gpt.state_dict()[ours]
        tensors[name] = value[None] if name.endswith("/w") else value   # 1x1 conv weights (1, in, out)
    for i, block in enumerate(gpt.trf_blocks):
        parts = [getattr(block.att, part) for part in ("W_query", "W_key", "W_value")]
        tensors[f"model/h{i}/attn/c_attn/w"] = np.concatenate([q.weight.data for q in parts], 1)[None]
        tensors[f"model/h{i}/attn/c_attn/b"] = np.concatenate([q.bias.data for q in parts])
    write_tf_bundle(openai / "model.ckpt", tensors)
    (openai / "hparams.json").write_text(json.dumps({"n_vocab": 97, "n_ctx": 16, "n_embd": 16,
                                                     "n_head": 4, "n_layer": 2, "n_inner": 40}))
    np.testing.assert_allclose(load_openai_checkpoint(openai)(ids), expected, rtol=0, atol=ATOL)

    back = load_checkpoint(convert(tmp_path / "hf", tmp_path / "wide.npz")).model
    assert back.cfg["hidden_dim"] == 40
    np.testing.assert_allclose(back(ids), expected, rtol=0, atol=ATOL)


def test_convert_in_every_direction(fixture, tmp_path):
    expected = load_openai_checkpoint(fixture["openai"])(fixture["ids"])
    npz = convert(fixture["openai"], tmp_path / "a.npz")
    st_file = convert(npz, tmp_path / "b.safetensors")
    folder = convert(st_file, tmp_path / "c")
    npz2 = convert(folder, tmp_path / "d.npz")
    for path in (npz, st_file, folder, npz2):
        np.testing.assert_array_equal(load_gpt2(path)[0](fixture["ids"]), expected, err_msg=str(path))
    assert load_checkpoint(npz).extra == {"tokenizer": {"kind": "gpt2"}}   # generate knows the tokenizer
    with pytest.raises(ValueError, match="not supported"):
        convert(npz, fixture["openai"])


# -- download ----------------------------------------------------------------------------------------------
@pytest.fixture
def gpt2_server(fixture, tmp_path):
    """Serve a fake GPT-2 '124M' (the tiny checkpoint plus placeholder vocab/meta) over 127.0.0.1."""
    root = tmp_path / "www" / "models" / "124M"
    root.mkdir(parents=True)
    for name in GPT2_FILES:
        source = fixture["openai"] / name
        if source.exists():
            shutil.copy(source, root / name)
        else:
            (root / name).write_bytes(f"placeholder {name}\n".encode())
    requests_seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests_seen.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    sizes = {name: (root / name).stat().st_size for name in GPT2_FILES}
    yield url, sizes, requests_seen
    server.shutdown()
    server.server_close()


def test_download_falls_back_to_mirror_then_loads(fixture, gpt2_server, tmp_path, monkeypatch):
    url, sizes, seen = gpt2_server
    monkeypatch.setitem(convert_module.GPT2_FILE_SIZES, "124M", sizes)
    base_urls = [f"{url}/missing", f"{url}/models"]             # the primary answers 404
    gpt, settings = load_gpt2("124M", tmp_path / "gpt2", base_urls=base_urls)
    assert sorted(p.name for p in (tmp_path / "gpt2" / "124M").iterdir()) == sorted(GPT2_FILES)
    assert f"/missing/124M/{GPT2_FILES[0]}" in seen and f"/models/124M/{GPT2_FILES[0]}" in seen
    np.testing.assert_allclose(gpt(fixture["ids"]), fixture["logits"], rtol=0, atol=ATOL)
    count = len(seen)
    download_gpt2("124M", tmp_path / "gpt2", base_urls=base_urls, progress=False)
    assert len(seen) == count                                   # verified files are not fetched again


def test_download_checks_sizes(gpt2_server, tmp_path, monkeypatch):
    url, sizes, _ = gpt2_server
    monkeypatch.setitem(convert_module.GPT2_FILE_SIZES, "124M", {**sizes, "hparams.json": 90})
    with pytest.raises(DownloadError, match="expected 90") as err:
        download_gpt2("124M", tmp_path, base_urls=[f"{url}/models"], retries=0, progress=False)
    assert "GPT-2 124M is these 7 files" in str(err.value)


def test_download_offline_explains_manual_placement(tmp_path):
    with pytest.raises(DownloadError) as err:
        download_gpt2("355M", tmp_path / "models", base_urls=["http://127.0.0.1:9"], retries=0,
                      progress=False)
    message = str(err.value)
    assert "place the file by hand" in message and str(tmp_path / "models" / "355M") in message
    assert "model.ckpt.data-00000-of-00001" in message
    with pytest.raises(ValueError, match="124M"):
        download_gpt2("125M", tmp_path)


# -- command line ------------------------------------------------------------------------------------------
def run_cli(*argv: str) -> int:
    """The command through numpy_gpt.cli.main: its one-line error path, as every other command."""
    return main(list(argv))


def test_cli_convert_and_download(fixture, gpt2_server, tmp_path, monkeypatch, capsys):
    assert run_cli("convert", str(fixture["openai"]), str(tmp_path / "m.npz")) == 0
    assert "wrote" in capsys.readouterr().out
    np.testing.assert_allclose(load_gpt2(tmp_path / "m.npz")[0](fixture["ids"]), fixture["logits"],
                               rtol=0, atol=ATOL)
    assert run_cli("convert", str(tmp_path / "missing"), str(tmp_path / "x.npz")) == 1
    err = capsys.readouterr().err
    assert err.startswith("numpy-gpt convert: error: ") and "missing does not exist" in err

    url, sizes, _ = gpt2_server
    monkeypatch.setitem(convert_module.GPT2_FILE_SIZES, "124M", sizes)
    assert run_cli("download", "--gpt2", "124M", "--models-dir", str(tmp_path / "w"),
                   "--base-url", f"{url}/models") == 0
    assert "28 tensors, every crc32c checked" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        run_cli("download", "--gpt2", "7B")


def test_cli_convert_of_a_folder_not_downloaded_yet_says_so(tmp_path, monkeypatch, capsys):
    """Issue 24 item 25: the README's `convert gpt2/124M gpt2-124M.safetensors` run before the download."""
    from numpy_gpt.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["convert", "gpt2/124M", "gpt2-124M.safetensors"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "gpt2/124M does not exist" in line and "numpy-gpt download --gpt2 124M`" in line
    assert main(["convert", "models/355M", "x.npz"]) == 1
    assert "numpy-gpt download --gpt2 355M --models-dir models`" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
