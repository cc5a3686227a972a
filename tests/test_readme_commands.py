"""Every `numpy-gpt ...` command line in README.md parses with the real argument parser, so the README
and the CLI cannot drift apart; the offline ones that are cheap also run end to end on tiny settings."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from numpy_gpt.cli import build_parser, main

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The argument lists of every `numpy-gpt` command in the README's indented code blocks."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if not line.startswith("    ") or "numpy-gpt " not in line:
            continue
        code = line.split("#", 1)[0]
        for part in code.split("&&"):
            words = shlex.split(part.replace("<run>", "RUN"))
            if words and words[0] == "numpy-gpt":
                commands.append(words[1:])
    return commands


def test_the_readme_has_commands():
    names = {argv[0] for argv in readme_commands()}
    assert {"pretrain", "generate", "convert", "finetune-spam", "bench"} <= names


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_every_readme_command_parses(argv):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0]


def test_readme_generate_line_runs_on_a_tiny_run(tmp_path, monkeypatch, capsys):
    """The README's `generate --checkpoint runs/<run>/model.npz ...` on a run made by a tiny pretrain."""
    monkeypatch.chdir(tmp_path)
    Path("corpus.txt").write_text("Return the value of the thing. " * 200, encoding="utf-8")
    assert main(["pretrain", "--corpus", "corpus.txt", "--tokenizer", "char", "--preset", "tiny",
                 "--context-length", "16", "--max-steps", "3", "--batch-size", "2", "--num-samples", "0",
                 "--sample-tokens", "4", "--out-dir", "runs/RUN", "--no-progress"]) == 0
    line = next(argv for argv in readme_commands() if argv[0] == "generate" and "--checkpoint" in argv)
    argv = [*line, "--max-new-tokens", "5", "--seed", "0"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("Return the")


def test_help_has_text_for_every_flag_and_no_doubled_default():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "pretrain" in a.choices)
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.option_strings and action.help is not argparse.SUPPRESS:
                assert action.help, f"{name} {action.option_strings[0]} has no help"
        text = sub.format_help()
        assert not re.search(r"\(default: [^)]*\)\s*\(default:", text), name
        assert "(default: None)" not in text, name



def test_readme_python_snippet_runs_and_prints_text(gpt2_vocab_dir, monkeypatch, capsys):
    """The README's Python block, as written, with GPT-2's vocabulary read from ../shared instead of
    downloaded: it trains one step of the book's model and prints decoded text."""
    import numpy_gpt
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer

    tokenizer = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    monkeypatch.setattr(numpy_gpt, "get_gpt2_tokenizer", lambda *args, **kwargs: tokenizer)
    (block,) = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    exec(compile(block, str(README), "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("Every effort moves you") and len(printed) > len("Every effort moves you")
