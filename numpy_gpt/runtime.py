"""Process-wide speed settings, applied by entry points, never by ``import numpy_gpt``.

The command line (``numpy-gpt ...``), the benchmark and the scripts call ``configure()`` once at
start. Code that imports numpy_gpt as a library gets NumPy's defaults until it calls
``numpy_gpt.runtime.configure()`` itself; nothing in the layers, the model or the optimizer
changes how the process allocates memory or how many threads BLAS uses.

* ``set_threads(n)`` -- threads for NumPy's OpenBLAS, torch and ``numpy_gpt.fast.map_chunks``;
* ``reuse_freed_memory()`` -- keep freed memory in the process for the next allocation;
* ``blas_threads_sleep_sooner()`` -- NumPy's idle BLAS threads stop spinning after ~6 ms.

Why ``blas_threads_sleep_sooner`` pays: after a matrix product, OpenBLAS's worker threads spin on
their core for 2^28 cycles (~0.1 s) waiting for the next product. Between two products a training
step does elementwise work on the main thread (and on map_chunks' threads), and a spinning BLAS
thread takes a core from it; on this 2-core VM the small shakespeare-char model's step measured
82 ms with the default spin against 58 ms with a 2^24-cycle spin (docs/performance.md). OpenBLAS
reads OPENBLAS_THREAD_TIMEOUT when its threads start, so the function sets the variable, has
OpenBLAS read its environment again and stops its threads; the next product starts them anew with
the shorter spin. A value the user set in the environment is kept.

Why ``reuse_freed_memory`` pays (measured, docs/performance.md): a training step allocates the
same arrays every time, the logits and dlogits (B*T x 50257, 103 MB each for GPT-2 124M at B=2,
T=256), the weight gradients, every layer's activations. glibc's ``malloc`` hands requests above
its mmap threshold (at most 32 MB) to the kernel with ``mmap`` and gives them back on ``free``;
memory that comes fresh from the kernel is zeroed one 4 KB page at a time on first touch (a minor
page fault). On the 124M step that was about 138,000 page faults and 0.6-1.1 s of system time per
4-5 s step. ``mallopt(M_MMAP_MAX, 0)`` makes glibc serve every request from its heap, and a high
``M_TRIM_THRESHOLD`` keeps freed heap memory in the process, so from the second step on a step
runs with no page faults. The cost: memory a step freed stays mapped until the process exits (peak
RSS is what a step needs either way; +3 % measured for 124M). Only glibc (Linux) has ``mallopt``;
elsewhere the call does nothing and returns False. It affects the whole process, PyTorch's tensors
included, so the benchmark turns it on for both libraries alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from numpy_gpt.fast.threads import num_threads, openblas_library, set_threads

__all__ = ["blas_threads_sleep_sooner", "configure", "num_threads", "reuse_freed_memory", "set_threads"]

_M_TRIM_THRESHOLD = -1            # glibc's malloc.h parameter numbers
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2 ** 31 - 1     # return heap memory to the kernel only above 2 GB free at the top

_done = False


def reuse_freed_memory() -> bool:
    """Keep memory freed by NumPy arrays inside the process for the next allocation (glibc only).

    Returns True when the setting is active (now or from an earlier call), False where glibc's
    ``mallopt`` is unavailable (macOS, Windows, musl). Safe to call any number of times.
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


def blas_threads_sleep_sooner(log2_cycles: int = 24) -> bool:
    """Idle OpenBLAS threads spin 2^log2_cycles cycles instead of 2^28 (see the module docstring).
    Returns False when it cannot (another BLAS, or OPENBLAS_THREAD_TIMEOUT already set by the user)."""
    lib = openblas_library()
    if (lib is None or "OPENBLAS_THREAD_TIMEOUT" in os.environ
            or not (hasattr(lib, "openblas_read_env") and hasattr(lib, "blas_thread_shutdown_"))):
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(int(log2_cycles))
    lib.openblas_read_env()               # OpenBLAS reads its environment variables again
    lib.blas_thread_shutdown_()           # and its threads restart, with the new spin, at the next product
    return True


def configure(threads: int | None = None) -> None:
    """What the entry points call once at start: freed-memory reuse, idle BLAS threads that sleep
    after ~6 ms, and ``threads`` threads (for BLAS, torch and map_chunks) when given."""
    reuse_freed_memory()
    blas_threads_sleep_sooner()
    if threads is not None:
        set_threads(threads)
