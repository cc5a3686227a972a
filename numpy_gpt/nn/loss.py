"""Softmax cross-entropy, the training loss of the book (chapter 5.1.2, ``calc_loss_batch``).

The book calls ``torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())``; here
one function returns both the loss and its gradient with respect to the logits, because the two
share almost all their work (the softmax), as llm.c's fused softmax-crossentropy does.
"""

from __future__ import annotations

import numpy as np

from numpy_gpt.runtime import parallel_for, row_slices


def cross_entropy(logits: np.ndarray, targets: np.ndarray,
                  ignore_index: int = -100) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of ``targets`` under softmax(``logits``), and dLoss/dlogits.

    logits (..., V) floating, e.g. (B, T, V) or (N, V); targets integer with shape logits.shape[:-1].
    Positions whose target equals ``ignore_index`` (the book's -100 for instruction padding)
    contribute nothing and the mean runs over the N_valid other positions:

        loss    = mean over valid rows of  logsumexp(logits_row) - logits_row[target]
        dlogits = (softmax(logits_row) - onehot(target)) / N_valid,  rows with ignored targets 0.

    The log-softmax subtracts each row's maximum first, so exp never overflows. Memory: dlogits is
    the only full-size array created (exp is computed in place into it); it has the logits' dtype.
    The loss is returned as a Python float (accumulated in float64 over the N rows).

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
    logits2d = np.asarray(logits2d, order="C")
    dlogits = np.empty_like(logits2d)                               # (N, V)
    target_shifted = np.empty(len(t), dtype=logits2d.dtype)         # (N,) logit of the target - max
    sum_exp = np.empty((len(t), 1), dtype=logits2d.dtype)           # (N, 1)

    def softmax_rows(s: slice, worker: int) -> None:
        # A few rows at a time (on parallel_for's threads), so they stay in cache through the passes.
        d = dlogits[s]
        np.subtract(logits2d[s], logits2d[s].max(axis=1, keepdims=True), out=d)  # shifted logits
        target_shifted[s] = d[np.arange(len(d)), t_safe[s]]
        np.exp(d, out=d)                                            # exp(shifted logits)
        d.sum(axis=1, keepdims=True, out=sum_exp[s])
        d *= 1.0 / (sum_exp[s] * n_valid)                           # softmax / N_valid

    parallel_for(row_slices(len(t), V), softmax_rows, dlogits.size)
    nll = np.log(sum_exp[:, 0]) - target_shifted                    # (N,) -log softmax[target]
    loss = float(nll.sum(where=valid, dtype=np.float64)) / n_valid

    dlogits[np.flatnonzero(valid), t[valid]] -= logits.dtype.type(1.0 / n_valid)    # minus onehot / N_valid
    if n_valid < t.size:
        dlogits[~valid] = 0.0
    return loss, dlogits.reshape(logits.shape)
