"""``numpy-gpt evaluate``: benchmark a checkpoint or GPT-2 the way papers and leaderboards do.

    numpy-gpt evaluate --checkpoint runs/stdlib-docs-small-bpe/model.npz --tasks stdlib-cloze
    numpy-gpt evaluate --gpt2 124M --tasks hellaswag,lambada,wikitext --shots 0
    numpy-gpt evaluate --gpt2 124M --tasks sms-spam --shots 0,1,4,8 --spam-file SMSSpamCollection

Prints a table (task, shots, metric, value, stderr, items), writes it as JSON with an
exact-reproduction note (tokenizer, context length, stride, seed, limit) and reports items per
second. The tasks and their scoring are described in ``eval_tasks.py``. ``numpy_gpt/cli/main.py``
adds this parser through ``add_subcommands``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from numpy_gpt.cli.common import (
    GPT2_SIZE_CHOICES,
    SMALL_MODEL_WIDTH,  # noqa: F401 (its name here before it moved to common, kept for its users)
    THREADS_HELP,
    CLIError,
    model_file,
    positive_int,
    random_seed,
    thread_count,
    use_threads,
)

TASK_NAMES = ("stdlib-cloze", "hellaswag", "lambada", "wikitext", "sms-spam")   # eval_tasks.TASK_NAMES
DEFAULT_OUT_DIR = Path("runs") / "eval"


def _parse_tasks(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASK_NAMES]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"unknown task(s) {', '.join(unknown) or '(none)'}; choose from "
                                         f"{', '.join(TASK_NAMES)}, comma-separated")
    return tasks


def _parse_shots(text: str) -> list[int]:
    try:
        shots = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shots takes counts such as 0 or 0,1,4,8, got {text!r}") from None
    if any(s < 0 for s in shots):
        raise argparse.ArgumentTypeError(f"--shots must be >= 0, got {text!r}")
    return shots


def _load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model in eval mode, its ModelFile or None for --gpt2, a name for the run) from --gpt2 or
    --checkpoint. A checkpoint whose tokenizer is unknown is refused here, before any download."""
    from numpy_gpt.gpt2.convert import load_gpt2
    from numpy_gpt.model_files import LANGUAGE_MODELS

    if args.gpt2 is not None:
        model, _ = load_gpt2(args.gpt2, args.models_dir)
        return model.eval(), None, f"gpt2-{args.gpt2}"
    file = model_file(args.checkpoint, "evaluate", LANGUAGE_MODELS, or_else="use --gpt2 124M")
    file.tokenizer_description(required=True)
    path = Path(args.checkpoint)
    return file.load_model(), file, path.parent.name if path.stem == "model" else path.stem


def _fetch_everything(args: argparse.Namespace, gpt2_vocab: bool) -> None:
    """Download what the run needs (GPT-2's weights and vocabulary, the tasks' data) before it
    starts; offline, one error lists every missing file."""
    from functools import partial

    from numpy_gpt.corpora import get_gpt2_tokenizer
    from numpy_gpt.download import gather_downloads
    from numpy_gpt.eval_tasks import fetch, required_files
    from numpy_gpt.finetune.data import download_spam_data
    from numpy_gpt.gpt2.convert import download_gpt2

    jobs = [partial(fetch, name, args.data_dir) for name in required_files(args.tasks, args.shots)]
    if args.gpt2 is not None:
        jobs.insert(0, partial(download_gpt2, args.gpt2, args.models_dir))
    if gpt2_vocab:
        jobs.insert(0, partial(get_gpt2_tokenizer, args.data_dir))
    if "sms-spam" in args.tasks and args.spam_file is None:
        jobs.append(partial(download_spam_data, args.data_dir / "sms_spam_collection"))
    spam = "sms-spam can read a local copy with --spam-file; " if "sms-spam" in args.tasks else ""
    gather_downloads(jobs, hint=f"{spam}--data-dir and --models-dir say where the files are looked for")


class _Progress:
    """A tqdm bar on a terminal; otherwise one line at every 10 % (logs stay short)."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label, self.bar, self.next_tenth = label, None, 1
        self.tty = enabled and sys.stderr.isatty()
        self.quiet = not enabled

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=self.label, unit="item", leave=False)
            self.bar.update(done - self.bar.n)
        elif done * 10 >= self.next_tenth * total:
            print(f"  {self.label}: {done}/{total}", file=sys.stderr, flush=True)
            self.next_tenth = done * 10 // total + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.1f}"


def format_table(results: list[dict[str, Any]]) -> str:
    """The results as an aligned text table: task, shots, metric, value, stderr, items."""
    header = ("task", "shots", "metric", "value", "stderr", "items")
    rows = [(r["task"], str(r["shots"]), m["metric"], _fmt(m["value"]), _fmt(m["stderr"]), f"{r['items']:,}")
            for r in results for m in r["metrics"]]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i < 3 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
             for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from numpy_gpt import __version__
    from numpy_gpt.eval_tasks import DEFAULT_SEED, run_task
    from numpy_gpt.fileio import write_json_atomic
    from numpy_gpt.model_files import checkpoint_tokenizer

    if (args.gpt2 is None) == (args.checkpoint is None):
        raise ValueError("give exactly one of --checkpoint FILE and --gpt2 SIZE")
    if args.gpt2 is not None:
        _fetch_everything(args, gpt2_vocab=True)
    model, file, name = _load(args)
    spec = {"kind": "gpt2"} if file is None else file.tokenizer_description()
    if file is not None:
        _fetch_everything(args, gpt2_vocab=spec["kind"] == "gpt2")
    tokenizer = checkpoint_tokenizer(file, data_dir=args.data_dir)
    use_threads(args.threads, model.cfg)
    context = model.cfg["context_length"]
    if args.stride is not None and args.stride > context:
        raise CLIError(f"--stride {args.stride} is longer than the model's context of {context} tokens: a "
                       f"window moves by at most its own length")
    seed = DEFAULT_SEED if args.seed is None else args.seed
    results = []
    started = time.perf_counter()
    for task in args.tasks:
        for shots in args.shots if task not in ("wikitext", "lambada") else [0]:
            label = f"{task} ({shots}-shot)"
            print(f"Evaluating {label}...", file=sys.stderr, flush=True)
            progress = _Progress(label, not args.no_progress)
            try:
                result = run_task(task, model, tokenizer, shots=shots, limit=args.limit, seed=seed,
                                  data_dir=args.data_dir, stride=args.stride, spam_file=args.spam_file,
                                  progress=progress)
            finally:
                progress.close()
            unit = result.extra.get("unit", "items")
            kept = f", {result.extra['shots_kept']:.1f} shots kept on average" if shots else ""
            print(f"  {label}: {result.items:,} {unit} in {result.seconds:.1f} s "
                  f"({result.items_per_second:,.1f} {unit}/s){kept}", file=sys.stderr, flush=True)
            results.append({"task": task, "shots": shots, "items": result.items, "unit": unit,
                            "seconds": round(result.seconds, 3),
                            "items_per_second": round(result.items_per_second, 3),
                            "metrics": [{"metric": m, "value": v, "stderr": s} for m, v, s in result.metrics],
                            **{k: v for k, v in result.extra.items() if k != "unit"}})
    print(format_table(results))
    for warning in (w for r in results for w in r.get("warnings", [])):
        print(f"warning: {warning}")
    stride = args.stride or context
    note = (f"Reproduce: numpy_gpt {__version__}, tokenizer {spec['kind']}, vocabulary "
            f"{model.cfg['vocab_size']:,}, context length {context}, perplexity stride {stride}, "
            f"few-shot seed {seed}, limit {args.limit if args.limit is not None else 'none'}, float32")
    print(note)
    out = args.out or DEFAULT_OUT_DIR / name / "results.json"
    model_name = str(args.checkpoint) if args.checkpoint else f"gpt2-{args.gpt2}"
    reproduction = {"numpy_gpt": __version__, "tokenizer": spec["kind"],
                    "vocab_size": model.cfg["vocab_size"], "context_length": context, "stride": stride,
                    "seed": seed, "limit": args.limit,
                    "dtype": "float32", "fewshot_delimiter": "\\n\\n", "target_delimiter": " "}
    results = [{**r, "reproduction": reproduction} for r in results]
    kept = _earlier_results(out, model_name, results)
    write_json_atomic(out, {"model": model_name, "reproduction": reproduction, "results": kept + results,
                            "seconds": round(time.perf_counter() - started, 3)})
    print(f"Results: {out}" + (f" (with {len(kept)} earlier result(s) of other tasks or shots kept)"
                               if kept else ""))
    return 0


def _earlier_results(path: Path, model_name: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of an earlier ``evaluate`` of the same model in ``path`` that this one does not redo
    (another task or number of shots), each with the settings it was measured with: a second
    evaluation adds to the results file instead of replacing it. A file of another model, or one
    that is not a results file, is not merged (and is replaced)."""
    import json

    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        rows = earlier["results"] if earlier.get("model") == model_name else []
        redone = {(r["task"], r["shots"]) for r in results}
        return [{"reproduction": earlier.get("reproduction"), **r} for r in rows
                if isinstance(r, dict) and (r.get("task"), r.get("shots")) not in redone]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return []


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the main parser's subcommands."""
    p = subparsers.add_parser(
        "evaluate", help="benchmark a model: perplexity, HellaSwag, LAMBADA, WikiText-2, few-shot tasks",
        description="Score a checkpoint or GPT-2 on benchmarks as lm-evaluation-harness and the "
                    "transformers perplexity guide do; print a table and write it as JSON. "
                    f"Offline task: {TASK_NAMES[0]} (cloze questions built from the standard library's "
                    "documentation); the others download their data once into DATA_DIR.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path,
                        help="a model.npz from `numpy-gpt pretrain`, a .safetensors file or an OpenAI folder")
    source.add_argument("--gpt2", metavar="SIZE", choices=GPT2_SIZE_CHOICES,
                        help=f"OpenAI's GPT-2 weights ({', '.join(GPT2_SIZE_CHOICES)}), downloaded once")
    p.add_argument("--tasks", type=_parse_tasks, default=[TASK_NAMES[0]], metavar="T1,T2",
                   help=f"comma-separated tasks from {', '.join(TASK_NAMES)} (default: {TASK_NAMES[0]})")
    p.add_argument("--shots", type=_parse_shots, default=[0], metavar="K[,K...]",
                   help="examples from the training split before each item; several counts run the "
                        "task once per count, e.g. 0,1,4,8 (default: 0; lambada and wikitext: 0)")
    p.add_argument("--limit", type=positive_int, help="only the first N items (wikitext: N tokens)")
    p.add_argument("--stride", type=positive_int,
                   help="perplexity window stride in tokens (default: the context length, no overlap)")
    p.add_argument("--seed", type=random_seed, help="seed of the few-shot example draws (default: 1234)")
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="where data sets and the GPT-2 vocabulary are kept (default: data)")
    p.add_argument("--models-dir", type=Path, default=Path("gpt2"),
                   help="where GPT-2 weights are kept (default: gpt2)")
    p.add_argument("--spam-file", type=Path,
                   help="a local SMSSpamCollection (or its zip) for sms-spam instead of the download")
    p.add_argument("--out", type=Path, help="the JSON results file (default: runs/eval/<model>/results.json)")
    p.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    p.set_defaults(func=_cmd_evaluate)
