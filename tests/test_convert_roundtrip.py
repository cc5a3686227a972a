"""`numpy-gpt convert` keeps the tokenizer: every format round trip of a char, a trained-BPE and a
GPT-2 model generates the same tokens as the original checkpoint (issue: convert broke non-GPT-2 models).

The reference is the original .npz read by `numpy-gpt generate`; a conversion that lost or changed
the tokenizer either fails to generate or decodes different text.
"""

from __future__ import annotations

import pytest
from helpers import tiny_cfg

from numpy_gpt.checkpoint import save_checkpoint
from numpy_gpt.cli import main
from numpy_gpt.gpt2.convert import convert
from numpy_gpt.model import GPTModel
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
from numpy_gpt.tokenizers.char import CharTokenizer
from numpy_gpt.tokenizers.spec import tokenizer_spec
from numpy_gpt.tokenizers.train_bpe import BPETokenizer

TEXT = "the cat sat on the mat and the dog ran far away from the cat. " * 20


def _tokenizer(kind: str, gpt2_vocab_dir):
    if kind == "char":
        return CharTokenizer.from_text(TEXT)
    if kind == "bpe":
        return BPETokenizer.train(TEXT, 280)
    return GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")


def _generate(path, data_dir, capsys) -> str:
    assert main(["generate", "--checkpoint", str(path), "--prompt", "the cat", "--temperature", "0",
                 "--max-new-tokens", "8", "--data-dir", str(data_dir)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_every_format_round_trip_keeps_the_tokenizer(kind, tmp_path, gpt2_vocab_dir, capsys):
    tokenizer = _tokenizer(kind, gpt2_vocab_dir)
    cfg = tiny_cfg(vocab_size=tokenizer.n_vocab, n_layers=1)
    original = save_checkpoint(tmp_path / "model.npz", GPTModel(cfg, seed=1),
                               extra={"tokenizer": tokenizer_spec(tokenizer)})
    data_dir = gpt2_vocab_dir.parent
    expected = _generate(original, data_dir, capsys)

    st = convert(original, tmp_path / "model.safetensors")               # npz -> safetensors
    folder = convert(original, tmp_path / "hf")                          # npz -> folder
    back = convert(st, tmp_path / "back.npz")                            # safetensors -> npz
    st2 = convert(back, tmp_path / "again.safetensors")                  # npz -> safetensors again
    from_folder = convert(tmp_path / "hf", tmp_path / "from-folder.npz")  # folder -> npz
    for path in (st, folder, back, st2, from_folder):
        assert _generate(path, data_dir, capsys) == expected, path


def test_convert_says_it_writes_config_json(tmp_path, capsys):
    cfg = tiny_cfg(vocab_size=20, context_length=8, emb_dim=8, n_layers=1)
    spec = tokenizer_spec(CharTokenizer.from_text("abcdefghijklmnopqrst"))
    src = save_checkpoint(tmp_path / "m.npz", GPTModel(cfg, seed=0), extra={"tokenizer": spec})
    assert main(["convert", str(src), str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "config.json") in out and (tmp_path / "config.json").is_file()


def test_generate_says_what_a_non_checkpoint_file_is(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# numpy_gpt\n\nGPT-2 in NumPy.\n", encoding="utf-8")
    assert main(["generate", "--checkpoint", str(readme)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "not a model checkpoint (it is text)" in err and "--gpt2 124M" in err
    assert "allow_pickle" not in err
