"""Named kernels: the fast forms of a few layer formulas, each equal to a readable function in nn/.

The lesson is in ``numpy_gpt/nn`` and ``numpy_gpt/optim.py``: GELU's formula, the softmax, the
loss's softmax, AdamW's update, each a plain NumPy expression that allocates a temporary per
operation. A layer calls the kernel below instead, in one line behind a switch, as nanoGPT's
``if self.flash:`` does::

    y, t = kernels.gelu(x2d) if enabled("gelu") else gelu(x2d)

``NUMPY_GPT_FAST=0`` or ``numpy_gpt.fast.disable()`` runs the readable forms (``numpy_gpt.fast``).

Each kernel gives the same bits as its readable function (``tests/test_kernels.py`` proves it on
float32 and float64, odd shapes, 1 and 2 threads). What makes it faster, in pure NumPy:

* the same operations in the same order, written into preallocated arrays (``out=``, ``*=``), so
  no temporary is allocated per operation;
* the passes run over cache-sized chunks of rows (``map_chunks``), so a chain of eight passes
  streams the activation from memory once, not eight times, and on ``num_threads()`` threads;
* outputs written in place into the chunk's rows (no assembling copy), or into an input the
  caller owns and does not need any more (the scores, dP).

A kernel stays only if it saves at least 3 % of a training step (docs/performance.md has the
measured share of each).
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


# -- the attention softmax (nn/softmax.py, called by nn/attention.py) ------------------------------
def _softmax_in_place(s: np.ndarray) -> None:
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)


def softmax_(scores: np.ndarray) -> np.ndarray:
    """Equals ``numpy_gpt.nn.softmax.softmax(scores)`` over the last axis, computed in place: the
    scores are overwritten by the weights and returned (a copy is, when they are not C-contiguous).
    For the attention's scores, a temporary that nothing else reads (masked entries -inf get weight
    0, as in the readable form)."""
    scores = np.ascontiguousarray(scores)                   # itself when C-contiguous
    map_chunks(_softmax_in_place, scores.reshape(-1, scores.shape[-1]))
    return scores


def _softmax_backward_in_place(P: np.ndarray, dP: np.ndarray) -> None:
    dot = (dP * P).sum(axis=-1, keepdims=True)
    dP -= dot
    dP *= P


def softmax_backward_(P: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """Equals ``numpy_gpt.nn.softmax.softmax_backward(P, dP)`` over the last axis, computed in place:
    dP (P's shape) is overwritten by dS = P * (dP - sum(dP * P, -1)) and returned (a copy is, when
    it is not C-contiguous). dP must be a temporary of the caller (attention's dP)."""
    t, dP = P.shape[-1], np.ascontiguousarray(dP)
    map_chunks(_softmax_backward_in_place, P.reshape(-1, t), dP.reshape(-1, t))
    return dP


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


# -- the loss's softmax (nn/loss.py) ---------------------------------------------------------------
def _softmax_and_nll_into(logits: np.ndarray, targets: np.ndarray, nll: np.ndarray,
                          probs: np.ndarray) -> None:
    np.subtract(logits, logits.max(axis=1, keepdims=True), out=probs)    # shifted
    picked = probs[np.arange(len(targets)), targets]
    np.exp(probs, out=probs)
    sum_exp = probs.sum(axis=1)
    np.subtract(np.log(sum_exp), picked, out=nll)
    probs /= sum_exp[:, None]


def softmax_and_nll(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equals ``numpy_gpt.nn.loss.softmax_and_nll(logits, targets)`` for logits (N, V): (nll (N,),
    softmax (N, V)), the softmax written into one preallocated array, chunk by chunk."""
    nll, probs = np.empty(len(logits), dtype=logits.dtype), np.empty_like(logits)
    map_chunks(_softmax_and_nll_into, logits, targets, nll, probs)
    return nll, probs
