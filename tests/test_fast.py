"""numpy_gpt.fast.map_chunks equals the plain call of the function it is given, on 1 and 2 threads,
for every function the layers hand it; and the thread pool runs every chunk once."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from numpy_gpt.fast import map_chunks
from numpy_gpt.fast import threads as machinery
from numpy_gpt.nn.gelu import gelu, gelu_backward
from numpy_gpt.nn.loss import softmax_and_nll
from numpy_gpt.nn.softmax import softmax, softmax_backward
from numpy_gpt.optim import adamw_update

rng = np.random.default_rng(0)
X = rng.standard_normal((300, 37)).astype(np.float32)           # 300 rows: many chunks of 64 elements
Y = rng.standard_normal((300, 37)).astype(np.float32)


def _same(a, b):
    a, b = (a if isinstance(a, tuple) else (a,)), (b if isinstance(b, tuple) else (b,))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("fn,args", [
    (gelu, (X,)),
    (gelu_backward, (X, np.tanh(X), Y)),
    (softmax, (X,)),
    (softmax_backward, (softmax(X), Y)),
    (softmax_and_nll, (X, rng.integers(0, 37, 300))),
    (lambda a: a.reshape(-1) * 2, (X.reshape(-1),)),                # flat elementwise arrays
], ids=["gelu", "gelu_backward", "softmax", "softmax_backward", "softmax_and_nll", "flat"])
def test_map_chunks_equals_the_plain_call(fn, args, threads):
    _same(map_chunks(fn, *args), fn(*args))


def test_in_place_update_equals_the_plain_call(threads):
    """AdamW's update writes into its arguments and returns None: chunked, the same bits."""
    w, g, m, v = (rng.standard_normal(5000).astype(np.float32) for _ in range(4))
    v = np.abs(v)
    update = functools.partial(adamw_update, lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8,
                               weight_decay=0.1, step=3)
    plain = [a.copy() for a in (w, g, m, v)]
    update(*plain)
    assert map_chunks(update, w, g, m, v) is None
    for a, b in zip((w, g, m, v), plain, strict=True):
        np.testing.assert_array_equal(a, b)


def test_map_chunks_rejects_arrays_of_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        map_chunks(np.add, X, X[:10])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_for_runs_every_item_once_and_reraises(threads, monkeypatch):
    monkeypatch.setattr(machinery, "_threads", threads)
    seen = []
    machinery.parallel_for(list(range(10)), seen.append)
    assert sorted(seen) == list(range(10))

    def fail(item):
        if item == 7:
            raise KeyError("item 7")
    with pytest.raises(KeyError, match="item 7"):
        machinery.parallel_for(list(range(10)), fail)


def test_chunks_cover_every_row_once():
    pieces = machinery.chunks(1000, 37, chunk=64)
    covered = np.concatenate([np.arange(1000)[s] for s in pieces])
    np.testing.assert_array_equal(covered, np.arange(1000))
    assert all(s.stop - s.start == 1 for s in machinery.chunks(5, 10_000, chunk=64))   # >= 1 row
