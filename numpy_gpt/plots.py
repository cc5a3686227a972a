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
from numpy_gpt.nn.attention import causal_mask
from numpy_gpt.nn.module import no_grad

if TYPE_CHECKING:   # matplotlib is imported when a plot is drawn: it costs ~1 s at `import numpy_gpt`
    from matplotlib.figure import Figure


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
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
    return _save_png(fig, path)


def attention_weights(model, idx: np.ndarray) -> np.ndarray:
    """Causal attention weights of every layer and head for token ids ``idx`` (B, T).

    Returns (n_layers, B, n_heads, T, T) float32: entry [l, b, h, i, j] is how much position i
    attends to position j in head h of layer l (each row sums to 1; zero above the diagonal).
    The model runs in evaluation mode (no dropout) under ``no_grad``; each block's weights are
    recomputed from its own ``norm1`` and query/key projections, as chapter 3 computes them.
    """
    if not isinstance(idx, np.ndarray) or idx.ndim != 2:
        raise ValueError(f"idx must be a 2-D array of token ids (batch, tokens), got {np.shape(idx)}")
    batch_size, num_tokens = idx.shape
    n_heads = model.cfg["n_heads"]
    head_dim = model.cfg["emb_dim"] // n_heads
    causal = causal_mask(num_tokens)                                          # (T, T) True = masked
    scale = np.asarray(1.0 / np.sqrt(head_dim), dtype=model.dtype)
    weights = []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            x = model.drop_emb(model.tok_emb(idx) + model.pos_emb(np.arange(num_tokens)))  # (B, T, C)
            for block in model.trf_blocks:
                h = block.norm1(x)                                                  # (B, T, C)
                q = block.att.W_query(h).reshape(batch_size, num_tokens, n_heads, head_dim)
                k = block.att.W_key(h).reshape(batch_size, num_tokens, n_heads, head_dim)
                scores = np.einsum("bqhd,bkhd->bhqk", q, k) * scale              # (B, H, T, T)
                scores[..., causal] = -np.inf
                scores -= scores.max(axis=-1, keepdims=True)
                np.exp(scores, out=scores)
                scores /= scores.sum(axis=-1, keepdims=True)
                weights.append(scores)
                x = block(x)
    finally:
        model.train(was_training)
    return np.stack(weights)


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
    return _save_png(fig, path)
