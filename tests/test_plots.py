"""Tests for numpy_gpt/plots.py: PNG files written, and the attention weights behind the heatmaps.

The weights are checked against the model's own attention layer: used with the value projection
and out_proj they must reproduce MultiHeadAttention's output (computed by different code).
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from helpers import tiny_cfg
from matplotlib.image import imread

from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import no_grad
from numpy_gpt.optim import ConstantLR, WarmupCosineLR
from numpy_gpt.plots import (
    attention_weights,
    draw_attention,
    draw_lr_schedule,
    plot_attention,
    plot_attention_side_by_side,
    plot_losses,
)

TINY = tiny_cfg(vocab_size=40, context_length=10, drop_rate=0.2, qkv_bias=True)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def model() -> GPTModel:
    return GPTModel(TINY, seed=3)


def test_plot_losses_writes_a_png(tmp_path):
    path = plot_losses([0, 5, 10], [0, 1000, 2000], [4.0, 3.1, 2.5], [4.1, 3.5, 3.3],
                       tmp_path / "sub" / "loss.png", title="tiny run")
    assert path == tmp_path / "sub" / "loss.png"
    assert path.read_bytes()[:8] == PNG_MAGIC
    height, width, _ = imread(path).shape
    assert width > 300 and height > 200
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"], "no temporary file left behind"


def test_plot_losses_rejects_ragged_histories(tmp_path):
    with pytest.raises(ValueError, match="one length"):
        plot_losses([0, 1], [0, 10], [1.0], [1.0, 2.0], tmp_path / "x.png")


def test_plotting_leaves_the_global_backend_alone(tmp_path):
    backend = matplotlib.get_backend()
    plot_losses([0], [0], [1.0], [1.0], tmp_path / "a.png")
    assert matplotlib.get_backend() == backend


def test_attention_weights_are_causal_distributions(model):
    idx = np.random.default_rng(0).integers(0, 40, (2, 7))
    weights = attention_weights(model, idx)
    assert weights.shape == (2, 2, 2, 7, 7) and weights.dtype == np.float32
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-5)
    assert (weights[..., np.triu_indices(7, k=1)[0], np.triu_indices(7, k=1)[1]] == 0).all()
    assert model.training, "the model's mode is restored"


def test_attention_weights_reproduce_the_attention_layer(model):
    idx = np.random.default_rng(1).integers(0, 40, (1, 6))
    weights = attention_weights(model, idx)
    model.eval()
    with no_grad():
        x = model.tok_emb(idx) + model.pos_emb(6)
        for layer, block in enumerate(model.trf_blocks):
            h = block.norm1(x)
            v = block.att.W_value(h).reshape(1, 6, 2, 8).transpose(0, 2, 1, 3)    # (B, H, T, hd)
            context = (weights[layer] @ v).transpose(0, 2, 1, 3).reshape(1, 6, 16)
            np.testing.assert_allclose(block.att.out_proj(context), block.att(h), rtol=1e-5, atol=1e-6)
            x = block(x)
    model.train()


def test_plot_attention_writes_one_panel_per_layer_and_head(model, tmp_path):
    tokens = list("abcde")
    path = plot_attention(model, np.arange(5), tmp_path / "att.png", tokens=tokens)
    assert path.read_bytes()[:8] == PNG_MAGIC
    one = plot_attention(model, np.arange(5)[None], tmp_path / "one.png", layers=[1], heads=[0])
    assert imread(one).shape[1] < imread(path).shape[1]


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": [2]}, "layer"), ({"heads": [-1]}, "head"), ({"tokens": ["a"]}, "labels")])
def test_plot_attention_rejects_bad_selections(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot_attention(model, np.arange(4), tmp_path / "x.png", **kwargs)


def test_plot_attention_wants_one_prompt(model, tmp_path):
    with pytest.raises(ValueError, match="one prompt"):
        plot_attention(model, np.zeros((2, 3), np.int64), tmp_path / "x.png")


def _overlapping_tick_labels(fig) -> list[tuple[str, str]]:
    """Pairs of drawn tick labels of one axis whose boxes overlap (rendered with Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    pairs = []
    for ax in fig.axes:
        for axis, lo, hi in ((ax.xaxis, ax.bbox.x0, ax.bbox.x1), (ax.yaxis, ax.bbox.y0, ax.bbox.y1)):
            boxes = []
            for label in axis.get_ticklabels(which="both"):
                if not (label.get_visible() and label.get_text()):
                    continue
                box = label.get_window_extent(renderer)
                middle = (box.x0 + box.x1) / 2 if axis is ax.xaxis else (box.y0 + box.y1) / 2
                if lo - 1 <= middle <= hi + 1:                             # a tick inside the view
                    boxes.append((label.get_text(), box.shrunk(0.9, 0.9)))
            pairs += [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
                      if box_a.overlaps(box_b)]
    return pairs


def test_no_tick_labels_overlap_in_the_attention_heatmaps_and_the_frontier(model, tmp_path, monkeypatch):
    """Issue 24 item 25: 32 token labels on a 2-inch heatmap, and log axes spanning less than one
    decade, drew labels on top of each other."""
    import numpy_gpt.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_png", lambda fig, path: figures.append(fig) or path)
    wide = GPTModel({**TINY, "context_length": 32}, seed=1)
    plot_attention(wide, np.arange(32) % 40, tmp_path / "att.png", tokens=[f" tok{i}" for i in range(32)],
                   layers=[0], heads=[0, 1])
    records = [{"budget": b} for b in (3e10, 5e10)]                       # C from 1.5e10 to 1e11
    fit = {"approach1": {"N_coef": 0.3, "a": 0.5, "D_coef": 0.5, "b": 0.5}}
    plots.plot_frontier(records, fit, tmp_path / "frontier.png")
    for fig in figures:
        assert _overlapping_tick_labels(fig) == []
    labels = [t.get_text() for t in figures[0].axes[0].get_xticklabels() if t.get_text()]
    assert 4 <= len(labels) <= 32                                       # thinned if need be, not dropped


def test_draw_attention_draws_one_heatmap_per_panel_on_one_scale():
    square, triangle = np.full((3, 3), 1 / 3), np.tril(np.ones((3, 3))) / np.arange(1, 4)[:, None]
    fig = draw_attention([(square, list("abc"), "encoder"), (triangle, list("abc"), "decoder"),
                          (square, None, "unlabelled")], columns=2)
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 3 and all(im.get_clim() == (0.0, 1.0) for im in images)
    np.testing.assert_array_equal(images[1].get_array(), triangle)
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["encoder", "decoder", "unlabelled"]


def test_draw_attention_refuses_a_panel_that_is_not_square():
    with pytest.raises(ValueError, match="square"):
        draw_attention([(np.ones((2, 3)), None, "bad")])
    with pytest.raises(ValueError, match="labels"):
        draw_attention([(np.ones((2, 2)), ["a"], "bad")])


def test_side_by_side_is_the_same_drawer_saved(tmp_path):
    weights = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]
    path = plot_attention_side_by_side(np.full((4, 4), 0.25), list("abcd"), weights, list("abcd"),
                                       tmp_path / "pair.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_draw_lr_schedule_plots_the_schedule_and_marks_the_warmup():
    schedule = WarmupCosineLR(1e-3, total_steps=50, warmup_steps=10, initial_lr=1e-5, min_lr=1e-4)
    fig = draw_lr_schedule(schedule, 60)
    ax = fig.axes[0]
    steps, lrs = ax.lines[0].get_data()
    np.testing.assert_allclose(lrs, [schedule(int(s)) for s in steps])
    assert steps[-1] == 60 and lrs[0] == 1e-5 and lrs[10] == 1e-3 and lrs[-1] == pytest.approx(1e-4)
    assert ax.lines[1].get_xdata()[0] == 10, "a dotted line at the end of the warmup"
    assert len(draw_lr_schedule(ConstantLR(3e-4), 5).axes[0].lines) == 1
    with pytest.raises(ValueError, match="total_steps"):
        draw_lr_schedule(schedule, 0)
