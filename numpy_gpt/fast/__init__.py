"""Speed beside the lesson: the switch, the named kernels and the thread machinery.

The lesson (``numpy_gpt/nn``, ``optim.py``) writes its maths as plain NumPy functions (GELU's
formula, a row-wise softmax, AdamW's update) and calls them. Where a faster form of the same bits
saves at least 3 % of a training step, it is a named kernel in ``numpy_gpt.fast.kernels``, called
in one line behind a switch beside the readable call, as nanoGPT's ``if self.flash:`` is:

    update = functools.partial(kernels.adamw_update if enabled("adamw") else adamw_update, ...)

``enabled(name)`` is True by default; ``NUMPY_GPT_FAST=0`` in the environment, or ``disable()``,
runs the readable forms everywhere (``disable("adamw")`` one kernel; ``enable()`` undoes it).
The lesson may import only ``enabled`` and ``kernels`` from here (tests/test_import_rules.py).

The kernels run their passes through ``map_chunks``:

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
plain call on 1 and 2 threads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import numpy as np

from numpy_gpt.fast.threads import CHUNK, chunks, num_threads, parallel_for, set_threads

__all__ = ["CHUNK", "KERNELS", "disable", "enable", "enabled", "map_chunks", "num_threads", "readable",
           "set_threads"]

# The kernels a caller can switch on its one line (numpy_gpt/fast/kernels.py): the ones that pay.
KERNELS = ("adamw",)
_disabled: set[str] = set(KERNELS) if os.environ.get("NUMPY_GPT_FAST", "1").strip() == "0" else set()


def enabled(name: str | None = None) -> bool:
    """Whether the layers run the named kernel ``name`` (one of KERNELS), or, without a name,
    whether every kernel is on. On by default; ``NUMPY_GPT_FAST=0`` turns all of them off."""
    if name is None:
        return not _disabled
    if name not in KERNELS:
        raise ValueError(f"unknown kernel {name!r}; the kernels are {', '.join(KERNELS)}")
    return name not in _disabled


def _names(names: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in KERNELS]
    if unknown:
        raise ValueError(f"unknown kernel(s) {unknown}; the kernels are {', '.join(KERNELS)}")
    return names or KERNELS


def disable(*names: str) -> None:
    """Run the readable forms instead of the named kernels (all of them when no name is given)."""
    _disabled.update(_names(names))


def enable(*names: str) -> None:
    """Run the named kernels again (all of them when no name is given)."""
    _disabled.difference_update(_names(names))


@contextlib.contextmanager
def readable(*names: str) -> Iterator[None]:
    """Inside the block the named kernels (all of them when no name is given) are off and the
    layers run their readable forms; afterwards the switch is as it was."""
    before = set(_disabled)
    disable(*names)
    try:
        yield
    finally:
        _disabled.clear()
        _disabled.update(before)


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
