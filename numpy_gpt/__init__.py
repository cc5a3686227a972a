"""numpy_gpt: GPT-2 in pure NumPy with every backward pass written by hand.

A companion to "Build a Large Language Model (From Scratch)": the names below are the book's, so
``from numpy_gpt import GPTModel, generate, train_model_simple`` reads like its chapters. The map of
which file implements which chapter is in README.md.
"""

# First, before anything imports NumPy: see numpy_gpt/_openblas_env.py.
import numpy_gpt._openblas_env  # noqa: F401

__version__ = "0.1.0"

# Chapter 2: text to tokens to batches
# Chapter 3: attention
from numpy_gpt.attention_steps import (
    CausalAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v0,
    SelfAttention_v1,
    SelfAttention_v2,
)

# Chapter 5: pretraining, generation, checkpoints, plots
from numpy_gpt.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from numpy_gpt.corpora import CORPORA, build_stdlib_docs, download_corpus
from numpy_gpt.data import (
    DataLoader,
    GPTDatasetV1,
    create_dataloader_v1,
    load_corpus,
    load_token_ids,
    save_token_ids,
    train_val_split,
)
from numpy_gpt.download import DownloadError, download_file
from numpy_gpt.generate import generate

# Chapter 5.5: OpenAI's GPT-2 weights, without TensorFlow
from numpy_gpt.gpt2.convert import (
    download_gpt2,
    load_gpt2,
    load_openai_checkpoint,
    load_safetensors,
    load_weights_into_gpt,
    save_safetensors,
)
from numpy_gpt.gradcheck import GradcheckReport, gradcheck

# Chapter 4: the GPT architecture
from numpy_gpt.model import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    GPTModel,
)
from numpy_gpt.nn.activations import GELU, Dropout
from numpy_gpt.nn.attention import KVCache, MultiHeadAttention
from numpy_gpt.nn.block import TransformerBlock
from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding, sinusoidal_positional_encoding
from numpy_gpt.nn.feedforward import FeedForward
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.linear import Linear

# Appendix E: LoRA
from numpy_gpt.nn.lora import LinearWithLoRA, LoRALayer, merge_lora, replace_linear_with_lora
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.nn.module import Module, Parameter, Sequential, is_grad_enabled, no_grad
from numpy_gpt.optim import AdamW, ConstantLR, WarmupCosineLR, clip_grad_norm, configure_param_groups
from numpy_gpt.plots import plot_losses
from numpy_gpt.runtime import reuse_freed_memory, set_threads
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer, get_gpt2_tokenizer
from numpy_gpt.tokenizers.char import CharTokenizer
from numpy_gpt.tokenizers.simple import SimpleTokenizerV1, SimpleTokenizerV2
from numpy_gpt.tokenizers.train_bpe import BPETokenizer
from numpy_gpt.train import calc_loss_batch, calc_loss_loader, evaluate_model, train_model, train_model_simple

__all__ = [
    "AdamW", "BPETokenizer", "CORPORA", "CausalAttention", "CharTokenizer", "Checkpoint",
    "CheckpointError", "ConstantLR", "DataLoader", "DownloadError", "Dropout", "Embedding",
    "FeedForward", "GELU", "GPT2Tokenizer", "GPTDatasetV1", "GPTModel", "GPT_CONFIG_124M",
    "GPT_CONFIG_1558M", "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GradcheckReport", "KVCache",
    "LayerNorm", "Linear", "LinearWithLoRA", "LoRALayer", "Module", "MultiHeadAttention",
    "MultiHeadAttentionWrapper", "Parameter", "PositionalEmbedding", "SelfAttention_v0",
    "SelfAttention_v1", "SelfAttention_v2", "Sequential", "SimpleTokenizerV1", "SimpleTokenizerV2",
    "TransformerBlock", "WarmupCosineLR", "build_stdlib_docs", "calc_loss_batch", "calc_loss_loader",
    "clip_grad_norm", "configure_param_groups", "create_dataloader_v1", "cross_entropy",
    "download_corpus", "download_file", "download_gpt2", "evaluate_model", "generate",
    "get_gpt2_tokenizer", "gradcheck", "is_grad_enabled", "load_checkpoint", "load_corpus",
    "load_gpt2", "load_openai_checkpoint", "load_safetensors", "load_token_ids",
    "load_weights_into_gpt", "merge_lora", "no_grad", "plot_losses", "replace_linear_with_lora",
    "reuse_freed_memory", "save_checkpoint", "save_safetensors", "save_token_ids", "set_threads",
    "sinusoidal_positional_encoding", "train_model", "train_model_simple", "train_val_split",
]
