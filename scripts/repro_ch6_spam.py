"""Reproduce chapter 6: fine-tune a GPT as an SMS spam classifier, report accuracy before/after and time.

Two runs, as the README reports them:

* ``gpt2-124M`` -- the book's setting: OpenAI's GPT-2 124M, a new 2-class head, the last transformer
  block + final LayerNorm + head trained for 5 epochs (AdamW, lr 5e-5, weight decay 0.1, batch 8).
  The book reports 97.21 / 97.32 / 95.67 % accuracy (train / validation / test).
* ``scratch`` -- the same task with a small randomly initialised GPT, everything trained.

    python scripts/repro_ch6_spam.py                                   # both; downloads what it needs
    python scripts/repro_ch6_spam.py --spam-file ~/SMSSpamCollection   # a local copy of the data
    python scripts/repro_ch6_spam.py --runs scratch --out runs/ch6

The data is the UCI SMS Spam Collection (downloaded, or ``--spam-file``: the ``SMSSpamCollection``
file or the zip), balanced and split 70/10/20 with seed 123. The GPT-2 weights are read from
``--models-dir`` or downloaded there; when they cannot be had, that run is reported as skipped and
the other still runs. Accuracies are over the full splits; time is the training loop's wall clock
(evaluations included, as the book measures it). Results go to stdout and ``--out``/results.json.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

from numpy_gpt.corpora import get_gpt2_tokenizer
from numpy_gpt.download import DownloadError
from numpy_gpt.finetune.classifier import SpamFinetuneResult, finetune_spam_classifier
from numpy_gpt.finetune.data import prepare_spam_data, save_json
from numpy_gpt.gpt2.convert import load_gpt2
from numpy_gpt.model import GPTModel

BOOK = {"train": 0.9721, "validation": 0.9732, "test": 0.9567}
SCRATCH_CFG = {"vocab_size": 50257, "context_length": 256, "emb_dim": 128, "n_heads": 4, "n_layers": 4,
               "drop_rate": 0.0, "qkv_bias": False}


def run_gpt2(args, tokenizer, csv_paths) -> SpamFinetuneResult | str:
    try:
        model, _ = load_gpt2("124M", args.models_dir, drop_rate=0.0)
    except DownloadError as err:
        return (f"skipped: GPT-2 124M weights are not in {args.models_dir}/124M and could not be downloaded "
                f"({str(err).splitlines()[0]})")
    return finetune_spam_classifier(model, tokenizer, csv_paths, trainable="last-block", num_epochs=5,
                                    lr=5e-5, weight_decay=0.1, batch_size=8, eval_freq=50, eval_iter=5,
                                    seed=args.seed)


def run_scratch(args, tokenizer, csv_paths) -> SpamFinetuneResult:
    model = GPTModel(SCRATCH_CFG, seed=args.seed)
    return finetune_spam_classifier(model, tokenizer, csv_paths, trainable="all",
                                    num_epochs=args.scratch_epochs, lr=args.scratch_lr, weight_decay=0.1,
                                    batch_size=8, eval_freq=50, eval_iter=5, seed=args.seed)


def row(name: str, before: dict | None, after: dict, seconds: float | None) -> str:
    def pct(d: dict | None, k: str) -> str:
        return "-" if d is None else f"{d[k] * 100:.2f}"
    accs = " | ".join(f"{pct(before, k)} -> {pct(after, k)}" for k in ("train", "validation", "test"))
    time = "-" if seconds is None else f"{seconds / 60:.2f} min"
    return f"| {name} | {accs} | {time} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", choices=("gpt2-124M", "scratch"),
                        default=["gpt2-124M", "scratch"])
    parser.add_argument("--spam-file", type=Path, help="local SMSSpamCollection file or zip (no download)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="GPT-2 vocabulary and SMS data folder (default: data)")
    parser.add_argument("--models-dir", type=Path, default=Path("gpt2"), help="GPT-2 weights folder")
    parser.add_argument("--scratch-epochs", type=int, default=10)
    parser.add_argument("--scratch-lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, default=Path("runs/ch6"))
    args = parser.parse_args()

    try:
        csv_paths = prepare_spam_data(args.data_dir / "sms_spam_collection", source=args.spam_file,
                                      seed=args.seed)
        tokenizer = get_gpt2_tokenizer(args.data_dir)
    except DownloadError as err:
        print(f"error: {err}\n(pass --spam-file with a local copy of the data; the GPT-2 vocabulary is read "
              f"from --data-dir/gpt2)", file=sys.stderr)
        return 1
    runners = {"gpt2-124M": run_gpt2, "scratch": run_scratch}
    results, lines = {}, []
    for name in args.runs:
        print(f"\n=== {name} ===", flush=True)
        result = runners[name](args, tokenizer, csv_paths)
        if isinstance(result, str):
            print(result)
            results[name] = {"status": result}
            lines.append(f"| {name} | {result} | | | |")
            continue
        results[name] = {"status": "ok", "accuracy_before": result.accuracy_before,
                         "accuracy_after": result.accuracy_after,
                         "train_seconds": round(result.train_seconds, 1), "max_length": result.max_length,
                         "trainable_parameters": result.trainable_parameters}
        lines.append(row(name, result.accuracy_before, result.accuracy_after, result.train_seconds))

    print(f"\nSMS spam, accuracy % before -> after fine-tuning ({platform.machine()}, "
          f"{platform.python_implementation()} {platform.python_version()})")
    print("| run | train | validation | test | training time |")
    print("|---|---|---|---|---|")
    for line in lines:
        print(line)
    print(row("book, GPT-2 124M (last block + norm + head)", None, BOOK, None))
    args.out.mkdir(parents=True, exist_ok=True)
    save_json({"runs": results, "book": BOOK}, args.out / "results.json")
    return 0 if all(r.get("status") == "ok" for r in results.values()) else 2


if __name__ == "__main__":
    sys.exit(main())
