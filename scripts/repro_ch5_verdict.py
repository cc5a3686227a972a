"""Reproduce chapter 5 of the book: pretrain GPT-2 124M on "The Verdict" for 10 epochs.

    python scripts/repro_ch5_verdict.py [--init gpt2|torch] [--epochs 10] [--resume] [--data-dir DIR]

The book's setup (section 5.2), unchanged: GPT_CONFIG_124M with context_length 256 (163M
parameters: the output head is not tied), the-verdict.txt split 90/10 by characters, GPT-2's
tokenizer, batches of 2 x 256 tokens (stride 256; training batches shuffled, the last partial one
dropped), AdamW(lr 4e-4, weight_decay 0.1) on every parameter, the loop of ``train_model_simple``
with eval_freq 5 and eval_iter 5 and a greedy sample of "Every effort moves you" after each epoch.
The loop runs as ``train_model`` without schedule or clipping, which is the same computation but
saves a checkpoint after every epoch (runs/repro_ch5_verdict/model.npz, 2 GB with the optimizer
state): ``--resume`` continues an interrupted run with exactly the same losses. ``train_model``
also evaluates after the last step (89); the book's last evaluation is at step 85.
The book reports, after 10 epochs, training loss 0.569 and validation loss 6.373 (PyTorch; its
random numbers differ from ours, so only the trend should match: the model memorises the short
training text while the validation loss stays high).

Initialisation (``--init``). numpy_gpt's GPTModel starts as GPT-2 does (every weight N(0, 0.02^2),
residual projections scaled by 1/sqrt(2 n_layers)); the book's PyTorch GPTModel gets PyTorch's
defaults instead: embeddings N(0, 1), Linear weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
With ``--init torch`` the model is re-initialised that way (other random numbers than PyTorch's,
the same distributions). The 124M model memorises the 4.6k training tokens much faster from the
large embeddings of PyTorch's defaults; from GPT-2's init, PyTorch itself plateaus near a training
loss of 6 for the first epochs just as numpy_gpt does.

The text and GPT-2's vocabulary are read from ../shared/data when present, else downloaded into
--data-dir. Prints a summary and writes scripts/results/repro_ch5_verdict.json (and the loss plot
beside it). Wall time depends on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from numpy_gpt.corpora import get_gpt2_tokenizer
from numpy_gpt.data import create_dataloader_v1, load_corpus, train_val_split
from numpy_gpt.fileio import write_json_atomic
from numpy_gpt.generate import generate, text_to_token_ids, token_ids_to_text
from numpy_gpt.model import GPT_CONFIG_124M, GPTModel
from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding
from numpy_gpt.nn.linear import Linear
from numpy_gpt.optim import AdamW
from numpy_gpt.plots import plot_losses
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
from numpy_gpt.train import calc_loss_loader, perplexity_from_loss, train_model

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parent.parent / "shared" / "data"
BOOK = {"train_loss": 0.569, "val_loss": 6.373}


def load_inputs(data_dir: Path) -> tuple[str, GPT2Tokenizer]:
    """The text and GPT-2's tokenizer: from ../shared/data if there, else downloaded."""
    if (SHARED_DATA / "the-verdict.txt").is_file() and (SHARED_DATA / "gpt2" / "vocab.bpe").is_file():
        text = (SHARED_DATA / "the-verdict.txt").read_text(encoding="utf-8")
        tokenizer = GPT2Tokenizer.from_files(SHARED_DATA / "gpt2" / "encoder.json",
                                             SHARED_DATA / "gpt2" / "vocab.bpe")
        return text, tokenizer
    return load_corpus("the-verdict", data_dir), get_gpt2_tokenizer(data_dir)


def torch_default_init(model: GPTModel, seed: int) -> None:
    """Re-initialise ``model`` with PyTorch's default distributions, as the book's model starts:
    nn.Embedding N(0, 1); nn.Linear weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a = sqrt(5)); LayerNorm scale 1, shift 0 (already so)."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, Linear):
            bound = 1.0 / np.sqrt(module.weight.shape[0])              # weight is (fan_in, fan_out)
            module.weight.data[...] = rng.uniform(-bound, bound, module.weight.shape)
            if module.bias is not None:
                module.bias.data[...] = rng.uniform(-bound, bound, module.bias.shape)
        elif isinstance(module, (Embedding, PositionalEmbedding)):
            module.weight.data[...] = rng.standard_normal(module.weight.shape, dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--init", choices=("gpt2", "torch"), default="gpt2",
                        help="GPT-2's initialisation (numpy_gpt's) or PyTorch's defaults (the book's)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="default: runs/repro_ch5_verdict[_torch_init]/model.npz")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    args = parser.parse_args()

    text, tokenizer = load_inputs(args.data_dir)
    cfg = {**GPT_CONFIG_124M, "context_length": 256}
    train_text, val_text = train_val_split(text, 0.9)
    train_loader = create_dataloader_v1(train_text, batch_size=2, max_length=cfg["context_length"],
                                        stride=cfg["context_length"], shuffle=True, drop_last=True,
                                        seed=123, tokenizer=tokenizer)
    val_loader = create_dataloader_v1(val_text, batch_size=2, max_length=cfg["context_length"],
                                      stride=cfg["context_length"], shuffle=False, drop_last=False,
                                      tokenizer=tokenizer)
    model = GPTModel(cfg, seed=123)
    if args.init == "torch":
        torch_default_init(model, seed=123)
    name = "repro_ch5_verdict" + ("_torch_init" if args.init == "torch" else "")
    args.checkpoint = args.checkpoint or Path("runs") / name / "model.npz"
    optimizer = AdamW(model.parameters(), lr=0.0004, weight_decay=0.1)
    print(f"GPTModel {cfg}: {model.num_parameters():,} parameters; {len(train_loader)} training and "
          f"{len(val_loader)} validation batches of 2 x 256 tokens", flush=True)

    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    history = train_model(model, train_loader, val_loader, optimizer, num_epochs=args.epochs, eval_freq=5,
                          eval_iter=5, lr_schedule=None, grad_clip=None, tokenizer=tokenizer,
                          start_context="Every effort moves you", checkpoint_path=args.checkpoint,
                          checkpoint_freq=len(train_loader),
                          resume_from=args.checkpoint if args.resume else None)
    wall = time.perf_counter() - start
    train_losses, val_losses, tokens_seen = history.train_losses, history.val_losses, history.tokens_seen
    book_last = history.eval_steps.index(max(s for s in history.eval_steps if s % 5 == 0))

    model.eval()
    full_train, full_val = calc_loss_loader(train_loader, model), calc_loss_loader(val_loader, model)
    prompt = text_to_token_ids("Every effort moves you", tokenizer)
    greedy = token_ids_to_text(generate(model, prompt, 25, cfg["context_length"]), tokenizer)
    sampled = token_ids_to_text(generate(model, prompt, 15, cfg["context_length"], temperature=1.4,
                                         top_k=25, seed=123), tokenizer)

    args.out.mkdir(parents=True, exist_ok=True)
    plot_path = plot_losses(history.eval_steps, tokens_seen, train_losses, val_losses,
                            args.out / f"{name}_loss.png",
                            title=f"GPT-2 124M on The Verdict ({args.init} init)")
    results = {
        "setup": "book ch.5: GPT_CONFIG_124M, context 256, the-verdict 90/10, batch 2, AdamW lr 4e-4 "
                 f"wd 0.1, {args.epochs} epochs, eval_freq 5, eval_iter 5",
        "init": args.init,
        "parameters": model.num_parameters(),
        "book_last_eval_step": history.eval_steps[book_last],
        "train_loss_at_book_last_eval": train_losses[book_last],
        "val_loss_at_book_last_eval": val_losses[book_last],
        "final_eval_step": history.eval_steps[-1],
        "final_train_loss": train_losses[-1], "final_val_loss": val_losses[-1],
        "final_val_perplexity": perplexity_from_loss(val_losses[-1]),
        "full_train_loss": full_train, "full_val_loss": full_val,
        "book": BOOK,
        "tokens_seen": tokens_seen[-1], "optimizer_steps": len(train_loader) * args.epochs,
        "wall_seconds_this_session": round(wall, 1), "train_seconds": round(history.train_seconds, 1),
        "train_tokens_per_second": round(history.tokens_per_second, 1),
        "greedy_sample": greedy, "sampled_top_k25_temp1.4": sampled,
        "eval_steps": history.eval_steps, "train_losses": train_losses, "val_losses": val_losses,
        "tokens_seen_at_eval": tokens_seen,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs: noisy wall time)",
        "numpy": np.__version__,
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "unset (OpenBLAS default)"),
    }
    json_path = args.out / f"{name}.json"
    write_json_atomic(json_path, results)

    print(f"\nAfter {args.epochs} epochs ({results['optimizer_steps']} steps, {wall / 60:.1f} min wall, "
          f"{history.tokens_per_second:.0f} training tokens/s):")
    print(f"  step {history.eval_steps[book_last]} (the book's last evaluation): train loss "
          f"{train_losses[book_last]:.3f}, val loss {val_losses[book_last]:.3f}  "
          f"(book: {BOOK['train_loss']} / {BOOK['val_loss']})")
    print(f"  step {history.eval_steps[-1]}: train loss {train_losses[-1]:.3f}, "
          f"val loss {val_losses[-1]:.3f}")
    print(f"  whole splits:    train loss {full_train:.3f}, val loss {full_val:.3f}")
    print(f"  greedy:  {greedy!r}\n  top-k 25, temperature 1.4: {sampled!r}")
    print(f"Results: {json_path}\nLoss plot: {plot_path}")


if __name__ == "__main__":
    main()
