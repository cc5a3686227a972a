"""Where a training step's time goes: self time per layer type for numpy_gpt, and torch.profiler's
table for the PyTorch models of ``numpy-gpt bench``.

    python scripts/profile_step.py                          # shakespeare-char, all cores
    python scripts/profile_step.py --case 124M --steps 3
    python scripts/profile_step.py --torch fused            # then PyTorch with fused kernels
    python scripts/profile_step.py --threads 1 --torch book

Every layer class's forward and backward (and AdamW's step, and the loss) runs inside a timer.
Time spent in a nested layer (the Linear layers inside attention) counts for that layer, not for
its parent, so the rows add up to the step; "other" is what no timer saw (the model's residual
adds, reshapes, Python). The timers cost a few microseconds per call, so the step runs slightly
slower than in ``numpy-gpt bench``. Same model, batch and optimizer settings as the benchmark.
"""

from __future__ import annotations

import argparse
import collections
import os
import time

from numpy_gpt import optim
from numpy_gpt.nn import attention, dropout, embedding, gelu, layernorm, linear
from numpy_gpt.runtime import configure, set_threads
from numpy_gpt.tools import bench

LAYERS = [(linear.Linear, "Linear"), (attention.MultiHeadAttention, "attention (outside its Linears)"),
          (layernorm.LayerNorm, "LayerNorm"), (gelu.GELU, "GELU"), (dropout.Dropout, "Dropout"),
          (embedding.Embedding, "Embedding")]


class SelfTimer:
    """Wraps functions so that each call's time, minus the time of wrapped calls inside it, is
    added to the function's row."""

    def __init__(self) -> None:
        self.totals: collections.Counter[str] = collections.Counter()
        self._children: list[float] = []           # time of wrapped calls, per open call

    def wrap(self, fn, row: str):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            self._children.append(0.0)
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                self.totals[row] += elapsed - self._children.pop()
                if self._children:
                    self._children[-1] += elapsed
        return timed


def profile_numpy(case: str, steps: int) -> None:
    timer = SelfTimer()
    for cls, name in LAYERS:
        for method in ("forward", "backward"):
            setattr(cls, method, timer.wrap(getattr(cls, method), f"{name} {method}"))
    optim.AdamW.step = timer.wrap(optim.AdamW.step, "AdamW")
    bench.cross_entropy = timer.wrap(bench.cross_entropy, "cross-entropy (softmax + dlogits)")
    cfg, batch_size, num_tokens = bench.TRAIN_CASES[case]
    step = bench.numpy_train_step(cfg, batch_size, num_tokens)
    for _ in range(2):                                     # warm-up: Adam state, the heap
        step()
    timer.totals.clear()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - start) / steps
    print(f"numpy_gpt, {case}: {wall * 1e3:.1f} ms per step (timers on), self time per step:")
    for row, seconds in timer.totals.most_common():
        print(f"  {row:42s} {seconds / steps * 1e3:9.1f} ms")
    print(f"  {'other':42s} {(wall - sum(timer.totals.values()) / steps) * 1e3:9.1f} ms")


def profile_torch(case: str, steps: int, form: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    cfg, batch_size, num_tokens = bench.TRAIN_CASES[case]
    step = bench.torch_train_step(cfg, batch_size, num_tokens, builtin_kernels=form == "fused")
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"\nPyTorch ({form}), {case}, {steps} steps (divide the times by {steps}):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(bench.TRAIN_CASES), default="shakespeare-char")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--threads", type=int, default=None, help="default: the number of cores")
    parser.add_argument("--torch", choices=["none", "book", "fused"], default="none",
                        help="also profile a PyTorch model (needs torch)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    set_threads(args.threads or os.cpu_count() or 1, use_torch=args.torch != "none")
    configure()                                            # as the command line does
    profile_numpy(args.case, args.steps)
    if args.torch != "none":
        profile_torch(args.case, args.steps, args.torch)


if __name__ == "__main__":
    main()
