"""Would a fused attention core pay? A measurement, not a kernel of the package.

    python scripts/bench_attention_core.py                  # both cases, 1 and 2 threads
    python scripts/bench_attention_core.py --case 124M --threads 2

nanoGPT's ``if self.flash:`` runs the attention core (scores, causal mask, softmax, the mix P V and
their backward) as one fused kernel. This script times the NumPy equivalent of that idea against
the layer's readable lines (``MultiHeadAttention._attention_weights`` and the products of its
forward and backward, causal, no padding, no dropout): the same operations on the same bits, run
over chunks of a few heads at a time (``--rows`` heads per chunk) so a head's T x T scores stay in
the cache from the product to the softmax to the next product, written in place into preallocated
arrays, with the chunks dealt to ``num_threads()`` threads (``parallel_for``, which ignores its
size threshold here so the two-thread figure is the chunks' best case).

It checks first that both forms give the same bits, then prints the median time of each per
attention layer, forward and backward, for the bench's shakespeare-char and 124M shapes. The
result (docs/performance.md, session 8) is why numpy_gpt has no such kernel: it saved nothing on
the small model at one thread and a few tenths of a percent of a 124M step, below the 3 % that a
kernel has to save (issue #27).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from numpy_gpt.fast.threads import chunks, parallel_for
from numpy_gpt.nn.attention import MultiHeadAttention, causal_mask
from numpy_gpt.nn.softmax import softmax_backward
from numpy_gpt.runtime import reuse_freed_memory, set_threads

CASES = {"shakespeare-char": (12, 4, 64, 32), "124M": (2, 12, 256, 64)}   # B, H, T, hd of the bench


def readable_forward(layer: MultiHeadAttention, q, k, v):
    """The layer's own lines: P = softmax of the masked scores, ctx = P V."""
    P = layer._attention_weights(q, k, 0)
    return P, P @ v


def readable_backward(layer: MultiHeadAttention, q, k, v, P, dctx):
    """The products and softmax backward of MultiHeadAttention.backward (G = 1, no dropout)."""
    t = P.shape[-1]
    dv = P.swapaxes(-1, -2) @ dctx
    dS = softmax_backward(P.reshape(-1, t), (dctx @ v.swapaxes(-1, -2)).reshape(-1, t)).reshape(P.shape)
    dq = dS @ k
    dq *= layer.scale
    return dq, dS.swapaxes(-1, -2) @ q, dv


def _by_heads(fn, n_heads: int, rows: int) -> None:
    """fn(s) for slices s of ``rows`` heads, on every thread, whatever the size."""
    parallel_for(chunks(n_heads, 1, rows), fn)


def fused_forward(q, k, v, rows: int):
    b, h, t, hd = q.shape
    q3, k3, v3 = (a.reshape(-1, t, hd) for a in (q, k, v))
    P, ctx, future = np.empty((b * h, t, t), q.dtype), np.empty_like(q3), causal_mask(t)

    def heads(s: slice) -> None:
        Ps = P[s]
        np.matmul(q3[s], k3[s].swapaxes(-1, -2), out=Ps)
        np.copyto(Ps, -np.inf, where=future)
        Ps -= Ps.max(axis=-1, keepdims=True)
        np.exp(Ps, out=Ps)
        Ps /= Ps.sum(axis=-1, keepdims=True)
        np.matmul(Ps, v3[s], out=ctx[s])

    _by_heads(heads, b * h, rows)
    return P.reshape(b, h, t, t), ctx.reshape(q.shape)


def fused_backward(q, k, v, P, dctx, scale, rows: int):
    b, h, t, hd = q.shape
    q3, k3, v3, d3 = (a.reshape(-1, t, hd) for a in (q, k, v, dctx))
    P3 = P.reshape(-1, t, t)
    dq, dk, dv = np.empty_like(q3), np.empty_like(k3), np.empty_like(v3)

    def heads(s: slice) -> None:
        Ps = P3[s]
        np.matmul(Ps.swapaxes(-1, -2), d3[s], out=dv[s])
        dS = d3[s] @ v3[s].swapaxes(-1, -2)                      # dP, then dS in place
        dS -= (dS * Ps).sum(axis=-1, keepdims=True)
        dS *= Ps
        np.matmul(dS, k3[s], out=dq[s])
        dq[s] *= scale
        np.matmul(dS.swapaxes(-1, -2), q3[s], out=dk[s])

    _by_heads(heads, b * h, rows)
    return dq.reshape(q.shape), dk.reshape(q.shape), dv.reshape(q.shape)


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(case: str, threads_list: list[int], rows: int) -> None:
    """Check the bits, then print both forms' times per layer for one case."""
    b, h, t, hd = CASES[case]
    layer = MultiHeadAttention(h * hd, h * hd, t, 0.0, h)
    rng = np.random.default_rng(0)
    q, k, v, dctx = (rng.standard_normal((b, h, t, hd), dtype=np.float32) for _ in range(4))
    q *= layer.scale
    P, ctx = readable_forward(layer, q, k, v)
    same = [np.array_equal(a, c) for a, c in zip((P, ctx), fused_forward(q, k, v, rows), strict=True)]
    grads = readable_backward(layer, q, k, v, P, dctx)
    same += [np.array_equal(a, c) for a, c in
             zip(grads, fused_backward(q, k, v, P, dctx, layer.scale, rows), strict=True)]
    print(f"{case} (B={b}, H={h}, T={t}, hd={hd}): the same bits as the readable form: {all(same)}")
    repeats = 200 if t <= 64 else 20
    for threads in threads_list:
        set_threads(threads, use_torch=False)
        rf = median_ms(lambda: readable_forward(layer, q, k, v), repeats)
        ff = median_ms(lambda: fused_forward(q, k, v, rows), repeats)
        rb = median_ms(lambda: readable_backward(layer, q, k, v, P, dctx), repeats)
        fb = median_ms(lambda: fused_backward(q, k, v, P, dctx, layer.scale, rows), repeats)
        print(f"  {threads} thread(s), per layer: forward {rf:.3f} -> {ff:.3f} ms, backward {rb:.3f} -> "
              f"{fb:.3f} ms, saved {rf + rb - ff - fb:+.3f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "both"], default="both")
    parser.add_argument("--threads", type=int, choices=(1, 2), default=None, help="default: 1 and 2")
    parser.add_argument("--rows", type=int, default=4, help="heads per chunk (default 4)")
    args = parser.parse_args(argv)
    reuse_freed_memory()                                           # as the training loops do
    for case in CASES if args.case == "both" else [args.case]:
        measure(case, [args.threads] if args.threads else [1, 2], args.rows)


if __name__ == "__main__":
    main()
