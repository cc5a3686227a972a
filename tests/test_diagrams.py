"""Tests for numpy_gpt/diagrams.py: each diagram is read from the model it is given.

A diagram is checked through what it drew: the boxes carry gids (``block-3``), the texts carry the
shapes, and the GPT-vs-BERT figure edges in orange exactly the boxes whose role has no match.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import tiny_cfg
from matplotlib.colors import to_hex

from numpy_gpt.diagrams import (
    HIGHLIGHT,
    architecture,
    draw_architecture,
    draw_attention_mask,
    draw_block,
    draw_gpt_vs_bert,
)
from numpy_gpt.encoder import EncoderModel
from numpy_gpt.model import GPT_CONFIG_124M, GPTModel


def gids(fig) -> list[str]:
    return [p.get_gid() for ax in fig.axes for p in ax.patches if p.get_gid()]


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def renders(fig) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()[:4] == b"\x89PNG"


@pytest.mark.parametrize("n_layers", [1, 3, 5])
def test_the_architecture_draws_one_box_per_block(n_layers):
    model = GPTModel(tiny_cfg(n_layers=n_layers), seed=0)
    fig = draw_architecture(model, num_tokens=4)
    blocks = [g for g in gids(fig) if g.startswith("block-")]
    assert blocks == [f"block-{i}" for i in range(n_layers)]
    assert {"tok_emb", "pos_emb", "drop_emb", "final_norm", "head"} <= set(gids(fig))
    assert renders(fig)


def test_the_architecture_reads_its_shapes_from_the_parameters():
    model = GPTModel(GPT_CONFIG_124M, init=False)                  # zeros, allocated lazily
    stages = architecture(model, num_tokens=256, batch_size=2)
    assert stages[0].shape == "(B, T) = (2, 256)"
    assert stages[1].shape == "(B, T, C) = (2, 256, 768)"
    assert stages[-1].shape == "(B, T, V) = (2, 256, 50,257)"
    drawn = " ".join(texts(draw_architecture(model)))
    assert "tok_emb  50,257 x 768" in drawn and "out_head  768 x 50,257" in drawn
    assert "12 heads x 64, FF 768->3072->768" in drawn and "163,009,536 parameters" in drawn
    model.trf_blocks[0].att.num_heads = 6                          # the drawing reads the module
    model.trf_blocks[0].att.head_dim = 128
    assert "6 heads x 128" in " ".join(texts(draw_architecture(model)))


def test_the_encoder_has_its_three_tables_and_norm_and_no_final_norm_when_post_ln():
    encoder = EncoderModel({**tiny_cfg(), "qkv_bias": True}, seed=0)
    drawn = set(gids(draw_architecture(encoder, num_tokens=4)))
    assert {"tok_emb", "pos_emb", "type_emb", "emb_norm", "block-0", "block-1", "head"} <= drawn
    assert "final_norm" not in drawn
    pre = EncoderModel({**tiny_cfg(), "norm": "pre"}, seed=0)
    assert "final_norm" in set(gids(draw_architecture(pre, num_tokens=4)))


def orange(fig) -> set[str]:
    return {p.get_gid() for ax in fig.axes for p in ax.patches
            if p.get_gid() and to_hex(p.get_edgecolor()) == HIGHLIGHT}


def test_gpt_vs_bert_edges_what_differs_and_lists_it():
    gpt = GPTModel(tiny_cfg(), seed=0)
    bert = EncoderModel({**tiny_cfg(), "qkv_bias": True}, seed=0)
    fig = draw_gpt_vs_bert(gpt, bert, num_tokens=4)
    assert orange(fig) == {"type_emb", "emb_norm", "block-0", "block-1", "final_norm", "head"}
    notes = " ".join(texts(fig))
    assert "causal" in notes and "post-LN" in notes and "erf GELU" in notes
    assert renders(fig)


def test_gpt_vs_bert_follows_the_encoder_it_is_given():
    gpt = GPTModel(tiny_cfg(), seed=0)
    like_gpt = EncoderModel({**tiny_cfg(), "norm": "pre", "gelu": "tanh"}, seed=0)
    fig = draw_gpt_vs_bert(gpt, like_gpt, num_tokens=4)
    notes = " ".join(texts(fig))
    assert "post-LN" not in notes and "GELU: GPT" not in notes       # only attention differs now
    assert "block-0" in orange(fig) and "final_norm" not in orange(fig)
    with pytest.raises(TypeError, match="GPTModel and an EncoderModel"):
        draw_gpt_vs_bert(like_gpt, gpt)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_the_block_diagram_has_both_shortcuts_and_the_feed_forward_width(norm):
    if norm == "pre":
        block = GPTModel(tiny_cfg(), seed=0).trf_blocks[0]
    else:
        block = EncoderModel({**tiny_cfg(), "norm": "post"}, seed=0).blocks[0]
    fig = draw_block(block, num_tokens=5, batch_size=2)
    drawn = texts(fig)
    assert drawn.count("+") == 2 and drawn.count("shortcut") == 2
    assert "(B, T, 4C) = (2, 5, 64)" in drawn
    assert any("weights (B, H, T, T) = (2, 2, 5, 5)" in t for t in drawn)
    order = [g for g in gids(fig) if g in ("norm1", "att", "ff.0")]
    assert order == (["norm1", "att", "ff.0"] if norm == "pre" else ["att", "norm1", "ff.0"])
    assert renders(fig)


def test_the_mask_is_the_causal_triangle_or_nothing():
    gpt_att = GPTModel(tiny_cfg(), seed=0).trf_blocks[0].att
    drawn = texts(draw_attention_mask(gpt_att, 5, tokens=list("abcde")))
    assert drawn.count("-inf") == 10 and drawn.count("0") == 15
    bert_att = EncoderModel(tiny_cfg(), seed=0).blocks[0].att
    assert "-inf" not in texts(draw_attention_mask(bert_att, 5))
    with pytest.raises(ValueError, match="num_tokens"):
        draw_attention_mask(gpt_att, 17)
    with pytest.raises(ValueError, match="labels"):
        draw_attention_mask(gpt_att, 3, tokens=["a"])


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(TypeError, match="GPTModel or an EncoderModel"):
        architecture(np.zeros(3))
    with pytest.raises(ValueError, match="num_tokens"):
        architecture(GPTModel(tiny_cfg(), seed=0), num_tokens=0)
