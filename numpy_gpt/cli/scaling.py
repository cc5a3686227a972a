"""``numpy-gpt scaling``: train a grid of GPTs, fit the scaling laws, recommend a compute-optimal model.

    numpy-gpt scaling --quick                       # about 3 minutes: 5 sizes x 3 budgets
    numpy-gpt scaling                               # the default sweep: 9 sizes x 4 budgets
    numpy-gpt scaling --recommend 1e13              # best size and tokens for 1e13 FLOPs
    numpy-gpt scaling --recommend 10min             # ... for ten minutes of this machine
    numpy-gpt pretrain --preset from-scaling        # train the recommended model

The sweep writes into ``--out-dir`` (default runs/scaling): ``results.jsonl`` (one line per
finished run, appended by rewriting the file atomically), ``fit.json`` and ``fit.md`` (the fitted
laws, the table of docs/scaling.md) and three PNGs. Run the same command again after Ctrl-C: the
runs already in results.jsonl are skipped, and the run that was training continues exactly from
where Ctrl-C saved it (``<run>.partial.npz``, removed when the run is done). This module parses,
checks and calls: the runs, the results file, the fits and the recommendation are
numpy_gpt/scaling.py's; numpy_gpt/cli/main.py adds this command with ``add_subcommands``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

from numpy_gpt.cli.common import DEFAULT_SCALING_DIR as DEFAULT_OUT_DIR
from numpy_gpt.cli.common import (
    CLIError,
    fraction,
    load_split_corpus,
    non_negative_int,
    positive_float,
    positive_int,
    thread_count,
)

DEFAULT_CORPUS = "tinyshakespeare"
DEFAULT_BUDGETS = (3e10, 1e11, 3e11, 1e12)
QUICK_BUDGETS = (3e10, 1e11, 3e11)
QUICK_SHAPES = slice(0, 5)                   # rungs 3K ... 113K of scaling.SIZE_LADDER
DEFAULT_MAX_EPOCHS = 12.0                    # tiny models cannot memorise 1M characters: repeats barely hurt
QUICK_MAX_EPOCHS = 2.0                       # leaves the slow smallest models out of the largest budgets


# -- corpus, tokenizer and data --------------------------------------------------------------------


def _settings(args: argparse.Namespace, tokenizer_kind: str, vocab_size: int) -> dict[str, Any]:
    """What every run of one sweep shares; a resumed sweep must have the same."""
    return {"corpus": str(args.corpus), "tokenizer": tokenizer_kind, "vocab_size": vocab_size,
            "max_chars": args.max_chars, "val_fraction": args.val_fraction,
            "context_length": args.context_length, "batch_size": args.batch_size,
            "eval_tokens": args.eval_tokens}


def _tokenizer_kind(args: argparse.Namespace) -> str:
    if args.tokenizer != "auto":
        return args.tokenizer
    from numpy_gpt.corpora import OFFLINE_CORPUS
    return "bpe" if args.corpus == OFFLINE_CORPUS else "char"


def _load_data(args: argparse.Namespace, kind: str, out_dir: Path):
    """(tokenizer, train ids, val ids). The validation split is the last ``val_fraction`` of the text;
    no run ever trains on it. A trained BPE is cached in ``out_dir`` (as ``pretrain`` caches it)."""
    import numpy as np

    from numpy_gpt.corpora import build_tokenizer
    from numpy_gpt.data import encode_text
    from numpy_gpt.scaling import ScalingError

    def check(train_tokens: int, val_tokens: int, most: str = "") -> None:
        if val_tokens <= args.context_length or train_tokens <= args.context_length * args.batch_size:
            raise ScalingError(f"{args.corpus}: {most}{train_tokens:,} training and {most}{val_tokens:,} "
                               f"validation tokens are too few for batches of {args.batch_size} x "
                               f"{args.context_length}: use more text, a larger --val-fraction or a smaller "
                               f"--context-length")

    train_text, val_text = load_split_corpus(args)       # an empty corpus is said to be empty
    # before the BPE trains and the results folder exists: at most one token per byte
    check(*(len(t.encode("utf-8", "surrogatepass")) for t in (train_text, val_text)), most="at most ")
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(kind, train_text, train_text + val_text, args.vocab_size, args.data_dir,
                                out_dir)
    train_ids = np.asarray(encode_text(tokenizer, train_text), dtype=np.int64)
    val_ids = np.asarray(encode_text(tokenizer, val_text), dtype=np.int64)
    check(len(train_ids), len(val_ids))
    return tokenizer, train_ids, val_ids


# -- recommend ---------------------------------------------------------------------------------------


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h)\s*$", re.IGNORECASE)


def parse_budget(text: str) -> tuple[float | None, float | None]:
    """(FLOPs, None) for "1e15", (None, seconds) for "90s", "10min", "2h"."""
    from numpy_gpt.scaling import ScalingError

    match = _DURATION.match(text)
    if match:
        value, unit = float(match[1]), match[2].lower()
        if value <= 0:
            raise ScalingError(f"--recommend {text!r}: the time budget must be longer than zero")
        return None, value * {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}[unit]
    try:
        flops = float(text)
    except ValueError:
        raise ScalingError(f"--recommend {text!r}: give FLOPs (1e15) or a duration (90s, 10min, 2h)"
                           ) from None
    if not (math.isfinite(flops) and flops > 0):
        raise ScalingError(f"--recommend {text!r}: the FLOP budget must be a positive number")
    return flops, None


def _budget(text: str) -> str:
    """--recommend's value, checked by ``parse_budget`` when the flags are read (before any work)."""
    from numpy_gpt.scaling import ScalingError
    try:
        parse_budget(text)
    except ScalingError as err:
        raise argparse.ArgumentTypeError(str(err).split(": ", 1)[1]) from None
    return text


# -- the command ---------------------------------------------------------------------------------------


def _say(bar) -> Any:
    return bar.write if not bar.disable else (lambda line: print(line, flush=True))


MAX_RUNS = 10_000              # a sweep of more runs would take days on a laptop: surely a typo


def _check_scaling(args: argparse.Namespace) -> None:
    """The size of the grid, before the corpus is read (see main.main)."""
    from numpy_gpt.scaling import SWEEP_SHAPES

    sizes = len(SWEEP_SHAPES[QUICK_SHAPES] if args.quick else SWEEP_SHAPES[:args.sizes])
    budgets = len(args.budgets or (QUICK_BUDGETS if args.quick else DEFAULT_BUDGETS))
    if sizes * budgets * args.seeds > MAX_RUNS:
        raise CLIError(f"--seeds {args.seeds} with {sizes} sizes and {budgets} budgets plans more than "
                       f"{MAX_RUNS:,} runs; use fewer --seeds")


def _cmd_scaling(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from numpy_gpt import scaling
    from numpy_gpt.corpora import OFFLINE_CORPUS
    from numpy_gpt.download import DownloadError
    from numpy_gpt.fileio import write_json_atomic, write_text_atomic
    from numpy_gpt.interrupt import TrainingInterrupted, stop_on_interrupt
    from numpy_gpt.runtime import set_threads

    out_dir = Path(args.out_dir)
    results_path = out_dir / scaling.RESULTS_NAME
    skipped: list[str] = []
    records = scaling.read_results(results_path, skipped)
    if args.recommend is not None:
        records = scaling.one_sweep(records, skipped)
    for line in skipped:
        print(line)
    if args.recommend is not None:
        return _cmd_recommend(args, records, results_path, out_dir)

    set_threads(args.threads)
    kind = _tokenizer_kind(args)
    print(f"{kind} tokenizer; results in {results_path}", flush=True)
    try:
        tokenizer, train_ids, val_ids = _load_data(args, kind, out_dir)
    except DownloadError as err:               # the default corpus is a download; one corpus never is
        if args.corpus == OFFLINE_CORPUS:
            raise
        raise DownloadError(f"{err}\nOffline, sweep the corpus built from this Python's standard library "
                            f"instead: numpy-gpt scaling {'--quick ' if args.quick else ''}--corpus "
                            f"{OFFLINE_CORPUS} (a trained BPE; its numbers are not tinyshakespeare's)"
                            ) from None
    settings = _settings(args, kind, tokenizer.n_vocab)
    for record in records:
        if record.get("settings") != settings:
            raise CLIError(f"{results_path} holds runs with other settings ({record.get('settings')}); "
                           f"use another --out-dir for this sweep")
    shapes = scaling.SWEEP_SHAPES[QUICK_SHAPES] if args.quick else scaling.SWEEP_SHAPES[:args.sizes]
    budgets = args.budgets or (QUICK_BUDGETS if args.quick else DEFAULT_BUDGETS)
    max_epochs = args.max_epochs or (QUICK_MAX_EPOCHS if args.quick else DEFAULT_MAX_EPOCHS)
    plan, skipped = scaling.plan_sweep(shapes, budgets, args.seeds, vocab_size=tokenizer.n_vocab,
                                       context_length=args.context_length, batch_size=args.batch_size,
                                       train_tokens=len(train_ids), min_steps=args.min_steps,
                                       max_epochs=max_epochs)
    if not plan:
        raise CLIError("the grid has no run: every size has too few steps or too many epochs for the "
                       "budgets; raise --budgets or lower --min-steps")
    done = {r["key"] for r in records}
    todo = [run for run in plan if run.key not in done]
    print(f"{len(train_ids):,} training and {len(val_ids):,} validation tokens "
          f"(vocabulary {tokenizer.n_vocab})")
    print("Timing two steps of each size...", flush=True)
    timing = scaling.seconds_per_step(sorted({run.shape for run in todo}, key=lambda s: s.emb_dim),
                               tokenizer.n_vocab, args.context_length, args.batch_size)
    eval_steps = max(1, args.eval_tokens // (args.batch_size * args.context_length)) / 3
    print(f"\n{'run':<34} {'N':>10} {'tokens':>10} {'steps':>6} {'epochs':>6} {'est. s':>7}")
    total = 0.0
    for run in plan:
        if run.key in done:
            print(f"{run.key:<34} {run.n_params:>10,} {run.tokens:>10,} {run.steps:>6} "
                  f"{run.tokens / len(train_ids):>6.2f} {'done':>7}")
            continue
        estimate = (run.steps + eval_steps) * timing[run.shape]
        total += estimate
        print(f"{run.key:<34} {run.n_params:>10,} {run.tokens:>10,} {run.steps:>6} "
              f"{run.tokens / len(train_ids):>6.2f} {estimate:>7.0f}")
    for reason in skipped:
        print(f"  left out: {reason}")
    print(f"\n{len(plan)} runs planned, {len(plan) - len(todo)} already in {results_path}, "
          f"{len(todo)} to train; "
          f"estimated {total / 60:.1f} min (from the timing above: the CPU is shared, it may vary)\n",
          flush=True)

    val_loader = scaling.validation_loader(val_ids, args.context_length, args.eval_tokens)
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="runs", unit="run",
               disable=args.no_progress or not sys.stderr.isatty(), dynamic_ncols=True)
    say = _say(bar)
    with stop_on_interrupt() as stop, bar:
        for i, run in enumerate(todo):
            cfg = scaling.model_config(run.shape, tokenizer.n_vocab, args.context_length)
            partial = out_dir / f"{run.key}.partial.npz"     # a run in training (Ctrl-C, --checkpoint-freq)
            try:
                record = scaling.train_run(run, cfg, train_ids, val_loader, args.batch_size,
                                           checkpoint_path=partial, checkpoint_freq=args.checkpoint_freq,
                                           resume_from=partial if partial.is_file() else None)
            except TrainingInterrupted as interrupted:          # saved; the command line says how to go on
                raise TrainingInterrupted(interrupted.step, interrupted.max_steps, interrupted.checkpoint,
                                          f"run {run.key}; {len(plan) - len(todo) + i} finished runs are in "
                                          f"{results_path}") from None
            record["settings"] = settings
            scaling.append_result(results_path, record)
            records.append(record)
            bar.update(1)
            say(f"[{len(plan) - len(todo) + i + 1}/{len(plan)}] {run.key}: val loss {record['val_loss']:.4f} "
                f"(N {run.n_params:,}, D {run.tokens:,}, {record['train_seconds']:.1f} s, "
                f"{record['flops_per_second'] / 1e9:.1f} GFLOP/s)")
            if stop.requested:
                print(f"numpy-gpt scaling: interrupted; {len(plan) - len(todo) + i + 1} finished runs are in "
                      f"{results_path}; run the same command again to continue", file=sys.stderr)
                return 130

    in_plan = {run.key for run in plan}
    used = [r for r in records if r["key"] in in_plan]
    print(f"\nFitting the scaling laws to {len(used)} runs (bootstrap: {args.bootstrap} resamples)...",
          flush=True)
    fit = scaling.analyse(used, args.bootstrap)
    table = scaling.fit_table(fit, settings)
    write_json_atomic(out_dir / "fit.json", _jsonable(fit))
    write_text_atomic(out_dir / "fit.md", table)
    print("\n" + table)
    for name, message in fit["errors"].items():
        print(f"{name}: {message}")
    from numpy_gpt.plots import plot_frontier, plot_isoflop, plot_loss_vs_n_and_d
    pictures = [plot_isoflop(used, fit, out_dir / "isoflop.png"),
                plot_loss_vs_n_and_d(used, fit, out_dir / "loss_vs_n_d.png"),
                plot_frontier(used, fit, out_dir / "frontier.png")]
    measured = np.median([r["flops_per_second"] for r in used]) / 1e9
    print(f"Median training speed {measured:.1f} GFLOP/s. Wrote {out_dir / 'fit.md'}, "
          f"{out_dir / 'fit.json'}, "
          + ", ".join(str(p) for p in pictures))
    print(f"Next: numpy-gpt scaling --out-dir {out_dir} --recommend 1e13")
    return 0


def _jsonable(value: Any) -> Any:
    """Turn tuples and NumPy scalars and arrays into JSON types."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _cmd_recommend(args, records, results_path: Path, out_dir: Path) -> int:
    from numpy_gpt.fileio import write_json_atomic
    from numpy_gpt.scaling import RECOMMENDATION_NAME, ScalingError, recommend

    flops, seconds = parse_budget(args.recommend)
    if len(records) < 5:
        raise ScalingError(f"--recommend needs a finished sweep: {results_path} has {len(records)} runs "
                           f"(at least 5 are needed to fit the law); run `numpy-gpt scaling --quick` first")
    settings = records[0]["settings"]
    rec = recommend(records, settings, flops, seconds)
    write_json_atomic(out_dir / RECOMMENDATION_NAME, _jsonable(rec))
    f = rec["fit"]
    budget = (f"{args.recommend} at the measured speed = {rec['budget_flops']:.2e} FLOPs" if seconds
              else f"{rec['budget_flops']:.2e} FLOPs")
    print(f"Fitted law (approach 3, {len(records)} runs): L = {f['E']:.3f} + {f['A']:.3g} / "
          f"N^{f['alpha']:.3f} "
          f"+ {f['B']:.3g} / D^{f['beta']:.3f}")
    print(f"Budget {budget}")
    ratio = rec["budget_flops"] / rec["largest_budget_swept"]
    if ratio > 3:
        print(f"Note: {ratio:.0f} times the largest budget of the sweep; the law is extrapolated that far.")
    print(f"Size from {rec['method']}")
    print(f"Compute-optimal model: {rec['shape'][0]} layers x {rec['shape'][1]} wide, "
          f"{rec['shape'][2]} heads, "
          f"{rec['N']:,} non-embedding parameters")
    print(f"Train it on {rec['tokens']:,} tokens ({rec['steps']:,} steps of {settings['batch_size']} x "
          f"{settings['context_length']}; {rec['tokens'] / rec['N']:.1f} tokens per parameter), peak lr "
          f"{rec['lr']:.2e}; predicted validation loss {rec['predicted_val_loss']:.3f}; about "
          f"{rec['estimated_seconds'] / 60:.1f} min here")
    print(f"Approach 3's analytic optimum (C = 6ND): N_opt = {rec['law_N_opt']:,.0f}, "
          f"D_opt = {rec['law_D_opt']:,.0f}")
    if rec["at_ladder_end"]:
        print("Note: that is the largest shape of the ladder; the law asks for at least this size.")
    print(f"Wrote {out_dir / RECOMMENDATION_NAME}; train it with: numpy-gpt pretrain --preset from-scaling")
    return 0


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated FLOP counts like 3e10,1e11, got {text!r}"
                                         ) from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"FLOP budgets must be positive, got {text!r}")
    return values



def add_subcommands(subparsers) -> None:
    """Add ``scaling`` to the main command's subparsers."""
    p = subparsers.add_parser(
        "scaling", help="scaling laws: train a grid of sizes x compute budgets, fit, recommend a model",
        description="Train GPTs of 3K-3M non-embedding parameters at several compute budgets (each with "
                    "warmup + cosine matched to its own token budget), then fit Chinchilla's three "
                    "approaches and plot them. Resumes after Ctrl-C. --recommend C prints the "
                    "compute-optimal size for C FLOPs (or a duration) from the fitted law.")
    p.add_argument("--corpus", default=DEFAULT_CORPUS,
                   help="tinyshakespeare (characters), stdlib-docs (offline, BPE) or a UTF-8 text file")
    p.add_argument("--data-dir", default="data", help="where corpora are kept")
    p.add_argument("--tokenizer", choices=("auto", "char", "bpe"), default="auto",
                   help="auto: a trained BPE for stdlib-docs, characters otherwise")
    p.add_argument("--vocab-size", type=positive_int, default=1024, help="vocabulary of the trained BPE")
    p.add_argument("--max-chars", type=positive_int, default=None, help="use only the first N characters")
    p.add_argument("--val-fraction", type=fraction, default=0.1, help="share of the text kept for validation")
    p.add_argument("--quick", action="store_true",
                   help="5 sizes x 3 budgets, about 3 minutes (a subset of the default grid)")
    p.add_argument("--sizes", type=positive_int, default=9,
                   help="use only the first N of the nine sizes, smallest first")
    p.add_argument("--budgets", type=_float_list, default=None,
                   help="comma-separated compute budgets in FLOPs (default 3e10,1e11,3e11,1e12)")
    p.add_argument("--seeds", type=positive_int, default=1, help="repeat every run with this many seeds")
    p.add_argument("--context-length", type=positive_int, default=64, help="tokens per window")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per optimizer step")
    p.add_argument("--min-steps", type=positive_int, default=40, help="leave out runs with fewer steps")
    p.add_argument("--max-epochs", type=positive_float, default=None,
                   help=f"leave out runs with more passes over the training split "
                        f"(default {DEFAULT_MAX_EPOCHS:g}, --quick {QUICK_MAX_EPOCHS:g})")
    p.add_argument("--eval-tokens", type=positive_int, default=16384,
                   help="validation tokens each run is evaluated on at its end")
    p.add_argument("--bootstrap", type=non_negative_int, default=200,
                   help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--threads", type=thread_count, default=1,
                   help="BLAS threads (tiny matrices: one thread was fastest here)")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="folder of results.jsonl, fits and plots")
    p.add_argument("--recommend", type=_budget, default=None, metavar="BUDGET",
                   help="FLOPs (1e15) or a duration (10min): print the compute-optimal model from the sweep "
                        "in --out-dir and write recommendation.json for pretrain --preset from-scaling")
    p.add_argument("--checkpoint-freq", type=positive_int, default=None,
                   help="also save the run in training every N steps (it is always saved on Ctrl-C, and "
                        "the same command continues it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_scaling, check=_check_scaling)
