"""What every command of the command line shares: the one-line errors, the help format, the
argument types and the constants.

Every module of numpy_gpt/cli/ imports this one and none imports another command's module (nor
main.py, which puts them together), so the command line has no import cycle. The modules behind a
command are imported when it runs, so ``numpy-gpt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

DEFAULT_CORPUS = "stdlib-docs"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_SCALING_DIR = DEFAULT_RUNS_DIR / "scaling"        # scaling's results, pretrain --preset from-scaling
GPT2_VOCAB_SIZE = 50257
GPT2_SIZE_CHOICES = ("124M", "355M", "774M", "1558M")     # gpt2.convert.GPT2_SIZES, without importing it


class CLIError(Exception):
    """A problem with the command's input, reported as one line without a traceback."""


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help, once: not when the help already states its default,
    nor for flags whose default is None or False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def with_flag_names(message: str, args: argparse.Namespace) -> str:
    """``message`` with the Python names of this command's options (max_new_tokens) written as the
    flags the user typed (--max-new-tokens)."""
    for dest in vars(args):
        if "_" in dest:
            message = re.sub(rf"(?<![\w-]){dest}(?!\w)", "--" + dest.replace("_", "-"), message)
    return message


# -- argument types --------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


# -- shared pieces of the commands -----------------------------------------------------------------
def show_bars(args: argparse.Namespace) -> bool:
    """tqdm bars only on a terminal: piped or logged output gets one event per line."""
    return not args.no_progress and sys.stderr.isatty()


def load_split_corpus(args: argparse.Namespace) -> tuple[str, str]:
    """--corpus (its first --max-chars characters), split into training and validation text by
    --val-fraction: the data of pretrain and pretrain-mlm."""
    from numpy_gpt.data import load_corpus, train_val_split

    print(f"Corpus {args.corpus!r}", flush=True)
    text = load_corpus(args.corpus, data_dir=args.data_dir)
    if args.max_chars is not None:
        text = text[:args.max_chars]
    return train_val_split(text, 1.0 - args.val_fraction)


def checkpoint_format(path: str | os.PathLike) -> str:
    """What ``path`` holds, from its first bytes: "npz", "safetensors" or "openai" (a folder); any
    other file raises CLIError saying what it looks like and what to pass instead."""
    path = Path(path)
    expected = ("pass a model.npz written by `numpy-gpt pretrain`, a .safetensors file or an OpenAI "
                "GPT-2 folder, or use --gpt2 124M")
    if path.is_dir():
        if any(path.glob("*.index")) or (path / "hparams.json").is_file():
            return "openai"
        if (path / "model.safetensors").is_file():
            return "safetensors"
        raise CLIError(f"{path} is a folder without a checkpoint in it: {expected}")
    if not path.is_file():
        raise CLIError(f"{path} does not exist: {expected}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    header_size = int.from_bytes(head[:8], "little")         # safetensors: u64 size, then a JSON header
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= header_size <= path.stat().st_size:
        return "safetensors"
    looks = "empty" if not head else ("text" if _is_text(head) else "binary data of an unknown format")
    raise CLIError(f"{path} is not a model checkpoint (it is {looks}): {expected}")


def _is_text(head: bytes) -> bool:
    return b"\x00" not in head and head.decode("utf-8", "replace").count("\ufffd") <= 1   # a cut last char
