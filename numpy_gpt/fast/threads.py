"""The thread machinery behind ``map_chunks``: how many threads, and the pool that runs the chunks.

NumPy's ufuncs (``+``, ``*``, ``np.exp``, ``np.tanh`` ...) run on one core, while its matrix
products use every core through BLAS. A training step spends a third to a half of its time in
elementwise work (GELU, softmaxes, dropout, AdamW), so on a laptop with 8 cores that part would use
one of them. NumPy releases the GIL inside its ufunc loops, so plain Python threads do run ufuncs
on separate cores: ``map_chunks`` (in ``numpy_gpt.fast``) cuts a job into independent chunks and
deals them out to ``num_threads()`` threads here.

* ``set_threads(n)`` / ``num_threads()`` -- the thread count, for NumPy's OpenBLAS (and torch, for
  side-by-side benchmarks) and for the chunks;
* ``parallel_for(items, fn)`` -- call ``fn(item)`` on every item, spread over the threads;
* ``chunks(n_rows, row_size)`` -- slices of whole rows, about ``CHUNK`` elements each.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

CHUNK = 65536                     # elements per chunk: a few such float32 arrays fit in L2 cache
PARALLEL_MIN_SIZE = 1 << 20       # jobs smaller than this run on the calling thread (see parallel_for)

_threads: int | None = None       # set by set_threads; None: from the environment
_pool: ThreadPoolExecutor | None = None   # the n - 1 helpers of parallel_for (worker 0 is the caller)
_pool_size = 0
T = TypeVar("T")


def set_threads(n: int, use_torch: bool = True) -> bool:
    """Use ``n`` threads in NumPy's OpenBLAS, in torch and in ``map_chunks``.

    NumPy has no API for its BLAS thread count; its bundled OpenBLAS exports a setter, which we call
    through ctypes (the library is already loaded, so this reaches the same copy). Returns False
    when the setter is not found (another BLAS): NumPy then keeps OPENBLAS_NUM_THREADS.
    """
    global _threads
    if n < 1:
        raise ValueError(f"set_threads needs at least 1 thread, got {n}")
    _threads = int(n)
    if use_torch:
        try:
            import torch
        except ImportError:
            pass
        else:
            torch.set_num_threads(n)
    lib = openblas_library()
    for symbol in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                   "openblas_set_num_threads"):
        if lib is not None and hasattr(lib, symbol):
            getattr(lib, symbol)(ctypes.c_int(n))
            return True
    return False


def openblas_library() -> ctypes.CDLL | None:
    """The OpenBLAS that NumPy's wheel bundles (already loaded, so this reaches the same copy), or
    None for another BLAS."""
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    paths = sorted(libs.glob("*openblas*"))
    return ctypes.CDLL(str(paths[0])) if paths else None


def num_threads() -> int:
    """The last ``set_threads(n)``, else OPENBLAS_NUM_THREADS or OMP_NUM_THREADS from the
    environment (the tests set 1), else the number of CPU cores."""
    if _threads is not None:
        return _threads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def chunks(n_rows: int, row_size: int, chunk: int = CHUNK) -> list[slice]:
    """Slices of whole rows of an (n_rows, row_size) array, about ``chunk`` elements each (at least
    one row per slice), covering range(n_rows)."""
    step = max(1, chunk // max(row_size, 1))
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


def parallel_for(items: Sequence[T], fn: Callable[[T], None], size: int | None = None) -> None:
    """Call ``fn(item)`` for every item, the items dealt round-robin to ``num_threads()`` threads
    (the calling thread is one of them). The items must be independent (disjoint slices of the
    arrays they write); the result is then the same for any thread count. An exception in any
    thread is re-raised here.

    ``size`` is the number of elements the whole job touches. Jobs below ``PARALLEL_MIN_SIZE``
    run on the calling thread alone: waking a sleeping thread costs 0.1-0.3 ms on this VM, more
    than a small job saves (the shakespeare-char model's arrays are 50K-400K elements).
    """
    global _pool, _pool_size
    n = min(num_threads(), len(items))
    if size is not None and size < PARALLEL_MIN_SIZE:
        n = 1
    if n <= 1:
        for item in items:
            fn(item)
        return

    def work(worker: int) -> None:
        for item in items[worker::n]:
            fn(item)

    if _pool is None or _pool_size < n - 1:
        if _pool is not None:
            _pool.shutdown(wait=False)                # its threads exit once idle
        _pool, _pool_size = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="numpy_gpt"), n - 1
    futures = [_pool.submit(work, worker) for worker in range(1, n)]
    try:
        work(0)
    finally:
        for future in futures:
            future.result()
