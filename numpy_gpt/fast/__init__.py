"""Speed beside the lesson: the one bridge between the readable layers and the thread machinery.

A layer in ``numpy_gpt/nn`` writes its maths as a plain NumPy function (GELU's formula, a row-wise
softmax, AdamW's update) and may hand that same function to ``map_chunks`` in one line:

    y = map_chunks(gelu, x)          # the same as y = gelu(x), on every core

``map_chunks(fn, *arrays)`` cuts the arrays along their first axis into chunks of about ``CHUNK``
elements, calls ``fn`` on each chunk (on ``num_threads()`` threads) and assembles the results. It
equals ``fn(*arrays)`` whenever fn treats the rows of its inputs independently: an elementwise
formula (pass flat arrays) or a row-wise one such as a softmax over the last axis. Two things make
it faster than the plain call:

* cache: a formula of ten elementwise passes over a 6 MB activation streams it from memory ten
  times; chunk by chunk, the passes run on data that stays in the CPU's cache;
* cores: NumPy's ufuncs use one core; the chunks are independent, so threads run them at once
  (NumPy releases the GIL inside ufunc loops).

The measured value is in docs/performance.md. ``tests/test_fast.py`` proves map_chunks equals the
plain call on 1 and 2 threads for every function the layers hand it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from numpy_gpt.fast.threads import CHUNK, chunks, num_threads, parallel_for, set_threads

__all__ = ["CHUNK", "map_chunks", "num_threads", "set_threads"]


def map_chunks(fn: Callable[..., np.ndarray | tuple[np.ndarray, ...] | None], *arrays: np.ndarray,
               chunk: int = CHUNK):
    """fn(*arrays), computed chunk by chunk along axis 0 on ``num_threads()`` threads.

    All arrays must have the same length along axis 0. ``fn`` receives views of the same rows of
    each array and returns an array with those rows (or a tuple of such arrays), or None when it
    writes its results into the views it was given (an in-place update such as AdamW's). The
    result is then assembled into arrays of the full length (or None is returned).
    """
    n_rows = len(arrays[0])
    if any(len(a) != n_rows for a in arrays):
        raise ValueError(f"map_chunks: arrays differ in length along axis 0: {[a.shape for a in arrays]}")
    row_size = arrays[0][0].size if n_rows else 1
    pieces = chunks(n_rows, row_size, chunk)
    if len(pieces) <= 1:
        return fn(*arrays)
    out: list = []

    def run(s: slice) -> None:
        result = fn(*(a[s] for a in arrays))
        if result is not None:
            for full, part in zip(out, result if isinstance(result, tuple) else (result,), strict=True):
                full[s] = part

    # The first chunk runs alone: its results give the dtype and row shape of the outputs.
    first = fn(*(a[pieces[0]] for a in arrays))
    if first is not None:
        firsts = first if isinstance(first, tuple) else (first,)
        out = [np.empty((n_rows, *r.shape[1:]), dtype=r.dtype) for r in firsts]
        for full, part in zip(out, firsts, strict=True):
            full[pieces[0]] = part
    parallel_for(pieces[1:], run, size=n_rows * row_size)
    if first is None:
        return None
    return tuple(out) if isinstance(first, tuple) else out[0]
