"""Diagrams drawn from the model object itself: the architecture, one transformer block, the
attention mask, and GPT beside BERT (chapter 4's figures, and the encoder half).

The book draws GPT-2 once, by hand (figures 4.2, 4.13 and 4.15). Here every box is read from the
model you pass: ``architecture(model)`` walks its modules (embedding tables, one box per block,
the final norm, the head) and reads every shape from the parameters, so a model with 3 blocks
draws 3 blocks and a 768-wide one prints 768. Change the model and the diagram changes.

    architecture(model, num_tokens)    the stages as data: [Stage(boxes, shape), ...], input first
    draw_architecture(model)           embedding -> n_layers blocks -> norm -> head, with the shapes
    draw_block(block)                  one block: the two sub-layers, their shortcuts, each shape
    draw_attention_mask(att, T)        the mask added to the scores: causal triangle or nothing
    draw_gpt_vs_bert(gpt, encoder)     the two architectures side by side, what differs in orange

Each function returns a bare ``matplotlib.figure.Figure`` (no pyplot, no window): a notebook shows
it, ``fig.savefig(path)`` writes it. The heatmaps of the attention weights themselves, the loss
curves and the learning-rate schedule are in numpy_gpt/plots.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from numpy_gpt.encoder import EncoderModel
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.attention import MultiHeadAttention, causal_mask
from numpy_gpt.nn.block import TransformerBlock
from numpy_gpt.nn.gelu import ErfGELU

if TYPE_CHECKING:   # matplotlib is imported when a diagram is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLORS = {"input": "#ffffff", "embedding": "#cfe2f3", "norm": "#fff2cc", "dropout": "#eeeeee",
          "attention": "#f4cccc", "feedforward": "#d9ead3", "block": "#e6e0f0", "head": "#d9d2e9"}
HIGHLIGHT = "#e69138"           # the edge of a box that differs between GPT and BERT
DPI = 110                       # pixels per inch of a drawn figure: its small print stays legible in the PDF


@dataclass(frozen=True)
class Box:
    """One box of a diagram: a bold ``title``, a ``detail`` line (the module's name and weight
    shape), its colour ``kind``, the ``gid`` it is drawn with (``block-3``: tests count them) and
    ``role``, what the box does, compared between GPT and BERT."""
    title: str
    detail: str
    kind: str
    gid: str
    role: str = ""


@dataclass(frozen=True)
class Stage:
    """One level of the architecture: its boxes (side by side, summed when there are several) and
    the shape of the activation it outputs."""
    boxes: tuple[Box, ...]
    shape: str


def _blocks(model: GPTModel | EncoderModel) -> list:
    return list(model.trf_blocks if isinstance(model, GPTModel) else model.blocks)


def _gelu_name(ff) -> str:
    return "erf GELU" if isinstance(ff.layers[1], ErfGELU) else "tanh GELU"


def _post_ln(block: TransformerBlock) -> bool:
    return not block.pre_norm


def block_role(block: TransformerBlock) -> str:
    """What a block does, in words that differ exactly when the computations differ: the
    attention's direction, where the LayerNorms sit, and which GELU (the block's three switches)."""
    direction = "causal" if block.att.causal else "bidirectional"
    return f"{direction} attention, {'post' if _post_ln(block) else 'pre'}-LN, {_gelu_name(block.ff)}"


def _block_box(i: int, block: TransformerBlock) -> Box:
    att = block.att
    hidden = block.ff.layers[0].weight.shape[1]
    detail = (f"{att.num_heads} heads x {att.head_dim}, FF {att.d_in}->{hidden}->{att.d_out}, "
              f"{block_role(block)}, {block.num_parameters():,} params")
    return Box(f"{type(block).__name__} {i}", detail, "block", f"block-{i}", block_role(block))


def _dims(shape: Sequence[int | str], names: str) -> str:
    return f"({', '.join(names)}) = ({', '.join(f'{d:,}' if isinstance(d, int) else d for d in shape)})"


def architecture(model: GPTModel | EncoderModel, num_tokens: int | None = None,
                 batch_size: int = 1) -> list[Stage]:
    """The stages of ``model``, input first, each with the shape of its output for a batch of
    ``batch_size`` sequences of ``num_tokens`` tokens (default: the context length). Read from the
    model: one Stage per block, every size from a parameter's shape."""
    if not isinstance(model, (GPTModel, EncoderModel)):
        raise TypeError(f"architecture draws a GPTModel or an EncoderModel, got {type(model).__name__}")
    cfg = model.cfg
    t = cfg["context_length"] if num_tokens is None else num_tokens
    if not 1 <= t <= cfg["context_length"]:
        raise ValueError(f"num_tokens must be in [1, {cfg['context_length']}], got {t}")
    vocab, width = model.tok_emb.weight.shape
    btc = _dims((batch_size, t, width), "BTC")
    gpt = isinstance(model, GPTModel)
    tables = [Box("token embedding", f"tok_emb  {vocab:,} x {width}", "embedding", "tok_emb",
                  "token embedding"),
              Box("position embedding", f"pos_emb  {model.pos_emb.weight.shape[0]:,} x {width}", "embedding",
                  "pos_emb", "learned position embedding")]
    inputs = "token ids idx"
    if not gpt:
        tables.append(Box("token-type embedding", f"type_emb  {model.type_emb.weight.shape[0]} x {width}",
                          "embedding", "type_emb", "token-type embedding"))
        inputs = "token ids, token types, padding mask"
    stages = [Stage((Box("input", inputs, "input", "input", "input"),), _dims((batch_size, t), "BT")),
              Stage(tuple(tables), btc)]
    if not gpt:
        emb_norm = Box("LayerNorm", "emb_norm", "norm", "emb_norm", "LayerNorm on the embeddings")
        stages.append(Stage((emb_norm,), btc))
    stages.append(Stage((Box("dropout", f"drop_emb  p = {model.drop_emb.p}", "dropout", "drop_emb",
                             "dropout"),), btc))
    stages += [Stage((_block_box(i, block),), btc) for i, block in enumerate(_blocks(model))]
    if model.final_norm is not None:
        stages.append(Stage((Box("LayerNorm", "final_norm", "norm", "final_norm", "final LayerNorm"),), btc))
    logits = _dims((batch_size, t, vocab), "BTV")
    if gpt:
        head = Box("linear output head", f"out_head  {width} x {vocab:,}", "head", "head",
                   "next-token head: its own matrix")
    elif model.mlm_head is not None:
        head = Box("masked-LM head", f"mlm_head  dense {width} x {width}, GELU, LayerNorm, "
                   f"tok_emb^T (tied) + bias", "head", "head", "masked-token head: tied to tok_emb")
    else:
        return stages
    return [*stages, Stage((head,), logits)]


# -- drawing ------------------------------------------------------------------------------------------
def _draw_box(ax: Axes, box: Box, x: float, y: float, w: float, h: float, highlight: bool = False,
              fontsize: float = 8.0) -> None:
    from matplotlib.patches import FancyBboxPatch

    patch = FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0,rounding_size=0.05",
                           facecolor=COLORS[box.kind], edgecolor=HIGHLIGHT if highlight else "#444444",
                           linewidth=2.2 if highlight else 0.8)
    patch.set_gid(box.gid)
    ax.add_patch(patch)
    if box.detail and h >= 0.3:
        lines = box.detail.count("\n") + 1                       # the title above, the detail below
        ax.text(x + w / 2, y + h - 0.17, box.title, ha="center", va="center", fontsize=fontsize,
                weight="bold")
        ax.text(x + w / 2, y + (h - 0.3) / 2, box.detail, ha="center", va="center",
                fontsize=fontsize - 1.6, linespacing=1.3 if lines > 1 else 1.0)
    else:
        ax.text(x + w / 2, y + h / 2, box.title, ha="center", va="center", fontsize=fontsize - 1,
                weight="bold")


def _arrow(ax: Axes, x0: float, y0: float, x1: float, y1: float) -> None:
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0),
                arrowprops={"arrowstyle": "->", "lw": 0.8, "color": "#444444"})


def _stage_height(stage: Stage, compact: bool) -> float:
    if stage.boxes[0].kind == "block":
        return 0.2 if compact else 0.42
    return 0.5


def _draw_column(ax: Axes, stages: list[Stage], x: float, width: float, highlight: set[str],
                 shapes: bool = True, y0: float = 0.0) -> float:
    """Draw ``stages`` bottom to top from ``y0`` in a column at ``x``, the boxes whose role is in
    ``highlight`` edged in orange, the activation shapes on the right; return the top's y."""
    gap = 0.22
    compact = sum(s.boxes[0].kind == "block" for s in stages) > 16
    y, previous_top = y0, None
    last_shape = None
    for stage in stages:
        h = _stage_height(stage, compact)
        n = len(stage.boxes)
        plus = 0.22 if n > 1 else 0.0
        w = (width - plus * (n - 1)) / n
        for k, box in enumerate(stage.boxes):
            bx = x + k * (w + plus)
            _draw_box(ax, box, bx, y, w, h, highlight=box.role in highlight, fontsize=7.0 if n > 2 else 8.0)
            if k:
                ax.text(bx - plus / 2, y + h / 2, "+", ha="center", va="center", fontsize=11)
        if previous_top is not None:
            _arrow(ax, x + width / 2, previous_top, x + width / 2, y)
        if shapes and stage.shape != last_shape:
            ax.text(x + width + 0.12, y + h / 2, stage.shape, ha="left", va="center", fontsize=7,
                    color="#333333")
            last_shape = stage.shape
        previous_top = y + h
        y += h + gap
    return y - gap


def _new_axes(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(-0.15, height - 0.15)
    ax.set_axis_off()
    return fig, ax


def _column_height(stages: list[Stage]) -> float:
    compact = sum(s.boxes[0].kind == "block" for s in stages) > 16
    return sum(_stage_height(s, compact) + 0.22 for s in stages) - 0.22


def draw_architecture(model: GPTModel | EncoderModel, num_tokens: int | None = None, batch_size: int = 1,
                      title: str | None = None) -> Figure:
    """The architecture of ``model`` as the book's figure 4.15 draws it, bottom to top: the ids, the
    embedding tables summed, dropout, every block, the final norm and the head, with the weight
    shapes in the boxes and the activation shapes beside them (``architecture`` gives the data)."""
    stages = architecture(model, num_tokens, batch_size)
    height = _column_height(stages) + 0.75
    fig, ax = _new_axes(7.4, height)
    _draw_column(ax, stages, 0.15, 4.9, highlight=set())
    cfg = model.cfg
    ax.text(0.15, height - 0.45, title or f"{type(model).__name__}: {model.num_parameters():,} parameters, "
            f"{cfg['n_layers']} blocks, C = {cfg['emb_dim']}", fontsize=9, weight="bold", va="center")
    return fig


def _gpt_vs_bert_notes(gpt: GPTModel, encoder: EncoderModel) -> list[str]:
    """The differences between the two models, read from their modules, one line each."""
    notes = []
    g, e = _blocks(gpt)[0], _blocks(encoder)[0]
    if g.att.causal != e.att.causal:
        notes.append(f"attention: GPT {'causal' if g.att.causal else 'bidirectional'} (a token sees only the "
                     f"past), BERT {'causal' if e.att.causal else 'bidirectional'} (every real token)")
    if _post_ln(g) != _post_ln(e):
        where = {True: "after each residual sum (post-LN)", False: "before each sub-layer (pre-LN)"}
        notes.append(f"LayerNorm: GPT {where[_post_ln(g)]}, BERT {where[_post_ln(e)]}")
    if _gelu_name(g.ff) != _gelu_name(e.ff):
        notes.append(f"GELU: GPT {_gelu_name(g.ff)}, BERT {_gelu_name(e.ff)}")
    notes.append("embeddings: BERT adds a token-type table and normalises the sum")
    if encoder.mlm_head is not None:
        notes.append("head: GPT predicts the next token with its own matrix; BERT fills masked tokens "
                     "through a head tied to tok_emb")
    return notes


def draw_gpt_vs_bert(gpt: GPTModel, encoder: EncoderModel, num_tokens: int | None = None) -> Figure:
    """GPT's architecture beside the encoder's, each read from its model object; a box whose role
    has no match in the other column (a table only BERT has, a block that attends the other way or
    normalises elsewhere, the head) is edged in orange, and the differences are listed below."""
    if not isinstance(gpt, GPTModel) or not isinstance(encoder, EncoderModel):
        raise TypeError(f"draw_gpt_vs_bert wants a GPTModel and an EncoderModel, got "
                        f"{type(gpt).__name__} and {type(encoder).__name__}")
    left = architecture(gpt, num_tokens)
    right = architecture(encoder, num_tokens)
    roles = [{b.role for s in stages for b in s.boxes} for stages in (left, right)]
    differ = roles[0] ^ roles[1]
    notes = _gpt_vs_bert_notes(gpt, encoder)
    column = max(_column_height(left), _column_height(right))
    base = 0.22 * len(notes) + 0.2                                   # the notes sit below the columns
    height = base + column + 0.7
    fig, ax = _new_axes(9.6, height)
    for stages, x, name in ((left, 0.15, "GPT (decoder)"), (right, 4.95, "BERT-style encoder")):
        _draw_column(ax, stages, x, 4.45, differ, shapes=False, y0=base)
        ax.text(x, base + column + 0.3, name, fontsize=9.5, weight="bold", va="center")
    for i, note in enumerate(notes):
        ax.text(0.15, 0.22 * (len(notes) - 1 - i), f"- {note}", fontsize=7.2, va="center",
                color="#7f4a00")
    return fig


def draw_block(block: TransformerBlock, num_tokens: int = 4, batch_size: int = 1) -> Figure:
    """One transformer block, bottom to top: each sub-layer with its weight shapes and output shape,
    and the two shortcuts that add the block's input back (pre-LN: norm -> sub-layer -> dropout ->
    add; post-LN: sub-layer -> dropout -> add -> norm). Read from ``block``'s modules."""
    from matplotlib.patches import Circle

    att, ff = block.att, block.ff
    c, hidden = att.d_in, ff.layers[0].weight.shape[1]
    b, t, h, hd = batch_size, num_tokens, att.num_heads, att.head_dim
    btc = _dims((b, t, c), "BTC")
    bth = _dims((b, t, hidden), ("B", "T", "4C" if hidden == 4 * c else "H_ff"))
    mask = "causal mask" if att.causal else "padding mask"
    norm = [Box("LayerNorm", f"{n}: scale, shift ({c},)", "norm", n, "norm") for n in ("norm1", "norm2")]
    attention = Box("MultiHeadAttention", f"att: W_query, W_key, W_value, out_proj: {c} x {c} each\n"
                    f"{h} heads x {hd}: softmax(q k^T / sqrt({hd}) + {mask}) v", "attention", "att",
                    "attention")
    drops = [Box("dropout", f"{n}  p = {getattr(block, n).p}", "dropout", n, "dropout")
             for n in ("drop_shortcut", "drop_shortcut_ff")]
    ff_boxes = [(Box("Linear", f"ff.layers.0  {c} x {hidden}", "feedforward", "ff.0", "linear"), bth),
                (Box(_gelu_name(ff), "ff.layers.1", "feedforward", "ff.1", "gelu"), bth),
                (Box("Linear", f"ff.layers.2  {hidden} x {c}", "feedforward", "ff.2", "linear"), btc)]
    weights = f"{btc}\nweights {_dims((b, h, t, t), 'BHTT')}"
    # the steps bottom to top: (box, the text beside it) or "split" (a shortcut leaves) or "add"
    if _post_ln(block):
        steps = ["split", (attention, weights), (drops[0], ""), "add", (norm[0], btc), "split", *ff_boxes,
                 (drops[1], ""), "add", (norm[1], btc)]
    else:
        steps = ["split", (norm[0], ""), (attention, weights), (drops[0], ""), "add", "split", (norm[1], ""),
                 *ff_boxes, (drops[1], ""), "add"]
    box_h, radius, gap = 0.5, 0.13, 0.2

    def height_of(step) -> float:
        if step == "split":
            return 0.0
        if step == "add":
            return 2 * radius + gap
        return box_h + 0.2 * step[0].detail.count("\n") + gap

    height = box_h + gap + sum(height_of(step) for step in steps) + 1.0
    fig, ax = _new_axes(7.6, height)
    x, w = 1.0, 4.0
    mid = x + w / 2
    _draw_box(ax, Box("input x", "the residual stream", "input", "x", "input"), x, 0, w, box_h)
    ax.text(x + w + 0.12, box_h / 2, btc, fontsize=7, va="center")
    top, y = box_h, box_h + gap                      # top of the last thing drawn, bottom of the next
    shortcuts = []
    for step in steps:
        if step == "split":
            shortcuts.append((top + y) / 2)
            continue
        _arrow(ax, mid, top, mid, y)
        if step == "add":
            centre = y + radius
            ax.add_patch(Circle((mid, centre), radius, facecolor="white", edgecolor="#444444", lw=0.8))
            ax.text(mid, centre, "+", ha="center", va="center", fontsize=10)
            start = shortcuts.pop()                                    # the shortcut: left, up, into the +
            ax.plot([mid, x - 0.45, x - 0.45], [start, start, centre], color="#444444", lw=0.8)
            _arrow(ax, x - 0.45, centre, mid - radius, centre)
            ax.text(x - 0.5, (start + centre) / 2, "shortcut", rotation=90, fontsize=6.5, ha="right",
                    va="center", color="#555555")
            top, y = centre + radius, centre + radius + gap
            continue
        box, beside = step
        bh = height_of(step) - gap
        _draw_box(ax, box, x, y, w, bh)
        if beside:
            ax.text(x + w + 0.12, y + bh / 2, beside, fontsize=7, va="center", linespacing=1.4)
        top, y = y + bh, y + bh + gap
    _arrow(ax, mid, top, mid, top + 0.3)
    ax.text(mid, top + 0.42, "to the next block", ha="center", fontsize=7)
    ax.text(0.15, height - 0.4, f"{type(block).__name__}: {block_role(block)}, {block.num_parameters():,} "
            f"parameters", fontsize=9, weight="bold", va="center")
    return fig


def draw_attention_mask(att: MultiHeadAttention, num_tokens: int,
                        tokens: Sequence[str] | None = None) -> Figure:
    """The mask an attention layer adds to its scores q k^T before the softmax, for ``num_tokens``
    tokens: -inf where query i may not see key j (j > i in a causal layer, the rows of
    ``causal_mask``), 0 where it may. A bidirectional layer (BERT) masks nothing."""
    if not isinstance(att, MultiHeadAttention):
        raise TypeError(f"draw_attention_mask reads a MultiHeadAttention layer, got {type(att).__name__}")
    if not 1 <= num_tokens <= att.context_length:
        raise ValueError(f"num_tokens must be in [1, {att.context_length}], got {num_tokens}")
    if tokens is not None and len(tokens) != num_tokens:
        raise ValueError(f"got {len(tokens)} token labels for {num_tokens} tokens")
    masked = (causal_mask(att.context_length)[:num_tokens, :num_tokens] if att.causal
              else np.zeros((num_tokens, num_tokens), dtype=bool))
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    side = 1.2 + 0.38 * num_tokens
    fig = Figure(figsize=(side + 0.6, side), dpi=DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(masked, cmap=ListedColormap(["#d9ead3", "#999999"]), vmin=0, vmax=1)
    if num_tokens <= 16:
        for i in range(num_tokens):
            for j in range(num_tokens):
                ax.text(j, i, "-inf" if masked[i, j] else "0", ha="center", va="center", fontsize=7)
    labels = [str(tok) for tok in tokens] if tokens is not None else [str(i) for i in range(num_tokens)]
    ax.set_xticks(range(num_tokens), labels, rotation=90 if tokens is not None else 0, fontsize=7)
    ax.set_yticks(range(num_tokens), labels, fontsize=7)
    ax.set_xlabel("key j (attended to)")
    ax.set_ylabel("query i")
    what = "causal: -inf above the diagonal" if att.causal else "bidirectional: nothing masked"
    ax.set_title(f"mask added to the scores ({what})", fontsize="small")
    return fig
