"""Reproduce nanoGPT's CPU baseline: a character-level GPT on tiny Shakespeare.

    python scripts/repro_nanogpt_shakespeare_char.py [--data-dir DIR] [--iters 2000] [--out scripts/results]

nanoGPT's README trains on a CPU with

    python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
        --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
        --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0

and reports a validation loss of 1.88. The same settings here: 65 characters, 90/10 split, context
64, batch 12, 4 layers x 4 heads x 128 wide, no dropout, 2000 steps of AdamW (betas 0.9/0.99,
weight decay 0.1 on every matrix, embeddings included, as nanoGPT), learning rate warmed up over 100
steps to 1e-3 then cosine-decayed to 1e-4, gradients clipped at norm 1.0.

Differences from nanoGPT, by design of the book's GPTModel: Linear and LayerNorm layers have
biases, and the output head is not tied to the token embedding. nanoGPT draws each batch's
windows at random positions; here the training windows start at every position (stride 1) and
are visited in a shuffled order, which is the same sampling without replacement. The validation
loss is reported both nanoGPT's way (mean of 20 batches) and over the whole validation split.

The text is read from ../shared/data when present, else downloaded into --data-dir. Prints a
summary and writes scripts/results/repro_nanogpt_shakespeare_char.json (and the loss plot beside
it). Wall time depends on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from numpy_gpt.data import create_dataloader_v1, load_corpus, train_val_split
from numpy_gpt.fileio import write_json_atomic
from numpy_gpt.generate import generate, text_to_token_ids, token_ids_to_text
from numpy_gpt.model import GPTModel
from numpy_gpt.optim import AdamW, WarmupCosineLR, configure_param_groups
from numpy_gpt.plots import plot_losses
from numpy_gpt.tokenizers.char import CharTokenizer
from numpy_gpt.train import calc_loss_loader, train_model

HERE = Path(__file__).resolve().parent
SHARED_TEXT = HERE.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
NANOGPT_VAL_LOSS = 1.88


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()

    text = (SHARED_TEXT.read_text(encoding="utf-8") if SHARED_TEXT.is_file()
            else load_corpus("tinyshakespeare", args.data_dir))
    tokenizer = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(np.asarray(tokenizer.encode(text), dtype=np.int64), 0.9)
    cfg = {"vocab_size": tokenizer.n_vocab, "context_length": 64, "emb_dim": 128, "n_heads": 4,
           "n_layers": 4, "drop_rate": 0.0, "qkv_bias": False}
    train_loader = create_dataloader_v1(train_ids, batch_size=12, max_length=64, stride=1, shuffle=True,
                                        drop_last=True, seed=1337)
    val_sample = create_dataloader_v1(val_ids, batch_size=12, max_length=64, stride=1, shuffle=True,
                                      drop_last=True, seed=1337)        # 20 random batches, as nanoGPT
    val_full = create_dataloader_v1(val_ids, batch_size=12, max_length=64, stride=64, shuffle=False,
                                    drop_last=False)                     # every token once
    model = GPTModel(cfg, seed=1337)
    optimizer = AdamW(configure_param_groups(model, 0.1, decay_embeddings=True), lr=1e-3,
                      betas=(0.9, 0.99))
    schedule = WarmupCosineLR(1e-3, total_steps=args.iters, warmup_steps=100, initial_lr=1e-3 / 101,
                              min_lr=1e-4)
    print(f"GPTModel {cfg}: {model.num_parameters():,} parameters; {len(train_ids):,} training and "
          f"{len(val_ids):,} validation characters", flush=True)

    start = time.perf_counter()
    history = train_model(model, train_loader, val_sample, optimizer, max_steps=args.iters, eval_freq=250,
                          eval_iter=20, lr_schedule=schedule, grad_clip=1.0)
    wall = time.perf_counter() - start

    model.eval()
    full_val = calc_loss_loader(val_full, model)
    prompt = text_to_token_ids("\n", tokenizer)
    sample = token_ids_to_text(generate(model, prompt, 500, 64, temperature=0.8, top_k=200, seed=1337),
                               tokenizer)

    args.out.mkdir(parents=True, exist_ok=True)
    plot_path = plot_losses(history.eval_steps, history.tokens_seen, history.train_losses,
                            history.val_losses, args.out / "repro_nanogpt_shakespeare_char_loss.png",
                            title="char-level tiny Shakespeare (nanoGPT CPU baseline)")
    results = {
        "setup": "nanoGPT CPU baseline: char-level tinyshakespeare, n_layer 4, n_head 4, n_embd 128, "
                 f"block 64, batch 12, {args.iters} iters, lr 1e-3 cosine to 1e-4, warmup 100, dropout 0",
        "parameters": model.num_parameters(),
        "val_loss_20_batches": history.val_losses[-1], "train_loss_20_batches": history.train_losses[-1],
        "val_loss_full_split": full_val,
        "nanogpt_val_loss": NANOGPT_VAL_LOSS,
        "wall_seconds": round(wall, 1), "train_seconds": round(history.train_seconds, 1),
        "train_tokens_per_second": round(history.tokens_per_second, 1),
        "sample": sample,
        "eval_steps": history.eval_steps, "train_losses": history.train_losses,
        "val_losses": history.val_losses,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs: noisy wall time)",
        "numpy": np.__version__,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "unset (OpenBLAS default)"),
    }
    json_path = args.out / "repro_nanogpt_shakespeare_char.json"
    write_json_atomic(json_path, results)

    print(f"\nAfter {args.iters} steps ({wall / 60:.1f} min wall, {history.tokens_per_second:,.0f} training "
          f"tokens/s):")
    print(f"  val loss {history.val_losses[-1]:.3f} on 20 batches (nanoGPT: {NANOGPT_VAL_LOSS}), "
          f"{full_val:.3f} on the whole validation split; train loss {history.train_losses[-1]:.3f}")
    print(f"  sample:\n{sample}")
    print(f"Results: {json_path}\nLoss plot: {plot_path}")


if __name__ == "__main__":
    main()
