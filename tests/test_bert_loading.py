"""load_bert (numpy_gpt/gpt2/bert.py): BERT folders written by transformers' save_pretrained, read
with numpy_gpt's own safetensors reader, give the logits transformers gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.encoder import EncoderClassifier, EncoderModel
from numpy_gpt.gpt2.bert import load_bert
from numpy_gpt.gpt2.safetensors import SafetensorsError, load_file, save_file
from numpy_gpt.nn.module import no_grad

torch = reference("torch")
transformers = reference("transformers")


def tiny_config(**extra):
    settings = {"vocab_size": 41, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "max_position_embeddings": 24, "type_vocab_size": 2, **extra}
    return transformers.BertConfig(**settings)


def save(model_class, folder, **extra):
    torch.manual_seed(0)
    model = model_class(tiny_config(**extra))
    with torch.no_grad():                       # BERT's 0.02 init gives near-zero logits: widen it
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    model.save_pretrained(folder)
    return model


def inputs():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 41, size=(2, 9))
    types = rng.integers(0, 2, size=(2, 9))
    mask = np.ones((2, 9), dtype=np.int64)
    mask[1, 6:] = 0
    return idx, types, mask


def hf_forward(model, idx, types, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(idx), token_type_ids=torch.tensor(types),
                     attention_mask=torch.tensor(mask))


@pytest.mark.parametrize("act", ["gelu", "gelu_pytorch_tanh"])
def test_masked_lm_folder_gives_transformers_logits(tmp_path, act):
    hf = save(transformers.BertForMaskedLM, tmp_path, hidden_act=act)
    model = load_bert(tmp_path)
    assert isinstance(model, EncoderModel) and model.cfg["gelu"] == ("erf" if act == "gelu" else "tanh")
    idx, types, mask = inputs()
    with no_grad():
        logits = model(idx, types, mask)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, hf_forward(hf, idx, types, mask).logits.numpy(), atol=1e-4, rtol=1e-4)
    assert model.mlm_head.decoder_weight is model.tok_emb.weight


def test_classifier_and_bare_model_folders(tmp_path):
    hf = save(transformers.BertForSequenceClassification, tmp_path / "clf", num_labels=3)
    clf = load_bert(tmp_path / "clf")
    assert isinstance(clf, EncoderClassifier) and clf.num_classes == 3
    idx, types, mask = inputs()
    with no_grad():
        np.testing.assert_allclose(clf(idx, types, mask), hf_forward(hf, idx, types, mask).logits.numpy(),
                                   atol=1e-5, rtol=1e-4)
    bare = save(transformers.BertModel, tmp_path / "bare")
    model = load_bert(tmp_path / "bare")                # no MLM head in the file: encode() still exact
    with no_grad():
        hidden = model.encode(idx, types, mask)
    np.testing.assert_allclose(hidden, hf_forward(bare, idx, types, mask).last_hidden_state.numpy(),
                               atol=1e-5, rtol=1e-4)


def test_old_names_and_tied_decoder_in_the_file(tmp_path):
    """bert-base-uncased's own file says LayerNorm.gamma/beta and also stores the tied decoder and the
    next-sentence head: the same model loads."""
    hf = save(transformers.BertForMaskedLM, tmp_path / "new")
    tensors = load_file(tmp_path / "new" / "model.safetensors")
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in tensors.items()}
    old["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    old["cls.seq_relationship.weight"] = np.zeros((2, 16), dtype=np.float32)
    (tmp_path / "old").mkdir()
    save_file(old, tmp_path / "old" / "model.safetensors")
    (tmp_path / "old" / "config.json").write_text((tmp_path / "new" / "config.json").read_text())
    idx, types, mask = inputs()
    with no_grad():
        logits = load_bert(tmp_path / "old")(idx, types, mask)
    np.testing.assert_allclose(logits, hf_forward(hf, idx, types, mask).logits.numpy(), atol=1e-4, rtol=1e-4)


def test_bad_folders_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bert(tmp_path)
    save(transformers.BertForMaskedLM, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    weights = tmp_path / "model.safetensors"
    tensors = load_file(weights)

    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    with pytest.raises(ValueError, match="hidden_act 'relu'"):
        load_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "hidden_size": 32, "intermediate_size": 128}))
    with pytest.raises(SafetensorsError, match="has shape"):
        load_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))

    broken = dict(tensors)
    del broken["cls.predictions.bias"], broken["bert.encoder.layer.1.output.dense.weight"]
    broken["cls.predictions.transform.dense.bias"] = np.zeros(16, dtype=np.float32)
    save_file(broken, weights)
    with pytest.raises(SafetensorsError, match="layer.1.output.dense.weight is missing"):
        load_bert(tmp_path)
    nan = dict(tensors)
    nan["bert.encoder.layer.0.output.dense.bias"] = np.full(16, np.nan, dtype=np.float32)
    save_file(nan, weights)
    with pytest.raises(SafetensorsError, match="NaN"):
        load_bert(tmp_path)
    wrong = dict(tensors)
    wrong["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"] + 1
    save_file(wrong, weights)
    with pytest.raises(SafetensorsError, match="differs from the word embedding"):
        load_bert(tmp_path)


def test_tinybert_width_and_both_dropout_rates(tmp_path):
    """TinyBERT's shape, hidden 312 and intermediate_size 1200 (not 4 x 312), loads and gives
    transformers' logits; hidden_dropout_prob and attention_probs_dropout_prob stay two rates."""
    hf = save(transformers.BertForMaskedLM, tmp_path, hidden_size=312, num_attention_heads=12,
              intermediate_size=1200, num_hidden_layers=1, hidden_dropout_prob=0.2,
              attention_probs_dropout_prob=0.05)
    model = load_bert(tmp_path)
    assert model.cfg["hidden_dim"] == 1200 and model.blocks[0].ff.layers[0].weight.shape == (312, 1200)
    assert (model.cfg["drop_rate"], model.cfg["drop_rate_attn"]) == (0.2, 0.05)
    block = model.blocks[0]
    assert (block.att.dropout.p, block.drop_shortcut.p, block.drop_shortcut_ff.p, model.drop_emb.p) \
        == (0.05, 0.2, 0.2, 0.2)
    idx, types, mask = inputs()
    with no_grad():
        logits = model(idx, types, mask)
    np.testing.assert_allclose(logits, hf_forward(hf, idx, types, mask).logits.numpy(), atol=1e-4, rtol=1e-4)


def test_a_folder_without_the_mlm_head_gets_no_random_head(tmp_path, capsys):
    """A bare BertModel loads without a head: encode() is exact (test above), and neither model(idx)
    nor fill-mask runs a randomly initialised head; a head with tensors missing is refused."""
    from numpy_gpt.cli import main
    from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS

    save(transformers.BertModel, tmp_path / "bare")
    model = load_bert(tmp_path / "bare")
    assert model.mlm_head is None and not any(n.startswith("mlm_head") for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="mlm_head=False: use encode"):
        model(inputs()[0])
    vocab = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(41 - len(SPECIAL_TOKENS)))]
    (tmp_path / "bare" / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    capsys.readouterr()                                 # transformers' progress bars
    assert main(["fill-mask", "w1 [MASK] w2", "--bert", str(tmp_path / "bare")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bare BertModel" in err[0] and "model.safetensors" in err[0]

    save(transformers.BertForMaskedLM, tmp_path / "mlm")
    tensors = load_file(tmp_path / "mlm" / "model.safetensors")
    del tensors["cls.predictions.transform.dense.weight"]
    save_file(tensors, tmp_path / "mlm" / "model.safetensors")
    with pytest.raises(SafetensorsError, match="cls.predictions.transform.dense.weight is missing"):
        load_bert(tmp_path / "mlm")


@pytest.mark.parametrize("model_class", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_attention_weights_of_a_post_norm_bert_are_transformers_output_attentions(tmp_path, model_class):
    """plots.attention_weights reads what each layer computed in the model's own forward pass, so a
    post-LN encoder and a classifier (no MLM head) need no code of their own."""
    from numpy_gpt.plots import attention_weights

    hf = save(getattr(transformers, model_class), tmp_path, attn_implementation="eager")
    idx = inputs()[0]
    with torch.no_grad():
        attentions = hf(input_ids=torch.tensor(idx), output_attentions=True).attentions
    expected = np.stack([a.numpy() for a in attentions])
    weights = attention_weights(load_bert(tmp_path), idx)                     # (L, B, H, T, T)
    assert weights.shape == expected.shape == (2, 2, 4, 9, 9)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
