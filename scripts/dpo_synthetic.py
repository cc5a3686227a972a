"""DPO on the synthetic polite / curt task, end to end on a CPU in a few minutes.

1. Make a tiny instruction-tuned model: a byte-level BPE tokenizer trained on the task's texts, a
   small GPTModel trained from scratch on ``synthetic_instruction_data`` (chapter 7's loss, prompt
   masked), whose answers are polite or curt half and half. Saved with its tokenizer as
   ``<out>/instruct.npz``.
2. Run ``numpy-gpt finetune-dpo --checkpoint <out>/instruct.npz --data synthetic`` with its default budget
   (β, learning rate, epochs) and print the held-out reward accuracy and margin it reaches.

    python scripts/dpo_synthetic.py                 # writes runs/dpo-synthetic/
    python scripts/dpo_synthetic.py --sft-steps 300 --out /tmp/dpo
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from numpy_gpt.checkpoint import save_checkpoint
from numpy_gpt.cli import main as numpy_gpt_main
from numpy_gpt.finetune.instruct import (
    InstructionDataLoader,
    InstructionDataset,
    format_input,
    format_response,
)
from numpy_gpt.finetune.preference import before_and_after
from numpy_gpt.finetune.preference_data import synthetic_instruction_data
from numpy_gpt.model import GPTModel
from numpy_gpt.optim import AdamW
from numpy_gpt.runtime import configure
from numpy_gpt.tokenizers.spec import tokenizer_spec
from numpy_gpt.tokenizers.train_bpe import BPETokenizer
from numpy_gpt.train import train_model

TINY = {"context_length": 128, "emb_dim": 96, "n_heads": 4, "n_layers": 3, "drop_rate": 0.0,
        "qkv_bias": False}


def make_instruct_model(out: Path, *, vocab_size: int, steps: int, seed: int) -> Path:
    """Steps 1: tokenizer, tiny model, instruction tuning on the synthetic task; returns the checkpoint."""
    entries = synthetic_instruction_data(seed=seed)
    texts = [format_input(e) + format_response(e) for e in entries]
    tokenizer = BPETokenizer.train("<|endoftext|>".join(texts), vocab_size)
    eot = tokenizer.eot_token
    model = GPTModel({**TINY, "vocab_size": tokenizer.n_vocab}, seed=seed)
    split = int(0.9 * len(entries))
    options = {"pad_token_id": eot, "mask_prompt": True, "allowed_max_length": TINY["context_length"]}
    train_loader = InstructionDataLoader(InstructionDataset(entries[:split], tokenizer), 16, shuffle=True,
                                         drop_last=True, seed=seed, **options)
    val_loader = InstructionDataLoader(InstructionDataset(entries[split:], tokenizer), 16, **options)
    optimizer = AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    print(f"Instruction tuning a {model.num_parameters():,}-parameter model ({tokenizer.n_vocab} tokens) "
          f"on {split} synthetic examples for {steps} steps", flush=True)
    history = train_model(model, train_loader, val_loader, optimizer, max_steps=steps, eval_freq=100,
                          eval_iter=5, progress=sys.stderr.isatty())
    print(f"instruction tuning: val loss {history.val_losses[-1]:.3f} "
          f"({history.train_seconds:.0f} s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out / "instruct.npz", model.eval(),
                           extra={"task": "instruct", "tokenizer": tokenizer_spec(tokenizer),
                                  "data": "synthetic_instruction_data"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/dpo-synthetic"), help="run folder")
    parser.add_argument("--vocab-size", type=int, default=400, help="BPE vocabulary of the tiny model")
    parser.add_argument("--sft-steps", type=int, default=400, help="instruction-tuning steps")
    parser.add_argument("--seed", type=int, default=123)
    args, dpo_args = parser.parse_known_args()
    configure()
    started = time.perf_counter()
    init = make_instruct_model(args.out, vocab_size=args.vocab_size, steps=args.sft_steps, seed=args.seed)
    code = numpy_gpt_main(["finetune-dpo", "--init", str(init), "--data", "synthetic",
                           "--out", str(args.out / "dpo"), "--seed", str(args.seed), *dpo_args])
    if code == 0:
        metrics = json.loads((args.out / "dpo" / "metrics.json").read_text(encoding="utf-8"))
        before, after = metrics["test_before"], metrics["test_after"]
        print(f"\nHeld-out pairs: {before_and_after(before, after)}; "
              f"{time.perf_counter() - started:.0f} s in all")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
