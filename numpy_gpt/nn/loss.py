"""Softmax cross-entropy, the training loss of the book (chapter 5.1.2, ``calc_loss_batch``).

The book calls ``torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())``; here
one function returns both the loss and its gradient with respect to the logits, because the two
share almost all their work (the softmax), as llm.c's fused softmax-crossentropy does.
"""

from __future__ import annotations

import numpy as np


def log_softmax_at(logits: np.ndarray, targets: np.ndarray, *, with_softmax: bool = False):
    """log softmax(logits)[target] at every position: logits (..., V), targets (...) int -> (...).

        log p_t = z_t - logsumexp(z),   logsumexp(z) = m + log sum_j exp(z_j - m),   m = max_j z_j

    The row maximum is subtracted first, so every exponent is <= 0 and exp never overflows. This is
    numpy_gpt's one log-softmax at the targets: the cross-entropy below is its negative mean, DPO sums
    it over an answer (finetune/preference.py) and evaluation.py scores texts and choices with it.

    With ``with_softmax=True`` it returns (log p_t (...), softmax(logits) (..., V)): the softmax
    exp(z - m) / sum_j exp(z_j - m) shares every exp, and the gradients need it, since
    d log p_t / d z_j = [j = t] - p_j.
    """
    shifted = logits - logits.max(axis=-1, keepdims=True)           # (..., V), each row's max is 0
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=-1)                                      # (...)
    logp = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0] - np.log(sum_exp)
    return (logp, exp / sum_exp[..., None]) if with_softmax else logp


def softmax_and_nll(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For logits (N, V) and targets (N,): the negative log-likelihood of each row's target,
    -log softmax(logits)[target] = logsumexp(logits) - logits[target] (N,), and softmax(logits)
    (N, V), both from ``log_softmax_at``."""
    logp, probs = log_softmax_at(logits, targets, with_softmax=True)
    return -logp, probs


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
