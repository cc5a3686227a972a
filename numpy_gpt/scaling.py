"""Scaling laws on a laptop: FLOP counts, the sweep's grid, and the three Chinchilla fits in NumPy.

The book lists "balancing model size, training data and compute" among the stages of building an
LLM. Two papers measured that balance. Kaplan et al. (2020) found loss falls as a power law in the
non-embedding parameters N (L ~ N^-0.076) and the training tokens D, and advised spending extra
compute mostly on bigger models (N_opt ~ C^0.73). Hoffmann et al. (2022, "Chinchilla") trained
every model with a learning-rate schedule matched to its own token budget -- Kaplan had used one
long schedule and read intermediate points -- and found N and D should grow alike: N_opt ~ C^0.5,
D_opt ~ C^0.5, about 20 tokens per parameter. ``numpy-gpt scaling`` (cli/scaling.py) repeats their
experiment with GPTs of 3K to 3M parameters; this module holds its pieces: the FLOP counts, the grid,
one run of the sweep (``train_run``), its results file, and the fits and the recommendation.

FLOPs per token (``flops_per_token``). A matrix product of (m, k) by (k, n) costs 2mkn FLOPs (a
multiply and an add per term). For one token of a GPT with L blocks, width d, context T and
vocabulary V, the forward pass does, per block::

    query, key, value projections    3 x 2 d^2
    scores q K^T over T keys         2 T d        (all heads together: H x hd = d)
    context P V over T values        2 T d
    output projection                2 d^2
    feed-forward d -> 4d -> d        2 x 2 d (4d) = 16 d^2
                                     ----------
                                     24 d^2 + 4 T d

and the output head 2 d V. The backward pass costs twice the forward: for each product Y = X W it
forms dX = dY W^T and dW = X^T dY, two products of the same size (for the scores, dQ = dS K and
dK = dS^T Q). Training therefore costs 3 x forward = 72 L d^2 + 12 L T d + 6 d V per token. The
non-embedding parameters are N = L (12 d^2 + 10 d) + 2 d (weights, biases and LayerNorms of the
blocks, and the final LayerNorm), so 72 L d^2 is 6N up to the O(d) terms of biases and LayerNorms,
which we count at 6 FLOPs per parameter too (Kaplan's convention)::

    flops_per_token = 6 N  +  12 L T d  (attention over the context)  +  6 d V  (output head)

Kaplan writes the attention term 6 L T d: they count the causal half of the T x T products; our
attention computes the full T x T matrices and masks them, so we count what the code does. The
attention term is 12 L T d / 72 L d^2 = T / (6 d) of the 6N term: negligible for GPT-3 (T = 2048,
d = 12288, 3 %), a third of the compute for our d = 32, T = 64 model. Elementwise work (GELU,
softmax, LayerNorm, AdamW) is left out, as in both papers. A run of D tokens costs
C = flops_per_token x D.

The grid (``plan_sweep``). ``SIZE_LADDER`` lists GPT shapes whose depth and width grow together;
the sweep crosses the first nine (3K to 3M non-embedding parameters) with compute budgets C. Each
run trains D = C / flops_per_token tokens with warmup then cosine decay to 10 % of the peak
learning rate at step D / batch tokens: the schedule ends where the run ends. Runs with too few
optimizer steps, or too many passes over the training split, are left out of the grid.

The fits (all least squares and Gauss-Newton written with NumPy; no SciPy):

* approach 1 (``fit_envelope``): the minimum of all training curves at each FLOP count; the run
  that reaches it names N_opt(C), and D_opt(C) = C / its flops_per_token, used only where a
  smaller and a larger run bracket it;
* approach 2 (``fit_isoflop``): per budget, a parabola of final loss in log N near the best size;
  its vertex is N_opt(C); then power laws N_opt = k C^a and D_opt = k' C^b by least squares in log-log;
* approach 3 (``fit_parametric``): L(N, D) = E + A / N^alpha + B / D^beta, fitted to all final
  losses by minimising the Huber loss (delta = 1e-3, as in Chinchilla) of log-space residuals,
  started from a grid of initialisations. With C = 6ND, minimising L gives (``optimal_allocation``)
  N_opt = G (C/6)^a, D_opt = (C/6)^b / G with a = beta / (alpha + beta), b = alpha / (alpha + beta),
  G = (alpha A / (beta B))^(1 / (alpha + beta)).

``bootstrap`` refits all three on runs resampled with replacement and reports percentile
intervals of the exponents.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.nn.block import config_option
from numpy_gpt.nn.feedforward import ff_hidden_dim

# -- model shapes and FLOPs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """Depth, width and heads of one GPT in the ladder."""

    n_layers: int
    emb_dim: int
    n_heads: int

    @property
    def name(self) -> str:
        return f"L{self.n_layers}-d{self.emb_dim}"


# Depth and width grow together (head size 16 from the third rung on); each rung has about 2.3 times
# the non-embedding parameters of the one before. The sweep uses the first nine; `--recommend` may
# pick a larger rung when the fitted law asks for it.
SIZE_LADDER: tuple[Shape, ...] = (
    Shape(1, 16, 1),        # 3.3K non-embedding parameters
    Shape(2, 20, 2),        # 10K
    Shape(2, 32, 2),        # 25K
    Shape(3, 40, 2),        # 59K
    Shape(4, 48, 3),        # 113K
    Shape(5, 64, 4),        # 249K
    Shape(6, 96, 6),        # 670K
    Shape(7, 128, 8),       # 1.4M
    Shape(8, 176, 11),      # 3.0M
    Shape(9, 224, 14),      # 5.4M
    Shape(10, 256, 16),     # 7.9M
    Shape(12, 320, 20),     # 14.8M
    Shape(12, 384, 24),     # 21.3M
)
SWEEP_SHAPES = SIZE_LADDER[:9]


def model_config(shape: Shape, vocab_size: int, context_length: int) -> dict[str, Any]:
    """The GPT config (model.GPT_CONFIG_124M's keys) of a ladder shape: no dropout, no qkv bias."""
    return {"vocab_size": int(vocab_size), "context_length": int(context_length), "emb_dim": shape.emb_dim,
            "n_heads": shape.n_heads, "n_layers": shape.n_layers, "drop_rate": 0.0, "qkv_bias": False}


def _widths(cfg: dict[str, Any]) -> tuple[int, int, int, int, int]:
    """(d, h, q, kv, hd): model width, feed-forward width, query width H hd, key/value width Hkv hd
    and head width hd. For GPT-2 q = kv = d; grouped-query attention narrows kv; Qwen3's hd may make
    q wider than d."""
    d, hd = cfg["emb_dim"], config_option(cfg, "head_dim")
    return d, ff_hidden_dim(cfg), cfg["n_heads"] * hd, config_option(cfg, "n_kv_heads") * hd, hd


def block_matmul_params(cfg: dict[str, Any]) -> int:
    """The weights of one block's matrix products: W_query (d, q), W_key and W_value (d, kv),
    out_proj (q, d), and the feed-forward's two matrices (d, h) and (h, d), or SwiGLU's three
    (gate, up, down). 12 d^2 for GPT-2 (q = kv = d, h = 4d)."""
    d, h, q, kv, _ = _widths(cfg)
    ff_matrices = 3 if config_option(cfg, "feed_forward") == "swiglu" else 2
    return 2 * d * q + 2 * d * kv + ff_matrices * d * h


def non_embedding_params(cfg: dict[str, Any]) -> int:
    """N: parameters outside the token and position embeddings and the output head.

    Per block: the matrices (``block_matmul_params``), their biases (q + 2 kv with qkv_bias, d in
    out_proj, h + d in the feed-forward, 2h + d in SwiGLU's), two norms (a LayerNorm has a scale and
    a shift, 2d; an RMSNorm only a scale, d) and Qwen3's query/key RMSNorms (hd each). For GPT-2 that
    is 4 d^2 + 2 d h + h + 6 d (+ 3d), which is 12 d^2 + 10 d (+ 3d) at h = 4d. Plus the final norm.
    """
    d, h, q, kv, hd = _widths(cfg)
    swiglu = config_option(cfg, "feed_forward") == "swiglu"
    norm = d if config_option(cfg, "normalization") == "rmsnorm" else 2 * d
    biases = ((q + 2 * kv if cfg.get("qkv_bias") else 0) + (d if config_option(cfg, "out_bias") else 0)
              + ((2 * h if swiglu else h) + d if config_option(cfg, "ff_bias") else 0))
    qk_norms = 2 * hd if config_option(cfg, "qk_norm") else 0
    per_block = block_matmul_params(cfg) + biases + 2 * norm + qk_norms
    return cfg["n_layers"] * per_block + norm


def attention_flops_per_token(cfg: dict[str, Any], context_length: int | None = None) -> int:
    """Training FLOPs per token of the two products with the context, q K^T and P V: 2 T q each
    forward (q = H hd, all heads together), times 3 with the backward: 12 L T q."""
    t = cfg["context_length"] if context_length is None else context_length
    return 12 * cfg["n_layers"] * t * _widths(cfg)[2]


def flops_per_token(cfg: dict[str, Any]) -> int:
    """Training FLOPs (forward + backward) per token: 6 N + 12 L T d + 6 d V (module docstring)."""
    head = 6 * cfg["emb_dim"] * cfg["vocab_size"]
    return 6 * non_embedding_params(cfg) + attention_flops_per_token(cfg) + head


def peak_lr(n_params: int) -> float:
    """Peak learning rate of a model with ``n_params`` non-embedding parameters: 3e-3 at 10K,
    falling as N^-0.15 (1.3e-3 at 3M): smaller models take larger steps, as in both papers' tables."""
    return 3e-3 * (n_params / 1e4) ** -0.15


def warmup_steps(total_steps: int) -> int:
    """Linear warmup over 10 % of the run, at least 2 and at most 100 steps."""
    return max(2, min(100, total_steps // 10))


# -- the grid ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the sweep: a shape trained on ``tokens`` tokens for a ``budget``."""

    shape: Shape
    budget: float            # the nominal compute budget C (FLOPs) this run belongs to
    seed: int
    steps: int
    batch_tokens: int        # batch_size x context_length
    n_params: int            # non-embedding parameters N
    flops_per_token: int

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    @property
    def flops(self) -> float:
        """The compute this run actually spends (its steps are rounded, so close to ``budget``)."""
        return float(self.flops_per_token) * self.tokens

    @property
    def key(self) -> str:
        """The name a finished run is recorded under; a resumed sweep skips the keys it finds."""
        return f"{self.shape.name}-h{self.shape.n_heads}-C{self.budget:.2e}-seed{self.seed}"


def plan_sweep(shapes: Sequence[Shape], budgets: Sequence[float], seeds: int, *, vocab_size: int,
               context_length: int, batch_size: int, train_tokens: int, min_steps: int = 40,
               max_epochs: float = 4.0) -> tuple[list[PlannedRun], list[str]]:
    """Cross ``shapes`` with ``budgets`` (and ``seeds`` seeds): the runs, and why others were left out.

    A run gets steps = round(C / (flops_per_token x batch tokens)). It is left out when that is
    fewer than ``min_steps`` (the model is too big for the budget: warmup and decay would not fit)
    or more than ``max_epochs`` passes over the ``train_tokens`` of the training split (too small:
    it would mostly re-read the data).
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    batch_tokens = batch_size * context_length
    runs, skipped = [], []
    for budget in sorted(budgets):
        for shape in shapes:
            cfg = model_config(shape, vocab_size, context_length)
            fpt = flops_per_token(cfg)
            steps = round(budget / (fpt * batch_tokens))
            epochs = steps * batch_tokens / max(train_tokens, 1)
            if steps < min_steps:
                skipped.append(f"{shape.name} at C={budget:.0e}: {steps} steps < {min_steps}")
                continue
            if epochs > max_epochs:
                skipped.append(f"{shape.name} at C={budget:.0e}: {epochs:.1f} epochs > {max_epochs:g}")
                continue
            for seed in range(seeds):
                runs.append(PlannedRun(shape, float(budget), seed, steps, batch_tokens,
                                       non_embedding_params(cfg), fpt))
    return runs, skipped


# -- power laws ------------------------------------------------------------------------------------


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """(exponent k, coefficient c) of y = c x^k by least squares on log y = log c + k log x."""
    lx, ly = np.log(np.asarray(x, dtype=np.float64)), np.log(np.asarray(y, dtype=np.float64))
    if lx.size < 2 or np.ptp(lx) == 0:
        raise ValueError(f"a power law needs at least two distinct x values, got {lx.size} point(s)")
    design = np.stack([lx, np.ones_like(lx)], axis=1)
    (k, log_c), *_ = np.linalg.lstsq(design, ly, rcond=None)
    return float(k), float(math.exp(log_c))


def _six_n(n: np.ndarray) -> np.ndarray:
    return 6.0 * n


# -- approach 1: the envelope of training curves ----------------------------------------------------
MIN_ENVELOPE_SIZES = 3       # distinct winning sizes below which approach 1 warns


def fit_envelope(curves: Sequence[tuple[float, float, Sequence[float], Sequence[float]]],
                 num_points: int = 200) -> dict[str, Any]:
    """Chinchilla's approach 1. ``curves``: one (N, flops_per_token, tokens_seen, loss) per run,
    the loss (smoothed training loss) recorded along the run.

    On ``num_points`` FLOP counts c, log-spaced over the range where at least two curves overlap,
    each curve's loss at c is interpolated (linearly in log c); the lowest is the envelope, its run
    gives N_opt(c) and D_opt(c) = c / flops_per_token. Power laws of both against c give a and b.

    Only the FLOP counts where the optimum is bracketed enter the power laws: the best run at c
    must have a smaller and a larger run beside it, both with a curve at c. Elsewhere the best run
    is the smallest (or largest) one there, and the true N_opt(c) may lie beyond it: fitting those
    points too pulls a toward 0 (a = 0.28 for a law with a = 0.45, 12 sizes spanning 1e5-1e8;
    tests/test_scaling.py). ``bracketed`` counts the FLOP counts used, ``sizes`` the distinct
    sizes that win there; with fewer than ``MIN_ENVELOPE_SIZES`` the line rests on one step of a
    staircase, and ``warning`` says so (None otherwise).
    """
    if len(curves) < 2:
        raise ValueError(f"approach 1 needs at least two training curves, got {len(curves)}")
    logs = []
    for n, fpt, tokens, loss in curves:
        flops = np.log(float(fpt) * np.asarray(tokens, dtype=np.float64))
        logs.append((float(n), float(fpt), flops, np.asarray(loss, dtype=np.float64)))
    starts = np.sort([f[0] for _, _, f, _ in logs])
    ends = np.sort([f[-1] for _, _, f, _ in logs])
    lo, hi = starts[1], ends[-1]                       # at least two curves have begun by lo
    if not hi > lo:
        raise ValueError("approach 1: the training curves do not overlap in FLOPs")
    grid = np.linspace(lo, hi, num_points)
    losses = np.full((len(logs), num_points), np.inf)
    for i, (_, _, f, loss) in enumerate(logs):
        inside = (grid >= f[0]) & (grid <= f[-1])
        losses[i, inside] = np.interp(grid[inside], f, loss)
    best = np.argmin(losses, axis=0)                              # (num_points,)
    sizes = np.array([n for n, _, _, _ in logs])                  # (runs,)
    present = np.isfinite(losses)                                 # (runs, num_points)
    smaller = (present & (sizes[:, None] < sizes[best][None, :])).any(axis=0)
    larger = (present & (sizes[:, None] > sizes[best][None, :])).any(axis=0)
    keep = smaller & larger                                       # the optimum is bracketed at c
    winners = np.unique(sizes[best[keep]])
    if winners.size < 2:
        raise ValueError(f"approach 1: the best run is bracketed by a smaller and a larger one at "
                         f"{int(keep.sum())} of {num_points} FLOP counts, with {winners.size} size winning "
                         f"there: train sizes on both sides of the optimum")
    c = np.exp(grid[keep])
    n_opt = sizes[best[keep]]
    d_opt = c / np.array([logs[i][1] for i in best[keep]])
    a, k_n = fit_power_law(c, n_opt)
    b, k_d = fit_power_law(c, d_opt)
    warning = None
    if winners.size < MIN_ENVELOPE_SIZES:
        warning = (f"approach 1: only {winners.size} sizes are best where the optimum is bracketed "
                   f"({int(keep.sum())} of {num_points} FLOP counts), so a and b rest on one step; "
                   f"train more sizes around the optimum")
    return {"a": a, "b": b, "N_coef": k_n, "D_coef": k_d, "C": c, "N_opt": n_opt, "D_opt": d_opt,
            "L_min": losses[best[keep], np.flatnonzero(keep)], "bracketed": int(keep.sum()),
            "sizes": int(winners.size), "warning": warning}


# -- approach 2: IsoFLOP parabolas -----------------------------------------------------------------


def isoflop_minima(n: Sequence[float], budget: Sequence[float], loss: Sequence[float], *,
                   window: float = 6.0) -> list[dict[str, Any]]:
    """Per budget: the parabola L = p0 (log N)^2 + p1 log N + p2 fitted by least squares to the
    sizes within a factor ``window`` of the size with the lowest loss (at least three), and its vertex
    log N_opt = -p1 / (2 p0).

    Only near its minimum is an IsoFLOP curve a parabola: over two decades of N it is lopsided, and a
    parabola through all of it puts the vertex in the wrong place (Czech et al. 2026 measure that
    bias). ``inside`` says whether the minimum is bracketed -- the lowest loss is not at the
    smallest or largest size trained -- and the vertex lies within the sizes fitted; a budget whose
    loss still falls at its smallest size only bounds N_opt from above.
    """
    n, budget, loss = (np.asarray(v, dtype=np.float64) for v in (n, budget, loss))
    minima = []
    for c in np.unique(budget):
        at = budget == c
        logn, lc = np.log(n[at]), loss[at]
        if np.unique(logn).size < 3:
            continue
        best = int(np.argmin(lc))
        sizes = np.unique(logn)
        reach = max(math.log(window), np.sort(np.abs(sizes - logn[best]))[2])   # >= 3 distinct sizes
        near = np.abs(logn - logn[best]) <= reach
        design = np.stack([logn[near] ** 2, logn[near], np.ones(near.sum())], axis=1)
        p = np.linalg.lstsq(design, lc[near], rcond=None)[0]
        convex = p[0] > 0
        vertex = -p[1] / (2 * p[0]) if convex else float(logn[best])
        bracketed = logn.min() < logn[best] < logn.max()
        inside = bool(convex and bracketed and logn[near].min() <= vertex <= logn[near].max())
        minima.append({"C": float(c), "N_opt": float(math.exp(vertex)),
                       "L_min": float(np.polyval(p, vertex)), "inside": inside, "parabola": p.tolist(),
                       "N_range": (float(np.exp(logn[near].min())), float(np.exp(logn[near].max())))})
    return minima


def fit_isoflop(n: Sequence[float], budget: Sequence[float], loss: Sequence[float],
                flops_per_token_of: Callable[[np.ndarray], np.ndarray] | None = None) -> dict[str, Any]:
    """Chinchilla's approach 2: IsoFLOP minima (``isoflop_minima``), then N_opt = k C^a and
    D_opt = k' C^b by least squares in log-log over the budgets whose vertex lies inside the sizes
    trained. D_opt(C) = C / flops_per_token_of(N_opt) (default 6 N_opt, i.e. C = 6ND)."""
    per_token = flops_per_token_of or _six_n
    minima = isoflop_minima(n, budget, loss)
    used = [m for m in minima if m["inside"]]
    if len(used) < 2:
        raise ValueError(f"approach 2 needs at least two budgets whose loss has its minimum inside the "
                         f"sizes trained; got {len(used)} of {len(minima)} (widen the grid of sizes)")
    c = np.array([m["C"] for m in used])
    n_opt = np.array([m["N_opt"] for m in used])
    d_opt = c / np.asarray(per_token(n_opt), dtype=np.float64)
    for m, d in zip(used, d_opt, strict=True):
        m["D_opt"] = float(d)
    a, k_n = fit_power_law(c, n_opt)
    b, k_d = fit_power_law(c, d_opt)
    return {"a": a, "b": b, "N_coef": k_n, "D_coef": k_d, "minima": minima}


# -- approach 3: the parametric loss, fitted with a Huber loss ------------------------------------
#
# In log space with a = log A, b = log B, e = log E the model is a log-sum-exp:
#     log L_hat = LSE(a - alpha log N,  b - beta log D,  e)
# and its derivatives are softmax weights w1, w2, w3 of those three terms:
#     d/da = w1, d/dalpha = -w1 log N, d/db = w2, d/dbeta = -w2 log D, d/de = w3.
# The objective is sum_i huber(r_i), r_i = log L_hat_i - log L_i. We minimise it by iteratively
# reweighted Gauss-Newton with Levenberg-Marquardt damping: at each step the Huber loss is replaced
# by the weighted least-squares bowl sum w_i r_i^2 / 2 with w_i = min(1, delta / |r_i|), which
# touches it at the current point (same value up to a constant, same gradient) and lies above it,
# and the model is linearised (J the Jacobian above). The step solves
#     (J^T W J + lambda diag(J^T W J)) step = -J^T W r,
# kept if the Huber loss went down (lambda / 3) and refused otherwise (lambda x 3). Five parameters
# make every solve a 5 x 5 system, so all initialisations (and bootstrap resamples) run at once as
# one batch of small systems. L-BFGS, which the paper used, would need line searches and a
# curvature history; Gauss-Newton uses the least-squares structure the problem already has.

_PARAM_NAMES = ("a", "alpha", "b", "beta", "e")
# Chinchilla's grid of initialisations (appendix D.2): alpha, beta in {0, 0.5, ..., 2},
# e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25}.
CHINCHILLA_GRID = {"a": np.arange(0.0, 30.0, 5.0), "alpha": np.arange(0.0, 2.5, 0.5),
                   "b": np.arange(0.0, 30.0, 5.0), "beta": np.arange(0.0, 2.5, 0.5),
                   "e": np.arange(-1.0, 1.5, 0.5)}


def _grid_starts(grid: dict[str, np.ndarray]) -> np.ndarray:
    return np.array(list(itertools.product(*(grid[k] for k in _PARAM_NAMES))), dtype=np.float64)


def _log_model(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log L_hat (S, n) and the softmax weights (S, n, 3) of its three terms, for S parameter
    vectors theta (S, 5) and data logn, logd (S or 1, n)."""
    a, alpha, b, beta, e = (theta[:, i:i + 1] for i in range(5))
    terms = np.stack([a - alpha * logn, b - beta * logd, np.broadcast_to(e, (theta.shape[0], logn.shape[1]))],
                     axis=-1)                                                  # (S, n, 3)
    top = terms.max(axis=-1, keepdims=True)
    exp = np.exp(terms - top)
    total = exp.sum(axis=-1, keepdims=True)
    return (top + np.log(total))[..., 0], exp / total


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss of the residuals, summed over the last axis: r^2/2 near 0, linear beyond delta."""
    small = np.abs(r) <= delta
    return np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=-1)


def _huber_gauss_newton(theta: np.ndarray, logn: np.ndarray, logd: np.ndarray, logl: np.ndarray,
                        delta: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Run the damped, reweighted Gauss-Newton above from every row of ``theta`` (S, 5) at once;
    returns the final parameters and their Huber losses (S,)."""
    theta = theta.copy()
    damping = np.full(theta.shape[0], 1e-3)
    pred, weights = _log_model(theta, logn, logd)
    objective = _huber(pred - logl, delta)
    eye = np.eye(5)
    for _ in range(iterations):
        r = pred - logl                                                         # (S, n)
        w1, w2, w3 = weights[..., 0], weights[..., 1], weights[..., 2]
        jac = np.stack([w1, -w1 * logn, w2, -w2 * logd, w3], axis=-1)           # (S, n, 5)
        irls = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))           # (S, n)
        weighted_t = np.swapaxes(jac * irls[..., None], 1, 2)                  # (S, 5, n)
        grad = (weighted_t @ r[..., None])[..., 0]                              # J^T W r   (S, 5)
        hess = weighted_t @ jac                                                 # J^T W J   (S, 5, 5)
        diag = np.diagonal(hess, axis1=1, axis2=2)
        system = hess + damping[:, None, None] * (eye * diag[:, None, :]) + 1e-12 * eye
        step = -np.linalg.solve(system, grad[..., None])[..., 0]
        trial = theta + step
        trial_pred, trial_weights = _log_model(trial, logn, logd)
        trial_objective = _huber(trial_pred - logl, delta)
        better = trial_objective < objective                                   # NaN counts as worse
        theta = np.where(better[:, None], trial, theta)
        pred = np.where(better[:, None], trial_pred, pred)
        weights = np.where(better[:, None, None], trial_weights, weights)
        objective = np.where(better, trial_objective, objective)
        damping = np.clip(np.where(better, damping / 3.0, damping * 3.0), 1e-12, 1e12)
    return theta, objective


def _theta_to_fit(theta: np.ndarray, objective: float) -> dict[str, float]:
    a, alpha, b, beta, e = (float(v) for v in theta)
    return {"E": math.exp(e), "A": math.exp(a), "B": math.exp(b), "alpha": alpha, "beta": beta,
            "huber": float(objective)}


def fit_parametric(N: Sequence[float], D: Sequence[float], L: Sequence[float], *, delta: float = 1e-3,
                   starts: np.ndarray | dict[str, np.ndarray] | None = None, screen_iterations: int = 20,
                   keep: int = 64, iterations: int = 200) -> dict[str, float]:
    """Chinchilla's approach 3: fit L(N, D) = E + A / N^alpha + B / D^beta to final losses.

    Minimises sum_i huber_delta(log L_hat_i - log L_i) from every start of a grid (default:
    Chinchilla's 4,500 starts, ``CHINCHILLA_GRID``) with damped, reweighted Gauss-Newton (comment
    above ``_PARAM_NAMES``): ``screen_iterations`` steps from every start, then the ``keep`` best
    continue for ``iterations`` steps, and the lowest Huber loss wins. ``starts`` may be a grid dict like
    ``CHINCHILLA_GRID`` or an (S, 5) array of (log A, alpha, log B, beta, log E).

    Returns a dict with E, A, B, alpha, beta, the Huber loss, and the compute-optimal exponents
    a = beta / (alpha + beta), b = alpha / (alpha + beta) of ``optimal_allocation``.
    """
    logn, logd, logl = (np.log(np.asarray(v, dtype=np.float64))[None, :] for v in (N, D, L))
    if not logn.shape == logd.shape == logl.shape or logn.shape[1] < 5:
        raise ValueError(f"fit_parametric needs N, D, L of one length >= 5 (five parameters), got "
                         f"{np.size(N)}, {np.size(D)}, {np.size(L)}")
    if not np.all(np.isfinite(np.concatenate([logn, logd, logl]))):
        raise ValueError("fit_parametric needs positive, finite N, D and L")
    if starts is None:
        starts = CHINCHILLA_GRID
    theta0 = _grid_starts(starts) if isinstance(starts, dict) else np.asarray(starts, dtype=np.float64)
    theta, objective = _huber_gauss_newton(theta0, logn, logd, logl, delta, screen_iterations)
    survivors = np.argsort(np.where(np.isfinite(objective), objective, np.inf))[:keep]
    theta, objective = _huber_gauss_newton(theta[survivors], logn, logd, logl, delta, iterations)
    best = int(np.nanargmin(objective))
    fit = _theta_to_fit(theta[best], objective[best])
    fit.update(allocation_exponents(fit))
    return fit


def allocation_exponents(fit: dict[str, float]) -> dict[str, float]:
    """a = beta / (alpha + beta) and b = alpha / (alpha + beta): N_opt ~ C^a, D_opt ~ C^b."""
    total = fit["alpha"] + fit["beta"]
    return {"a": fit["beta"] / total, "b": fit["alpha"] / total}


def predict_loss(fit: dict[str, float], N: float | np.ndarray, D: float | np.ndarray) -> np.ndarray:
    """L(N, D) = E + A / N^alpha + B / D^beta."""
    n, d = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]


def optimal_allocation(fit: dict[str, float], C: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N_opt, D_opt) minimising L(N, D) under C = 6 N D.

    Setting dL/dN = 0 along D = C / (6N): alpha A / N^alpha = beta B / D^beta, whose solution is
    N_opt = G (C/6)^a, D_opt = (C/6)^b / G with G = (alpha A / (beta B))^(1 / (alpha + beta)).
    """
    exps = allocation_exponents(fit)
    g = (fit["alpha"] * fit["A"] / (fit["beta"] * fit["B"])) ** (1.0 / (fit["alpha"] + fit["beta"]))
    c6 = np.asarray(C, dtype=np.float64) / 6.0
    return g * c6 ** exps["a"], c6 ** exps["b"] / g


# -- bootstrap ------------------------------------------------------------------------------------


def bootstrap(runs: dict[str, np.ndarray], curves: Sequence[tuple] | None = None, *, samples: int = 200,
              seed: int = 0, fit3: dict[str, float] | None = None,
              flops_per_token_of: Callable[[np.ndarray], np.ndarray] | None = None,
              percentiles: tuple[float, float] = (10.0, 90.0)) -> dict[str, dict[str, tuple[float, float]]]:
    """Percentile intervals (default 10th-90th, as Chinchilla reports) of the fitted exponents over
    ``samples`` resamples of the runs, drawn with replacement.

    ``runs`` holds arrays ``N``, ``D``, ``budget``, ``L`` (one entry per finished run). Approach 2
    resamples within each budget; approach 1 resamples the ``curves``; approach 3 refits all
    resamples at once, starting from ``fit3`` (the full-data fit) and a coarse grid.
    Returns {"approach1"|"approach2"|"approach3": {name: (low, high), "fits": k}}, k the number of
    resamples the approach could be fitted on (approach 2 fails on a resample that loses the bracket
    of a budget's minimum); an approach missing from the input, or fitted on fewer than a tenth of
    the resamples, is absent.
    """
    rng = np.random.default_rng(seed)
    n, d, budget, loss = (np.asarray(runs[k], dtype=np.float64) for k in ("N", "D", "budget", "L"))
    out: dict[str, dict[str, tuple[float, float]]] = {}

    def interval(values: list[float]) -> tuple[float, float]:
        lo, hi = np.percentile(values, percentiles)
        return float(lo), float(hi)

    if curves:
        stats = {"a": [], "b": []}
        for _ in range(samples):
            pick = rng.integers(0, len(curves), len(curves))
            try:
                fit = fit_envelope([curves[i] for i in pick])
            except ValueError:
                continue
            stats["a"].append(fit["a"])
            stats["b"].append(fit["b"])
        if len(stats["a"]) > samples // 10:
            out["approach1"] = {**{k: interval(v) for k, v in stats.items()}, "fits": len(stats["a"])}

    groups = [np.flatnonzero(budget == c) for c in np.unique(budget)]
    stats = {"a": [], "b": []}
    for _ in range(samples):
        pick = np.concatenate([rng.choice(g, g.size) for g in groups])
        try:
            fit = fit_isoflop(n[pick], budget[pick], loss[pick], flops_per_token_of)
        except (ValueError, np.linalg.LinAlgError):
            continue
        stats["a"].append(fit["a"])
        stats["b"].append(fit["b"])
    if len(stats["a"]) > samples // 10:
        out["approach2"] = {**{k: interval(v) for k, v in stats.items()}, "fits": len(stats["a"])}

    if fit3 is not None and n.size >= 5:
        coarse = _grid_starts({"a": np.array([5.0, 15.0]), "alpha": np.array([0.25, 1.0]),
                               "b": np.array([5.0, 15.0]), "beta": np.array([0.5]), "e": np.array([0.0])})
        tiny = 1e-12                                       # a fit may have driven E (or A, B) to 0
        best = np.array([[math.log(max(fit3["A"], tiny)), fit3["alpha"], math.log(max(fit3["B"], tiny)),
                          fit3["beta"], math.log(max(fit3["E"], tiny))]])
        starts = np.concatenate([best, coarse])                                 # (k, 5)
        picks = rng.integers(0, n.size, (samples, n.size))                      # (samples, n)
        rows = np.repeat(picks, len(starts), axis=0)                            # (samples * k, n)
        theta0 = np.tile(starts, (samples, 1))
        theta, objective = _huber_gauss_newton(theta0, np.log(n[rows]), np.log(d[rows]), np.log(loss[rows]),
                                               1e-3, 100)
        best_per_sample = np.nanargmin(objective.reshape(samples, len(starts)), axis=1)
        chosen = theta.reshape(samples, len(starts), 5)[np.arange(samples), best_per_sample]
        alpha, beta, e = chosen[:, 1], chosen[:, 3], np.exp(chosen[:, 4])
        out["approach3"] = {"alpha": interval(alpha), "beta": interval(beta), "E": interval(e),
                            "a": interval(beta / (alpha + beta)), "b": interval(alpha / (alpha + beta)),
                            "fits": samples}
    return out


# -- the sweep: one run, its record, the results file ---------------------------------------------

class ScalingError(ValueError):
    """A results file, record or recommendation that cannot be used, said in one line."""


# Published values the table sets ours beside (Hoffmann et al. 2022, table 2 and eq. 10; Kaplan et
# al. 2020, eqs. 1.1, 1.2 and 6.1).
CHINCHILLA = {"a": (0.50, 0.49, 0.46), "b": (0.50, 0.51, 0.54), "E": 1.69, "A": 406.4, "B": 410.7,
              "alpha": 0.34, "beta": 0.28, "tokens_per_param": 20}
KAPLAN = {"alpha_N": 0.076, "alpha_D": 0.095, "a": 0.73, "b": 0.27}


def validation_loader(val_ids, context_length: int, eval_tokens: int):
    """Windows spread evenly over the whole validation split, about ``eval_tokens`` tokens, the same
    for every run (so differences between runs are not sampling noise of the evaluation)."""
    from numpy_gpt.data import DataLoader, GPTDatasetV1

    windows = max(1, eval_tokens // context_length)
    stride = max(1, (len(val_ids) - context_length - 1) // windows)
    dataset = GPTDatasetV1(val_ids, max_length=context_length, stride=stride)
    return DataLoader(dataset, batch_size=32, shuffle=False, drop_last=False)


RECORD_NUMBERS = ("N", "D", "C", "budget", "flops_per_token", "flops_per_second")   # finite and > 0


def record_problem(record: Any) -> str | None:
    """Why a line of results.jsonl cannot enter the fits (None: it can): every record needs its run's
    key and settings, finite positive sizes (N, D, C, budget, FLOPs per token and per second), a
    finite validation loss and a curve of [tokens, loss] pairs."""
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return "not a run record of numpy-gpt scaling (no key)"
    for name in RECORD_NUMBERS:
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"no number {name}" if value is None else f"{name} is {value!r}, not a number"
        if not (math.isfinite(value) and value > 0):
            return f"{name} is {value}, not a finite positive number"
    loss = record.get("val_loss")
    if isinstance(loss, bool) or not isinstance(loss, int | float) or not math.isfinite(loss):
        return f"val_loss is {loss!r}, not a finite number"
    curve = record.get("curve")
    if not isinstance(curve, list) or not curve or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                        and math.isfinite(v) for v in p) for p in curve):
        return "curve is not a list of [tokens, loss] pairs"
    if not isinstance(record.get("settings"), dict):
        return "no settings of its sweep"
    return None


def read_results(path: Path, skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The runs recorded in a results.jsonl, each checked as it is read (``record_problem``): a record
    that cannot enter the fits (a NaN loss, a missing N, a curve that is not a list) and a second
    record of a run already read (the same key and settings) are left out, and why is appended to
    ``skipped`` (one line each; when None, a warning says it). A line that is not JSON at all is an
    error naming the file and line."""
    if not path.is_file():
        return []
    records, seen, reasons = [], set(), []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ScalingError(f"{path}, line {number}: not valid JSON ({err}); delete that line to rerun "
                               f"the run") from None
        problem = record_problem(record)
        if problem is None:
            identity = (record["key"], json.dumps(record["settings"], sort_keys=True))
            if identity in seen:
                problem = f"a second record of run {record['key']}"
            seen.add(identity)
        if problem is not None:
            reasons.append(f"{path}, line {number}: skipped, {problem}")
            continue
        records.append(record)
    if skipped is not None:
        skipped.extend(reasons)
    elif reasons:
        import warnings
        warnings.warn("; ".join(reasons), stacklevel=2)
    return records


def one_sweep(records: list[dict[str, Any]], skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """The records of the sweep most of ``records`` belong to (the same settings: corpus, tokenizer,
    context...): a law fitted across two sweeps would mix losses that cannot be compared. How many of
    another sweep were left out is appended to ``skipped``."""
    if not records:
        return []
    by_settings: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_settings.setdefault(json.dumps(record.get("settings"), sort_keys=True), []).append(record)
    kept = max(by_settings.values(), key=len)
    if skipped is not None:
        for group in by_settings.values():
            if group is not kept:
                skipped.append(f"skipped {len(group)} record(s) of another sweep "
                               f"({group[0].get('settings')})")
    return kept


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Add one line to the results file by writing the whole new file and renaming it over the old
    one: an interruption leaves either the old or the new file, never half a line."""
    from numpy_gpt.fileio import write_text_atomic

    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(record) + "\n")


# -- one run ----------------------------------------------------------------------------------------


def _curve(step_losses: list[float], batch_tokens: int, points: int = 32) -> list[list[float]]:
    """(tokens seen, smoothed training loss) at up to ``points`` log-spaced steps after warmup; the
    loss at step s is the mean over the last s/10 steps (at least one)."""
    losses = np.asarray(step_losses, dtype=np.float64)
    start = min(len(losses) - 1, max(1, len(losses) // 10))
    steps = np.unique(np.geomspace(start, len(losses), points).round().astype(int))
    curve = []
    for s in steps:
        window = max(1, s // 10)
        curve.append([int(s * batch_tokens), float(losses[s - window:s].mean())])
    return curve


@dataclass
class RunHistory:
    """What ``train_run`` records while it trains, kept in the run's checkpoints: every step's
    training loss and the seconds of training proper."""

    step_losses: list[float] = field(default_factory=list)
    train_seconds: float = 0.0


def train_run(run, cfg: dict[str, Any], train_ids, val_loader, batch_size: int, *,
              checkpoint_path: str | Path | None = None, checkpoint_freq: int | None = None,
              resume_from: str | Path | None = None) -> dict[str, Any]:
    """Train one planned run with warmup + cosine to 10 % over exactly its steps; return its record.

    Checkpoints, resumption and Ctrl-C are numpy_gpt/run.py's ``TrainingRun``: with
    ``checkpoint_path`` the run is saved every ``checkpoint_freq`` steps (if given) and after the
    step during which Ctrl-C was pressed (then ``TrainingInterrupted`` is raised); ``resume_from``
    that file continues the run exactly. The file is removed when the run is done: the sweep keeps
    its record."""
    from numpy_gpt.data import create_dataloader_v1
    from numpy_gpt.model import GPTModel
    from numpy_gpt.optim import AdamW, WarmupCosineLR, clip_grad_norm, configure_param_groups
    from numpy_gpt.run import TrainingRun
    from numpy_gpt.train import calc_loss_batch, calc_loss_loader

    lr = peak_lr(run.n_params)
    warmup = warmup_steps(run.steps)
    schedule = WarmupCosineLR(lr, run.steps, warmup, initial_lr=lr / (warmup + 1), min_lr=0.1 * lr)
    model = GPTModel(cfg, seed=run.seed)
    optimizer = AdamW(configure_param_groups(model, 0.1), lr=lr, betas=(0.9, 0.99))
    params = list(model.parameters(trainable_only=True))
    loader = create_dataloader_v1(train_ids, batch_size=batch_size, max_length=cfg["context_length"],
                                  stride=cfg["context_length"], shuffle=True, drop_last=True, seed=run.seed)
    history = RunHistory()
    layout = {"run": run.key, "steps": run.steps, "batches_per_epoch": len(loader), "batch_size": batch_size}
    model.train()
    with TrainingRun(model, optimizer, history, checkpoint_path=checkpoint_path, resume_from=resume_from,
                     checkpoint_freq=checkpoint_freq, layout=layout, key="scaling_run",
                     keep_when_done=False) as training:
        batches = training.batches(loader)
        for _ in training.steps(run.steps):
            started = time.perf_counter()
            training.set_lr(schedule)
            optimizer.zero_grad()
            _, (inputs, targets) = next(batches)
            loss = calc_loss_batch(inputs, targets, model, backward=True)
            training.check(loss, clip_grad_norm(params, 1.0))
            optimizer.step()
            history.train_seconds += time.perf_counter() - started
            history.step_losses.append(loss)
    model.eval()
    val_loss = calc_loss_loader(val_loader, model)
    step_losses, train_seconds = history.step_losses, history.train_seconds
    return {"key": run.key, "n_layers": run.shape.n_layers, "emb_dim": run.shape.emb_dim,
            "n_heads": run.shape.n_heads, "N": run.n_params, "params_total": model.num_parameters(),
            "flops_per_token": run.flops_per_token, "budget": run.budget, "C": run.flops, "D": run.tokens,
            "steps": run.steps, "seed": run.seed, "lr": lr, "warmup": warmup, "val_loss": val_loss,
            "train_loss": float(sum(step_losses[-max(1, run.steps // 10):]) / max(1, run.steps // 10)),
            "curve": _curve(step_losses, run.batch_tokens), "train_seconds": train_seconds,
            "flops_per_second": run.flops / train_seconds,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def seconds_per_step(shapes, vocab_size: int, context_length: int, batch_size: int) -> dict:
    """Time two training steps of each shape on random tokens (after one untimed step)."""
    from numpy_gpt.model import GPTModel
    from numpy_gpt.optim import AdamW, clip_grad_norm, configure_param_groups
    from numpy_gpt.train import calc_loss_batch

    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab_size, (batch_size, context_length))
    timing = {}
    for shape in shapes:
        model = GPTModel(model_config(shape, vocab_size, context_length), seed=0)
        optimizer = AdamW(configure_param_groups(model, 0.1), lr=1e-4)
        for i in range(3):
            if i == 1:
                started = time.perf_counter()
            optimizer.zero_grad()
            calc_loss_batch(x, x, model, backward=True)
            clip_grad_norm(list(model.parameters()), 1.0)
            optimizer.step()
        timing[shape] = (time.perf_counter() - started) / 2
    return timing


def _fpt_of(records: list[dict[str, Any]]):
    """flops_per_token as a function of N, interpolated in log-log between the sizes trained."""
    pairs = sorted({(r["N"], r["flops_per_token"]) for r in records})
    log_n = np.log([p[0] for p in pairs])
    log_f = np.log([p[1] for p in pairs])

    def fpt(n):
        n = np.log(np.asarray(n, dtype=np.float64))
        slope = (log_f[-1] - log_f[0]) / (log_n[-1] - log_n[0]) if len(pairs) > 1 else 1.0
        inside = np.interp(n, log_n, log_f)                    # beyond the ends: extend the end slope
        outside = np.where(n < log_n[0], log_f[0] + slope * (n - log_n[0]),
                           log_f[-1] + slope * (n - log_n[-1]))
        return np.exp(np.where((n >= log_n[0]) & (n <= log_n[-1]), inside, outside))
    return fpt


def analyse(records: list[dict[str, Any]], bootstrap_samples: int = 200) -> dict[str, Any]:
    """The three fits and their bootstrap intervals, as a JSON-ready dict."""

    arrays = {k: np.array([r[k] for r in records], dtype=np.float64) for k in ("N", "D", "C", "budget")}
    arrays["L"] = np.array([r["val_loss"] for r in records])
    curves = [(r["N"], r["flops_per_token"], [p[0] for p in r["curve"]], [p[1] for p in r["curve"]])
              for r in records]
    fpt = _fpt_of(records)
    c_max = float(arrays["budget"].max())
    result: dict[str, Any] = {"runs": len(records), "C_max": c_max,
                              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    errors = {}
    try:
        env = fit_envelope(curves)
        result["approach1"] = {k: env[k] for k in ("a", "b", "N_coef", "D_coef", "bracketed", "sizes",
                                                   "warning")}
    except ValueError as err:
        errors["approach1"] = str(err)
    try:
        iso = fit_isoflop(arrays["N"], arrays["budget"], arrays["L"], fpt)
        result["approach2"] = {k: iso[k] for k in ("a", "b", "N_coef", "D_coef", "minima")}
    except ValueError as err:
        errors["approach2"] = str(err)
        result["isoflop_minima"] = isoflop_minima(arrays["N"], arrays["budget"], arrays["L"])
    fit3 = None
    try:
        fit3 = fit_parametric(arrays["N"], arrays["D"], arrays["L"])
        result["approach3"] = fit3
    except ValueError as err:
        errors["approach3"] = str(err)
    for name in ("approach1", "approach2"):
        if name in result:
            fit = result[name]
            n_opt, d_opt = fit["N_coef"] * c_max ** fit["a"], fit["D_coef"] * c_max ** fit["b"]
            fit["tokens_per_param"] = d_opt / n_opt
    if fit3 is not None:
        n_opt, d_opt = optimal_allocation(fit3, c_max)
        fit3["tokens_per_param"] = float(d_opt / n_opt)
    result["bootstrap_samples"] = bootstrap_samples
    if bootstrap_samples:
        result["bootstrap"] = bootstrap(arrays, curves, samples=bootstrap_samples, fit3=fit3,
                                                flops_per_token_of=fpt)
    result["errors"] = errors
    return result


def _fmt(value: float | None, interval: tuple[float, float] | None = None, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else text


def fit_table(fit: dict[str, Any], settings: dict[str, Any]) -> str:
    """The markdown table of fit.md: our three approaches beside Chinchilla's and Kaplan's numbers."""
    boot = fit.get("bootstrap", {})
    boot_samples = fit.get("bootstrap_samples", 0)
    rows = ["| | alpha | beta | E | a (N_opt ~ C^a) | b (D_opt ~ C^b) | tokens/param at C_max |",
            "|---|---|---|---|---|---|---|"]
    for i, name in enumerate(("approach1", "approach2", "approach3"), start=1):
        f = fit.get(name)
        if f is None:
            rows.append(f"| ours, approach {i} | - | - | - | failed: {fit['errors'].get(name, '')} | | |")
            continue
        b = boot.get(name, {})
        alpha = _fmt(f.get("alpha"), b.get("alpha")) if "alpha" in f else "-"
        beta = _fmt(f.get("beta"), b.get("beta")) if "beta" in f else "-"
        e = _fmt(f.get("E"), b.get("E")) if "E" in f else "-"
        fits = f" ({b['fits']} of {boot_samples} resamples)" if b and b["fits"] < boot_samples else ""
        rows.append(f"| ours, approach {i}{fits} | {alpha} | {beta} | {e} | {_fmt(f['a'], b.get('a'))} | "
                    f"{_fmt(f['b'], b.get('b'))} | {f['tokens_per_param']:.1f} |")
    ca, cb = CHINCHILLA["a"], CHINCHILLA["b"]
    rows.append(f"| Chinchilla (approaches 1 / 2 / 3) | {CHINCHILLA['alpha']} | {CHINCHILLA['beta']} | "
                f"{CHINCHILLA['E']} | {ca[0]} / {ca[1]} / {ca[2]} | {cb[0]} / {cb[1]} / {cb[2]} | "
                f"~{CHINCHILLA['tokens_per_param']} |")
    rows.append(f"| Kaplan et al. | alpha_N = {KAPLAN['alpha_N']} | alpha_D = {KAPLAN['alpha_D']} | - | "
                f"{KAPLAN['a']} | {KAPLAN['b']} | falls as C grows |")
    header = (f"Sweep of {fit['runs']} runs on {settings['corpus']} ({settings['tokenizer']} tokenizer, "
              f"vocabulary {settings['vocab_size']}, context {settings['context_length']}, "
              f"batch {settings['batch_size']}), "
              f"fitted {fit['date']}. Brackets: 10th-90th percentile over bootstrap resamples of the runs. "
              f"C_max = {fit['C_max']:.0e} FLOPs.")
    warning = (fit.get("approach1") or {}).get("warning")              # too few sizes bracketed
    return header + "\n\n" + "\n".join(rows) + "\n" + (f"\n{warning}\n" if warning else "")


def recommend(records: list[dict[str, Any]], settings: dict[str, Any], flops: float | None,
              seconds: float | None) -> dict[str, Any]:
    """The compute-optimal ladder shape for a budget, and its tokens D = C / its flops_per_token.

    The size comes from approach 2's power law N_opt = k C^a (the ladder shape nearest in log N)
    when the sweep bracketed at least two IsoFLOP minima, else from approach 3 (the shape with the
    lowest fitted L(N, D)); the predicted loss is approach 3's. A wall-clock budget becomes FLOPs
    with the FLOP/s measured in the sweep for a model of that size (interpolated in log N); since
    the size depends on the budget, the two are iterated together."""

    n_runs = np.array([r["N"] for r in records], dtype=np.float64)
    losses = np.array([r["val_loss"] for r in records])
    fit = fit_parametric(n_runs, [r["D"] for r in records], losses)
    try:
        iso = fit_isoflop(n_runs, [r["budget"] for r in records], losses, _fpt_of(records))
        method = f"approach 2, N_opt = {iso['N_coef']:.3g} C^{iso['a']:.3f}"
    except ValueError:
        iso, method = None, "approach 3, the lowest fitted L(N, D)"
    order = np.argsort(n_runs)
    speed = np.log([records[i]["flops_per_second"] for i in order])

    def flops_per_second(n: float) -> float:
        return float(np.exp(np.interp(np.log(n), np.log(n_runs[order]), speed)))

    def best_for(c: float):
        options = []
        for shape in SIZE_LADDER:
            cfg = model_config(shape, settings["vocab_size"], settings["context_length"])
            n, tokens = non_embedding_params(cfg), c / flops_per_token(cfg)
            loss = float(predict_loss(fit, n, tokens))
            rank = abs(math.log(n / (iso["N_coef"] * c ** iso["a"]))) if iso else loss
            options.append((rank, loss, shape, cfg, tokens))
        return min(options, key=lambda o: o[0])[1:]

    if flops is None:
        flops = seconds * flops_per_second(1e5)
        for _ in range(10):
            n = non_embedding_params(best_for(flops)[2])
            flops = seconds * flops_per_second(n)
    loss, shape, cfg, tokens = best_for(flops)
    batch_tokens = settings["batch_size"] * settings["context_length"]
    steps = max(1, round(tokens / batch_tokens))
    n_params = non_embedding_params(cfg)
    n_opt, d_opt = optimal_allocation(fit, flops)
    return {"budget_flops": flops, "shape": [shape.n_layers, shape.emb_dim, shape.n_heads], "cfg": cfg,
            "N": n_params, "tokens": steps * batch_tokens, "steps": steps, "predicted_val_loss": loss,
            "estimated_seconds": flops / flops_per_second(n_params), "lr": peak_lr(n_params),
            "warmup_steps": warmup_steps(steps), "settings": settings, "method": method,
            "fit": {k: fit[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b")},
            "law_N_opt": float(n_opt), "law_D_opt": float(d_opt),
            "largest_budget_swept": float(max(r["budget"] for r in records)),
            "at_ladder_end": shape == SIZE_LADDER[-1]}


RESULTS_NAME = "results.jsonl"
RECOMMENDATION_NAME = "recommendation.json"


def read_recommendation(folder: Path) -> tuple[dict[str, Any], str]:
    """The settings of ``pretrain --preset from-scaling``, read from ``folder/recommendation.json``
    (written by ``numpy-gpt scaling --recommend``): (the values of pretrain's flags by their
    argparse names, one line saying what was chosen). ``"max_steps"`` is the recommended length."""
    from numpy_gpt.fileio import read_json

    path = Path(folder) / RECOMMENDATION_NAME
    if not path.is_file():
        raise ScalingError(f"--preset from-scaling: no {path} yet; run `numpy-gpt scaling` (or --quick), "
                           f"then `numpy-gpt scaling --recommend 1e13` to write it")
    rec = read_json(path)
    try:
        cfg, settings = rec["cfg"], rec["settings"]
        flags = {"corpus": settings["corpus"], "max_chars": settings["max_chars"],
                 "tokenizer": settings["tokenizer"], "val_fraction": settings["val_fraction"],
                 "context_length": cfg["context_length"], "emb_dim": cfg["emb_dim"],
                 "n_layers": cfg["n_layers"], "n_heads": cfg["n_heads"], "drop_rate": 0.0,
                 "batch_size": settings["batch_size"], "lr": rec["lr"], "min_lr": 0.1 * rec["lr"],
                 "warmup_steps": rec["warmup_steps"], "max_steps": rec["steps"]}
        if settings["tokenizer"] == "bpe":
            flags["vocab_size"] = settings["vocab_size"]
        counts = {k: flags[k] for k in ("context_length", "emb_dim", "n_layers", "n_heads", "batch_size",
                                        "max_steps", "vocab_size") if k in flags}
        counts["warmup_steps"] = flags["warmup_steps"] + 1          # may be 0
        bad = [k for k, v in counts.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1]
        if not (isinstance(rec["lr"], int | float) and math.isfinite(rec["lr"]) and rec["lr"] > 0):
            bad.append("lr")
        if bad:
            raise ScalingError(f"{path}: {', '.join(bad)} must be positive numbers; write it again with "
                               f"`numpy-gpt scaling --recommend`")
        summary = (f"--preset from-scaling ({path}): {rec['N']:,} non-embedding parameters "
                   f"({cfg['n_layers']} layers x {cfg['emb_dim']}), {rec['tokens']:,} tokens, "
                   f"{rec['budget_flops']:.2e} FLOPs on {settings['corpus']}")
    except (KeyError, TypeError) as err:
        raise ScalingError(f"{path} is not a recommendation of numpy-gpt scaling (missing {err})") from None
    return flags, summary

