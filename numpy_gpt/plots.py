"""Pictures of training: loss curves and learning-rate schedules (chapter 5, appendix D), attention
heatmaps (chapter 3's weights, live) and the scaling-law figures.

``plot_losses`` is the book's figure: training and validation loss against optimizer steps, with
the number of tokens seen on a second x-axis. ``draw_attention`` draws every attention heatmap:
``plot_attention`` the causal weights of every layer and head of a ``GPTModel`` for a prompt,
``plot_attention_side_by_side`` an encoder's square beside a decoder's triangle.

Each picture has two forms: ``draw_*`` returns the ``matplotlib.figure.Figure`` (a notebook shows
it), ``plot_*`` saves it as a PNG and returns the path. Figures are bare Figures (the Agg backend,
no pyplot and no window), so plotting works on a server and never changes a user's global
matplotlib state. Files are written atomically: a temporary file in the same folder, then a rename.
The architecture diagrams drawn from a model object are in numpy_gpt/diagrams.py.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from numpy_gpt.fileio import atomic_write
from numpy_gpt.nn.attention import MultiHeadAttention
from numpy_gpt.nn.module import inference

if TYPE_CHECKING:   # matplotlib is imported when a plot is drawn: it costs ~1 s at `import numpy_gpt`
    from matplotlib.figure import Figure


def save_png(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as PNG, atomically."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=fig.dpi)
    return path


def draw_losses(steps_seen: Sequence[int], tokens_seen: Sequence[int], train_losses: Sequence[float],
                val_losses: Sequence[float], title: str | None = None) -> Figure:
    """The book's loss figure: training and validation loss against steps, tokens seen on the top
    axis. The four sequences are the ones a training loop records at each evaluation (one length)."""
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
    return fig


def plot_losses(steps_seen: Sequence[int], tokens_seen: Sequence[int], train_losses: Sequence[float],
                val_losses: Sequence[float], path: str | os.PathLike, title: str | None = None) -> Path:
    """``draw_losses`` saved as a PNG at ``path``; returns the path written."""
    return save_png(draw_losses(steps_seen, tokens_seen, train_losses, val_losses, title), path)


def draw_lr_schedule(lr_schedule: Callable[[int], float], total_steps: int,
                     title: str | None = None) -> Figure:
    """The learning rate a schedule (``ConstantLR``, ``WarmupCosineLR``, any step -> lr function)
    gives at steps 0 .. total_steps, with the end of a warmup marked when the schedule has one."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    from matplotlib.figure import Figure

    steps = np.arange(total_steps + 1)
    lrs = [lr_schedule(int(s)) for s in steps]
    fig = Figure(figsize=(6, 3), dpi=120)
    ax = fig.add_subplot()
    ax.plot(steps, lrs)
    warmup = getattr(lr_schedule, "warmup_steps", 0)
    if 0 < warmup <= total_steps:
        ax.axvline(warmup, color="gray", linestyle=":", linewidth=1)
        ax.annotate(f"end of warmup (step {warmup})", (warmup, max(lrs)), xytext=(6, -12),
                    textcoords="offset points", fontsize="small", color="gray")
    ax.set_xlabel("Step")
    ax.set_ylabel("Learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.set_title(title or repr(lr_schedule), fontsize="small")
    fig.tight_layout()
    return fig


def attention_weights(model, idx: np.ndarray) -> np.ndarray:
    """The attention weights of every layer and head for token ids ``idx`` (B, T), as the model's
    layers compute them: a GPT (GPT-2, Llama, Qwen3), an encoder or a classifier.

    Returns (n_layers, B, n_heads, T, T) float32: entry [l, b, h, i, j] is how much position i
    attends to position j in head h of layer l (each row sums to 1; a causal layer gives the future
    0). Every MultiHeadAttention keeps the weights of its forward (``keep_attn_weights``) while the
    model runs once on ``idx`` in evaluation mode (no dropout) under ``no_grad``: the numbers are the
    layers' own, whatever the embeddings, the norms' places, RoPE or grouped-query heads.
    """
    if not isinstance(idx, np.ndarray) or idx.ndim != 2:
        raise ValueError(f"idx must be a 2-D array of token ids (batch, tokens), got {np.shape(idx)}")
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]    # in forward order
    run = getattr(model, "encode", model)          # an encoder's blocks suffice (it may have no head)
    for att in layers:
        att.keep_attn_weights = True
    try:
        with inference(model):
            run(idx)
        return np.stack([att.attn_weights for att in layers]).astype(np.float32, copy=False)
    finally:
        for att in layers:
            att.keep_attn_weights, att.attn_weights = False, None


def _log_ticks(axis, low: float, high: float) -> None:
    """Labels a reader can tell apart on a log axis from ``low`` to ``high``: powers of ten, and 2 and
    5 times them when the range spans less than two decades, never the crowded minor labels
    matplotlib adds to a short axis ("2x10^4 3x10^4 4x10^4 ..." on top of each other)."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    subs = (1.0,) if np.log10(high / low) >= 2 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=7))
    axis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    axis.set_minor_formatter(NullFormatter())


def _token_label(token: str) -> str:
    """A visible axis label: spaces as middle dots (GPT-2 tokens often start with one), other
    whitespace escaped."""
    return repr(token)[1:-1].replace(" ", "\u00b7") or "''"


def draw_attention(panels: Sequence[tuple[np.ndarray, Sequence[str] | None, str]], columns: int | None = None
                   ) -> Figure:
    """Attention heatmaps, one panel per ``(weights, tokens, title)``: ``weights`` a (T, T) matrix
    (rows: queries, columns: keys, each row a distribution), ``tokens`` its T axis labels or None
    (labels are drawn when T <= 32). Panels fill rows of ``columns`` (default: all in one row), on
    one colour scale from 0 to 1. Every attention picture of numpy_gpt is drawn here."""
    if not panels:
        raise ValueError("draw_attention needs at least one (weights, tokens, title) panel")
    for weights, tokens, title in panels:
        square = np.ndim(weights) == 2 and np.shape(weights)[0] == np.shape(weights)[1]
        if not square or (tokens is not None and len(tokens) != len(weights)):
            raise ValueError(f"{title}: need a square (T, T) weight matrix and T token labels, got "
                             f"{np.shape(weights)} and {len(tokens) if tokens is not None else 0} labels")
    columns = len(panels) if columns is None else columns
    rows = -(-len(panels) // columns)
    size = max(len(w) for w, _, _ in panels)
    labelled = any(tokens is not None for _, tokens, _ in panels) and size <= 32
    panel = 1.6 + 0.2 * size if labelled else 2.0
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel * columns + 1.0, panel * rows + 0.3), dpi=90, layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for i, (ax, (weights, tokens, title)) in enumerate(zip(axes.flat, panels, strict=False)):
        t = len(weights)
        if i % columns == 0:
            ax.set_ylabel("query")
        if i + columns >= len(panels):
            ax.set_xlabel("key (attended to)")
        image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(title, fontsize="small")
        show = tokens is not None and t <= 32
        # a 6-point label needs about 8 points of axis; the heatmap gets about half the panel
        every = max(1, -(-t * 8 // int(panel * 72 * 0.5)))
        ticks = range(0, t, every) if show else []
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        if show:
            labels = [_token_label(tokens[i]) for i in ticks]
            ax.set_xticklabels(labels, rotation=90, fontsize=6)
            ax.set_yticklabels(labels, fontsize=6)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")
    return fig


def draw_model_attention(model, idx: np.ndarray, tokens: Sequence[str] | None = None,
                         layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> Figure:
    """The attention weights of a ``GPTModel`` for one prompt ``idx`` (1, T) or (T,): one panel per
    (layer, head), rows = layers, columns = heads; ``tokens`` labels the axes."""
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
    panels = [(weights[layer, head], tokens, f"layer {layer} head {head}")
              for layer in layers for head in heads]
    return draw_attention(panels, columns=len(heads))


def plot_attention(model, idx: np.ndarray, path: str | os.PathLike, tokens: Sequence[str] | None = None,
                   layers: Sequence[int] | None = None, heads: Sequence[int] | None = None) -> Path:
    """``draw_model_attention`` saved as a PNG at ``path``; returns the path written."""
    return save_png(draw_model_attention(model, idx, tokens, layers, heads), path)


def plot_attention_side_by_side(left: np.ndarray, left_tokens: Sequence[str], right: np.ndarray,
                                right_tokens: Sequence[str], path: str | os.PathLike,
                                titles: tuple[str, str] = ("encoder (BERT)", "decoder (GPT)")) -> Path:
    """Two heatmaps beside each other (an encoder layer's square beside a decoder layer's
    triangle), drawn by ``draw_attention`` and saved as a PNG at ``path``; returns the path."""
    return save_png(draw_attention([(left, left_tokens, titles[0]), (right, right_tokens, titles[1])]), path)


# -- scaling laws (numpy-gpt scaling) -------------------------------------------------------------------
def _budget_colors(budgets: Sequence[float]) -> dict[float, tuple]:
    from matplotlib import colormaps

    unique = sorted(set(budgets))
    cmap = colormaps["viridis"]
    return {c: cmap(i / max(1, len(unique) - 1) * 0.9) for i, c in enumerate(unique)}


def draw_isoflop(records: Sequence[dict], fit: dict) -> Figure:
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
    return fig


def plot_isoflop(records: Sequence[dict], fit: dict, path: str | os.PathLike) -> Path:
    """``draw_isoflop`` saved as a PNG at ``path``; returns the path written."""
    return save_png(draw_isoflop(records, fit), path)


def _tokens_at(records: Sequence[dict]):
    """D(N, C) = C / flops_per_token(N), flops_per_token interpolated in log-log between the runs."""
    pairs = sorted({(r["N"], r["flops_per_token"]) for r in records})
    log_n, log_f = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])

    def tokens(n: np.ndarray, c: float) -> np.ndarray:
        return c / np.exp(np.interp(np.log(n), log_n, log_f))
    return tokens


def draw_loss_vs_n_and_d(records: Sequence[dict], fit: dict) -> Figure:
    """Two panels: final loss against N and against D, one colour per budget, with the parametric
    law (approach 3) along each budget's IsoFLOP line (D = C / flops_per_token(N)) and its limits
    E + A/N^alpha (infinite data) and E + B/D^beta (infinite model)."""
    colors = _budget_colors([r["budget"] for r in records])
    law = fit.get("approach3")
    with np.errstate(over="ignore", divide="ignore"):     # a degenerate fit may overflow: nothing drawn
        return _draw_loss_vs_n_and_d(records, law, colors)


def plot_loss_vs_n_and_d(records: Sequence[dict], fit: dict, path: str | os.PathLike) -> Path:
    """``draw_loss_vs_n_and_d`` saved as a PNG at ``path``; returns the path written."""
    return save_png(draw_loss_vs_n_and_d(records, fit), path)


def _draw_loss_vs_n_and_d(records: Sequence[dict], law: dict | None, colors: dict) -> Figure:
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
    return fig


def draw_frontier(records: Sequence[dict], fit: dict) -> Figure:
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
        _log_ticks(ax.xaxis, c[0], c[-1])
        _log_ticks(ax.yaxis, *ax.get_ylim())
        ax.set_xlabel("Training compute C (FLOPs)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="x-small")
    fig.suptitle("Compute-optimal frontier", fontsize="medium")
    fig.tight_layout()
    return fig


def plot_frontier(records: Sequence[dict], fit: dict, path: str | os.PathLike) -> Path:
    """``draw_frontier`` saved as a PNG at ``path``; returns the path written."""
    return save_png(draw_frontier(records, fit), path)
