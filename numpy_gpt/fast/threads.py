"""Process-wide settings that make NumPy training faster without touching the maths.

* ``set_threads(n)`` / ``num_threads()`` -- the number of threads of NumPy's OpenBLAS (and of
  torch, for side-by-side benchmarks) and of numpy_gpt's own elementwise work;
* ``parallel_for(items, fn)`` -- run ``fn`` over independent pieces of an elementwise job (AdamW's
  update, GELU, dropout, the softmaxes of attention and of the loss) on ``num_threads()`` threads.
  NumPy releases the GIL inside its ufunc loops, so Python threads do run ufuncs on separate
  cores; BLAS already threads the matmuls, but every other NumPy operation is single-threaded;
* ``reuse_freed_memory()`` -- keep freed memory in the process instead of returning it to the
  kernel after every step. The CLI, ``train_model``/``train_model_simple`` and ``numpy-gpt bench``
  call it;
* ``openblas_thread_timeout()`` -- how long NumPy's idle BLAS threads spin, which numpy_gpt sets
  when it is imported (below).

``reuse_freed_memory()``, or why a training step spends a fifth of its time in the kernel
otherwise:

A training step allocates the same arrays every time: the logits and dlogits (B*T x 50257, 103 MB
each for GPT-2 124M at B=2, T=256), the gradient product of the output head (154 MB), every
layer's activations. glibc's ``malloc`` hands requests above its mmap threshold (at most 32 MB)
straight to the kernel with ``mmap`` and gives them back with ``munmap`` on ``free``; between
those, the threshold adapts, and the top of the heap is returned to the kernel once more than
``M_TRIM_THRESHOLD`` bytes lie free there. Memory that comes fresh from the kernel is zeroed one
4 KB page at a time on first touch (a "minor page fault"). Measured with ``getrusage`` on the 124M
step: about 138,000 page faults and 0.6-1.1 s of system time per 4-5 s step; on nanoGPT's
shakespeare-char model, 11,000 faults and about a fifth of the step.

``mallopt(M_MMAP_MAX, 0)`` makes glibc serve every request from its heap, and a high
``M_TRIM_THRESHOLD`` keeps freed heap memory in the process, so from the second step on the same
addresses are reused and a step runs with no page faults at all. The cost is that memory freed by
a step stays mapped to the process until it exits (peak RSS is what a step needs either way;
measured +3 % for 124M).

Only glibc (Linux) has ``mallopt``; elsewhere the function does nothing and returns False. It
changes how the whole process allocates, PyTorch's CPU tensors included, so ``numpy-gpt bench``
turns it on for both libraries alike.

Idle BLAS threads, or why ``import numpy_gpt`` sets ``OPENBLAS_THREAD_TIMEOUT=24``:

After a matrix product, OpenBLAS's worker threads do not sleep at once: they spin on their core,
waiting for the next product, for 2^28 cycles by default (~0.1 s at 2.8 GHz), which keeps the
next product from paying for waking them. But most of a training step between two products is
elementwise work that numpy_gpt spreads over its own threads (``parallel_for``), and a spinning
BLAS thread takes a core from them: measured (best of 12), AdamW over 47M parameters took 136-153
ms right after a product, 105-115 ms with a 2^20-2^24-cycle spin. It also takes a core from
anything else in the process, PyTorch included (``numpy-gpt bench`` pauses before every timed step
for that reason).
At 2^24 cycles (~6 ms) the threads are still awake from one product to the next within a layer,
and asleep during AdamW and the longer elementwise passes; a shorter timeout (2^20-2^22) made the
small shakespeare-char model slower, because waking a sleeping thread on this VM costs 0.1-0.3 ms
per product. OpenBLAS reads the variable once, when NumPy loads it, so ``numpy_gpt/__init__.py``
sets it (unless it is already set) before anything imports NumPy. Imported after NumPy, numpy_gpt
cannot change it; ``openblas_thread_timeout()`` then returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from numpy_gpt import _openblas_env

_M_TRIM_THRESHOLD = -1            # glibc's malloc.h parameter numbers
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2 ** 31 - 1     # an int: return heap memory to the kernel only above 2 GB free at the top

BLOCK = 65536                     # elements per piece of an elementwise job: a few such arrays fit in L2
PARALLEL_MIN_SIZE = 1 << 20       # parallel_for runs smaller jobs on one thread (see there)

_done = False
_threads: int | None = None       # set by set_threads; None: from the environment
_pool: ThreadPoolExecutor | None = None   # the n - 1 helpers of parallel_for (worker 0 is the caller)
_pool_size = 0
T = TypeVar("T")


def reuse_freed_memory() -> bool:
    """Keep memory freed by NumPy arrays inside the process for the next allocation (glibc only).

    Returns True when the setting is active (now or from an earlier call), False where glibc's
    ``mallopt`` is unavailable (macOS, Windows, musl). Safe to call any number of times. The
    module docstring says why this makes training steps faster.
    """
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success, 0 on error.
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done


def openblas_thread_timeout() -> int | None:
    """OPENBLAS_THREAD_TIMEOUT as NumPy's OpenBLAS read it when it was loaded (log2 of the cycles an
    idle BLAS thread spins; the module docstring says why numpy_gpt sets 24), or None if unknown:
    NumPy was imported before numpy_gpt and the variable was not set, so OpenBLAS spins for its
    default 2^28 cycles."""
    value = os.environ.get("OPENBLAS_THREAD_TIMEOUT", "")
    if _openblas_env.numpy_loaded_first and not value:
        return None
    return int(value) if value.strip().isdigit() else None


def set_threads(n: int, use_torch: bool = True) -> bool:
    """Use ``n`` threads in NumPy's OpenBLAS and in torch, so both libraries get the same number.

    ``n`` is also the number of threads numpy_gpt's ``parallel_for`` uses from now on.

    NumPy has no API for this; its bundled OpenBLAS exports a setter, which we call through
    ctypes (the library is already loaded, so this reaches the same copy). Returns False when
    the setter is not found (another BLAS): then numpy keeps its own count (OPENBLAS_NUM_THREADS).
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
    libs = Path(np.__file__).parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        lib = ctypes.CDLL(str(path))
        for symbol in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                       "openblas_set_num_threads"):
            if hasattr(lib, symbol):
                getattr(lib, symbol)(ctypes.c_int(n))
                return True
    return False


def num_threads() -> int:
    """Threads for ``parallel_for``: the last ``set_threads(n)``, else OPENBLAS_NUM_THREADS or
    OMP_NUM_THREADS from the environment (the tests set 1), else the number of CPU cores."""
    if _threads is not None:
        return _threads
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return os.cpu_count() or 1


def slices(size: int, step: int) -> list[slice]:
    """Consecutive slices of ``step`` elements (the last one shorter) covering range(size): the
    pieces of a flat array that ``parallel_for`` hands out, or that a loop keeps in cache."""
    return [slice(start, min(start + step, size)) for start in range(0, size, step)]


def row_slices(n_rows: int, row_size: int, block: int = BLOCK) -> list[slice]:
    """Slices of whole rows of an (n_rows, row_size) array, about ``block`` elements each (at least
    one row): the pieces of a row-wise job (a softmax over rows) for ``parallel_for``."""
    return slices(n_rows, max(1, block // max(row_size, 1)))


def parallel_for(items: Sequence[T], fn: Callable[[T, int], None], size: int | None = None) -> None:
    """Call ``fn(item, worker)`` for every item, the items dealt round-robin to ``num_threads()``
    workers (``worker`` in [0, n) lets fn pick its own scratch buffer). Worker 0 is the calling
    thread. The items must be independent (disjoint slices of the arrays they write); the result
    is then the same for any thread count. An exception in any worker is re-raised here.

    ``size`` is the number of array elements the whole job touches. Jobs below
    ``PARALLEL_MIN_SIZE`` run on the calling thread alone: handing work to a sleeping thread
    costs 0.1-0.3 ms here, more than a small job saves (measured on the shakespeare-char model,
    whose arrays are 50K-400K elements: 80-89 ms per step on one thread against 90-93 ms on two).
    """
    global _pool, _pool_size
    n = min(num_threads(), len(items))
    if size is not None and size < PARALLEL_MIN_SIZE:
        n = 1
    if n <= 1:
        for item in items:
            fn(item, 0)
        return

    def work(worker: int) -> None:
        for item in items[worker::n]:
            fn(item, worker)

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
