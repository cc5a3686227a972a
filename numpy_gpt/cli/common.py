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


def model_file(path: str | os.PathLike, command: str, kinds: tuple[str, ...], *, or_else: str = ""):
    """What the model file ``path`` given to ``command`` holds (``numpy_gpt.model_files.read_model_file``:
    its metadata alone; ``.load_model()`` and ``checkpoint_tokenizer`` take it from there), refused
    unless of ``kinds``: the error says what the file is and which command takes it. ``or_else`` ends
    the error for a file that holds no model at all (e.g. "use --gpt2 124M")."""
    from numpy_gpt.model_files import NotAModelError, read_model_file

    try:
        return read_model_file(path, expect=kinds, use=f"`numpy-gpt {command}`")
    except NotAModelError as err:
        if not or_else:
            raise
        raise CLIError(f"{err}; or {or_else}") from None


def checkpoint_format(path: str | os.PathLike) -> str:
    """Kept for one release: the format name of ``numpy_gpt.model_files.file_format(path)``."""
    import warnings

    from numpy_gpt.model_files import file_format

    warnings.warn("checkpoint_format is deprecated: use numpy_gpt.model_files.file_format(path).name",
                  DeprecationWarning, stacklevel=2)
    return file_format(path).name
