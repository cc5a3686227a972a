"""Pictures of training: loss curves (chapter 5) and attention heatmaps (chapter 3's weights, live).

``plot_losses`` is the book's figure: training and validation loss against optimizer steps, with
the number of tokens seen on a second x-axis. ``plot_attention`` shows, for a prompt, the causal
attention weights of every layer and head of a ``GPTModel``.

Figures are drawn on a bare ``matplotlib.figure.Figure`` (the Agg backend, no pyplot and no
window), so plotting works on a server and never changes a user's global matplotlib state. Files
are written atomically: a temporary file in the same folder, then a rename.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from numpy_gpt.fileio import atomic_write
from numpy_gpt.nn.module import no_grad

if TYPE_CHECKING:   # matplotlib is imported when a plot is drawn: it costs ~1 s at `import numpy_gpt`
    from matplotlib.figure import Figure


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=fig.dpi)
    return path


def plot_losses(steps_seen: Sequence[int], tokens_seen: Sequence[int], train_losses: Sequence[float],
                val_losses: Sequence[float], path: str | os.PathLike, title: str | None = None) -> Path:
    """Plot training and validation loss against steps, tokens seen on the top axis; save a PNG.

    The four sequences are the ones a training loop records at each evaluation (same length).
    Returns the path written.
    """
    lengths = {len(steps_seen), len(tokens_seen), len(train_losses), len(val_losses)}
    if len(lengths) != 1:
        raise ValueError(f"plot_losses needs sequences of one length, got steps {len(steps_seen)}, "
                         f"tokens {len(tokens_seen)}, train {len(train_losses)}, val {len(val_losses)}")
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    fig = Figure(figsize=(6, 3.6), dpi=120)
    ax_steps = fig.add_subplot()
    ax_steps.plot(steps_seen, train_losses, label="Training loss")
    ax_steps.plot(steps_seen, val_losses, linestyle="-.", label="Validation loss")
    ax_steps.set_xlabel("Steps")
    ax_steps.set_ylabel("Loss")
    ax_steps.legend(loc="upper right")
    # A second x-axis on top, sharing the curves: an invisible plot sets its range to tokens seen.
    ax_tokens = ax_steps.twiny()
    ax_tokens.plot(tokens_seen, train_losses, alpha=0)
    ax_tokens.set_xlabel("Tokens seen")
    ax_tokens.xaxis.set_major_formatter(EngFormatter(sep=""))          # 200k, 1.5M
    if title:
        ax_steps.set_title(title, fontsize="medium", pad=28)
    fig.tight_layout()
    return save_png(fig, path)


def attention_weights(model, idx: np.ndarray) -> np.ndarray:
    """Causal attention weights of every layer and head for token ids ``idx`` (B, T).

    Returns (n_layers, B, n_heads, T, T) float32: entry [l, b, h, i, j] is how much position i
    attends to position j in head h of layer l (each row sums to 1; zero above the diagonal).
    The model runs in evaluation mode (no dropout) under ``no_grad``; each block's weights are
    recomputed by its attention from its own ``norm1`` (``MultiHeadAttention.attention_weights``:
    the same projections, rotations and masks as its forward, grouped-query heads included).
    """
    if not isinstance(idx, np.ndarray) or idx.ndim != 2:
        raise ValueError(f"idx must be a 2-D array of token ids (batch, tokens), got {np.shape(idx)}")
    weights = []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            x = model.tok_emb(idx)                                                  # (B, T, C)
            if model.pos_emb is not None:                                           # GPT-2's positions
                x = x + model.pos_emb(idx.shape[1])
            x = model.drop_emb(x)
            for block in model.trf_blocks:
                weights.append(block.att.attention_weights(block.norm1(x)))       # (B, H, T, T)
                x = block(x)
    finally:
        model.train(was_training)
    return np.stack(weights).astype(np.float32, copy=False)


def _token_label(token: str) -> str:
    """A visible axis label: spaces as middle dots (GPT-2 tokens often start with one), other
    whitespace escaped."""
    return repr(token)[1:-1].replace(" ", "\u00b7") or "''"


def plot_attention(model, idx: np.ndarray, path: str | os.PathLike, tokens: Sequence[str] | None = None,
                   layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> Path:
    """Heatmaps of the attention weights for one prompt ``idx`` (1, T) or (T,): one panel per
    (layer, head), rows = layers, columns = heads. ``tokens`` labels the axes (one string per
    position; labels are drawn when T <= 32). Returns the PNG path written."""
    idx = np.asarray(idx)
    if idx.ndim == 1:
        idx = idx[None, :]
    if idx.ndim != 2 or idx.shape[0] != 1:
        raise ValueError(f"plot_attention draws one prompt: pass ids (T,) or (1, T), got {idx.shape}")
    num_tokens = idx.shape[1]
    if tokens is not None and len(tokens) != num_tokens:
        raise ValueError(f"got {len(tokens)} token labels for {num_tokens} tokens")
    weights = attention_weights(model, idx)[:, 0]                                 # (L, H, T, T)
    layers = list(range(weights.shape[0])) if layers is None else list(layers)
    heads = list(range(weights.shape[1])) if heads is None else list(heads)
    for name, chosen, limit in (("layer", layers, weights.shape[0]), ("head", heads, weights.shape[1])):
        bad = [i for i in chosen if not 0 <= i < limit]
        if bad or not chosen:
            raise ValueError(f"{name} indices must be in [0, {limit}), got {chosen}")

    panel = 2.2 if num_tokens <= 32 else 1.8
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * len(heads) + 0.8, panel * len(layers) + 0.4), dpi=110)
    axes = fig.subplots(len(layers), len(heads), squeeze=False)
    image = None
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row, col]
            image = ax.imshow(weights[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer} head {head}", fontsize="small")
            show_labels = tokens is not None and num_tokens <= 32
            ax.set_xticks(range(num_tokens) if show_labels else [])
            ax.set_yticks(range(num_tokens) if show_labels else [])
            if show_labels:
                labels = [_token_label(t) for t in tokens]
                ax.set_xticklabels(labels, rotation=90, fontsize=6)
                ax.set_yticklabels(labels, fontsize=6)
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    return save_png(fig, path)


# -- scaling laws (numpy-gpt scaling) -------------------------------------------------------------------
def _budget_colors(budgets: Sequence[float]) -> dict[float, tuple]:
    from matplotlib import colormaps

    unique = sorted(set(budgets))
    cmap = colormaps["viridis"]
    return {c: cmap(i / max(1, len(unique) - 1) * 0.9) for i, c in enumerate(unique)}


def plot_isoflop(records: Sequence[dict], fit: dict, path: str | os.PathLike) -> Path:
    """IsoFLOP curves: final validation loss against N, one colour per compute budget, with the
    parabola in log N fitted to each budget (approach 2) and its minimum marked."""
    from matplotlib.figure import Figure

    colors = _budget_colors([r["budget"] for r in records])
    minima = {m["C"]: m for m in fit.get("approach2", {}).get("minima", fit.get("isoflop_minima", []))}
    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for c, color in colors.items():
        runs = [r for r in records if r["budget"] == c]
        ax.scatter([r["N"] for r in runs], [r["val_loss"] for r in runs], color=color, s=18,
                   label=f"C = {c:.0e} FLOPs")
        if c in minima:
            m = minima[c]
            n = np.geomspace(*m["N_range"], 100)
            ax.plot(n, np.polyval(m["parabola"], np.log(n)), color=color, linewidth=1)
            if m["inside"]:
                ax.scatter([m["N_opt"]], [m["L_min"]], color=color, marker="*", s=90, edgecolor="black",
                           linewidth=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("Non-embedding parameters N")
    ax.set_ylabel("Validation loss (nats per token)")
    ax.set_title("IsoFLOP curves: a parabola in log N per budget, * = its minimum", fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return save_png(fig, path)


def _tokens_at(records: Sequence[dict]):
    """D(N, C) = C / flops_per_token(N), flops_per_token interpolated in log-log between the runs."""
    pairs = sorted({(r["N"], r["flops_per_token"]) for r in records})
    log_n, log_f = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])

    def tokens(n: np.ndarray, c: float) -> np.ndarray:
        return c / np.exp(np.interp(np.log(n), log_n, log_f))
    return tokens


def plot_loss_vs_n_and_d(records: Sequence[dict], fit: dict, path: str | os.PathLike) -> Path:
    """Two panels: final loss against N and against D, one colour per budget, with the parametric
    law (approach 3) along each budget's IsoFLOP line (D = C / flops_per_token(N)) and its limits
    E + A/N^alpha (infinite data) and E + B/D^beta (infinite model)."""
    colors = _budget_colors([r["budget"] for r in records])
    law = fit.get("approach3")
    with np.errstate(over="ignore", divide="ignore"):     # a degenerate fit may overflow: nothing drawn
        return _draw_loss_vs_n_and_d(records, law, colors, path)


def _draw_loss_vs_n_and_d(records: Sequence[dict], law: dict | None, colors: dict, path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=120)
    ax_n, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    n_all = np.array([r["N"] for r in records], dtype=np.float64)
    d_all = np.array([r["D"] for r in records], dtype=np.float64)
    n_grid = np.geomspace(n_all.min() / 1.5, n_all.max() * 1.5, 100)
    d_grid = np.geomspace(d_all.min() / 1.5, d_all.max() * 1.5, 100)
    tokens = _tokens_at(records)
    for c, color in colors.items():
        runs = [r for r in records if r["budget"] == c]
        ax_n.scatter([r["N"] for r in runs], [r["val_loss"] for r in runs], color=color, s=18,
                     label=f"C = {c:.0e}")
        ax_d.scatter([r["D"] for r in runs], [r["val_loss"] for r in runs], color=color, s=18,
                     label=f"C = {c:.0e}")
        if law is not None:
            def predict(n, d):
                return law["E"] + law["A"] / n ** law["alpha"] + law["B"] / d ** law["beta"]
            n_line = np.geomspace(min(r["N"] for r in runs), max(r["N"] for r in runs), 50)
            d_line = tokens(n_line, c)
            ax_n.plot(n_line, predict(n_line, d_line), color=color, linewidth=1)
            ax_d.plot(d_line, predict(n_line, d_line), color=color, linewidth=1)
    if law is not None:
        ax_n.plot(n_grid, law["E"] + law["A"] / n_grid ** law["alpha"], "k--", linewidth=1,
                  label=f"E + A/N^{law['alpha']:.2f} (D = inf)")
        ax_d.plot(d_grid, law["E"] + law["B"] / d_grid ** law["beta"], "k--", linewidth=1,
                  label=f"E + B/D^{law['beta']:.2f} (N = inf)")
        for ax in (ax_n, ax_d):
            ax.axhline(law["E"], color="gray", linewidth=0.8, linestyle=":", label=f"E = {law['E']:.2f}")
    for ax, xlabel in ((ax_n, "Non-embedding parameters N"), (ax_d, "Training tokens D")):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Validation loss (nats per token)")
        ax.legend(fontsize="x-small")
    fig.suptitle("Loss against N and D; lines: the fitted L(N, D) = E + A/N^alpha + B/D^beta along each "
                 "budget", fontsize="medium")
    fig.tight_layout()
    return save_png(fig, path)


def plot_frontier(records: Sequence[dict], fit: dict, path: str | os.PathLike) -> Path:
    """The compute-optimal frontier: N_opt(C) and D_opt(C) from approaches 1, 2 and 3, with
    Chinchilla's rule of thumb (20 tokens per parameter, C = 6ND) for comparison."""
    from matplotlib.figure import Figure

    budgets = np.array([r["budget"] for r in records], dtype=np.float64)
    c = np.geomspace(budgets.min() / 2, budgets.max() * 2, 50)
    fig = Figure(figsize=(10, 4), dpi=120)
    ax_n, ax_d = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    styles = {"approach1": ("tab:blue", "approach 1 (envelope)"),
              "approach2": ("tab:orange", "approach 2 (IsoFLOP)")}
    for name, (color, label) in styles.items():
        f = fit.get(name)
        if f is None:
            continue
        ax_n.plot(c, f["N_coef"] * c ** f["a"], color=color, label=f"{label}: a = {f['a']:.2f}")
        ax_d.plot(c, f["D_coef"] * c ** f["b"], color=color, label=f"{label}: b = {f['b']:.2f}")
    minima = [m for m in fit.get("approach2", {}).get("minima", []) if m["inside"]]
    if minima:
        ax_n.scatter([m["C"] for m in minima], [m["N_opt"] for m in minima], color="tab:orange", zorder=3,
                     label="IsoFLOP minima")
        ax_d.scatter([m["C"] for m in minima], [m["D_opt"] for m in minima], color="tab:orange", zorder=3)
    law = fit.get("approach3")
    if law is not None:
        g = (law["alpha"] * law["A"] / (law["beta"] * law["B"])) ** (1 / (law["alpha"] + law["beta"]))
        ax_n.plot(c, g * (c / 6) ** law["a"], color="tab:green",
                  label=f"approach 3 (L(N, D)): a = {law['a']:.2f}")
        ax_d.plot(c, (c / 6) ** law["b"] / g, color="tab:green",
                  label=f"approach 3 (L(N, D)): b = {law['b']:.2f}")
    ax_n.plot(c, np.sqrt(c / 120), "k--", linewidth=1, label="Chinchilla: 20 tokens/param")
    ax_d.plot(c, 20 * np.sqrt(c / 120), "k--", linewidth=1, label="Chinchilla: 20 tokens/param")
    for ax, ylabel in ((ax_n, "Compute-optimal parameters N_opt"), (ax_d, "Compute-optimal tokens D_opt")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Training compute C (FLOPs)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="x-small")
    fig.suptitle("Compute-optimal frontier", fontsize="medium")
    fig.tight_layout()
    return save_png(fig, path)


def plot_attention_side_by_side(left: np.ndarray, left_tokens: Sequence[str], right: np.ndarray,
                                right_tokens: Sequence[str], path: str | os.PathLike,
                                titles: tuple[str, str] = ("encoder (BERT)", "decoder (GPT)")) -> Path:
    """Two attention heatmaps beside each other, for instance one encoder layer (every token sees
    every token: a full square) and one decoder layer (the causal lower triangle) on the same
    sentence. ``left`` and ``right`` are (T, T) weight matrices (rows: queries, columns: keys),
    each with its own token labels. Returns the PNG path written."""
    from matplotlib.figure import Figure

    panels = ((left, left_tokens, titles[0]), (right, right_tokens, titles[1]))
    for weights, tokens, title in panels:
        square = np.ndim(weights) == 2 and np.shape(weights)[0] == np.shape(weights)[1]
        if not square or len(tokens) != len(weights):
            raise ValueError(f"{title}: need a square (T, T) weight matrix and T token labels, got "
                             f"{np.shape(weights)} and {len(tokens)} labels")
    size = max(len(left_tokens), len(right_tokens))
    fig = Figure(figsize=(2 * (2.5 + 0.28 * size) + 1, 2.2 + 0.28 * size), dpi=110)
    axes = fig.subplots(1, 2)
    image = None
    for ax, (weights, tokens, title) in zip(axes, panels, strict=True):
        image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0)
        labels = [_token_label(t) for t in tokens]
        ax.set_xticks(range(len(tokens)))
        ax.set_yticks(range(len(tokens)))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
        ax.set_yticklabels(labels, fontsize=7)
        ax.set_xlabel("key (attended to)")
        ax.set_ylabel("query")
        ax.set_title(title, fontsize="medium")
    fig.colorbar(image, ax=axes, shrink=0.7, label="attention weight")
    return save_png(fig, path)
