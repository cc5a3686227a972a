"""numpy_gpt.runtime, the entry points' settings: reuse_freed_memory must stop the page faults of
re-allocated big arrays.

Measured in fresh child processes (the setting is process-wide) with getrusage's minor-fault
count, which the kernel keeps. With numpy's huge-page hint off a page is 4 KB, so a 64 MB array is
16,384 pages: allocating and filling it five more times costs about 80,000 faults when glibc
returns it to the kernel on free, and ~none when the memory stays in the process. The control run
without the call shows the check can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from numpy_gpt import runtime
from numpy_gpt.fast import threads as machinery
from numpy_gpt.runtime import reuse_freed_memory

CHILD = r"""
import json, resource, sys
import numpy as np
from numpy_gpt.runtime import reuse_freed_memory
active = reuse_freed_memory() if sys.argv[1] == "on" else False
# numpy asks the kernel for 2 MB pages on big arrays where it can; whether it gets them depends on
# the machine, so count in 4 KB pages. (This changes the cost of each fault, not whether one occurs.)
getattr(np._core.multiarray, "_set_madvise_hugepage", lambda enabled: None)(False)
a = np.ones(16 * 1024 * 1024, dtype=np.float32)      # 64 MB, above glibc's largest mmap threshold
del a
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    a = np.ones(16 * 1024 * 1024, dtype=np.float32)
    del a
print(json.dumps({"active": active, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""

PAGES = 5 * 16 * 1024 * 1024 * 4 // 4096                 # pages touched by the five re-allocations


def _child(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and ru_minflt: Linux only")
def test_reuse_freed_memory_removes_page_faults():
    off, on = _child("off"), _child("on")
    if not on["active"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert off["faults"] > PAGES // 2, off           # control: every re-allocation faults its pages in
    assert on["faults"] < PAGES // 50, on            # reused: (almost) no page faults


def test_reuse_freed_memory_is_idempotent():
    first = reuse_freed_memory()
    assert reuse_freed_memory() is first


def test_importing_numpy_gpt_changes_no_process_setting():
    """The speed settings are the entry points' to apply: a library import leaves malloc, the BLAS
    environment and the thread count as they were."""
    probe = ("import os, numpy_gpt, numpy_gpt.runtime as r; "
             "print(r._done, os.environ.get('OPENBLAS_THREAD_TIMEOUT'), r.num_threads.__module__)")
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environ,
                          check=True)
    assert done.stdout.split() == ["False", "None", "numpy_gpt.fast.threads"]


def test_num_threads_follows_set_threads_then_the_environment(monkeypatch):
    monkeypatch.setattr(machinery, "_threads", None)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert runtime.num_threads() == 3
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert runtime.num_threads() == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="at least 1 thread"):
        runtime.set_threads(0, use_torch=False)


def test_configure_makes_idle_blas_threads_sleep_sooner_and_keeps_a_users_value():
    """After configure(), OpenBLAS re-read OPENBLAS_THREAD_TIMEOUT=24 and restarted its threads;
    a value the user exported is left as it is. Checked in child processes (process-wide)."""
    probe = ("import os; import numpy as np; from numpy_gpt import runtime; "
             "done = runtime.blas_threads_sleep_sooner(); a = np.ones((300, 300), np.float32); a @ a; "
             "print(done, os.environ.get('OPENBLAS_THREAD_TIMEOUT'))")
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environ,
                          check=True)
    if done.stdout.split()[0] == "False":
        pytest.skip("NumPy's BLAS is not the bundled OpenBLAS")
    assert done.stdout.split() == ["True", "24"]
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**environ, "OPENBLAS_THREAD_TIMEOUT": "26"}, check=True)
    assert done.stdout.split() == ["False", "26"]
