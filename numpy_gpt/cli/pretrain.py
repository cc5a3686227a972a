"""``numpy-gpt pretrain | generate | gradcheck``: chapter 5 and the gradient proofs from the command line.

* ``pretrain`` -- train a GPT on a corpus and write a run folder: checkpoint, loss plot, samples.
  With no arguments it trains a small model on the offline default corpus (the standard
  library's documentation, see corpora.py) in a couple of minutes on a laptop CPU, then prints
  generated text.
* ``generate`` -- continue a prompt with a checkpoint (greedy, temperature, top-k, top-p).
* ``gradcheck`` -- finite-difference check of every layer's hand-written backward, as a table.

``numpy_gpt/cli/main.py`` adds these parsers with ``add_subcommands``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.cli.common import (
    DEFAULT_CORPUS,
    DEFAULT_RUNS_DIR,
    DEFAULT_SCALING_DIR,
    GPT2_VOCAB_SIZE,
    THREADS_HELP,
    CLIError,
    add_model_source,
    add_run_folder_flags,
    check_heads,
    check_memory,
    check_min_lr,
    fraction,
    hf_model,
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
    thread_count,
    top_p_mass,
    training_bytes,
    use_threads,
)
from numpy_gpt.fileio import write_text_atomic
from numpy_gpt.tokenizers.spec import tokenizer_spec

# Model sizes for `pretrain --preset` (vocab_size always comes from the tokenizer), each with the
# peak learning rate it trains well with (GPT-2 124M: 6e-4, as in the GPT-3 paper's table).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"context_length": 64, "emb_dim": 64, "n_heads": 4, "n_layers": 2, "drop_rate": 0.0,
             "qkv_bias": False, "lr": 2e-3},
    "small": {"context_length": 64, "emb_dim": 128, "n_heads": 4, "n_layers": 4, "drop_rate": 0.0,
              "qkv_bias": False, "lr": 2e-3},
    "medium": {"context_length": 256, "emb_dim": 384, "n_heads": 6, "n_layers": 6, "drop_rate": 0.1,
               "qkv_bias": False, "lr": 1e-3},
    "124M": {"context_length": 1024, "emb_dim": 768, "n_heads": 12, "n_layers": 12, "drop_rate": 0.1,
             "qkv_bias": False, "lr": 6e-4},
}

# Defaults of `numpy-gpt pretrain`: about two minutes on 2 CPU cores. Measured on stdlib-docs with
# the small preset, 1000 steps of 12 x 64 tokens at lr 2e-3: characters reach 2.49 bits per
# character of validation text, a trained BPE of 512 tokens 2.30 and of 1024 tokens 2.06, and the
# 1024-token BPE writes the most recognisable English ("Found parsers internal errors if the ...").
DEFAULT_TOKENIZER = "bpe"
DEFAULT_BPE_VOCAB = 1024
DEFAULT_PRESET = "small"
DEFAULT_STEPS = 1000
DEFAULT_BATCH = 12
DEFAULT_WARMUP = 100
DEFAULT_EVAL_FREQ = 100
EVALUATIONS = 20                 # a run of more than 2,000 steps evaluates about this often, not every 100
DEFAULT_PROMPT = "Return the"
DEFAULT_SAMPLE_TOKENS = 200



# -- pretrain -------------------------------------------------------------------------------------
def _model_config(args: argparse.Namespace, vocab_size: int) -> dict[str, Any]:
    cfg = {"vocab_size": vocab_size, **{k: v for k, v in PRESETS[args.preset].items() if k != "lr"}}
    for key in ("context_length", "emb_dim", "n_heads", "n_layers", "drop_rate"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.qkv_bias:
        cfg["qkv_bias"] = True
    return cfg


def _default_out_dir(args: argparse.Namespace) -> Path:
    corpus = Path(args.corpus).stem if Path(args.corpus).suffix else str(args.corpus)
    return DEFAULT_RUNS_DIR / f"{corpus}-{args.preset}-{args.tokenizer}"


def _windows(tokens: int, context: int, stride: int) -> int:
    """Training windows of ``context`` + 1 tokens every ``stride`` tokens (data.GPTDatasetV1)."""
    return 0 if tokens <= context else (tokens - context - 1) // stride + 1


def _check_windows(args: argparse.Namespace, context: int, train_tokens: int, val_tokens: int,
                   bound: bool = False) -> None:
    """Refuse a split too short for one validation window or for one optimizer step (--batch-size x
    --grad-accum windows). With ``bound``, the token counts are upper bounds (bytes, before the
    tokenizer exists): what fails then fails for every tokenizer."""
    most = "at most " if bound else ""
    if val_tokens <= context:
        raise CLIError(f"the validation split has {most}{val_tokens} tokens, fewer than one window of "
                       f"context_length + 1 = {context + 1}: use more text, a larger --val-fraction or a "
                       f"smaller --context-length")
    windows = _windows(train_tokens, context, args.stride or context)
    if windows < args.batch_size * args.grad_accum:
        raise CLIError(f"the training split makes {most}{windows:,} windows of {context} tokens, fewer than "
                       f"one optimizer step of --batch-size {args.batch_size} x --grad-accum "
                       f"{args.grad_accum}: use more text or smaller --batch-size / --grad-accum / --stride")


def _check_pretrain(args: argparse.Namespace) -> None:
    """The flags that only make sense together, and the memory, before any work (see main.main)."""
    if args.preset == "from-scaling":                    # runs/scaling/recommendation.json sets the flags
        apply_scaling_recommendation(args)
    if args.resume:
        return                                           # the checkpoint's model and schedule are used
    check_min_lr(args, PRESETS[args.preset]["lr"])
    cfg = _model_config(args, {"bpe": args.vocab_size, "gpt2": GPT2_VOCAB_SIZE}.get(args.tokenizer, 256))
    check_heads(cfg["emb_dim"], cfg["n_heads"])
    if args.tokenizer == "bpe" and args.vocab_size < 257:
        raise CLIError(f"--vocab-size {args.vocab_size}: a byte-level BPE needs at least 257 tokens (the 256 "
                       f"bytes and <|endoftext|>)")
    flags = {"--emb-dim": cfg["emb_dim"], "--n-layers": cfg["n_layers"],
             "--context-length": cfg["context_length"], "--batch-size": args.batch_size}
    if args.tokenizer == "bpe":
        flags["--vocab-size"] = args.vocab_size
    check_memory(flags, training_bytes(cfg, args.batch_size))


def _out_of_merges_advice(args: argparse.Namespace, err, train_text: str, val_text: str) -> str:
    """The error of a BPE that ran out of pairs to merge, with only advice that works: --vocab-size
    err.largest if its tokens still make the windows, else --tokenizer char if characters do, else
    more text (the BPE of err.largest is trained here to know: the text is small, that is quick)."""
    from numpy_gpt.data import encode_text
    from numpy_gpt.tokenizers.train_bpe import BPETokenizer

    context = _model_config(args, 1)["context_length"]
    tried = [(f"--vocab-size {err.largest}", lambda t: len(encode_text(bpe, t))),
             ("--tokenizer char", len)]
    bpe = BPETokenizer.train(train_text, err.largest)
    for flag, count in tried:
        try:
            _check_windows(args, context, count(train_text), count(val_text))
        except CLIError:
            continue
        return f"--corpus {args.corpus}: its text has pairs for a BPE of at most {err.largest} tokens, not " \
               f"--vocab-size {args.vocab_size}: use {flag}, or more text"
    return (f"--corpus {args.corpus}: its text has pairs for a BPE of at most {err.largest} tokens, and is "
            f"too short for --context-length {context} even as characters: use more text")


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from numpy_gpt.corpora import build_tokenizer
    from numpy_gpt.data import create_dataloader_v1, encode_text
    from numpy_gpt.generate import generate, text_to_token_ids, token_ids_to_text
    from numpy_gpt.model import GPTModel
    from numpy_gpt.model_files import LANGUAGE_MODELS, checkpoint_tokenizer
    from numpy_gpt.optim import AdamW, ConstantLR, WarmupCosineLR, configure_param_groups
    from numpy_gpt.plots import plot_losses
    from numpy_gpt.tokenizers.train_bpe import OutOfMerges
    from numpy_gpt.train import perplexity_from_loss, train_model

    started = time.perf_counter()
    if args.threads is not None:
        from numpy_gpt.runtime import set_threads
        set_threads(args.threads)
    out_dir = Path(args.out_dir) if args.out_dir else _default_out_dir(args)
    checkpoint_path = out_dir / "model.npz"
    resume = start_or_resume(args, out_dir, checkpoint_path.name, product=checkpoint_path.name,
                             outputs=("loss.png", "samples.txt"))

    train_text, val_text = load_split_corpus(args)
    if resume:                                            # its metadata: train_model reads the weights
        saved = model_file(checkpoint_path, "pretrain --resume", LANGUAGE_MODELS)
        tokenizer = checkpoint_tokenizer(saved, data_dir=args.data_dir)
        cfg = saved.cfg
    else:          # before the BPE trains and the run folder exists: at most one token per byte
        _check_windows(args, _model_config(args, 1)["context_length"],
                       *(len(t.encode("utf-8", "surrogatepass")) for t in (train_text, val_text)), bound=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            tokenizer = build_tokenizer(args.tokenizer, train_text, train_text + val_text, args.vocab_size,
                                        args.data_dir, out_dir)
        except OutOfMerges as err:
            raise CLIError(_out_of_merges_advice(args, err, train_text, val_text)) from None
        cfg = _model_config(args, tokenizer.n_vocab)
    train_ids = np.asarray(encode_text(tokenizer, train_text), dtype=np.int64)
    val_ids = np.asarray(encode_text(tokenizer, val_text), dtype=np.int64)
    context = cfg["context_length"]
    _check_windows(args, context, len(train_ids), len(val_ids))
    print(f"{len(train_text) + len(val_text):,} characters -> {len(train_ids):,} training and "
          f"{len(val_ids):,} validation tokens ({tokenizer_spec(tokenizer)['kind']} tokenizer, "
          f"vocabulary {tokenizer.n_vocab:,})")

    stride = args.stride or context
    train_loader = create_dataloader_v1(train_ids, batch_size=args.batch_size, max_length=context,
                                        stride=stride, shuffle=True, drop_last=True, seed=args.seed)
    val_loader = create_dataloader_v1(val_ids, batch_size=args.batch_size, max_length=context,
                                      stride=context, shuffle=False, drop_last=False)
    steps_per_epoch = len(train_loader) // args.grad_accum
    if args.max_steps is not None:
        max_steps = args.max_steps
    else:
        max_steps = args.epochs * steps_per_epoch if args.epochs is not None else DEFAULT_STEPS

    model = GPTModel(cfg, seed=args.seed)
    lr = args.lr if args.lr is not None else PRESETS[args.preset]["lr"]
    optimizer = AdamW(configure_param_groups(model, args.weight_decay), lr=lr, betas=(0.9, args.beta2))
    if args.schedule == "constant":
        schedule = ConstantLR(lr)
    else:
        warmup = min(args.warmup_steps, max_steps - 1)
        schedule = WarmupCosineLR(lr, max_steps, warmup, initial_lr=lr / (warmup + 1), min_lr=args.min_lr)
    print(f"Model {cfg} ({model.num_parameters():,} parameters); {max_steps:,} steps of "
          f"{args.batch_size * args.grad_accum} x {context} tokens "
          f"({max_steps / steps_per_epoch:.2f} epochs); output in {out_dir}/", flush=True)

    history = train_model(
        model, train_loader, val_loader, optimizer, max_steps=max_steps,
        eval_freq=args.eval_freq or max(DEFAULT_EVAL_FREQ, max_steps // EVALUATIONS),
        eval_iter=args.eval_iter, lr_schedule=schedule, grad_clip=args.grad_clip or None,
        grad_accum_steps=args.grad_accum, tokenizer=tokenizer, start_context=args.prompt,
        sample_tokens=args.sample_tokens, checkpoint_path=checkpoint_path,
        sampling={"temperature": args.temperature, "top_k": args.top_k, "seed": args.seed},
        checkpoint_freq=args.checkpoint_freq, checkpoint_extra={
            "tokenizer": tokenizer_spec(tokenizer), "corpus": str(args.corpus), "prompt": args.prompt},
        resume_from=checkpoint_path if resume else None, progress=show_bars(args))

    plot_path = plot_losses(history.eval_steps, history.tokens_seen, history.train_losses,
                            history.val_losses, out_dir / "loss.png",
                            title=f"{args.corpus}: {model.num_parameters():,} parameters")
    samples = []                    # seeds after the one of the sample printed by the training loop
    seeds = [args.seed + 1 + i for i in range(args.num_samples)]
    for seed in seeds:
        ids = generate(model, text_to_token_ids(args.prompt, tokenizer), args.sample_tokens, context,
                       temperature=args.temperature, top_k=args.top_k, seed=seed)
        samples.append(token_ids_to_text(ids, tokenizer))
    samples_path = out_dir / "samples.txt"
    header = f"temperature {args.temperature}" + (f", top-k {args.top_k}" if args.top_k else "")
    write_text_atomic(samples_path, "".join(f"--- sample {i + 1} ({header}, seed {seed}) ---\n{sample}\n"
                                      for i, (seed, sample) in enumerate(zip(seeds, samples, strict=True))))

    val_loss = history.val_losses[-1]
    print(f"\nFinal: train loss {history.train_losses[-1]:.3f}, val loss {val_loss:.3f} "
          f"(perplexity {perplexity_from_loss(val_loss):.2f}); {history.train_tokens:,} tokens trained on at "
          f"{history.tokens_per_second:,.0f} tokens/s; {time.perf_counter() - started:.0f} s in all")
    for i, (seed, sample) in enumerate(zip(seeds, samples, strict=True)):
        print(f"\n--- sample {i + 1} ({header}, seed {seed}) ---\n{sample}")
    print(f"\nCheckpoint: {checkpoint_path}\nLoss plot:  {plot_path}\nSamples:    {samples_path}")
    print(f"Generate more: numpy-gpt generate --checkpoint {checkpoint_path} "
          f"--prompt {json.dumps(args.prompt)}")
    return 0


def apply_scaling_recommendation(args: argparse.Namespace, folder: Path = DEFAULT_SCALING_DIR) -> None:
    """For ``pretrain --preset from-scaling``: set the corpus, tokenizer, model and training flags
    from ``folder/recommendation.json`` (written by ``numpy-gpt scaling --recommend``); --max-steps
    or --epochs, when given, still set the length."""
    from numpy_gpt.scaling import read_recommendation

    flags, summary = read_recommendation(folder)
    if args.max_steps is not None or args.epochs is not None:
        del flags["max_steps"]
    for name, value in flags.items():
        setattr(args, name, value)
    if args.threads is None:            # the sweep's (scaling --threads 1): its speed made the time estimate
        args.threads = 1
    args.preset = "tiny"                                     # every model flag above overrides it
    if args.out_dir is None:
        args.out_dir = str(DEFAULT_RUNS_DIR / f"{Path(str(args.corpus)).stem}-from-scaling-{args.tokenizer}")
    print(summary)


# -- generate -------------------------------------------------------------------------------------
def _load_for_generate(args: argparse.Namespace):
    """(model in eval mode, tokenizer, extra) for `generate` from --gpt2, --checkpoint or --hf."""
    from numpy_gpt.gpt2.convert import load_gpt2
    from numpy_gpt.model_files import LANGUAGE_MODELS, checkpoint_tokenizer

    if args.hf is not None:
        return (*hf_model(args.hf, "generate"), {})
    if args.gpt2 is not None:
        model, _ = load_gpt2(args.gpt2, args.models_dir)
        return model, checkpoint_tokenizer(None, data_dir=args.data_dir), {}
    file = model_file(args.checkpoint, "generate", LANGUAGE_MODELS, or_else="use --gpt2 124M")
    # --tokenizer gpt2 (the one choice) overrides what the file records: GPT-2's is checkpoint None's.
    tokenizer = checkpoint_tokenizer(None if args.tokenizer else file, data_dir=args.data_dir)
    return file.load_model(), tokenizer, file.extra


def _cmd_generate(args: argparse.Namespace) -> int:
    from numpy_gpt.generate import generate, text_to_token_ids, token_ids_to_text
    from numpy_gpt.plots import plot_attention

    model, tokenizer, extra = _load_for_generate(args)
    use_threads(args.threads, model.cfg)
    prompt = args.prompt if args.prompt is not None else extra.get("prompt", "\n")
    if not prompt:
        raise CLIError('the prompt is empty: give some text to continue, e.g. --prompt "The"')
    idx = text_to_token_ids(prompt, tokenizer)
    context_size = args.context_size or model.cfg["context_length"]
    if context_size > model.cfg["context_length"]:
        raise CLIError(f"--context-size {context_size} is longer than the model's context of "
                       f"{model.cfg['context_length']} tokens (it has no position embedding beyond it)")
    eos_id = getattr(tokenizer, "eot_token", None) if args.stop_at_eos else None
    for i in range(args.num_samples):
        seed = None if args.seed is None else args.seed + i
        out = generate(model, idx, args.max_new_tokens, context_size, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, eos_id=eos_id, use_cache=not args.no_cache,
                       seed=seed)
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(token_ids_to_text(out, tokenizer))
    if args.attention_plot:
        ids = idx[:, -context_size:]
        tokens = [tokenizer.decode([int(t)]) for t in ids[0]]
        path = plot_attention(model, ids, args.attention_plot, tokens=tokens)
        print(f"Attention heatmaps of the prompt: {path}")
    return 0


# -- gradcheck ------------------------------------------------------------------------------------
# Central differences in float64 have two errors: truncation (~eps^2 times the third derivative)
# and rounding (~1e-16 * |L| / eps). The default step 1e-6 suits most layers; a LayerNorm fed unit
# inputs is almost linear, so rounding dominates and a larger step is more accurate, while the
# whole GPTModel (small init weights, strongly curved) needs the small step.
GRADCHECK_EPS = {"LayerNorm": 1e-5, "TransformerBlock": 1e-5}


def _gradcheck_cases(seed: int) -> list[tuple[str, Callable[[], Any]]]:
    """(layer name, thunk returning its GradcheckReport) for every layer with a backward."""
    from numpy_gpt.gradcheck import gradcheck as check
    from numpy_gpt.model import GPTModel
    from numpy_gpt.nn.attention import MultiHeadAttention
    from numpy_gpt.nn.block import TransformerBlock
    from numpy_gpt.nn.dropout import Dropout
    from numpy_gpt.nn.embedding import Embedding, PositionalEmbedding
    from numpy_gpt.nn.feedforward import FeedForward
    from numpy_gpt.nn.gelu import GELU
    from numpy_gpt.nn.layernorm import LayerNorm
    from numpy_gpt.nn.linear import Linear
    from numpy_gpt.nn.lora import LinearWithLoRA
    from numpy_gpt.nn.loss import cross_entropy

    def gradcheck(fn_or_module, inputs, **kwargs):
        name = type(fn_or_module).__name__
        return check(fn_or_module, inputs, eps=GRADCHECK_EPS.get(name, 1e-6), seed=seed, **kwargs)

    rng = np.random.default_rng(seed)
    f64 = np.float64                      # layers are built in float64, as the check runs in it
    B, T, C, V = 2, 5, 8, 11
    cfg = {"vocab_size": V, "context_length": 8, "emb_dim": C, "n_heads": 2, "n_layers": 2,
           "drop_rate": 0.0, "qkv_bias": True}
    x = rng.standard_normal((B, T, C))
    ids = rng.integers(0, V, (B, T))
    targets = rng.integers(0, V, (B, T))

    def dropout_case():
        drop = Dropout(0.3, rng=np.random.default_rng(seed))
        state = drop.rng.bit_generator.state
        return gradcheck(drop, x, before_forward=lambda: setattr(drop.rng.bit_generator, "state", state))

    def lora_case():
        layer = LinearWithLoRA(Linear(C, 6, rng=rng, dtype=f64), rank=2, alpha=4.0, rng=rng)
        for p in layer.parameters(trainable_only=True):      # LoRA's B starts at zero: move it off
            p.data += rng.standard_normal(p.shape).astype(p.data.dtype)
        return gradcheck(layer, x)

    def loss_case():
        def ce(logits):
            loss, dlogits = cross_entropy(logits, targets)
            return loss, lambda dloss: dloss * dlogits
        return gradcheck(ce, rng.standard_normal((B, T, V)))

    return [
        ("Linear", lambda: gradcheck(Linear(C, 6, rng=rng, dtype=f64), x)),
        ("Embedding", lambda: gradcheck(Embedding(V, C, rng=rng, dtype=f64), [ids])),
        ("PositionalEmbedding", lambda: gradcheck(PositionalEmbedding(8, C, rng=rng, dtype=f64), [T])),
        ("LayerNorm", lambda: gradcheck(LayerNorm(C, dtype=f64), x)),
        ("GELU", lambda: gradcheck(GELU(), x)),
        ("Dropout", dropout_case),
        ("MultiHeadAttention", lambda: gradcheck(MultiHeadAttention(C, C, 8, 0.0, 2, qkv_bias=True,
                                                                    rng=rng, dtype=f64), x)),
        ("FeedForward", lambda: gradcheck(FeedForward(cfg, rng=rng, dtype=f64), x)),
        ("TransformerBlock", lambda: gradcheck(TransformerBlock(cfg, rng=rng, dtype=f64), x)),
        ("LinearWithLoRA", lora_case),
        ("cross_entropy", loss_case),
        ("GPTModel", lambda: gradcheck(GPTModel(cfg, seed=seed, dtype=f64), [ids])),
    ]


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    print("Central finite differences in float64 against every hand-written backward "
          "(pass: max relative error <= 1e-6).")
    header = f"{'layer':<20} {'eps':>6} {'tensors':>7} {'checked':>8} {'max rel err':>12}  result"
    print(header)
    print("-" * len(header))
    failed = []
    for name, run in _gradcheck_cases(args.seed):
        report = run()
        checked = sum(row.n_checked for row in report.rows)
        print(f"{name:<20} {report.eps:>6.0e} {len(report.rows):>7} {checked:>8} "
              f"{report.max_rel_error:>12.2e}  {'ok' if report.ok else 'FAIL'}")
        if args.verbose or not report.ok:
            print("  " + str(report).replace("\n", "\n  "))
        if not report.ok:
            failed.append(name)
    print("-" * len(header))
    print("all gradients match" if not failed else f"gradient check FAILED for: {', '.join(failed)}")
    return 1 if failed else 0


# -- the parsers ---------------------------------------------------------------------------------
def _add_pretrain(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain", help="train a GPT on a corpus (chapter 5); no arguments: a quick demo run",
        description="Pretrain a GPT model and write a run folder with the checkpoint (model.npz), the "
                    "loss plot (loss.png) and generated samples (samples.txt). With no arguments: a "
                    "small model with a 1024-token BPE trained on the offline corpus (the standard "
                    "library's documentation), about two minutes on 2 cores.")
    data = p.add_argument_group("data")
    data.add_argument("--corpus", default=DEFAULT_CORPUS,
                      help="a registered corpus (stdlib-docs: offline; the-verdict, tinyshakespeare: "
                           "downloaded) or the path of a UTF-8 text file")
    data.add_argument("--data-dir", default="data", help="where corpora and vocabularies are kept")
    data.add_argument("--max-chars", type=positive_int, default=None,
                      help="use only the first N characters of the corpus")
    data.add_argument("--val-fraction", type=fraction, default=0.1,
                      help="share of the text kept for validation")
    data.add_argument("--tokenizer", choices=("char", "bpe", "gpt2"), default=DEFAULT_TOKENIZER,
                      help="characters; a byte-level BPE trained on the corpus; or GPT-2's vocabulary")
    data.add_argument("--vocab-size", type=positive_int, default=DEFAULT_BPE_VOCAB,
                      help="vocabulary size of the trained BPE (--tokenizer bpe)")
    model = p.add_argument_group("model (a preset, then any overrides)")
    model.add_argument("--preset", choices=(*PRESETS, "from-scaling"), default=DEFAULT_PRESET,
                       help="; ".join(f"{k}: {v['n_layers']} layers x {v['emb_dim']} wide, context "
                                      f"{v['context_length']}" for k, v in PRESETS.items())
                       + "; from-scaling: the model, corpus and tokens `numpy-gpt scaling --recommend` chose")
    model.add_argument("--context-length", type=positive_int, help="tokens the model sees at once")
    model.add_argument("--emb-dim", type=positive_int, help="width of the embeddings and residual stream")
    model.add_argument("--n-layers", type=positive_int, help="transformer blocks")
    model.add_argument("--n-heads", type=positive_int, help="attention heads per block (divides --emb-dim)")
    model.add_argument("--drop-rate", type=probability, help="dropout probability while training")
    model.add_argument("--qkv-bias", action="store_true", help="bias in the query, key and value projections")
    train = p.add_argument_group("training")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--max-steps", type=positive_int, default=None,
                        help=f"optimizer steps (default {DEFAULT_STEPS} unless --epochs is given)")
    length.add_argument("--epochs", type=positive_int, default=None, help="passes over the training split")
    train.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH,
                       help="windows per batch")
    train.add_argument("--grad-accum", type=positive_int, default=1, help="batches per optimizer step")
    train.add_argument("--stride", type=positive_int, default=None,
                       help="distance between training windows (default: the context length)")
    train.add_argument("--lr", type=learning_rate, default=None,
                       help="peak learning rate (default: the preset's)")
    train.add_argument("--min-lr", type=non_negative_float, default=1e-4,
                       help="learning rate at the end of the cosine")
    train.add_argument("--warmup-steps", type=non_negative_int, default=DEFAULT_WARMUP,
                       help="steps of linear warmup before the cosine")
    train.add_argument("--schedule", choices=("cosine", "constant"), default="cosine",
                       help="linear warmup + cosine decay to --min-lr, or a constant --lr")
    train.add_argument("--weight-decay", type=non_negative_float, default=0.1,
                       help="AdamW decay of the weight matrices")
    train.add_argument("--beta2", type=probability, default=0.99, help="AdamW's second-moment decay")
    train.add_argument("--grad-clip", type=non_negative_float, default=1.0,
                       help="max global gradient norm (0: off)")
    train.add_argument("--seed", type=random_seed, default=123,
                       help="seed of the weights, batches and samples")
    out = p.add_argument_group("evaluation and output")
    out.add_argument("--eval-freq", type=positive_int, default=None,
                     help=f"evaluate every N steps (default: {DEFAULT_EVAL_FREQ}, or about {EVALUATIONS} "
                          f"times in a longer run)")
    out.add_argument("--eval-iter", type=positive_int, default=10, help="batches per evaluation")
    out.add_argument("--checkpoint-freq", type=positive_int, default=None,
                     help="also save the checkpoint every N steps (it is always saved at the end)")
    out.add_argument("--out-dir", default=None,
                     help="run folder (default: runs/<corpus>-<preset>-<tokenizer>)")
    add_run_folder_flags(out, "model.npz")
    out.add_argument("--prompt", default=DEFAULT_PROMPT, help="start of the generated samples")
    out.add_argument("--sample-tokens", type=positive_int, default=DEFAULT_SAMPLE_TOKENS,
                     help="length of each generated sample, in tokens")
    out.add_argument("--num-samples", type=non_negative_int, default=2, help="samples printed at the end")
    out.add_argument("--temperature", type=non_negative_float, default=0.8,
                     help="temperature of the final samples")
    out.add_argument("--top-k", type=positive_int, default=None, help="top-k of the final samples")
    out.add_argument("--threads", type=thread_count, default=None,
                     help="BLAS threads (default: NumPy's own choice; with --preset from-scaling 1, the "
                          "sweep's, whose speed the recommended time assumes)")
    out.add_argument("--no-progress", action="store_true",
                     help="no progress bar (there is none either when stderr is not a terminal)")
    p.set_defaults(func=_cmd_pretrain, check=_check_pretrain)


def _add_generate(subparsers) -> None:
    p = subparsers.add_parser(
        "generate", help="continue a prompt with a trained checkpoint",
        description="Generate text with a checkpoint: greedy (--temperature 0), or sampled with "
                    "temperature, top-k and top-p, using the KV cache. The model is a checkpoint "
                    "(--checkpoint: .npz, .safetensors or an OpenAI folder) or OpenAI's GPT-2 (--gpt2 SIZE).")
    add_model_source(p, "a model.npz written by pretrain, a .safetensors file or an "
                                             "OpenAI GPT-2 folder",
                     "a Hugging Face model folder (config.json, "
                                                     "model.safetensors or its shards, tokenizer.json): "
                                                     "GPT-2, Llama 3.x, SmolLM2, Qwen3")
    p.add_argument("--models-dir", default="gpt2", help="where GPT-2 weights are kept (with --gpt2)")
    p.add_argument("--prompt", default=None, help="the text to continue (default: the run's sample prompt)")
    p.add_argument("--max-new-tokens", type=positive_int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="sample only from the k most likely tokens")
    p.add_argument("--top-p", type=top_p_mass, default=None,
                   help="sample only from the most likely tokens whose probabilities add up to p")
    p.add_argument("--seed", type=random_seed, default=None, help="seed of the sampling (default: random)")
    p.add_argument("--num-samples", type=positive_int, default=1, help="samples to print")
    p.add_argument("--context-size", type=positive_int, default=None,
                   help="tokens the model sees (default: its context length)")
    p.add_argument("--stop-at-eos", action="store_true", help="stop at the tokenizer's <|endoftext|>")
    p.add_argument("--no-cache", action="store_true", help="recompute every step instead of the KV cache")
    p.add_argument("--tokenizer", choices=("gpt2",), default=None,
                   help="override the tokenizer recorded in the checkpoint")
    p.add_argument("--data-dir", default="data", help="where GPT-2's vocabulary is kept")
    p.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    p.add_argument("--attention-plot", default=None, metavar="PNG",
                   help="also save attention heatmaps (every layer and head) of the prompt")
    p.set_defaults(func=_cmd_generate)


def _add_gradcheck(subparsers) -> None:
    p = subparsers.add_parser(
        "gradcheck", help="check every layer's backward against finite differences",
        description="Run the float64 finite-difference gradient check on every layer (Linear ... "
                    "GPTModel) and print a table; the exit code is 1 if any check fails.")
    p.add_argument("--seed", type=random_seed, default=0, help="seed of the random inputs and weights")
    p.add_argument("--verbose", action="store_true", help="print every tensor's row")
    p.set_defaults(func=_cmd_gradcheck)


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``pretrain``, ``generate`` and ``gradcheck`` to the main parser's subcommands."""
    _add_pretrain(subparsers)
    _add_generate(subparsers)
    _add_gradcheck(subparsers)
