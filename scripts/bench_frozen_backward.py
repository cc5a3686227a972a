"""How much a fine-tuning step costs when most of the model is frozen (chapter 6, appendix E).

For one batch of token ids, times the forward and the backward pass of a GPTModel with a 2-class head
(the spam classifier) for each choice of what trains, next to a pretraining step (the full (C, 50257)
language-model head, everything trainable), and counts the work the backward does: the transformer
blocks it walks through and the parameter tensors it forms a gradient for.

    python scripts/bench_frozen_backward.py                 # GPT-2 124M shape, batch 8 x 120 tokens
    python scripts/bench_frozen_backward.py --config small  # a quick look

Frozen parameters should cost nothing: GPTModel.backward stops below the lowest trainable block and
the blocks below run forward without caching activations; a frozen Linear forms no dW; LoRA forms no
dW for the wrapped weights, only the (in, r) and (r, out) gradients of A and B.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from numpy_gpt.finetune.classifier import add_classification_head, last_token_cross_entropy, set_trainable
from numpy_gpt.model import GPT_CONFIG_124M, GPTModel
from numpy_gpt.nn.loss import cross_entropy

CONFIGS = {
    "124M": {**GPT_CONFIG_124M, "drop_rate": 0.0},
    "small": {"vocab_size": 50257, "context_length": 256, "emb_dim": 256, "n_heads": 4, "n_layers": 6,
              "drop_rate": 0.0, "qkv_bias": False},
}
MODES = ("pretraining", "all", "last-n", "last-block", "lora")


def count_block_backwards(model: GPTModel) -> list[int]:
    """Wrap each block's backward with a counter; returns the (live) list of counts."""
    counts = [0] * len(model.trf_blocks)
    for i, block in enumerate(model.trf_blocks):
        def counted(dout, i=i, original=block.backward):
            counts[i] += 1
            return original(dout)
        block.backward = counted
    return counts


def bench(cfg: dict, mode: str, idx: np.ndarray, repeats: int, n_blocks: int) -> dict:
    rng = np.random.default_rng(0)
    model = GPTModel(cfg, seed=0)
    if mode == "pretraining":
        targets = rng.integers(0, cfg["vocab_size"], idx.shape)
        loss_fn = cross_entropy
    else:
        add_classification_head(model, 2)
        set_trainable(model, mode, n_blocks=n_blocks, lora_rank=16, lora_alpha=16)
        targets = rng.integers(0, 2, idx.shape[0])
        loss_fn = last_token_cross_entropy
    counts = count_block_backwards(model)
    forward_s, backward_s = [], []
    for _ in range(repeats + 1):                               # the first run warms up, not timed
        model.zero_grad()
        start = time.perf_counter()
        logits = model(idx)
        _, dlogits = loss_fn(logits, targets)
        middle = time.perf_counter()
        model.backward(dlogits)
        end = time.perf_counter()
        forward_s.append(middle - start)
        backward_s.append(end - middle)
    trainable = list(model.parameters(trainable_only=True))
    return {"mode": mode, "forward_s": min(forward_s[1:]), "backward_s": min(backward_s[1:]),
            "blocks_walked": sum(c > 0 for c in counts), "grad_tensors": len(trainable),
            "trainable_params": sum(p.size for p in trainable)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=tuple(CONFIGS), default="124M")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=120, help="tokens per message (the book pads to 120)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs per mode; the fastest is reported (the least disturbed by other "
                             "programs)")
    parser.add_argument("--n-blocks", type=int, default=2, help="blocks trained in the last-n mode")
    args = parser.parse_args()

    cfg = CONFIGS[args.config]
    idx = np.random.default_rng(1).integers(0, cfg["vocab_size"], (args.batch_size, args.seq_len))
    print(f"GPTModel {args.config} ({cfg['n_layers']} blocks, C={cfg['emb_dim']}), batch "
          f"{args.batch_size} x {args.seq_len} tokens, fastest of {args.repeats} runs")
    header = (f"{'mode':<12} {'trainable params':>17} {'grad tensors':>12} {'blocks walked':>13} "
              f"{'forward s':>10} {'backward s':>11} {'step s':>8}")
    print(header)
    print("-" * len(header))
    results = [bench(cfg, mode, idx, args.repeats, args.n_blocks) for mode in MODES]
    for r in results:
        walked = f"{r['blocks_walked']}/{cfg['n_layers']}"
        print(f"{r['mode']:<12} {r['trainable_params']:>17,} {r['grad_tensors']:>12} {walked:>13} "
              f"{r['forward_s']:>10.3f} {r['backward_s']:>11.3f} {r['forward_s'] + r['backward_s']:>8.3f}")
    base = results[0]["forward_s"] + results[0]["backward_s"]
    book = next(r for r in results if r["mode"] == "last-block")
    print(f"\nThe book's choice (last block + final norm + head): a step costs "
          f"{(book['forward_s'] + book['backward_s']) / base:.0%} of a pretraining step, its backward "
          f"{book['backward_s'] / results[0]['backward_s']:.0%} of a pretraining backward.")


if __name__ == "__main__":
    main()
