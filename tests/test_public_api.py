"""DESIGN.md's public API: every name users and tests rely on is exported from numpy_gpt."""

import inspect

import numpy_gpt

DESIGN_NAMES = [
    "GPT_CONFIG_124M", "GPTModel", "MultiHeadAttention", "TransformerBlock", "LayerNorm", "GELU",
    "FeedForward", "Linear", "Embedding", "Dropout", "cross_entropy", "gradcheck", "AdamW",
    "clip_grad_norm", "GPT2Tokenizer", "SimpleTokenizerV1", "SimpleTokenizerV2", "BPETokenizer",
    "create_dataloader_v1", "generate", "train_model_simple", "calc_loss_batch", "calc_loss_loader",
    "evaluate_model", "plot_losses", "save_checkpoint", "load_checkpoint", "load_gpt2",
    "load_openai_checkpoint", "load_safetensors", "save_safetensors", "EncoderModel", "load_bert",
    "WordPieceTokenizer", "generate_text_simple", "load",
]


def test_design_modules_expose_their_functions():
    from numpy_gpt import evaluation, scaling
    from numpy_gpt.finetune import preference
    for module, names in ((evaluation, ["perplexity", "loglikelihood"]),
                          (scaling, ["fit_parametric", "flops_per_token"]),
                          (preference, ["dpo_loss", "sequence_logprobs"])):
        assert [n for n in names if not callable(getattr(module, n, None))] == [], module.__name__


def test_design_names_are_exported():
    missing = [name for name in DESIGN_NAMES if not hasattr(numpy_gpt, name)]
    assert not missing, f"missing from numpy_gpt: {missing}"


def test_all_lists_only_real_names():
    assert sorted(set(numpy_gpt.__all__)) == sorted(numpy_gpt.__all__)
    assert [n for n in numpy_gpt.__all__ if not hasattr(numpy_gpt, n)] == []


def test_load_reads_any_model_file_and_returns_model_and_tokenizer():
    params = inspect.signature(numpy_gpt.load).parameters
    assert list(params)[0] == "path" and params["expect"].default is None


def test_config_keys_match_the_book():
    assert set(numpy_gpt.GPT_CONFIG_124M) == {"vocab_size", "context_length", "emb_dim", "n_heads",
                                              "n_layers", "drop_rate", "qkv_bias"}


def test_documented_signatures():
    params = inspect.signature(numpy_gpt.generate).parameters
    for name in ["model", "idx", "max_new_tokens", "context_size", "temperature", "top_k", "top_p",
                 "eos_id", "use_cache", "seed"]:
        assert name in params, name
    params = inspect.signature(numpy_gpt.create_dataloader_v1).parameters
    for name in ["txt", "batch_size", "max_length", "stride", "shuffle", "drop_last", "seed"]:
        assert name in params, name
    params = inspect.signature(numpy_gpt.AdamW).parameters
    for name in ["params", "lr", "betas", "eps", "weight_decay"]:
        assert name in params, name
    assert inspect.signature(numpy_gpt.cross_entropy).parameters["ignore_index"].default == -100
