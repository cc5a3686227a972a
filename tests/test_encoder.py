"""EncoderModel (numpy_gpt/encoder.py): GPT's block with BERT's switches, the MLM and classification heads.

Proofs: float64 finite differences for every new layer and for the whole model with its MLM loss
and with its classification head; float32 parity of logits, loss and EVERY parameter gradient with
transformers' BertForMaskedLM and BertForSequenceClassification, loaded through the written-out
name map of numpy_gpt/gpt2/bert.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.encoder import (
    BERT_CONFIG_BASE,
    EncoderBlock,
    EncoderClassifier,
    EncoderModel,
    Tanh,
    encoder_parameter_shapes,
    validate_encoder_config,
)
from numpy_gpt.gpt2.bert import bert_name_map, to_hf_state_dict
from numpy_gpt.gradcheck import WithLoss, gradcheck
from numpy_gpt.nn.block import TransformerBlock
from numpy_gpt.nn.gelu import ErfGELU
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import Module, no_grad

torch = reference("torch")
transformers = reference("transformers")

EPS = 1e-5
TINY = {"vocab_size": 23, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 2,
        "drop_rate": 0.0, "qkv_bias": True, "type_vocab_size": 2, "norm": "post", "gelu": "erf",
        "ln_eps": 1e-12}


def randomize(model: Module, seed: int, std: float = 0.3) -> Module:
    """O(std) random weights everywhere (LayerNorm scales around 1), so no gradient is tiny."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        noise = rng.standard_normal(p.shape) * std
        p.data[...] = 1 + noise if name.endswith(".scale") else noise
    return model


def ids(shape, high, seed):
    return np.random.default_rng(seed).integers(0, high, size=shape)


# -- BERT's pooler activation ----------------------------------------------------------------------
def test_tanh_gradcheck_float64():
    x = np.random.default_rng(2).standard_normal((3, 4, 5)) * 2
    report = gradcheck(Tanh(), x, eps=EPS)
    assert report.ok, str(report)


# -- blocks and model: finite differences ----------------------------------------------------------
# The checks sample a few elements of each tensor (max_elems_per_param): every tensor, hence every
# path through the layer or model, is still checked, at a fraction of the cost.
def test_encoder_block_is_a_deprecated_transformer_block():
    """The old EncoderBlock(cfg) still builds BERT's block, and forward(x, mask) still works: it is
    TransformerBlock with BERT's switches (test_block.py checks its gradients in every combination)."""
    cfg = validate_encoder_config(TINY)
    with pytest.warns(DeprecationWarning, match="TransformerBlock"):
        old = randomize(EncoderBlock(cfg, rng=np.random.default_rng(0), dtype=np.float64), 1)
    new = TransformerBlock(cfg, causal=False, pre_norm=False, gelu="erf", eps=1e-12, dtype=np.float64)
    new.load_state_dict(old.state_dict())
    assert isinstance(old, TransformerBlock) and not old.att.causal and not old.pre_norm
    assert isinstance(old.ff.layers[1], ErfGELU) and old.norm1.eps == 1e-12
    x = np.random.default_rng(3).standard_normal((2, 5, 8))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(old(x, mask), new(x, attention_mask=mask))


def test_config_is_cfg_with_a_deprecated_config_alias_and_two_dropout_rates():
    model = EncoderModel({**TINY, "drop_rate": 0.2})
    assert model.cfg["drop_rate_attn"] == 0.2                  # one rate given: it serves both
    with pytest.warns(DeprecationWarning, match=r"EncoderModel.config is deprecated.*\.cfg"):
        assert model.config is model.cfg
    clf = EncoderClassifier(TINY, 2)
    with pytest.warns(DeprecationWarning, match="EncoderClassifier.config"):
        assert clf.config is clf.cfg is clf.encoder.cfg
    two = EncoderModel({**TINY, "drop_rate": 0.2, "drop_rate_attn": 0.05})
    block = two.blocks[0]
    assert (block.att.dropout.p, block.drop_shortcut.p, block.drop_shortcut_ff.p) == (0.05, 0.2, 0.2)
    assert two.drop_emb.p == 0.2
    with pytest.raises(ValueError, match="drop_rate_attn must be"):
        EncoderModel({**TINY, "drop_rate_attn": 1.5})


@pytest.mark.parametrize("norm,gelu,drop_rate", [("post", "erf", 0.0), ("pre", "tanh", 0.3)])
def test_encoder_model_with_mlm_loss_gradcheck_float64(norm, gelu, drop_rate):
    cfg = {**TINY, "norm": norm, "gelu": gelu, "drop_rate": drop_rate, "n_layers": 1}
    model = randomize(EncoderModel(cfg, seed=0, dtype=np.float64), 0)
    idx, types = ids((2, 6), 23, 1), ids((2, 6), 2, 2)
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2])
    labels = np.full((2, 6), -100)
    labels[0, [1, 4]] = [3, 9]
    labels[1, 2] = 17                                          # loss only at the chosen positions
    state = model.dropout_rng.bit_generator.state
    path = WithLoss(model, lambda logits: cross_entropy(logits, labels))
    report = gradcheck(path, [idx, types, mask], eps=EPS, max_elems_per_param=6,
                       before_forward=lambda: setattr(model.dropout_rng.bit_generator, "state", state))
    assert report.ok, str(report)
    names = [row.name for row in report.rows]
    assert names == ["model." + name for name, _ in model.named_parameters()]
    assert "model.tok_emb.weight" in names and not any("decoder" in n for n in names)   # tied: once


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_classifier_gradcheck_float64(pooling):
    cfg = {**TINY, "n_layers": 1}
    model = randomize(EncoderClassifier(cfg, 3, pooling, seed=0, dtype=np.float64), 4)
    idx = ids((3, 5), 23, 5)
    mask = np.array([[1] * 5, [1] * 3 + [0] * 2, [1] + [0] * 4])
    path = WithLoss(model, lambda logits: cross_entropy(logits, np.array([0, 2, 1])))
    report = gradcheck(path, [idx, None, mask], eps=EPS,
                       max_elems_per_param=6)
    assert report.ok, str(report)


def test_tied_embedding_gets_both_gradients():
    """tok_emb.weight's gradient = the decoder's dlogits^T z plus the embedding's scatter-add."""
    model = randomize(EncoderModel(TINY, seed=0, dtype=np.float64), 1)
    idx = ids((1, 4), 23, 0)
    dlogits = np.random.default_rng(1).standard_normal((1, 4, 23))
    model(idx)
    model.backward(dlogits)
    both = model.tok_emb.weight.grad.copy()
    model.zero_grad()
    model(idx)
    dz = model.mlm_head.backward(dlogits)       # the head's use alone
    head_only = model.tok_emb.weight.grad.copy()
    model.encode_backward(dz)
    np.testing.assert_allclose(model.tok_emb.weight.grad, both)
    assert not np.allclose(head_only, both)


def test_padding_changes_nothing_and_mean_pooling_skips_it():
    model = randomize(EncoderModel(TINY, seed=0, dtype=np.float64), 2)
    idx = ids((1, 7), 23, 3)
    padded = idx.copy()
    padded[0, 4:] = 0
    with no_grad():
        alone = model(idx[:, :4])
        inside = model(padded, None, np.array([[1, 1, 1, 1, 0, 0, 0]]))
    np.testing.assert_allclose(inside[:, :4], alone, atol=1e-12)
    clf = randomize(EncoderClassifier(TINY, 2, "mean", seed=0, dtype=np.float64), 2)
    with no_grad():
        np.testing.assert_allclose(clf(padded, None, np.array([[1, 1, 1, 1, 0, 0, 0]])), clf(idx[:, :4]),
                                   atol=1e-12)


def test_config_and_input_errors():
    assert validate_encoder_config({k: v for k, v in BERT_CONFIG_BASE.items()
                                    if k not in ("norm", "gelu", "ln_eps", "type_vocab_size")}) \
        == BERT_CONFIG_BASE                                    # the four extras default to BERT's
    with pytest.raises(ValueError, match="norm must be 'pre' or 'post'"):
        EncoderModel({**TINY, "norm": "middle"})
    with pytest.raises(ValueError, match="gelu must be"):
        EncoderModel({**TINY, "gelu": "relu"})
    with pytest.raises(KeyError, match="encoder config"):
        EncoderModel({"vocab_size": 5})
    with pytest.raises(ValueError, match=r"\['normalization'\] are switches of the decoder"):
        EncoderModel({**TINY, "normalization": "rmsnorm"})          # Llama's; BERT keeps its LayerNorms
    model = EncoderModel(TINY)
    with pytest.raises(ValueError, match="exceed context_length"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="token_type_ids must have"):
        model(np.zeros((1, 3), dtype=np.int64), np.zeros((1, 2), dtype=np.int64))
    with pytest.raises(IndexError, match="outside"):
        model(np.zeros((1, 3), dtype=np.int64), np.full((1, 3), 2))
    with pytest.raises(ValueError, match="mlm_head=False"):
        EncoderModel(TINY, mlm_head=False)(np.zeros((1, 3), dtype=np.int64))
    assert set(encoder_parameter_shapes(TINY)) == {n for n, _ in model.named_parameters()}
    assert {n: p.shape for n, p in model.named_parameters()} == encoder_parameter_shapes(TINY)


# -- transformers parity in float32 -----------------------------------------------------------------
def hf_config(cfg, **extra):
    return transformers.BertConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"],
                      num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
                      intermediate_size=cfg.get("hidden_dim", 4 * cfg["emb_dim"]),
                      max_position_embeddings=cfg["context_length"],
                      type_vocab_size=cfg["type_vocab_size"], layer_norm_eps=cfg["ln_eps"],
                      hidden_act="gelu" if cfg["gelu"] == "erf" else "gelu_pytorch_tanh",
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      attn_implementation="eager", **extra)


def load_into_hf(hf_model, ours):
    state = {k: torch.tensor(v) for k, v in to_hf_state_dict(ours).items()}
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    assert not unexpected
    assert set(missing) <= {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                            "bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}
    hf_model.tie_weights()
    hf_model.eval()


def assert_grads_match(ours, hf_model, head):
    hf_params = dict(hf_model.named_parameters())
    params = dict(ours.named_parameters())
    for name, (theirs, transpose) in bert_name_map(ours.cfg["n_layers"], head).items():
        g = hf_params[theirs].grad.numpy()
        assert params[name].grad.dtype == np.float32
        np.testing.assert_allclose(params[name].grad, g.T if transpose else g, atol=2e-5, rtol=1e-4,
                                   err_msg=f"{name} <- {theirs}")


@pytest.mark.parametrize("gelu,hidden_dim", [("erf", 40), ("tanh", 64)])   # 40: not 4 x 16
def test_matches_transformers_bert_for_masked_lm_float32(gelu, hidden_dim):
    cfg = {**TINY, "vocab_size": 37, "context_length": 12, "emb_dim": 16, "n_heads": 4, "gelu": gelu,
           "hidden_dim": hidden_dim}
    ours = randomize(EncoderModel(cfg, seed=0), 0, std=0.2)
    hf = transformers.BertForMaskedLM(hf_config(cfg))
    load_into_hf(hf, ours)
    idx, types = ids((3, 10), 37, 1), ids((3, 10), 2, 2)
    mask = np.ones((3, 10), dtype=np.int64)
    mask[1, 7:] = 0
    mask[2, 3:] = 0
    labels = np.where(np.random.default_rng(3).random((3, 10)) < 0.4, idx, -100)
    labels[mask == 0] = -100
    labels[0, 0] = 5

    out = hf(input_ids=torch.tensor(idx), token_type_ids=torch.tensor(types),
             attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    out.loss.backward()
    logits = ours(idx, types, mask)
    loss, dlogits = cross_entropy(logits, labels)
    ours.backward(dlogits)

    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, out.logits.detach().numpy(), atol=1e-4, rtol=1e-4)
    assert loss == pytest.approx(out.loss.item(), rel=1e-5)
    assert_grads_match(ours, hf, "mlm")


def test_matches_transformers_bert_for_sequence_classification_float32():
    cfg = {**TINY, "vocab_size": 31, "emb_dim": 16, "n_heads": 4}
    ours = randomize(EncoderClassifier(cfg, 3, "cls", seed=0), 5, std=0.2)
    hf = transformers.BertForSequenceClassification(hf_config(cfg, num_labels=3, classifier_dropout=0.0))
    load_into_hf(hf, ours)
    idx, types = ids((4, 7), 31, 6), ids((4, 7), 2, 7)
    mask = np.ones((4, 7), dtype=np.int64)
    mask[3, 2:] = 0
    labels = np.array([0, 2, 1, 2])

    out = hf(input_ids=torch.tensor(idx), token_type_ids=torch.tensor(types),
             attention_mask=torch.tensor(mask), labels=torch.tensor(labels))
    out.loss.backward()
    logits = ours(idx, types, mask)
    loss, dlogits = cross_entropy(logits, labels)
    ours.backward(dlogits)

    np.testing.assert_allclose(logits, out.logits.detach().numpy(), atol=1e-5, rtol=1e-4)
    assert loss == pytest.approx(out.loss.item(), rel=1e-5)
    assert_grads_match(ours, hf, "classifier")
