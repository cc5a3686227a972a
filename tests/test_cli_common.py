"""numpy_gpt/cli/common.py: one argument type per concept, the checks before any work, and the one
error path every command shares (issue 24, items 6, 13, 19, 21, 24 and 25)."""

from __future__ import annotations

import argparse

import pytest

from numpy_gpt.cli import build_parser, main
from numpy_gpt.cli import common as cli_common
from numpy_gpt.cli.common import (
    GPT2_SIZE_CHOICES,
    CLIError,
    check_memory,
    learning_rate,
    non_negative_int,
    port_number,
    positive_int,
    probability,
    random_seed,
    top_p_mass,
    training_bytes,
)


def _commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _refused(argv: list[str], capsys) -> str:
    """Run ``argv``, expect exit code 2 and return the one error line."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines()     # unknown flags: the top parser's
             if line.startswith((f"numpy-gpt {argv[0]}: error: ", "numpy-gpt: error: unrecognized"))]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize(("kind", "good", "bad"), [
    (positive_int, {"1": 1, "12": 12}, ["0", "-1", "1e3", "2.5", "x"]),
    (non_negative_int, {"0": 0, "7": 7}, ["-1", "nan", "1e12"]),
    (random_seed, {"0": 0, "123": 123}, ["-1", "inf", "1.5"]),
    (probability, {"0": 0.0, "0.15": 0.15}, ["1", "-0.1", "nan", "inf", "1e12"]),
    (top_p_mass, {"1": 1.0, "0.9": 0.9}, ["0", "1.5", "nan"]),
    (learning_rate, {"3e-4": 3e-4, "1e308": 1e308}, ["0", "-1", "nan", "inf", "1e309"]),
    (port_number, {"0": 0, "8000": 8000, "65535": 65535}, ["-1", "65536", "80.5", "nan", "http"]),
])
def test_each_type_takes_its_concept_and_refuses_the_rest(kind, good, bad):
    for text, value in good.items():
        assert kind(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)


def test_every_parser_refuses_flag_prefixes(tmp_path, capsys):
    assert all(not parser.allow_abbrev for parser in _commands().values())
    # --checkpoint was once taken as a prefix of --checkpoint-freq; no prefix is taken for a flag now
    line = _refused(["finetune-dpo", "--checkpoint", str(tmp_path / "m.npz"), "--checkpoint-f", "3"], capsys)
    assert "unrecognized arguments: --checkpoint-f 3" in line


@pytest.mark.parametrize(("argv", "flag"), [
    (["pretrain", "--warmup-steps", "-1"], "--warmup-steps"),
    (["pretrain", "--seed", "-1"], "--seed"),
    (["pretrain", "--beta2", "1"], "--beta2"),
    (["pretrain", "--grad-clip", "nan"], "--grad-clip"),
    (["finetune-spam", "--eval-freq", "0"], "--eval-freq"),
    (["finetune-spam", "--epochs", "0"], "--epochs"),
    (["finetune-spam", "--drop-rate", "nan"], "--drop-rate"),
    (["pretrain-mlm", "--mask-prob", "nan"], "--mask-prob"),
    (["evaluate", "--gpt2", "124M", "--stride", "-1"], "--stride"),
    (["scaling", "--bootstrap", "-1"], "--bootstrap"),
    (["bench", "--repeats", "0"], "--repeats"),
    (["explore", "--gpt2", "124M", "--port", "70000"], "--port"),
])
def test_a_bad_value_is_refused_naming_its_flag(argv, flag, capsys):
    assert f"argument {flag}: " in _refused(argv, capsys)


def test_flags_that_only_make_sense_together_are_refused_before_any_work(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    run = ["pretrain", "--corpus", str(corpus), "--out-dir", str(tmp_path / "run")]
    line = _refused([*run, "--n-heads", "3"], capsys)               # the default preset is 128 wide
    assert "--n-heads 3 does not divide --emb-dim 128" in line
    assert "--min-lr 0.01 is above --lr 0.001" in _refused([*run, "--lr", "1e-3", "--min-lr", "1e-2"], capsys)
    assert "--min-lr 1e+308 is above --lr 0.002" in _refused([*run, "--min-lr", "1e308"], capsys)
    assert "at least 257" in _refused([*run, "--vocab-size", "100"], capsys)
    line = _refused([*run, "--emb-dim", "1000000000000", "--n-heads", "1"], capsys)
    assert "--emb-dim 1000000000000" in line and "bytes" in line and "GiB free" in line
    assert "--mask-prob" not in line
    assert "plans more than 10,000 runs" in _refused(["scaling", "--seeds", "1000000000000"], capsys)
    line = _refused(["pretrain-mlm", "--corpus", str(corpus), "--emb-dim", "64", "--n-heads", "5"], capsys)
    assert "--n-heads 5 does not divide --emb-dim 64" in line
    assert not (tmp_path / "run").exists(), "a refused run leaves no folder"


def test_data_too_short_for_a_step_is_refused_before_the_tokenizer_trains(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    run = ["pretrain", "--corpus", str(corpus), "--out-dir", str(tmp_path / "run")]
    assert main([*run, "--grad-accum", "1000000000000"]) == 1                # was a ZeroDivisionError
    captured = capsys.readouterr()
    assert "--grad-accum 1000000000000" in captured.err and "Training a" not in captured.out
    assert not (tmp_path / "run").exists()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    assert main(["pretrain", "--corpus", str(empty), "--out-dir", str(tmp_path / "run")]) == 1
    assert f"--corpus {empty} is empty" in capsys.readouterr().err


def test_memory_check_names_the_flags_and_the_bytes(monkeypatch):
    cfg = {"vocab_size": 1000, "context_length": 64, "emb_dim": 128, "n_layers": 2, "n_heads": 4}
    needed = training_bytes(cfg, 8)
    params = 2 * 1000 * 128 + 64 * 128 + 2 * (12 * 128 * 128 + 13 * 128) + 2 * 128
    assert 16 * params < needed < 16 * params + 4 * 8 * 64 * (2 * (16 * 128 + 8 * 64) + 3 * 1000) + 1
    monkeypatch.setattr(cli_common, "available_memory", lambda: needed)
    check_memory({"--emb-dim": 128}, needed)
    with pytest.raises(CLIError, match=r"^--emb-dim 128 --batch-size 8: .* about .* bytes"):
        check_memory({"--emb-dim": 128, "--batch-size": 8}, needed + 1)


def test_help_texts_say_what_the_code_does(capsys):
    from numpy_gpt.finetune.data import split_instruction_data
    from numpy_gpt.finetune.preference_data import split_preference_data

    train, val, test = split_instruction_data(list(range(100)))
    assert (len(train), len(test), len(val)) == (85, 10, 5)
    assert [len(part) for part in split_preference_data(list(range(100)))] == [85, 5, 10]
    commands = _commands()
    split = "85 % train, 10 % test, the last 5 % validation"
    for name in ("finetune-instruct", "finetune-dpo"):
        assert split in " ".join(commands[name].format_help().split())
    assert "15% of tokens" in commands["pretrain-mlm"].format_help()
    assert "%%" not in "".join(parser.format_help() for parser in commands.values())
    download = " ".join(commands["download"].format_help().split())
    assert "(default: True)" not in download and "(default: check them)" in download
    assert not commands["bench"].description.startswith(("``", "*", "#"))


def test_download_and_convert_report_errors_as_every_command(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), str(tmp_path / "out.npz")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("numpy-gpt convert: error: ") and err.count("\n") == 1
    assert f"{tmp_path / 'missing'} does not exist" in err        # not "is not a GPT-2 checkpoint"
    with pytest.raises(FileNotFoundError):          # --debug shows the traceback, as for every command
        main(["convert", str(tmp_path / "missing"), str(tmp_path / "out.npz"), "--debug"])


def test_the_cli_constants_match_the_library():
    """The parsers name these without importing the library (``numpy-gpt --help`` stays fast)."""
    from numpy_gpt.cli import common, evaluate, finetune
    from numpy_gpt.eval_tasks import TASK_NAMES
    from numpy_gpt.finetune.classifier import TRAINABLE_CHOICES
    from numpy_gpt.finetune.judge import OLLAMA_URL
    from numpy_gpt.gpt2.convert import GPT2_SIZES

    assert GPT2_SIZE_CHOICES == tuple(GPT2_SIZES)
    assert evaluate.TASK_NAMES == TASK_NAMES
    assert common.TRAINABLE_CHOICES == TRAINABLE_CHOICES and finetune.OLLAMA_URL == OLLAMA_URL
