"""Softmax cross-entropy, the training loss of the book (chapter 5.1.2, ``calc_loss_batch``).

The book calls ``torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())``; here
one function returns both the loss and its gradient with respect to the logits, because the two
share almost all their work (the softmax), as llm.c's fused softmax-crossentropy does.
"""

from __future__ import annotations

import numpy as np


def softmax_and_nll(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For logits (N, V) and targets (N,): the negative log-likelihood of each row's target,
    -log softmax(logits)[target] = logsumexp(logits) - logits[target] (N,), and softmax(logits)
    (N, V). The row maximum is subtracted first, so exp never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)            # (N, V), each row's max is 0
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)                                       # (N,)
    nll = np.log(sum_exp) - shifted[np.arange(len(targets)), targets]
    return nll, exp / sum_exp[:, None]


def cross_entropy(logits: np.ndarray, targets: np.ndarray,
                  ignore_index: int = -100) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of ``targets`` under softmax(``logits``), and dLoss/dlogits.

    logits (..., V) floating, e.g. (B, T, V) or (N, V); targets integer with shape logits.shape[:-1].
    Positions whose target equals ``ignore_index`` (the book's -100 for instruction padding)
    contribute nothing and the mean runs over the N_valid other positions:

        loss    = mean over valid rows of  logsumexp(logits_row) - logits_row[target]
        dlogits = (softmax(logits_row) - onehot(target)) / N_valid,  rows with ignored targets 0.

    Why (softmax - onehot): with p = softmax(z), -log p_t = logsumexp(z) - z_t, and
    d logsumexp(z) / d z_j = exp(z_j) / sum_k exp(z_k) = p_j, while d z_t / d z_j = [j = t].

    dlogits has the logits' dtype; the loss is returned as a Python float (accumulated in float64
    over the N rows).

    A batch in which every target is ``ignore_index`` has no loss to average (PyTorch returns nan):
    it raises ValueError instead, naming the cause. Targets outside [0, V) that are not
    ``ignore_index``, non-integer targets and mismatched shapes also raise.
    """
    if not isinstance(logits, np.ndarray) or not np.issubdtype(logits.dtype, np.floating):
        raise TypeError(f"logits must be a floating-point ndarray, got "
                        f"{getattr(logits, 'dtype', type(logits).__name__)}")
    targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must be integer token ids, got dtype {targets.dtype}")
    if logits.ndim < 2 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have shape (..., V) with at least one leading axis and V > 0, "
                         f"e.g. (B, T, V) or (N, V); got {logits.shape}")
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"targets shape {targets.shape} must equal logits shape without its last "
                         f"axis {logits.shape[:-1]} (logits {logits.shape})")
    V = logits.shape[-1]
    logits2d = logits.reshape(-1, V)                                # (N, V)
    t = targets.reshape(-1)                                         # (N,)
    valid = t != ignore_index                                       # (N,)
    bad = valid & ((t < 0) | (t >= V))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IndexError(f"target {t[i]} at position {tuple(map(int, np.unravel_index(i, targets.shape)))}"
                         f" is outside [0, {V}) and is not ignore_index={ignore_index}")
    n_valid = int(valid.sum())
    if n_valid == 0:
        raise ValueError(f"every target equals ignore_index={ignore_index}, so there is no token to "
                         f"compute the loss on; drop this batch or check how targets are masked "
                         f"and truncated")

    t_safe = np.where(valid, t, 0)                                  # any in-range index for ignored rows
    nll, probs = softmax_and_nll(logits2d, t_safe)                  # (N,), (N, V)
    loss = float(nll.sum(where=valid, dtype=np.float64)) / n_valid  # accumulated in float64

    dlogits = probs                                                 # (N, V): softmax - onehot(target)
    dlogits[np.flatnonzero(valid), t[valid]] -= 1.0
    dlogits /= logits.dtype.type(n_valid)                           # the mean's 1/N_valid
    if n_valid < t.size:
        dlogits[~valid] = 0.0                                       # ignored rows get no gradient
    return loss, dlogits.reshape(logits.shape)
