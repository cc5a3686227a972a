"""Encoder vs decoder on spam classification, both trained from scratch on the same data.

The same messages, the same WordPiece token ids, the same width, depth and heads (so nearly the
same parameter count; the table gives the exact numbers), and the same training: each model goes
through ``finetune_spam_classifier``, the chapter-6 path of ``numpy-gpt finetune-spam`` (its loop,
its accuracies on every message of each split, its baselines). Three classifiers:

* ``decoder (last token)``: GPTModel with its output head replaced by a 2-class Linear (chapter 6):
  messages are padded at the end and the LAST position's logits are trained, because with causal
  attention only the last token has seen the whole message;
* ``encoder ([CLS] + pooler)``: EncoderClassifier, BERT's way: [CLS] message [SEP], padding hidden
  by the attention mask, the [CLS] token's hidden state through tanh(dense) into the classifier
  (``finetune-spam --arch encoder``);
* ``encoder (mean pooling)``: the same encoder, the mean of the real tokens' hidden states.

Data: the UCI SMS Spam Collection parsed, balanced and split 70/10/20 by numpy_gpt/finetune/data.py
(the path ``finetune-spam`` uses) when ``--spam-file`` (or data/sms_spam_collection/SMSSpamCollection)
exists; otherwise a synthetic task, offline: everyday words, with 0 to 3 "spam words" inserted
anywhere, and a message is spam when it has at least two of them (so no single word decides;
the model has to count over the whole message).

    python scripts/encoder_vs_decoder_spam.py                     # synthetic, a few minutes
    python scripts/encoder_vs_decoder_spam.py --spam-file ~/SMSSpamCollection --epochs 3

Accuracies are over the full splits; the baselines (majority class of the training labels, message
length, a bag-of-words naive Bayes) are the command's. Time is the training loop's wall clock.
Results go to stdout (a Markdown table) and to --out/results.json.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import numpy as np

from numpy_gpt.encoder import EncoderClassifier
from numpy_gpt.fileio import write_json_atomic
from numpy_gpt.finetune.classifier import PaddedSequenceClassifier, finetune_spam_classifier
from numpy_gpt.finetune.data import prepare_spam_data, random_split, read_spam_csv, write_spam_csv
from numpy_gpt.model import GPTModel
from numpy_gpt.runtime import configure
from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer, train_wordpiece_vocab

HAM_WORDS = ("see you at lunch tomorrow ok call me when home are we still on for dinner thanks love the "
             "movie meeting moved to three bring the book i will be late sorry traffic").split()
SPAM_WORDS = ["free", "winner", "prize", "cash", "urgent", "claim", "offer", "reward"]


def synthetic_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text) pairs: 5-14 everyday words plus 0-3 spam words; spam iff >= 2 spam words."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        words = list(rng.choice(HAM_WORDS, size=rng.integers(5, 15)))
        k = int(rng.integers(0, 4))
        for word in rng.choice(SPAM_WORDS, size=k, replace=False):
            words.insert(int(rng.integers(0, len(words) + 1)), str(word))
        rows.append(("spam" if k >= 2 else "ham", " ".join(words)))
    return rows


def split_csvs(args: argparse.Namespace) -> tuple[str, dict[str, Path]]:
    """(what the data is, the train/validation/test CSVs): finetune-spam's own, or the synthetic task
    split 70/10/20 the same way."""
    path = args.spam_file or Path("data/sms_spam_collection/SMSSpamCollection")
    if not args.synthetic and Path(path).is_file():
        paths = prepare_spam_data(args.out / "data", source=path, seed=args.seed)
        return f"SMS Spam Collection ({path})", paths
    parts = random_split(synthetic_rows(args.synthetic_size, args.seed), 0.7, 0.1, seed=args.seed)
    return "synthetic (spam iff >= 2 spam words)", {
        name: write_spam_csv(part, args.out / "data" / f"{name}.csv")
        for name, part in zip(("train", "validation", "test"), parts, strict=True)}


def make_models(cfg: dict, pad_id: int, seed: int) -> dict:
    """The three classifiers, each as finetune_spam_classifier takes it (the decoder gets its 2-class
    head there, as in chapter 6)."""
    return {"decoder (last token)": GPTModel(cfg, seed=seed),
            **{f"encoder ({label})": PaddedSequenceClassifier(EncoderClassifier(cfg, 2, pooling, seed=seed),
                                                              pad_id, cfg)
               for label, pooling in (("[CLS] + pooler", "cls"), ("mean pooling", "mean"))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spam-file", type=Path,
                        help="SMSSpamCollection (default: data/sms_spam_collection/SMSSpamCollection)")
    parser.add_argument("--synthetic", action="store_true",
                        help="use the synthetic task even if the file exists")
    parser.add_argument("--synthetic-size", type=int, default=1500, help="messages in the synthetic task")
    parser.add_argument("--vocab-size", type=int, default=400, help="WordPiece vocabulary trained on train")
    parser.add_argument("--max-length", type=int, default=32, help="tokens per message, padding included")
    parser.add_argument("--emb-dim", type=int, default=64)
    parser.add_argument("--n-layers", type=int, default=2)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training split")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, default=Path("runs/encoder_vs_decoder_spam"))
    args = parser.parse_args()
    configure()

    source, csv_paths = split_csvs(args)
    train_texts = read_spam_csv(csv_paths["train"])[0]
    tokenizer = WordPieceTokenizer(train_wordpiece_vocab(" ".join(train_texts), args.vocab_size))
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": args.max_length, "emb_dim": args.emb_dim,
           "n_heads": args.n_heads, "n_layers": args.n_layers, "drop_rate": 0.0, "qkv_bias": True}
    print(f"Data: {source}; WordPiece vocabulary {tokenizer.n_vocab}")

    results, baselines = {}, {}
    for name, model in make_models(cfg, tokenizer.pad_id, args.seed).items():
        print(f"\n{name}: {model.num_parameters():,} parameters", flush=True)
        run = finetune_spam_classifier(model, tokenizer, csv_paths, trainable="all", num_epochs=args.epochs,
                                       lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                                       eval_freq=10**9, eval_iter=5, max_length=args.max_length,
                                       pad_token_id=tokenizer.pad_id, seed=args.seed)
        results[name] = {"parameters": run.model.num_parameters(), "seconds": run.train_seconds,
                         "val_accuracy": run.accuracy_after["validation"],
                         "test_accuracy": run.accuracy_after["test"]}
        baselines = run.baselines

    lines = ["| model | parameters | val accuracy | test accuracy | training time |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['parameters']:,} | {r['val_accuracy']:.1%} | {r['test_accuracy']:.1%} | "
              f"{r['seconds']:.1f} s |" for name, r in results.items()]
    lines += [f"| baseline: {b['rule']} | - | {b['validation']:.1%} | {b['test']:.1%} | - |"
              for b in baselines.values()]
    print("\n" + "\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json_atomic(args.out / "results.json", {
        "data": source, "split_sizes": {k: len(read_spam_csv(p)[0]) for k, p in csv_paths.items()},
        "baselines": baselines, "config": cfg, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "machine": f"{platform.machine()}, {platform.python_version()}", "results": results,
        "table": lines})
    print(f"\nWrote {path}")


if __name__ == "__main__":
    main()
