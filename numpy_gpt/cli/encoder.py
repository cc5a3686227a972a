"""Command line of the encoder side: ``pretrain-mlm``, ``fill-mask`` and ``attention-heatmap``.

* ``numpy-gpt pretrain-mlm`` trains a small BERT-style EncoderModel with the masked-language-model
  objective on the offline default corpus (the one ``pretrain`` uses): a WordPiece vocabulary is
  trained first (and kept in the run folder), then ``train.train_model`` runs with the same
  progress lines, checkpoints, ``--resume`` and loss plot as ``pretrain``. At the end it reports
  masked-token accuracy on held-out text against the unigram baseline and fills a few blanks.
* ``numpy-gpt fill-mask "The cat [MASK] on the mat." --checkpoint runs/.../model.npz`` prints the
  top-k candidates for each [MASK], from a pretrain-mlm checkpoint or a Hugging Face BERT folder
  (``--bert FOLDER`` with config.json, model.safetensors and vocab.txt).
* ``numpy-gpt attention-heatmap`` draws one encoder layer beside one decoder layer on the same
  sentence: the full square of bidirectional attention against GPT's lower triangle.

Heavy imports happen inside the commands, so ``numpy-gpt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from numpy_gpt.cli.common import (
    DEFAULT_CORPUS,
    DEFAULT_RUNS_DIR,
    CLIError,
    add_run_folder_flags,
    check_heads,
    check_memory,
    check_min_lr,
    fraction,
    learning_rate,
    load_split_corpus,
    model_file,
    non_negative_float,
    non_negative_int,
    positive_int,
    probability,
    random_seed,
    show_bars,
    start_or_resume,
    training_bytes,
)

DEFAULT_SENTENCES = ("Return the [MASK] of the list.", "The cat [MASK] on the mat.",
                     "If the file does not [MASK], an exception is raised.")


def _print_fills(results, text: str) -> None:
    print(f"{text}")
    for i, candidates in enumerate(results):
        label = f"  [MASK] {i + 1}: " if len(results) > 1 else "  "
        print(label + ", ".join(f"{token} {p:.3f}" for token, p in candidates))


# -- pretrain-mlm -------------------------------------------------------------------------------------
def _check_pretrain_mlm(args: argparse.Namespace) -> None:
    """The flags that only make sense together, and the memory, before any work (see main.main)."""
    from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS

    if args.resume:
        return                                           # the checkpoint's model and schedule are used
    check_min_lr(args)
    check_heads(args.emb_dim, args.n_heads)
    if args.context_length < 3:
        raise CLIError(f"--context-length {args.context_length}: a sequence is [CLS], at least one token "
                       f"and [SEP], so at least 3")
    if args.vocab_size <= len(SPECIAL_TOKENS):
        raise CLIError(f"--vocab-size {args.vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens "
                       f"and any word")
    cfg = {"vocab_size": args.vocab_size, "context_length": args.context_length, "emb_dim": args.emb_dim,
           "n_layers": args.n_layers, "n_heads": args.n_heads}
    check_memory({"--vocab-size": args.vocab_size, "--emb-dim": args.emb_dim, "--n-layers": args.n_layers,
                  "--context-length": args.context_length, "--batch-size": args.batch_size},
                 training_bytes(cfg, args.batch_size))


def _cmd_pretrain_mlm(args: argparse.Namespace) -> int:
    import numpy as np

    from numpy_gpt.corpora import build_tokenizer
    from numpy_gpt.encoder import EncoderModel
    from numpy_gpt.fileio import write_json_atomic
    from numpy_gpt.mlm import MLMLoader, checkpoint_extra, fill_mask, masked_accuracy
    from numpy_gpt.mlm import unigram_token as most_frequent_token
    from numpy_gpt.model_files import checkpoint_tokenizer
    from numpy_gpt.optim import AdamW, WarmupCosineLR, configure_param_groups
    from numpy_gpt.plots import plot_losses
    from numpy_gpt.train import train_model

    started = time.perf_counter()
    out_dir = Path(args.out_dir) if args.out_dir else DEFAULT_RUNS_DIR / f"{Path(str(args.corpus)).stem}-mlm"
    checkpoint_path = out_dir / "model.npz"
    resume = start_or_resume(args, out_dir, checkpoint_path.name, product=checkpoint_path.name,
                             outputs=("loss.png", "metrics.json"))

    train_text, val_text = load_split_corpus(args)
    if not resume:          # before the vocabulary trains and the run folder exists: a token per char at most
        window = args.context_length - 2
        if len(train_text) // window < args.batch_size or len(val_text) < window:
            raise CLIError(f"the text makes at most {len(train_text) // window:,} training sequences of "
                           f"{args.context_length} tokens (and at most {len(val_text) // window} for "
                           f"validation): use more text, a smaller --batch-size or --context-length")
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:                                            # its metadata: train_model reads the weights
        saved = model_file(checkpoint_path, "pretrain-mlm --resume", ("encoder",))
        tokenizer, cfg = checkpoint_tokenizer(saved), saved.cfg
    else:
        tokenizer = build_tokenizer("wordpiece", train_text, train_text, args.vocab_size, args.data_dir,
                                    out_dir, min_frequency=args.min_frequency)
        cfg = {"vocab_size": tokenizer.n_vocab, "context_length": args.context_length,
               "emb_dim": args.emb_dim, "n_heads": args.n_heads, "n_layers": args.n_layers,
               "drop_rate": args.drop_rate, "qkv_bias": True, "type_vocab_size": 2, "norm": args.norm,
               "gelu": args.gelu, "ln_eps": 1e-12}
    print("Tokenizing...", flush=True)
    train_ids = np.asarray(tokenizer.encode(train_text, add_special_tokens=False), dtype=np.int64)
    val_ids = np.asarray(tokenizer.encode(val_text, add_special_tokens=False), dtype=np.int64)
    context = cfg["context_length"]
    train_loader = MLMLoader(train_ids, tokenizer, args.batch_size, context, shuffle=True, seed=args.seed,
                             mask_prob=args.mask_prob)
    val_loader = MLMLoader(val_ids, tokenizer, args.batch_size, context, shuffle=False, drop_last=False,
                           seed=args.seed + 1, mask_prob=args.mask_prob)
    if len(train_loader) == 0 or len(val_loader) == 0:
        raise ValueError(f"the text makes no full batch of {args.batch_size} windows of {context} tokens "
                         f"(training) or no window (validation): use more text or a smaller --batch-size")
    print(f"{len(train_text) + len(val_text):,} characters -> {len(train_ids):,} training and "
          f"{len(val_ids):,} validation tokens (WordPiece, vocabulary {tokenizer.n_vocab:,})")

    model = EncoderModel(cfg, seed=args.seed)
    optimizer = AdamW(configure_param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.99))
    warmup = min(args.warmup_steps, args.max_steps - 1)
    schedule = WarmupCosineLR(args.lr, args.max_steps, warmup, initial_lr=args.lr / (warmup + 1),
                              min_lr=args.min_lr)
    print(f"Model {cfg} ({model.num_parameters():,} parameters); {args.max_steps:,} steps of "
          f"{args.batch_size} x {context} tokens, {args.mask_prob:.0%} masked; output in {out_dir}/",
          flush=True)
    history = train_model(
        model, train_loader, val_loader, optimizer, max_steps=args.max_steps, eval_freq=args.eval_freq,
        eval_iter=args.eval_iter, lr_schedule=schedule, grad_clip=args.grad_clip or None,
        checkpoint_path=checkpoint_path, checkpoint_freq=args.checkpoint_freq,
        checkpoint_extra={**checkpoint_extra(model, tokenizer), "corpus": str(args.corpus)},
        resume_from=checkpoint_path if resume else None, progress=show_bars(args))
    plot_path = plot_losses(history.eval_steps, history.tokens_seen, history.train_losses,
                            history.val_losses, out_dir / "loss.png",
                            title=f"MLM on {args.corpus}: {model.num_parameters():,} parameters")

    model.eval()
    baseline_token = most_frequent_token(train_ids, [tokenizer.vocab[t] for t in tokenizer.special_tokens])
    accuracy = masked_accuracy(model, val_loader, baseline_token)
    print(f"\nHeld-out masked-token accuracy: {accuracy.model:.1%} over {accuracy.positions:,} masked "
          f"positions; unigram baseline (always {tokenizer.inverse[baseline_token]!r}): "
          f"{accuracy.unigram:.1%}")
    fills = {}
    for sentence in DEFAULT_SENTENCES:
        if len(tokenizer.encode(sentence)) > context:
            continue
        fills[sentence] = fill_mask(model, tokenizer, sentence, top_k=5)
        _print_fills(fills[sentence], sentence)
    metrics = {"config": cfg, "parameters": model.num_parameters(), "steps": args.max_steps,
               "batch_size": args.batch_size, "mask_prob": args.mask_prob,
               "train_loss": history.train_losses[-1], "val_loss": history.val_losses[-1],
               "masked_accuracy": accuracy.model, "unigram_accuracy": accuracy.unigram,
               "unigram_token": tokenizer.inverse[baseline_token], "masked_positions": accuracy.positions,
               "tokens_per_second": history.tokens_per_second, "fill_mask": fills,
               "seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(out_dir / "metrics.json", metrics)
    print(f"\nFinal: train loss {history.train_losses[-1]:.3f}, val loss {history.val_losses[-1]:.3f}; "
          f"{history.train_tokens:,} tokens at {history.tokens_per_second:,.0f} tokens/s; "
          f"{metrics['seconds']:.0f} s in all")
    print(f"Checkpoint: {checkpoint_path}\nLoss plot:  {plot_path}\nMetrics:    {out_dir / 'metrics.json'}")
    print(f"Fill a blank: numpy-gpt fill-mask \"The cat [MASK] on the mat.\" --checkpoint {checkpoint_path}")
    return 0


# -- fill-mask ------------------------------------------------------------------------------------------
def _load_encoder(args: argparse.Namespace):
    """(EncoderModel, WordPieceTokenizer) from --checkpoint or --bert."""
    from numpy_gpt.encoder import EncoderModel

    if args.checkpoint is not None:
        from numpy_gpt.model_files import load
        return load(args.checkpoint, expect=("encoder",), use="`numpy-gpt fill-mask`")
    from numpy_gpt.gpt2.bert import load_bert
    from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer

    folder = Path(args.bert)
    vocab = Path(args.vocab) if args.vocab else folder / "vocab.txt"
    tokenizer = WordPieceTokenizer.from_file(vocab, lowercase=not args.cased)
    model = load_bert(folder)
    if not isinstance(model, EncoderModel) or model.mlm_head is None:
        what = "a bare BertModel: no cls.predictions" if isinstance(model, EncoderModel) else "a classifier"
        raise ValueError(f"{folder / 'model.safetensors'} holds no masked-language-model head ({what}): "
                         f"fill-mask needs a BertForMaskedLM folder")
    if tokenizer.n_vocab != model.cfg["vocab_size"]:
        raise ValueError(f"{vocab} has {tokenizer.n_vocab} tokens but the model {model.cfg['vocab_size']}")
    return model, tokenizer


def _cmd_fill_mask(args: argparse.Namespace) -> int:
    from numpy_gpt.mlm import fill_mask

    model, tokenizer = _load_encoder(args)
    _print_fills(fill_mask(model, tokenizer, args.text, top_k=args.top_k), args.text)
    return 0


# -- attention-heatmap ------------------------------------------------------------------------------------
def _cmd_attention_heatmap(args: argparse.Namespace) -> int:
    """One encoder layer beside one decoder layer on the same sentence (mean over heads).

    Without checkpoints both models are random and of the same size, sharing one WordPiece
    vocabulary made of the sentence's words: the pattern to see is the shape (square vs triangle),
    which the mask makes whatever the weights. With --checkpoint (pretrain-mlm) and/or
    --gpt-checkpoint (pretrain), the trained models are used, each with its own tokenizer."""
    import numpy as np

    from numpy_gpt.encoder import EncoderModel, encoder_attention_weights
    from numpy_gpt.model import GPTModel
    from numpy_gpt.model_files import LANGUAGE_MODELS, load
    from numpy_gpt.plots import attention_weights, plot_attention_side_by_side
    from numpy_gpt.tokenizers.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer, basic_tokenize

    sentence = args.sentence
    size = {"context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0}
    use = "`numpy-gpt attention-heatmap`"
    if args.checkpoint:
        encoder, enc_tok = load(args.checkpoint, expect=("encoder",), use=use)
    else:
        enc_tok = WordPieceTokenizer([*SPECIAL_TOKENS, *dict.fromkeys(basic_tokenize(sentence))])
        encoder = EncoderModel({"vocab_size": enc_tok.n_vocab, **size, "qkv_bias": True}, seed=args.seed)
    enc_ids = np.asarray([enc_tok.encode(sentence)])
    enc_labels = [enc_tok.inverse[i] for i in enc_ids[0]]
    if args.gpt_checkpoint:
        decoder, dec_tok = load(args.gpt_checkpoint, expect=LANGUAGE_MODELS, use=f"{use} --gpt-checkpoint",
                                data_dir=args.data_dir)
        dec_ids = np.asarray([dec_tok.encode(sentence)])
        dec_labels = [dec_tok.decode([int(i)]) for i in dec_ids[0]]
    else:
        decoder = GPTModel({"vocab_size": enc_tok.n_vocab, **size, "qkv_bias": True}, seed=args.seed)
        dec_ids = np.asarray([enc_tok.encode(sentence, add_special_tokens=False)])
        dec_labels = [enc_tok.inverse[i] for i in dec_ids[0]]
    for model, n in ((encoder, encoder.cfg["n_layers"]), (decoder, decoder.cfg["n_layers"])):
        if not 0 <= args.layer < n:
            raise ValueError(f"--layer {args.layer} is outside [0, {n}) for {type(model).__name__}")
    enc = encoder_attention_weights(encoder, enc_ids, args.layer)[0].mean(axis=0)        # (T, T)
    dec = attention_weights(decoder, dec_ids)[args.layer, 0].mean(axis=0)                # (T, T)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    path = plot_attention_side_by_side(enc, enc_labels, dec, dec_labels, out,
                                       titles=(f"encoder layer {args.layer}: every token sees all",
                                               f"decoder layer {args.layer}: only the past"))
    upper = float(np.triu(dec, k=1).sum())
    print(f"Encoder: {np.count_nonzero(enc > 0)} of {enc.size} weights nonzero; decoder: weight above the "
          f"diagonal {upper:.1e} (causal). Wrote {path}")
    return 0


# -- parsers ----------------------------------------------------------------------------------------------
def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain-mlm``, ``fill-mask`` and ``attention-heatmap`` to the main parser's subcommands."""
    p = subparsers.add_parser(
        "pretrain-mlm", help="pretrain a small BERT-style encoder with masked-language modelling",
        description="Train a WordPiece vocabulary and a small EncoderModel on a corpus with BERT's "
                    "masked-language-model objective (15% of tokens chosen: 80% [MASK], 10% random, "
                    "10% unchanged). Writes model.npz, loss.png and metrics.json (masked-token accuracy "
                    "vs the unigram baseline) in a run folder.")
    data = p.add_argument_group("data")
    data.add_argument("--corpus", default=DEFAULT_CORPUS,
                      help="a registered corpus (stdlib-docs: offline) or the path of a UTF-8 text file")
    data.add_argument("--data-dir", default="data", help="where corpora are kept")
    data.add_argument("--max-chars", type=positive_int, default=None, help="use only the first N characters")
    data.add_argument("--val-fraction", type=fraction, default=0.1,
                      help="share of the text kept for validation")
    data.add_argument("--vocab-size", type=positive_int, default=2000, help="WordPiece vocabulary size")
    data.add_argument("--min-frequency", type=positive_int, default=100,
                      help="WordPiece merges only pairs seen at least this often")
    model = p.add_argument_group("model")
    model.add_argument("--context-length", type=positive_int, default=64,
                       help="tokens per sequence, [CLS] and [SEP] included")
    model.add_argument("--emb-dim", type=positive_int, default=128, help="hidden size")
    model.add_argument("--n-layers", type=positive_int, default=4, help="encoder blocks")
    model.add_argument("--n-heads", type=positive_int, default=4, help="attention heads")
    model.add_argument("--drop-rate", type=probability, default=0.0, help="dropout while training")
    model.add_argument("--norm", choices=("post", "pre"), default="post",
                       help="post-LN (BERT) or pre-LN (GPT-2) blocks")
    model.add_argument("--gelu", choices=("erf", "tanh"), default="erf", help="exact (BERT) or tanh GELU")
    train = p.add_argument_group("training")
    train.add_argument("--max-steps", type=positive_int, default=800, help="optimizer steps")
    train.add_argument("--batch-size", type=positive_int, default=16, help="sequences per batch")
    train.add_argument("--mask-prob", type=probability, default=0.15,
                       help="share of tokens chosen for prediction")
    train.add_argument("--lr", type=learning_rate, default=1e-3, help="peak learning rate")
    train.add_argument("--min-lr", type=non_negative_float, default=1e-4,
                       help="learning rate at the end of the cosine")
    train.add_argument("--warmup-steps", type=non_negative_int, default=50, help="steps of linear warmup")
    train.add_argument("--weight-decay", type=non_negative_float, default=0.01,
                       help="AdamW decay of the weight matrices")
    train.add_argument("--grad-clip", type=non_negative_float, default=1.0,
                       help="max global gradient norm (0: off)")
    train.add_argument("--seed", type=random_seed, default=123, help="seed of the weights, batches and masks")
    out = p.add_argument_group("evaluation and output")
    out.add_argument("--eval-freq", type=positive_int, default=100, help="evaluate every N steps")
    out.add_argument("--eval-iter", type=positive_int, default=5, help="batches per evaluation")
    out.add_argument("--checkpoint-freq", type=positive_int, default=None,
                     help="also save the checkpoint every N steps (it is always saved at the end)")
    out.add_argument("--out-dir", default=None, help="run folder (default: runs/<corpus>-mlm)")
    add_run_folder_flags(out, "model.npz")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bar (there is none either when stderr is not a terminal)")
    p.set_defaults(func=_cmd_pretrain_mlm, check=_check_pretrain_mlm)

    f = subparsers.add_parser(
        "fill-mask", help="print the likeliest tokens for each [MASK] of a text",
        description="Fill in the blanks of a text with an encoder: a pretrain-mlm checkpoint or a Hugging "
                    "Face BERT folder (config.json, model.safetensors, vocab.txt).")
    f.add_argument("text", help='a text with [MASK] tokens, e.g. "The cat [MASK] on the mat."')
    source = f.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a model.npz written by pretrain-mlm")
    source.add_argument("--bert", help="a BERT folder written by transformers' save_pretrained")
    f.add_argument("--vocab", help="the vocab.txt of --bert (default: FOLDER/vocab.txt)")
    f.add_argument("--cased", action="store_true", help="--bert's vocabulary is cased: do not lower-case")
    f.add_argument("--top-k", type=positive_int, default=5, help="candidates per [MASK]")
    f.set_defaults(func=_cmd_fill_mask)

    a = subparsers.add_parser(
        "attention-heatmap", help="draw an encoder layer's attention beside a decoder layer's",
        description="One PNG: the attention weights (mean over heads) of one encoder layer (every token "
                    "sees every token: a full square) beside one decoder layer (GPT: the lower triangle) "
                    "on the same sentence. Random models of the same size unless checkpoints are given.")
    a.add_argument("--sentence", default="The cat sat on the mat because it was warm .",
                   help="the sentence both models read")
    a.add_argument("--checkpoint", help="an encoder model.npz from pretrain-mlm (default: random weights)")
    a.add_argument("--gpt-checkpoint", help="a decoder model.npz from pretrain (default: random weights)")
    a.add_argument("--data-dir", default="data", help="where GPT-2's vocabulary is kept (--gpt-checkpoint)")
    a.add_argument("--layer", type=non_negative_int, default=0, help="which layer of each model")
    a.add_argument("--seed", type=random_seed, default=0, help="seed of the random models")
    a.add_argument("--out", default=str(DEFAULT_RUNS_DIR / "attention" / "encoder-vs-decoder.png"),
                   help="the PNG to write")
    a.set_defaults(func=_cmd_attention_heatmap)

