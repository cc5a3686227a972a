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

Two kernels stay, each measured to save at least 3 % of a step in fresh processes, A B B A
(docs/performance.md): AdamW's update (about 5 % of a GPT-2 124M step at one thread, 9 % at two)
and GELU's forward and backward (about 4 % of the shakespeare-char step at two threads; about 1 %
at one thread and on 124M). The attention softmax and its backward and the loss's softmax were
written as kernels too and removed: none saved 3 % anywhere it was measured (the code is in git
history: the parent of the commit "Remove the GELU, attention-softmax and loss-softmax kernels").
"""

from __future__ import annotations

import math

import numpy as np

from numpy_gpt.fast import map_chunks

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)      # nn/gelu.py's constant (a Python float: no upcast)
GELU_CUBIC = 0.044715


# -- GELU (nn/gelu.py) -----------------------------------------------------------------------------
def _gelu_into(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> None:
    np.multiply(x, GELU_CUBIC, out=t)           # t = sqrt(2/pi) (x + 0.044715 x^3), op for op
    t *= x
    t *= x
    t += x
    t *= SQRT_2_OVER_PI
    np.tanh(t, out=t)                           # t = tanh(u)
    np.add(t, 1.0, out=y)                       # y = 0.5 x (1 + t): halving is exact
    y *= x
    y *= 0.5


def gelu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equals ``numpy_gpt.nn.gelu.gelu(x)`` for x (N, C): (y, t = tanh(u)), in two preallocated
    arrays filled chunk by chunk."""
    y, t = np.empty_like(x), np.empty_like(x)
    map_chunks(_gelu_into, x, y, t)
    return y, t


def _gelu_backward_into(x: np.ndarray, t: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> None:
    np.multiply(x, 3 * GELU_CUBIC, out=dx)      # dx = du/dx = sqrt(2/pi) (1 + 3 0.044715 x^2)
    dx *= x
    dx += 1.0
    dx *= SQRT_2_OVER_PI
    s = np.multiply(t, t)                       # s = 0.5 x (1 - t^2) du/dx
    np.subtract(1.0, s, out=s)
    s *= x
    s *= 0.5
    s *= dx
    np.add(t, 1.0, out=dx)                      # dx = dy (0.5 (1 + t) + s)
    dx *= 0.5
    dx += s
    dx *= dy


def gelu_backward(x: np.ndarray, t: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Equals ``numpy_gpt.nn.gelu.gelu_backward(x, t, dy)`` for (N, C) arrays: dL/dx, into one
    preallocated array."""
    dx = np.empty_like(dy)
    map_chunks(_gelu_backward_into, x, t, dy, dx)
    return dx



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
