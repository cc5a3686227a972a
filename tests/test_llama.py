"""Llama 3, SmolLM2 and Qwen3 as GPTModel configs (model.py's decoder switches, gpt2/hf.py).

References: random ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` models from transformers, written by
``save_pretrained`` into a temporary folder and read back with numpy_gpt's own loader (logits and
every parameter gradient against autograd, greedy generation against ``generate``); float64 finite
differences through the whole model; the uncached forward for the KV cache; parameter counts of the
real models' configs, built by transformers on the meta device.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.checkpoint import gpt_parameter_shapes, load_checkpoint, save_checkpoint
from numpy_gpt.generate import generate
from numpy_gpt.gpt2.hf import HFFolderError, decoder_config_from_hf, decoder_name_map, load_hf_decoder
from numpy_gpt.gpt2.safetensors import SafetensorsError
from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.model import (
    LLAMA32_CONFIG_1B,
    QWEN3_CONFIG_0_6B,
    SMOLLM2_CONFIG_135M,
    GPTModel,
    validate_config,
)
from numpy_gpt.nn.linear import TiedLinear
from numpy_gpt.nn.lora import replace_linear_with_lora
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import no_grad
from numpy_gpt.optim import AdamW
from numpy_gpt.train import train_model

torch = reference("torch")
transformers = reference("transformers")
tokenizers = reference("tokenizers")
Regex = reference("tokenizers", "Regex")
decoders = reference("tokenizers", "decoders")
models = reference("tokenizers", "models")
pre_tokenizers = reference("tokenizers", "pre_tokenizers")
trainers = reference("tokenizers", "trainers")

VOCAB = 97
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 16}
# name -> (model_type, transformers config keywords): GQA with 4 query and 2 key/value heads, an MLP
# width that is neither 4x nor 8/3x, tied and untied heads; Qwen3 with head_dim 16 != 32 / 4.
CASES = {
    "llama-untied-llama3-rope": ("llama", {"tie_word_embeddings": False, "rope_theta": 500.0,
                                           "rope_scaling": {**LLAMA3_SCALING, "rope_theta": 500.0}}),
    "llama-tied": ("llama", {"tie_word_embeddings": True, "rope_theta": 10000.0}),
    "llama-biases": ("llama", {"tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True}),
    "qwen3-tied": ("qwen3", {"tie_word_embeddings": True, "head_dim": 16, "rope_theta": 1000.0}),
    "qwen3-untied": ("qwen3", {"tie_word_embeddings": False, "head_dim": 16, "rms_norm_eps": 1e-5}),
}
SIZES = {"vocab_size": VOCAB, "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
         "num_hidden_layers": 2, "intermediate_size": 56, "max_position_embeddings": 64}


def random_tiny_llama_cfg(**overrides) -> dict:
    """A numpy_gpt config of the tiny Llama shape above (GQA, SwiGLU 56 wide, RoPE, RMSNorm)."""
    return {"vocab_size": VOCAB, "context_length": 64, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
            "drop_rate": 0.0, "qkv_bias": False, "hidden_dim": 56, "n_kv_heads": 2,
            "normalization": "rmsnorm", "feed_forward": "swiglu", "positions": "rope", "out_bias": False,
            "ff_bias": False, "rope_base": 500.0, **overrides}


def hf_model(case: str, seed: int = 0, dtype: str = "float32"):
    """A transformers model of ``case`` with O(1) random weights (norm scales around 1), so the
    logits are far from uniform and every gradient far from zero."""
    model_type, extra = CASES[case]
    classes = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}
    config_class, model_class = classes[model_type]
    config = config_class(**SIZES, **extra)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(config)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.15 + (1.0 if p.ndim == 1 and p.shape[0] in (16, 32) else 0.0))
    return model.to(getattr(torch, dtype)).eval()


@pytest.fixture(params=list(CASES))
def saved(request, tmp_path):
    """(case, transformers model, folder written by save_pretrained)."""
    model = hf_model(request.param)
    model.save_pretrained(tmp_path)
    return request.param, model, tmp_path


def ids(batch=2, seq=13, seed=1):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, seq))


# -- loading and logits -----------------------------------------------------------------------------
def test_logits_match_transformers_float32(saved):
    case, ref, folder = saved
    model = load_hf_decoder(folder)
    assert model.dtype == np.float32 and not model.training
    assert isinstance(model.out_head, TiedLinear) == case.endswith("-tied")
    assert (model.trf_blocks[0].att.q_norm is not None) == case.startswith("qwen3")
    idx = ids()
    with torch.no_grad():
        expected = ref(torch.from_numpy(idx)).logits.numpy()
    logits = model(idx)
    assert logits.dtype == np.float32 and np.abs(expected).max() > 1.0
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_every_gradient_matches_autograd_float32(saved):
    """The same cross-entropy through both models: logits, loss and every parameter's gradient."""
    case, ref, folder = saved
    model = load_hf_decoder(folder).train()
    idx, targets = ids(seq=12), ids(seq=12, seed=2)
    ref.train()
    ref.zero_grad()
    ref_logits = ref(torch.from_numpy(idx)).logits
    ref_loss = torch.nn.functional.cross_entropy(ref_logits.reshape(-1, VOCAB),
                                                 torch.from_numpy(targets).reshape(-1))
    ref_loss.backward()
    loss, dlogits = cross_entropy(model(idx), targets)
    model.backward(dlogits)
    assert loss == pytest.approx(ref_loss.item(), rel=1e-5)
    ref_params = dict(ref.named_parameters())
    names = decoder_name_map(model.cfg)
    assert len(names) == len(ref_params)                           # every tensor of theirs has a home
    for ours, p in model.named_parameters():
        theirs, transpose = names[ours]
        expected = ref_params[theirs].grad.numpy()
        expected = expected.T if transpose else expected
        assert p.grad.dtype == np.float32
        scale = np.abs(expected).max()
        np.testing.assert_allclose(p.grad, expected, rtol=1e-3, atol=1e-3 * scale, err_msg=ours)


def test_bf16_and_sharded_folders_load(tmp_path):
    """bf16 weights become float32 exactly; a sharded folder reads as one file (its index)."""
    ref = hf_model("qwen3-untied", dtype="bfloat16")
    ref.save_pretrained(tmp_path / "bf16")
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 2
    # transformers reads the bf16 file as float32 (exact widening); its RoPE tables are then float32
    # too, unlike those of ref.float(), which were rounded to bf16 with the model
    wide = type(ref).from_pretrained(tmp_path / "bf16", dtype=torch.float32).eval()
    idx = ids()
    with torch.no_grad():
        expected = wide(torch.from_numpy(idx)).logits.numpy()
    for name in ("bf16", "sharded"):
        model = load_hf_decoder(tmp_path / name)
        assert model.tok_emb.weight.data.dtype == np.float32
        np.testing.assert_array_equal(model.tok_emb.weight.data,
                                      wide.model.embed_tokens.weight.detach().numpy())
        np.testing.assert_allclose(model(idx), expected, rtol=1e-4, atol=1e-4, err_msg=name)


# -- float64 finite differences through the whole model -------------------------------------------------
@pytest.mark.parametrize("overrides", [
    {},                                                            # Llama: GQA, RoPE, SwiGLU, untied
    {"tie_embeddings": True, "rope_scaling": {**LLAMA3_SCALING}},  # Llama 3.2: tied, scaled RoPE
    {"head_dim": 6, "qk_norm": True, "norm_eps": 1e-6, "tie_embeddings": True},   # Qwen3
    {"qkv_bias": True, "out_bias": True, "ff_bias": True, "drop_rate": 0.2},
], ids=["llama", "llama3.2", "qwen3", "biases-dropout"])
def test_gradcheck_whole_model_float64(overrides):
    cfg = random_tiny_llama_cfg(vocab_size=11, emb_dim=8, n_heads=4, hidden_dim=10, context_length=8,
                                **overrides)
    model = GPTModel(cfg, seed=3, dtype=np.float64)
    rng = np.random.default_rng(4)
    for name, p in model.named_parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.4 + (1.0 if name.endswith("scale") else 0.0)
    state = model.dropout_rng.bit_generator.state
    report = gradcheck(model, rng.integers(0, 11, (2, 5)), eps=1e-5, max_elems_per_param=12,
                       before_forward=lambda: setattr(model.dropout_rng.bit_generator, "state", state))
    assert report.ok and report.max_rel_error < 1e-6, str(report)
    assert {row.name for row in report.rows} == {name for name, _ in model.named_parameters()}


# -- generation and the KV cache ----------------------------------------------------------------------
@pytest.mark.parametrize("case", ["llama-untied-llama3-rope", "qwen3-tied"])
def test_greedy_generation_cached_uncached_and_transformers_agree(case, tmp_path):
    ref = hf_model(case, seed=5)
    ref.save_pretrained(tmp_path)
    model = load_hf_decoder(tmp_path)
    prompt = ids(batch=1, seq=7, seed=6)
    cached = generate(model, prompt, 20, 64, use_cache=True)
    uncached = generate(model, prompt, 20, 64, use_cache=False)
    np.testing.assert_array_equal(cached, uncached)
    with torch.no_grad():
        expected = ref.generate(torch.from_numpy(prompt), max_new_tokens=20, do_sample=False,
                                min_new_tokens=20, pad_token_id=0).numpy()
    np.testing.assert_array_equal(cached, expected)


def test_kv_cache_stores_n_kv_heads():
    """Generation memory: Hkv / H of the multi-head cache, here 2 / 4 = one half, byte for byte."""
    gqa = GPTModel(random_tiny_llama_cfg(), seed=0)
    mha = GPTModel(random_tiny_llama_cfg(n_kv_heads=4), seed=0)
    def nbytes(cache):
        return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache)
    assert nbytes(gqa.new_kv_cache(1, 64)) * 2 == nbytes(mha.new_kv_cache(1, 64))
    assert gqa.new_kv_cache(1, 64)[0].keys.shape == (1, 2, 64, 8)


def test_cached_forward_equals_uncached_in_chunks():
    model = GPTModel(random_tiny_llama_cfg(head_dim=10, qk_norm=True), seed=2).eval()
    idx = ids(seq=15)
    with no_grad():
        full = model(idx)
        cache = model.new_kv_cache(2, 15)
        parts = [model(idx[:, a:b], cache) for a, b in [(0, 6), (6, 7), (7, 15)]]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, rtol=1e-5, atol=1e-5)


# -- configs, parameter counts, checkpoints ---------------------------------------------------------
@pytest.mark.parametrize("name,cfg,hf_keys", [
    ("Llama-3.2-1B", LLAMA32_CONFIG_1B, {}),
    ("SmolLM2-135M", SMOLLM2_CONFIG_135M, {}),
    ("Qwen3-0.6B", QWEN3_CONFIG_0_6B, {"head_dim": 128}),
])
def test_parameter_counts_of_the_real_models(name, cfg, hf_keys):
    """numpy_gpt's shapes of the three configs (no allocation) against transformers' models of the
    same config.json, built on the meta device (no memory either)."""
    qwen = name.startswith("Qwen")
    config_class = transformers.Qwen3Config if qwen else transformers.LlamaConfig
    config = config_class(vocab_size=cfg["vocab_size"], hidden_size=cfg["emb_dim"],
                          num_attention_heads=cfg["n_heads"], num_key_value_heads=cfg["n_kv_heads"],
                          num_hidden_layers=cfg["n_layers"], intermediate_size=cfg["hidden_dim"],
                          max_position_embeddings=cfg["context_length"], tie_word_embeddings=True, **hf_keys)
    with torch.device("meta"):
        ref = (transformers.Qwen3ForCausalLM if qwen else transformers.LlamaForCausalLM)(config)
    ours = sum(math.prod(shape) for shape in gpt_parameter_shapes(cfg).values())
    assert ours == sum(p.numel() for p in ref.parameters())
    assert decoder_config_from_hf({**config.to_dict(), "model_type": "qwen3" if qwen else "llama",
                                   "rope_parameters": {"rope_theta": cfg["rope_base"],
                                                       **(cfg.get("rope_scaling") or {})},
                                   "rms_norm_eps": cfg["norm_eps"]}) == validate_config(cfg)


@pytest.mark.parametrize("case", list(CASES))
def test_scaling_counts_of_the_decoder_switches_match_the_model_and_torch(case, tmp_path):
    """scaling's N against the numpy_gpt model a folder loads into, and the matrix FLOPs per token
    (6 per matrix weight, the head included, plus the attention's 12 L T H hd) against torch's
    FlopCounterMode over transformers' forward and backward: GQA, SwiGLU, Qwen3's wide heads, biases."""
    from numpy_gpt.scaling import attention_flops_per_token, block_matmul_params, non_embedding_params
    flop_counter = reference("torch.utils.flop_counter", "FlopCounterMode")
    hf = hf_model(case)
    hf.save_pretrained(tmp_path)
    model = load_hf_decoder(tmp_path)
    cfg = model.cfg
    outside = sum(p.data.size for name, p in model.named_parameters()
                  if not name.startswith(("tok_emb", "pos_emb", "out_head")))
    assert non_embedding_params(cfg) == outside
    idx = torch.from_numpy(ids(batch=2, seq=13))
    hf.train()
    with flop_counter(display=False) as counter:
        hf(idx).logits.sum().backward()
    per_token = counter.get_total_flops() / idx.numel()
    matrices = cfg["n_layers"] * block_matmul_params(cfg) + cfg["emb_dim"] * cfg["vocab_size"]
    assert per_token == 6 * matrices + attention_flops_per_token(cfg, 13)


def test_checkpoint_round_trip_keeps_the_switches(tmp_path):
    model = GPTModel(random_tiny_llama_cfg(head_dim=6, qk_norm=True, tie_embeddings=True,
                                           rope_scaling=dict(LLAMA3_SCALING)), seed=7)
    save_checkpoint(tmp_path / "llama.npz", model)
    loaded = load_checkpoint(tmp_path / "llama.npz").model
    assert loaded.cfg == model.cfg and isinstance(loaded.out_head, TiedLinear)
    idx = ids()
    np.testing.assert_array_equal(loaded.eval()(idx), model.eval()(idx))


def test_gpt_configs_are_unchanged_and_bad_switches_refused():
    gpt = {"vocab_size": 50, "context_length": 16, "emb_dim": 16, "n_heads": 2, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": False}
    spelled_out = {**gpt, "normalization": "layernorm", "n_kv_heads": 2, "head_dim": 8,
                   "tie_embeddings": False}
    assert GPTModel(spelled_out).cfg == gpt                        # defaults are not stored
    assert [n for n, _ in GPTModel(gpt).named_parameters()][:2] == ["tok_emb.weight", "pos_emb.weight"]
    for bad, match in [({"normalization": "batchnorm"}, "normalization must be one of"),
                       ({"n_kv_heads": 3}, "multiple of n_kv_heads"),
                       ({"positions": "rope", "head_dim": 5}, "head_dim must be even"),
                       ({"rope_scaling": dict(LLAMA3_SCALING)}, "positions is not 'rope'"),
                       ({"qk_norm": 1}, "qk_norm must be True or False")]:
        with pytest.raises(ValueError, match=match):
            GPTModel({**gpt, **bad})


def test_hf_folder_errors(tmp_path):
    ref = hf_model("llama-tied")
    ref.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    for change, match in [('"silu"', "not SwiGLU's silu"), ('"llama"', "is not one numpy_gpt loads")]:
        replacement = {'"silu"': '"gelu"', '"llama"': '"mistral"'}[change]
        (tmp_path / "config.json").write_text(config.replace(change, replacement))
        with pytest.raises(HFFolderError, match=match):
            load_hf_decoder(tmp_path)
    (tmp_path / "config.json").write_text(config.replace('"num_hidden_layers": 2', '"num_hidden_layers": 1'))
    with pytest.raises(SafetensorsError, match="no place for"):
        load_hf_decoder(tmp_path)                                  # layer 1's tensors are left over
    (tmp_path / "config.json").write_text(config.replace('"intermediate_size": 56',
                                                         '"intermediate_size": 48'))
    with pytest.raises(SafetensorsError, match="gate_proj.weight has shape"):
        load_hf_decoder(tmp_path)
    # sizes are checked against the file before anything is allocated: a trillion-token vocabulary
    # and a billion positions cost nothing but the error
    huge = config.replace(f'"vocab_size": {VOCAB}', '"vocab_size": 1000000000000')
    (tmp_path / "config.json").write_text(huge.replace('"max_position_embeddings": 64',
                                                       '"max_position_embeddings": 1000000000'))
    with pytest.raises(SafetensorsError, match="embed_tokens.weight has shape"):
        load_hf_decoder(tmp_path)


# -- training: the same optimizer, loop and LoRA as GPT --------------------------------------------------
def test_lora_fine_tune_of_a_llama_lowers_its_loss():
    """Freeze a small Llama, wrap every Linear in LoRA (replace_linear_with_lora finds attention's
    and SwiGLU's), train on one repeated pattern with train_model: the loss falls."""
    model = GPTModel(random_tiny_llama_cfg(), seed=11)
    model.requires_grad_(False)
    replace_linear_with_lora(model, rank=4, alpha=8.0, seed=12)
    trainable = [name for name, _ in model.named_parameters(trainable_only=True)]
    assert trainable and all(".lora." in name for name in trainable)
    assert any(".ff.gate.lora." in name for name in trainable) and any(".att.W_key.lora." in name
                                                                       for name in trainable)
    pattern = np.tile(np.arange(3, 19), 4)                         # 64 tokens of a 16-cycle
    x = np.stack([pattern[i:i + 24] for i in range(0, 32, 4)])     # (8, 24)
    y = np.stack([pattern[i + 1:i + 25] for i in range(0, 32, 4)])
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    optimizer = AdamW(model.parameters(trainable_only=True), lr=1e-2, weight_decay=0.0)
    history = train_model(model, batches, batches, optimizer, max_steps=30, eval_freq=10, progress=False)
    assert history.train_losses[-1] < 0.5 * history.train_losses[0], history.train_losses


# -- load_hf: one entry for Hugging Face folders of the four model types ------------------------------------
TEXT = "The quick brown fox, 1234 jumps: over the lazy dog! Ünïcödé, 東京 and 😀 too.\n"


def train_tokenizer_json(pattern: str | None, specials: list[str]) -> str:
    """A small byte-level BPE tokenizer.json trained by ``tokenizers``: split by ``pattern`` then
    bytes (Llama 3's pipeline), or GPT-2's ByteLevel pre-tokenizer when None."""
    byte_level = pre_tokenizers.ByteLevel
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = byte_level(add_prefix_space=False) if pattern is None else pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
         byte_level(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, show_progress=False, initial_alphabet=byte_level.alphabet())
    tok.train_from_iterator([TEXT * 20], trainer)
    tok.add_special_tokens(specials)
    return tok.to_str()


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    """(folder, transformers model, tokenizers' tokenizer): a tiny Llama written by save_pretrained,
    a tokenizer.json trained with Llama 3's split pattern, a tokenizer_config.json with a chat template."""
    import json

    from numpy_gpt.tokenizers.bpe import LLAMA3_PATTERN
    folder = tmp_path_factory.mktemp("llama")
    text = train_tokenizer_json(LLAMA3_PATTERN, ["<|begin_of_text|>", "<|eot_id|>"])
    reference = tokenizers.Tokenizer.from_str(text)
    config = transformers.LlamaConfig(**{**SIZES, "vocab_size": reference.get_vocab_size()},
                                      tie_word_embeddings=True)
    torch.manual_seed(3)
    ref = transformers.LlamaForCausalLM(config).eval()
    ref.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(text, encoding="utf-8")
    template = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|eot_id|>"
                "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": template}))
    return folder, ref, reference


def test_load_hf_reads_a_llama_folder_with_its_tokenizer_and_chat_template(llama_folder):
    """config.json + model.safetensors + tokenizer.json + tokenizer_config.json -> (GPTModel,
    HFTokenizer): the ids are tokenizers', the logits transformers', and the chat template renders."""

    import numpy_gpt
    folder, ref, reference = llama_folder
    model, tokenizer = numpy_gpt.load_hf(folder)
    assert isinstance(model, GPTModel) and isinstance(tokenizer, numpy_gpt.HFTokenizer)
    ids = tokenizer.encode(TEXT)
    assert ids == reference.encode(TEXT, add_special_tokens=False).ids
    assert tokenizer.decode(ids) == TEXT and tokenizer.eot_token == reference.token_to_id("<|eot_id|>")
    with torch.no_grad():
        expected = ref(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(model(np.array([ids])), expected, rtol=1e-4, atol=1e-4)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    assert prompt == "<|begin_of_text|><|user|>hi<|eot_id|><|assistant|>"
    same, _ = numpy_gpt.load(folder)                               # numpy_gpt.load takes the same path
    np.testing.assert_array_equal(same(np.array([ids])), model(np.array([ids])))


def test_generate_and_chat_take_hf(llama_folder, tmp_path, capsys):
    """`numpy-gpt generate --hf FOLDER` and `chat --hf FOLDER`: the library's greedy answers, the
    chat one from the model's template; a BERT folder is refused in one line."""
    import json

    import numpy_gpt
    from numpy_gpt.cli import main
    from numpy_gpt.finetune.instruct import respond_with_chat_template
    folder, _, _ = llama_folder
    model, tokenizer = numpy_gpt.load_hf(folder)
    capsys.readouterr()
    assert main(["generate", "--hf", str(folder), "--prompt", "The quick", "--temperature", "0",
                 "--max-new-tokens", "6"]) == 0
    expected = generate(model, np.array([tokenizer.encode("The quick")]), 6, model.cfg["context_length"])
    assert capsys.readouterr().out == tokenizer.decode(expected[0].tolist()) + "\n"
    assert main(["chat", "--hf", str(folder), "--instruction", "hi", "--max-new-tokens", "5"]) == 0
    answer = respond_with_chat_template(model, tokenizer, [{"role": "user", "content": "hi"}], 5)
    assert capsys.readouterr().out == answer + "\n"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(["chat", "--hf", str(tmp_path), "--instruction", "hi"]) == 1
    assert "is a BERT encoder, not a language model" in capsys.readouterr().err


def test_load_hf_reads_gpt2_and_bert_folders_by_the_same_path(tmp_path):

    import numpy_gpt
    from numpy_gpt.encoder import EncoderModel
    from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer
    text = train_tokenizer_json(None, ["<|endoftext|>"])
    vocab = tokenizers.Tokenizer.from_str(text).get_vocab_size()
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=32, n_embd=16, n_layer=2, n_head=2, bos_token_id=vocab - 1,
        eos_token_id=vocab - 1)).eval()
    gpt2.save_pretrained(tmp_path / "gpt2")
    (tmp_path / "gpt2" / "tokenizer.json").write_text(text, encoding="utf-8")
    model, tokenizer = numpy_gpt.load_hf(tmp_path / "gpt2")
    ids = tokenizer.encode(TEXT)[:32]
    with torch.no_grad():
        expected = gpt2(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(model(np.array([ids])), expected, rtol=1e-4, atol=1e-4)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "quick", "fox", "##es", "dog"]
    bert = transformers.BertForMaskedLM(transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16)).eval()
    bert.save_pretrained(tmp_path / "bert")
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    model, tokenizer = numpy_gpt.load_hf(tmp_path / "bert")
    assert isinstance(model, EncoderModel) and isinstance(tokenizer, WordPieceTokenizer)
    ids = tokenizer.encode("The quick foxes")
    assert ids == [2, 5, 6, 7, 8, 3]                                  # [CLS] the quick fox ##es [SEP]
    with torch.no_grad():
        expected = bert(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(model(np.array([ids])), expected, rtol=1e-4, atol=1e-4)


def test_load_hf_refuses_other_model_types_in_one_line(tmp_path):
    import json

    import numpy_gpt
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mistral", "hidden_size": 8}))
    with pytest.raises(HFFolderError, match=r"model_type 'mistral' is not one numpy_gpt loads; it reads "
                                            r"gpt2, bert, llama, qwen3$"):
        numpy_gpt.load_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        numpy_gpt.load_hf(tmp_path / "config.json")


def test_cli_lora_fine_tune_of_a_llama_checkpoint_lowers_its_loss(tmp_path, capsys):
    """`numpy-gpt finetune-instruct --trainable lora` on a small Llama-style checkpoint, as on a GPT:
    the same command, loader, LoRA and loop; the training loss falls."""
    import json
    import re

    from numpy_gpt.cli import main
    from numpy_gpt.finetune.instruct import format_input
    from numpy_gpt.tokenizers.char import CHAR_SPECIALS, CharTokenizer
    from numpy_gpt.tokenizers.spec import tokenizer_spec
    rng = np.random.default_rng(0)
    data = [{"instruction": "Reverse the letters.", "input": " ".join(word), "output": " ".join(word[::-1])}
            for word in (rng.choice(list("abcdefgh"), size=3) for _ in range(40))]
    text = "".join(format_input(e) + "\n\n### Response:\n" + e["output"] for e in data)
    tokenizer = CharTokenizer(sorted(set(text)), CHAR_SPECIALS)
    model = GPTModel(random_tiny_llama_cfg(vocab_size=tokenizer.n_vocab, context_length=384), seed=1)
    save_checkpoint(tmp_path / "llama.npz", model, extra={"tokenizer": tokenizer_spec(tokenizer)})
    (tmp_path / "data.json").write_text(json.dumps(data), encoding="utf-8")
    capsys.readouterr()
    assert main(["finetune-instruct", "--init", "checkpoint", "--checkpoint", str(tmp_path / "llama.npz"),
                 "--trainable", "lora", "--lora-rank", "8", "--data", str(tmp_path / "data.json"),
                 "--out", str(tmp_path / "out"), "--epochs", "2", "--batch-size", "4", "--lr", "5e-3",
                 "--eval-freq", "4", "--eval-iter", "2", "--max-new-tokens", "4", "--judge", "none"]) == 0
    losses = [float(x) for x in re.findall(r"Train loss (\d+\.\d+)", capsys.readouterr().out)]
    assert len(losses) >= 3 and losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("case", ["llama-untied-llama3-rope", "qwen3-tied"])
def test_attention_weights_of_every_layer_match_transformers(case, tmp_path):
    """plots.attention_weights (what `generate --attention-plot` draws) asks each layer for its
    weights: GQA, RoPE and QK-norm included, they are transformers' output_attentions."""

    from numpy_gpt.plots import attention_weights
    ref = hf_model(case, seed=8)
    ref.save_pretrained(tmp_path)
    idx = ids(seq=9)
    with torch.no_grad():
        attentions = ref(torch.from_numpy(idx), output_attentions=True).attentions
    expected = np.stack([a.numpy() for a in attentions])
    weights = attention_weights(load_hf_decoder(tmp_path), idx)
    assert weights.shape == (2, 2, 4, 9, 9)                        # (layers, B, H, T, T)
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-5)
