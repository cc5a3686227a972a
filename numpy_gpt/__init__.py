"""numpy_gpt: GPT-2 in pure NumPy with every backward pass written by hand.

A companion to "Build a Large Language Model (From Scratch)": the names below are the book's, so
``from numpy_gpt import GPTModel, generate, train_model_simple`` reads like its chapters. The map of
which file implements which chapter, and the order to read them in, are in README.md.

Importing numpy_gpt changes no process setting (threads, memory allocation); the command line calls
``numpy_gpt.runtime.configure()``, and a script may do the same.
"""

__version__ = "0.1.0"

# fmt: off
# ruff: noqa: I001   (grouped by chapter, not sorted)

# The protocol every layer follows (Parameter, Module, no_grad) and the gradient checker
from numpy_gpt.nn.module import Module, Parameter, Sequential, is_grad_enabled, no_grad
from numpy_gpt.gradcheck import GradcheckReport, gradcheck

# Chapter 2: text to tokens to batches
from numpy_gpt.tokenizers.simple import SimpleTokenizerV1, SimpleTokenizerV2
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
from numpy_gpt.tokenizers.train_bpe import BPETokenizer
from numpy_gpt.tokenizers.char import CharTokenizer
from numpy_gpt.data import (DataLoader, GPTDatasetV1, create_dataloader_v1, load_corpus, load_token_ids,
                            save_token_ids, train_val_split)
from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding, sinusoidal_positional_encoding
from numpy_gpt.corpora import CORPORA, build_stdlib_docs, download_corpus, get_gpt2_tokenizer
from numpy_gpt.download import DownloadError, download_file

# Chapter 3: attention, from self-attention to causal multi-head
from numpy_gpt.attention_steps import (CausalAttention, MultiHeadAttentionWrapper, SelfAttention_v0,
                                       SelfAttention_v1, SelfAttention_v2)
from numpy_gpt.nn.attention import KVCache, MultiHeadAttention, causal_mask
from numpy_gpt.nn.softmax import softmax

# Chapter 4: the GPT architecture
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.gelu import GELU
from numpy_gpt.nn.dropout import Dropout
from numpy_gpt.nn.feedforward import FeedForward
from numpy_gpt.nn.block import TransformerBlock
from numpy_gpt.model import GPT_CONFIG_124M, GPT_CONFIG_355M, GPT_CONFIG_774M, GPT_CONFIG_1558M, GPTModel
from numpy_gpt.generate import generate_text_simple

# Chapter 5: pretraining, generation, checkpoints, plots
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.optim import AdamW, ConstantLR, WarmupCosineLR, clip_grad_norm, configure_param_groups
from numpy_gpt.train import calc_loss_batch, calc_loss_loader, evaluate_model, train_model, train_model_simple
from numpy_gpt.generate import generate
from numpy_gpt.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from numpy_gpt.plots import plot_losses

# Any model file numpy_gpt writes (a GPT, an encoder, a classifier, ...) -> (model, tokenizer)
from numpy_gpt.model_files import load

# Chapter 5.5: OpenAI's GPT-2 weights, without TensorFlow
from numpy_gpt.gpt2.convert import (download_gpt2, load_gpt2, load_openai_checkpoint, load_safetensors,
                                    load_weights_into_gpt, save_safetensors)

# Appendix E: LoRA
from numpy_gpt.nn.lora import LinearWithLoRA, LoRALayer, merge_lora, replace_linear_with_lora

# Beyond the book: the encoder half (BERT), WordPiece
from numpy_gpt.encoder import EncoderClassifier, EncoderModel
from numpy_gpt.gpt2.bert import load_bert
from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer

# Beyond the book: from GPT-2 to Llama 3, SmolLM2 and Qwen3 (docs/gpt2-to-llama.md), Hugging Face folders
from numpy_gpt.nn.rmsnorm import RMSNorm
from numpy_gpt.nn.rope import RoPE
from numpy_gpt.nn.swiglu import SwiGLU
from numpy_gpt.model import LLAMA32_CONFIG_1B, QWEN3_CONFIG_0_6B, SMOLLM2_CONFIG_135M
from numpy_gpt.gpt2.hf import load_hf
from numpy_gpt.tokenizers.hf_json import HFTokenizer

# fmt: on

__all__ = [
    # protocol
    "Module", "Parameter", "Sequential", "is_grad_enabled", "no_grad", "GradcheckReport", "gradcheck",
    # chapter 2
    "SimpleTokenizerV1", "SimpleTokenizerV2", "GPT2Tokenizer", "BPETokenizer", "CharTokenizer",
    "DataLoader", "GPTDatasetV1", "create_dataloader_v1", "load_corpus", "load_token_ids",
    "save_token_ids", "train_val_split", "Embedding", "PositionalEmbedding",
    "sinusoidal_positional_encoding", "CORPORA", "build_stdlib_docs", "download_corpus",
    "get_gpt2_tokenizer", "DownloadError", "download_file",
    # chapter 3
    "CausalAttention", "MultiHeadAttentionWrapper", "SelfAttention_v0", "SelfAttention_v1",
    "SelfAttention_v2", "KVCache", "MultiHeadAttention", "causal_mask", "softmax",
    # chapter 4
    "Linear", "LayerNorm", "GELU", "Dropout", "FeedForward", "TransformerBlock", "GPT_CONFIG_124M",
    "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GPT_CONFIG_1558M", "GPTModel", "generate_text_simple",
    # chapter 5
    "cross_entropy", "AdamW", "ConstantLR", "WarmupCosineLR", "clip_grad_norm", "configure_param_groups",
    "calc_loss_batch", "calc_loss_loader", "evaluate_model", "train_model", "train_model_simple",
    "generate", "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint", "plot_losses", "load",
    # chapter 5.5
    "download_gpt2", "load_gpt2", "load_openai_checkpoint", "load_safetensors", "load_weights_into_gpt",
    "save_safetensors",
    # appendix E
    "LinearWithLoRA", "LoRALayer", "merge_lora", "replace_linear_with_lora",
    # beyond the book
    "EncoderClassifier", "EncoderModel", "load_bert", "WordPieceTokenizer",
    "RMSNorm", "RoPE", "SwiGLU", "LLAMA32_CONFIG_1B", "QWEN3_CONFIG_0_6B", "SMOLLM2_CONFIG_135M", "load_hf",
    "HFTokenizer",
]
