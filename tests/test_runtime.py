"""numpy_gpt.runtime: reuse_freed_memory must stop the page faults of re-allocated big arrays.

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

import numpy as np
import pytest

import numpy_gpt
from numpy_gpt import runtime
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


def test_reuse_freed_memory_is_idempotent_and_exported():
    first = reuse_freed_memory()
    assert reuse_freed_memory() is first
    assert numpy_gpt.reuse_freed_memory is reuse_freed_memory


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_for_runs_every_item_once_and_reraises(threads, monkeypatch):
    monkeypatch.setattr(runtime, "_threads", threads)
    seen = []
    runtime.parallel_for(list(range(10)), lambda item, worker: seen.append((item, worker)))
    assert sorted(item for item, _ in seen) == list(range(10))
    assert {worker for _, worker in seen} == set(range(threads))
    seen.clear()                                         # a job below PARALLEL_MIN_SIZE: caller only
    runtime.parallel_for(list(range(10)), lambda item, worker: seen.append((item, worker)),
                         size=runtime.PARALLEL_MIN_SIZE - 1)
    assert sorted(seen) == [(item, 0) for item in range(10)]

    def fail(item, worker):
        if item == 7:
            raise KeyError("item 7")
    with pytest.raises(KeyError, match="item 7"):
        runtime.parallel_for(list(range(10)), fail)


def test_num_threads_follows_set_threads_then_the_environment(monkeypatch):
    monkeypatch.setattr(runtime, "_threads", None)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert runtime.num_threads() == 3
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.num_threads() == 2
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert runtime.num_threads() == (os.cpu_count() or 1)
    with pytest.raises(ValueError, match="at least 1 thread"):
        runtime.set_threads(0, use_torch=False)


def test_zero_grads_clears_every_gradient_on_any_thread_count(threads):
    from numpy_gpt.nn.module import ZERO_SLICE, Parameter, zero_grads
    params = [Parameter(np.ones(s, dtype=np.float32)) for s in [(3,), (2 * ZERO_SLICE + 5,), (4, 7)]]
    for p in params:
        p.grad[...] = 2.5
    zero_grads(params[:2])
    assert not params[0].grad.any() and not params[1].grad.any()
    assert (params[2].grad == 2.5).all()                 # only the parameters passed are cleared


def test_add_matmul_after_zero_grads_overwrites_stale_values_then_accumulates():
    from numpy_gpt.nn.module import Parameter, zero_grads
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    p = Parameter(np.zeros((3, 4)))
    p.grad[...] = 7.0                                    # a stale gradient from an earlier step
    zero_grads([p])
    p.add_matmul(a.T, b)                                 # written straight in: 0 + a.T b
    np.testing.assert_allclose(p.grad, a.T @ b, rtol=1e-12)
    p.add_matmul(a.T, b)                                 # no longer marked zero: adds
    np.testing.assert_allclose(p.grad, 2 * (a.T @ b), rtol=1e-12)
    q = Parameter(np.zeros((3, 4)))
    q.grad[...] = 1.0
    q.add_matmul(a.T, b)                                 # never zeroed: accumulates onto the 1s
    np.testing.assert_allclose(q.grad, 1.0 + a.T @ b, rtol=1e-12)
    zero_grads([q])
    q.grad += 0.5                                        # any other writer sees zeros first
    assert (q.grad == 0.5).all()


@pytest.mark.parametrize("code,env,expected", [
    ("import numpy_gpt", None, "24 24"),                         # numpy_gpt first: it sets 24
    ("import numpy_gpt", "26", "26 26"),                         # a value the user set wins
    ("import numpy; import numpy_gpt", None, "None None"),       # too late: OpenBLAS has read its env
])
def test_openblas_thread_timeout_is_set_before_numpy_loads(code, env, expected):
    environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env is not None:
        environ["OPENBLAS_THREAD_TIMEOUT"] = env
    probe = (f"{code}; import os; from numpy_gpt.runtime import openblas_thread_timeout; "
             f"print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), openblas_thread_timeout())")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environ,
                          check=True)
    assert done.stdout.strip() == expected
