"""Named kernels: the fast forms of layer formulas that pay, each equal to a readable function.

The lesson is in ``numpy_gpt/nn`` and ``numpy_gpt/optim.py``: each formula is a plain NumPy
expression that allocates a temporary per operation. Where that costs at least 3 % of a training
step, the caller runs the kernel here instead, in one line behind a switch, as nanoGPT's
``if self.flash:`` does (optim.py)::

    update = functools.partial(kernels.adamw_update if enabled("adamw") else adamw_update, ...)

``NUMPY_GPT_FAST=0`` or ``numpy_gpt.fast.disable()`` runs the readable forms (``numpy_gpt.fast``).

Each kernel gives the same bits as its readable function (``tests/test_kernels.py`` proves it on
float32 and float64, odd sizes, 1 and 2 threads). What makes it faster, in pure NumPy: the same
operations in the same order, written into preallocated scratch arrays (``out=``, ``*=``) instead
of a temporary per operation, over cache-sized chunks (``map_chunks``), so a chain of a dozen
passes streams each array from memory once, on ``num_threads()`` threads.

One kernel stays: AdamW's update, measured at about 4-5 % of a GPT-2 124M step at one thread and
9 % at two (docs/performance.md). Other kernels were written, equal bit for bit, and removed
because none saved 3 % of a step where it was measured:
* GELU forward and backward: 1-3 % of the shakespeare-char step at two threads, about 1 %
  elsewhere;
* the attention softmax and its backward, and the loss's softmax.
Their code is in git history: the parent of the commit "Remove the GELU, attention-softmax and
loss-softmax kernels". A fused attention core (scores, mask, softmax and both products over a
few heads at a time, as nanoGPT's ``if self.flash:``) was measured too and not added: it saved
under 2 % of a step (``scripts/bench_attention_core.py``, docs/performance.md).
"""

from __future__ import annotations

import math

import numpy as np

from numpy_gpt.fast import map_chunks


# -- AdamW's update (optim.py) ---------------------------------------------------------------------
def adamw_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *, lr: float, beta1: float,
                 beta2: float, eps: float, weight_decay: float, step: int) -> None:
    """Equals ``numpy_gpt.optim.adamw_update`` (same arguments, flat arrays, updated in place), with
    two scratch arrays per chunk instead of a temporary per operation."""
    decay, bias2 = 1.0 - lr * weight_decay, math.sqrt(1.0 - beta2 ** step)
    step_size = lr / (1.0 - beta1 ** step)

    def update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
        a, b = np.empty_like(w), np.empty_like(w)
        w *= decay
        m *= beta1
        np.multiply(g, 1.0 - beta1, out=a)
        m += a                                  # m = beta1 m + (1 - beta1) g
        v *= beta2
        np.multiply(g, g, out=a)
        a *= 1.0 - beta2
        v += a                                  # v = beta2 v + (1 - beta2) g^2
        np.sqrt(v, out=a)
        a /= bias2
        a += eps                                # sqrt(v_hat) + eps
        np.multiply(m, step_size, out=b)
        b /= a
        w -= b                                  # w -= lr m_hat / (sqrt(v_hat) + eps)

    map_chunks(update, w, g, m, v)
