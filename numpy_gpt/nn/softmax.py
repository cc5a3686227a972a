"""Softmax and its backward, the one row-wise operation at the heart of attention (chapter 3.3)
and of the loss (chapter 5.1).

softmax turns a row of scores into weights that are positive and sum to 1:

    P_j = exp(S_j) / sum_k exp(S_k)

Its Jacobian within a row is dP_i/dS_j = P_i (delta_ij - P_j), so for dP = dL/dP

    dS_j = sum_i dP_i P_i (delta_ij - P_j) = P_j (dP_j - sum_i dP_i P_i),

that is dS = P * (dP - sum(dP * P, -1)): no (T x T) Jacobian is ever formed.
"""

from __future__ import annotations

import numpy as np


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis. Subtracting each row's max first changes nothing mathematically
    but keeps exp() from overflowing; a -inf score gets weight exactly 0."""
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(P: np.ndarray, dP: np.ndarray) -> np.ndarray:
    """Given P = softmax(S) over the last axis and dP = dL/dP, return dL/dS = P * (dP - sum(dP * P, -1))."""
    return P * (dP - (dP * P).sum(axis=-1, keepdims=True))
