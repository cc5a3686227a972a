"""Encoder vs decoder on spam classification, both trained from scratch on the same data.

The same messages, the same WordPiece token ids, the same width, depth and heads (so nearly the
same parameter count; the table gives the exact numbers), the same optimizer, learning rate, batch
size and number of steps. Three classifiers:

* ``decoder (last token)``: GPTModel with its output head replaced by a 2-class Linear (chapter 6):
  messages are padded at the end and the LAST position's logits are trained, because with causal
  attention only the last token has seen the whole message;
* ``encoder ([CLS] + pooler)``: EncoderClassifier, BERT's way: [CLS] message [SEP], padding hidden
  by the attention mask, the [CLS] token's hidden state through tanh(dense) into the classifier;
* ``encoder (mean pooling)``: the same encoder, the mean of the real tokens' hidden states.

Data: the UCI SMS Spam Collection parsed, balanced and split 70/10/20 by numpy_gpt/finetune/data.py
(the path ``finetune-spam`` uses) when ``--spam-file`` (or data/sms_spam_collection/SMSSpamCollection)
exists; otherwise a synthetic task, offline: everyday words, with 0 to 3 "spam words" inserted
anywhere, and a message is spam when it has at least two of them (so no single word decides;
the model has to count over the whole message).

    python scripts/encoder_vs_decoder_spam.py                     # synthetic, about a minute or two
    python scripts/encoder_vs_decoder_spam.py --spam-file ~/SMSSpamCollection --steps 600

Accuracies are over the full validation and test splits; time is the training loop's wall clock.
Results go to stdout (a Markdown table) and to --out/results.json.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from numpy_gpt.encoder import EncoderClassifier
from numpy_gpt.fileio import write_json_atomic
from numpy_gpt.finetune.classifier import add_classification_head
from numpy_gpt.finetune.data import create_balanced_dataset, random_split, read_sms_spam
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import no_grad
from numpy_gpt.optim import AdamW, clip_grad_norm, configure_param_groups
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


def load_rows(args: argparse.Namespace) -> tuple[str, list, list, list]:
    path = args.spam_file or Path("data/sms_spam_collection/SMSSpamCollection")
    if not args.synthetic and Path(path).is_file():
        rows = create_balanced_dataset(read_sms_spam(path), seed=args.seed)
        return f"SMS Spam Collection ({path})", *random_split(rows, 0.7, 0.1, seed=args.seed)
    rows = synthetic_rows(args.synthetic_size, args.seed)
    return "synthetic (spam iff >= 2 spam words)", *random_split(rows, 0.7, 0.1, seed=args.seed)


def encode_split(rows, tokenizer: WordPieceTokenizer, max_length: int):
    """Encoder inputs ([CLS] text [SEP], padded, attention mask), decoder inputs (text, padded at
    the end with [PAD] as the book pads with <|endoftext|>), and labels; long messages keep their
    first tokens."""
    n = len(rows)
    enc = np.full((n, max_length), tokenizer.pad_id, dtype=np.int64)
    mask = np.zeros((n, max_length), dtype=np.int64)
    dec = np.full((n, max_length), tokenizer.pad_id, dtype=np.int64)
    labels = np.array([1 if label == "spam" else 0 for label, _ in rows], dtype=np.int64)
    for i, (_, text) in enumerate(rows):
        ids = tokenizer.encode(text, add_special_tokens=False)[:max_length - 2]
        enc[i, :len(ids) + 2] = [tokenizer.cls_id, *ids, tokenizer.sep_id]
        mask[i, :len(ids) + 2] = 1
        dec[i, :len(ids)] = ids
    return {"enc": enc, "mask": mask, "dec": dec, "labels": labels}


def make_models(cfg: dict, seed: int) -> dict:
    decoder = add_classification_head(GPTModel(cfg, seed=seed), 2, seed=seed)
    return {"decoder (last token)": decoder,
            "encoder ([CLS] + pooler)": EncoderClassifier(cfg, 2, "cls", seed=seed),
            "encoder (mean pooling)": EncoderClassifier(cfg, 2, "mean", seed=seed)}


def logits_of(name: str, model, data: dict, rows: np.ndarray) -> np.ndarray:
    if name.startswith("decoder"):
        return model(data["dec"][rows])                                   # (B, T, 2): all positions
    return model(data["enc"][rows], None, data["mask"][rows])             # (B, 2)


def loss_and_grad(name: str, logits: np.ndarray, labels: np.ndarray):
    if name.startswith("decoder"):                                        # the last position only
        loss, dlast = cross_entropy(logits[:, -1, :], labels)
        dlogits = np.zeros_like(logits)
        dlogits[:, -1, :] = dlast
        return loss, dlogits
    return cross_entropy(logits, labels)


def accuracy(name: str, model, data: dict, batch_size: int = 64) -> float:
    model.eval()
    hits = 0
    with no_grad():
        for start in range(0, len(data["labels"]), batch_size):
            rows = np.arange(start, min(start + batch_size, len(data["labels"])))
            logits = logits_of(name, model, data, rows)
            logits = logits[:, -1, :] if name.startswith("decoder") else logits
            hits += int((logits.argmax(-1) == data["labels"][rows]).sum())
    model.train()
    return hits / len(data["labels"])


def train(name: str, model, data: dict, args: argparse.Namespace) -> dict:
    optimizer = AdamW(configure_param_groups(model, args.weight_decay), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    n = len(data["labels"])
    model.train()
    started = time.perf_counter()
    losses = []
    for step in range(args.steps):
        rows = rng.choice(n, size=args.batch_size, replace=False)
        optimizer.zero_grad()
        loss, dlogits = loss_and_grad(name, logits_of(name, model, data, rows), data["labels"][rows])
        model.backward(dlogits)
        clip_grad_norm(list(model.parameters()), 1.0)
        optimizer.step()
        losses.append(loss)
        if (step + 1) % max(1, args.steps // 5) == 0:
            print(f"  {name}: step {step + 1}/{args.steps}, loss (mean of the last steps) "
                  f"{np.mean(losses[-20:]):.3f}", flush=True)
    return {"seconds": time.perf_counter() - started, "final_loss": float(np.mean(losses[-20:]))}


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
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps for each model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--out", type=Path, default=Path("runs/encoder_vs_decoder_spam"))
    args = parser.parse_args()
    configure()

    source, train_rows, val_rows, test_rows = load_rows(args)
    tokenizer = WordPieceTokenizer(train_wordpiece_vocab(" ".join(t for _, t in train_rows), args.vocab_size))
    splits = {name: encode_split(rows, tokenizer, args.max_length)
              for name, rows in (("train", train_rows), ("val", val_rows), ("test", test_rows))}
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": args.max_length, "emb_dim": args.emb_dim,
           "n_heads": args.n_heads, "n_layers": args.n_layers, "drop_rate": 0.0, "qkv_bias": True}
    majority = max(np.mean(splits["test"]["labels"]), 1 - np.mean(splits["test"]["labels"]))
    print(f"Data: {source}; {len(train_rows)} / {len(val_rows)} / {len(test_rows)} messages; WordPiece "
          f"vocabulary {tokenizer.n_vocab}; majority class on test {majority:.1%}")

    results = {}
    for name, model in make_models(cfg, args.seed).items():
        print(f"{name}: {model.num_parameters():,} parameters", flush=True)
        run = train(name, model, splits["train"], args)
        run.update(parameters=model.num_parameters(), val_accuracy=accuracy(name, model, splits["val"]),
                   test_accuracy=accuracy(name, model, splits["test"]))
        results[name] = run

    lines = ["| model | parameters | val accuracy | test accuracy | training time |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['parameters']:,} | {r['val_accuracy']:.1%} | {r['test_accuracy']:.1%} | "
              f"{r['seconds']:.1f} s |" for name, r in results.items()]
    print("\n" + "\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json_atomic(args.out / "results.json", {
        "data": source, "split_sizes": [len(train_rows), len(val_rows), len(test_rows)],
        "majority_test_accuracy": majority, "config": cfg, "steps": args.steps, "batch_size": args.batch_size,
        "lr": args.lr, "machine": f"{platform.machine()}, {platform.python_version()}", "results": results,
        "table": lines})
    print(f"\nWrote {path}")


if __name__ == "__main__":
    main()
