"""Time a training step of two numpy_gpt source trees against each other, in ABBA order.

    python scripts/bench_abba.py OLD_TREE NEW_TREE [--case 124M|shakespeare-char] [--rounds 3]
    python scripts/bench_abba.py . . --plain-old       # the value of map_chunks: plain calls vs chunks
    python scripts/bench_abba.py OLD . --readable      # NUMPY_GPT_FAST=0: the readable forms, no kernels
    python scripts/bench_abba.py . . --old-off adamw   # one kernel's share: A without it, B with it

Each measurement is a fresh subprocess that imports numpy_gpt from one tree, applies the entry
point's settings (freed-memory reuse, the thread count), builds the bench's model, runs two warm-up
steps and then times ``--steps`` training steps (forward, cross-entropy, backward, AdamW, zero_grad)
and prints their median, in wall time and in CPU time (``time.process_time``, every thread of the
process). The trees alternate A B B A in every round, so a drift of the host's speed during the
run affects both alike. The result is the ratio of the medians (NEW / OLD) over all rounds, and the
ratio per round. On a machine shared with other jobs, the CPU time of a one-thread step is the
steadier measure: it does not count the time the process waits for a core (the wall time does).
Only the public API common to every version is used, so an old commit checked out with
``git worktree add`` can be measured against the working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = {
    # GPT_CONFIG_124M at context 256, batch 2 x 256 tokens, dropout 0.1 (numpy-gpt bench's 124M case)
    "124M": ({"vocab_size": 50257, "context_length": 256, "emb_dim": 768, "n_heads": 12, "n_layers": 12,
              "drop_rate": 0.1, "qkv_bias": False}, 2, 256, 5),
    # nanoGPT's shakespeare-char CPU model, batch 12 x 64 tokens, no dropout
    "shakespeare-char": ({"vocab_size": 65, "context_length": 64, "emb_dim": 128, "n_heads": 4, "n_layers": 4,
                          "drop_rate": 0.0, "qkv_bias": False}, 12, 64, 31),
}

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import numpy_gpt
from numpy_gpt import runtime
from numpy_gpt import AdamW, GPTModel, cross_entropy
assert numpy_gpt.__file__.startswith(sys.argv[1]), numpy_gpt.__file__
cfg, batch, tokens, steps, threads, plain, off = json.loads(sys.argv[2])
if off:                          # these kernels run their readable forms (numpy_gpt.fast.disable)
    import numpy_gpt.fast
    numpy_gpt.fast.disable(*off)
if plain:                        # map_chunks(fn, *arrays) becomes fn(*arrays): one chunk of any size
    import numpy_gpt.fast
    numpy_gpt.fast.map_chunks.__defaults__ = (1 << 62,)
runtime.reuse_freed_memory()
if hasattr(runtime, "blas_threads_sleep_sooner"):  # session 5: the entry point sets it, not the import
    runtime.blas_threads_sleep_sooner()
runtime.set_threads(threads, use_torch=False)
model = GPTModel(cfg, seed=0)
optimizer = AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
idx = np.random.default_rng(0).integers(0, cfg["vocab_size"], (batch, tokens + 1))

def step():
    logits = model(idx[:, :-1])
    loss, dlogits = cross_entropy(logits, idx[:, 1:])
    model.backward(dlogits)
    optimizer.step()
    optimizer.zero_grad()

for _ in range(2):
    step()
times, cpu = [], []
for _ in range(steps):
    start, start_cpu = time.perf_counter(), time.process_time()
    step()
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
print(json.dumps([sorted(times)[len(times) // 2], sorted(cpu)[len(cpu) // 2]]))
"""


def measure(tree: str, case: str, threads: int, plain: bool = False, readable: bool = False,
            steps: int | None = None, off: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall, CPU) median step time of a fresh process importing numpy_gpt from ``tree``."""
    cfg, batch, tokens, case_steps = CASES[case]
    steps = steps or case_steps
    spec = json.dumps([cfg, batch, tokens, steps, threads, plain, list(off)])
    env = {**os.environ, "NUMPY_GPT_FAST": "0" if readable else "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, os.path.abspath(tree), spec],
                          capture_output=True, text=True, check=True, env=env)
    wall, cpu = json.loads(done.stdout.strip().splitlines()[-1])
    return float(wall), float(cpu)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", help="source tree A (the folder that holds numpy_gpt/)")
    parser.add_argument("new", help="source tree B")
    parser.add_argument("--case", choices=sorted(CASES), default="shakespeare-char")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds (4 measurements each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per measurement (default: 5 for 124M, 31 for shakespeare-char)")
    parser.add_argument("--plain-old", action="store_true",
                        help="run tree A with map_chunks disabled (each layer calls its formula directly)")
    parser.add_argument("--readable", action="store_true",
                        help="run both trees with NUMPY_GPT_FAST=0 (trees with numpy_gpt.fast's kernels then "
                             "run the layers' readable forms; older trees ignore it)")
    parser.add_argument("--old-off", default="", metavar="K1,K2",
                        help="run tree A with these kernels off (numpy_gpt.fast.disable): with OLD = NEW, "
                             "the measured share of those kernels")
    args = parser.parse_args(argv)
    off = tuple(k for k in args.old_off.split(",") if k)
    old: dict[str, list[float]] = {"wall": [], "cpu": []}
    new: dict[str, list[float]] = {"wall": [], "cpu": []}
    per_round: dict[str, list[float]] = {"wall": [], "cpu": []}
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        a1 = measure(args.old, args.case, args.threads, args.plain_old, args.readable, args.steps, off)
        b1 = measure(args.new, args.case, args.threads, readable=args.readable, steps=args.steps)
        b2 = measure(args.new, args.case, args.threads, readable=args.readable, steps=args.steps)
        a2 = measure(args.old, args.case, args.threads, args.plain_old, args.readable, args.steps, off)
        for i, clock in enumerate(("wall", "cpu")):
            old[clock] += [a1[i], a2[i]]
            new[clock] += [b1[i], b2[i]]
            per_round[clock].append((b1[i] + b2[i]) / (a1[i] + a2[i]))
        print(f"round {r + 1} (load {load:.1f} -> {os.getloadavg()[0]:.1f}): wall A {a1[0] * 1e3:.1f} / "
              f"{a2[0] * 1e3:.1f} ms, B {b1[0] * 1e3:.1f} / {b2[0] * 1e3:.1f} ms, "
              f"B/A {per_round['wall'][-1]:.3f}; CPU A {a1[1] * 1e3:.1f} / {a2[1] * 1e3:.1f} ms, "
              f"B {b1[1] * 1e3:.1f} / {b2[1] * 1e3:.1f} ms, B/A {per_round['cpu'][-1]:.3f}", flush=True)
    summary = {"case": args.case, "threads": args.threads, "readable": args.readable, "old_off": list(off),
               "load_average_end": os.getloadavg()}
    for clock in ("wall", "cpu"):
        summary[clock] = {"old_ms": statistics.median(old[clock]) * 1e3,
                          "new_ms": statistics.median(new[clock]) * 1e3,
                          "new_over_old": statistics.median(new[clock]) / statistics.median(old[clock]),
                          "per_round": per_round[clock]}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
