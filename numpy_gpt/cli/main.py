"""The command line: ``numpy-gpt <command>`` (or ``python -m numpy_gpt <command>``).

One module per family of commands, each adding its parsers with ``add_subcommands(subparsers)``
and ``set_defaults(func=handler)``; ``handler(args)`` returns the exit code:

* ``cli/pretrain.py`` -- pretrain, generate, gradcheck (chapter 5 and the gradient proofs)
* ``cli/weights.py`` -- download, convert (GPT-2's weights)
* ``cli/finetune.py`` -- finetune-spam, classify, finetune-instruct, chat (chapters 6 and 7)
* ``cli/dpo.py`` -- finetune-dpo (preference tuning)
* ``cli/encoder.py`` -- pretrain-mlm, fill-mask, attention-heatmap (the BERT side)
* ``cli/evaluate.py`` -- evaluate (benchmarks)
* ``cli/scaling.py`` -- scaling (scaling laws)
* ``cli/tools.py`` -- bench (speed against PyTorch)
* ``cli/explore.py`` -- explore (see inside a model in the browser)

They share ``cli/common.py`` (errors, help format, argument types) and import nothing else of the
command line. A new family of commands is one module with an ``add_subcommands`` and one name in
``build_parser``. This module reports an error as one line (the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from numpy_gpt.cli.common import USER_ERRORS, CLIError, HelpFormatter, error_text, with_flag_names


def build_parser() -> argparse.ArgumentParser:
    import numpy_gpt.cli.dpo as dpo
    import numpy_gpt.cli.encoder as encoder
    import numpy_gpt.cli.evaluate as evaluate
    import numpy_gpt.cli.explore as explore
    import numpy_gpt.cli.finetune as finetune
    import numpy_gpt.cli.pretrain as pretrain
    import numpy_gpt.cli.scaling as scaling
    import numpy_gpt.cli.tools as tools
    import numpy_gpt.cli.weights as weights

    parser = argparse.ArgumentParser(
        prog="numpy-gpt", allow_abbrev=False,
        description="GPT-2 in pure NumPy, every backward written by hand: a companion to 'Build a Large "
                    "Language Model (From Scratch)'.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module in (pretrain, weights, finetune, encoder, dpo, tools, scaling, evaluate, explore):
        module.add_subcommands(subparsers)
    for command in subparsers.choices.values():
        command.formatter_class = HelpFormatter
        command.allow_abbrev = False            # --checkpoint is not --checkpoint-freq: whole flags only
        command.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return parser


def _version() -> str:
    from numpy_gpt import __version__
    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code: 2 for flags refused before any work (argparse's
    code: a bad value, or a command's ``check`` of several flags together), 0 on success, 1 on an
    error (one line on stderr, the traceback only with --debug), 130 after Ctrl-C (the shell's code
    for SIGINT)."""
    from numpy_gpt.download import DownloadError
    from numpy_gpt.interrupt import TrainingInterrupted, resume_hint
    from numpy_gpt.runtime import configure

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if getattr(args, "check", None) is not None:
            args.check(args)                     # flags that only make sense together, the memory
    except USER_ERRORS as err:                   # (a CLIError is a refused flag: argparse's code 2)
        if args.debug:
            raise
        print(f"numpy-gpt {args.command}: error: {with_flag_names(error_text(err), args)}", file=sys.stderr)
        return 2 if isinstance(err, CLIError) else 1
    configure()                                                     # entry point's speed settings
    try:
        return args.func(args)
    except TrainingInterrupted as stop:
        if args.debug:
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)              # the work is saved: finish the line
        hint = ""
        if stop.checkpoint is not None:                            # without --resume: the same command
            hint = (f"; continue with: {resume_hint(argv)}" if hasattr(args, "resume") else
                    f"; run the same command again to continue: {resume_hint(argv, flag=None)}")
        print(f"numpy-gpt {args.command}: {stop}{hint}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        if args.debug:
            raise
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"numpy-gpt {args.command}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS + (DownloadError,) as err:
        if args.debug:
            raise
        print(f"numpy-gpt {args.command}: error: {with_flag_names(error_text(err), args)}", file=sys.stderr)
        return 1
