"""``numpy-gpt bench``: numpy_gpt against PyTorch and transformers on this machine.

What is measured and how is numpy_gpt/tools/bench.py's; this module parses the flags and calls it.
``scripts/bench.py`` runs the same command through ``main`` below, writing the repository's
scripts/results/ unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from numpy_gpt.cli.common import positive_int, thread_count

DEFAULT_BENCH_DIR = Path("runs") / "bench"


def _cmd_bench(args: argparse.Namespace) -> int:
    from numpy_gpt.tools.bench import FULL, QUICK, format_table, run_bench, write_json

    plan = dict(QUICK if args.quick else FULL)
    if args.repeats is not None:
        plan["repeats"], plan["case_repeats"] = args.repeats, {}
    if args.no_generate:
        plan["generate"] = None
    result = run_bench(plan, use_torch=not args.no_torch, threads=args.threads,
                       log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(result))
    path = Path(args.out) if args.out is not None else DEFAULT_BENCH_DIR / (
        "bench_quick.json" if args.quick else "bench.json")     # the committed results need --out
    write_json(result, path)
    print(f"\nwrote {path}")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` to the main parser's subcommands."""
    p = subparsers.add_parser(
        "bench", help="time training steps, generation and memory against PyTorch/transformers",
        description="numpy_gpt against PyTorch and Hugging Face, side by side on this machine: the "
                    "training step, generation and peak memory (see numpy_gpt/tools/bench.py for what is "
                    "measured and how).")
    p.add_argument("--quick", action="store_true",
                   help="small models and few repeats (well under a minute)")
    p.add_argument("--repeats", type=positive_int, default=None,
                   help="timed training steps per library, every case (default 7; 31 for shakespeare-char)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="threads for both numpy's BLAS and torch (default: CPU cores)")
    p.add_argument("--no-torch", action="store_true", help="numpy_gpt only, even if torch is installed")
    p.add_argument("--no-generate", action="store_true", help="skip the generation timings")
    p.add_argument("--out", "--json", dest="out", default=None,
                   help=f"where to write the JSON (default: {DEFAULT_BENCH_DIR}/bench[_quick].json; the "
                        f"repository's scripts/results/ only when given here)")
    p.set_defaults(func=_cmd_bench)


def main(argv: list[str] | None = None) -> int:
    """``scripts/bench.py``: the same command, writing the repository's scripts/results/ unless --out."""
    parser = argparse.ArgumentParser(prog="numpy-gpt", allow_abbrev=False)
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    if args.out is None:
        args.out = str(Path("scripts/results") / ("bench_quick.json" if args.quick else "bench.json"))
    return args.func(args)
