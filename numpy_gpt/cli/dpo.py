"""``numpy-gpt finetune-dpo``: preference tuning (DPO) of an instruction-tuned model from the command line.

    numpy-gpt finetune-dpo --checkpoint runs/instruct/instruct.npz           # the synthetic task, offline
    numpy-gpt finetune-dpo --checkpoint runs/instruct/instruct.npz --data book --lr 5e-6 --beta 0.1
    numpy-gpt finetune-dpo --checkpoint runs/instruct/instruct.npz --trainable lora --lora-rank 8 --lr 3e-4

The starting model is named as the other fine-tuning commands name it (``--init checkpoint`` is
the default and the only choice: DPO starts from an instruction-tuned model), and so is what trains
(``--trainable all|last-block|last-n|lora``, ``--lora-rank``). The older spellings ``--init FILE``
and ``--lora RANK`` still work. The model and its tokenizer come from the checkpoint (the tokenizer
it records; GPT-2's for OpenAI folders or when none is recorded and the vocabulary is GPT-2's). The
reference is that model before tuning: its log-probabilities of every pair are computed once, before
the first update (with ``--trainable lora``, from the base model with its adapters switched off).
Writes to ``--out``: ``dpo.npz`` (the tuned model, adapters merged, with its tokenizer),
``dpo-train.npz`` (the resumable training state), ``dpo-curves.png``, ``metrics.json`` (held-out
rewards before and after) and ``responses.json`` (answers to held-out prompts before and after, also
printed). ``numpy_gpt/cli/main.py`` adds the parser with ``add_subcommands``; the modules behind the
command are imported when it runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from numpy_gpt.cli.common import (
    INIT_CHOICES,
    CLIError,
    add_run_folder_flags,
    add_trainable_flags,
    learning_rate,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    random_seed,
    start_or_resume,
)

DATA_CHOICES = ("synthetic", "book")


def _resolve_flags(args: argparse.Namespace) -> None:
    """Read the older spellings into the shared ones: ``--init FILE`` is ``--init checkpoint
    --checkpoint FILE``; ``--lora RANK`` is ``--trainable lora --lora-rank RANK`` (0: ``--trainable
    all``). Sets args.checkpoint (a Path) and args.trainable; one line when they contradict."""
    if args.init not in (None, "checkpoint"):
        if args.init in INIT_CHOICES:
            raise CLIError(f"finetune-dpo starts from an instruction-tuned checkpoint, not --init "
                           f"{args.init}: pass --checkpoint FILE (numpy-gpt finetune-instruct writes "
                           f"runs/instruct/instruct.npz)")
        if args.checkpoint is not None:
            raise CLIError(f"name the starting model once: --checkpoint {args.checkpoint} or --init "
                           f"{args.init} (the older spelling), not both")
        args.checkpoint = args.init
    if args.checkpoint is None:
        raise CLIError("finetune-dpo needs its starting model: --checkpoint FILE, an instruction-tuned "
                       "checkpoint (numpy-gpt finetune-instruct writes runs/instruct/instruct.npz)")
    args.init, args.checkpoint = "checkpoint", Path(args.checkpoint)
    if args.lora is not None:
        wanted = "lora" if args.lora else "all"
        if args.trainable not in (None, wanted):
            raise CLIError(f"--lora {args.lora} means --trainable {wanted}, but --trainable {args.trainable} "
                           f"was given: use --trainable with --lora-rank")
        args.trainable = wanted
        if args.lora:
            args.lora_rank = args.lora
    args.trainable = args.trainable or "all"


def _load_init(args: argparse.Namespace):
    """(model, tokenizer, tokenizer spec) from --checkpoint (numpy_gpt.load)."""
    from numpy_gpt.model_files import LANGUAGE_MODELS, load
    from numpy_gpt.tokenizers.spec import tokenizer_spec

    if not args.checkpoint.exists():
        raise FileNotFoundError(f"--checkpoint {args.checkpoint} does not exist: pass an instruction-tuned "
                                f"checkpoint (numpy-gpt finetune-instruct writes runs/instruct/instruct.npz)")
    model, tokenizer = load(args.checkpoint, expect=LANGUAGE_MODELS, use="`numpy-gpt finetune-dpo`",
                            data_dir=args.data_dir, drop_rate=args.drop_rate)
    return model, tokenizer, tokenizer_spec(tokenizer)


def _load_data(args: argparse.Namespace) -> tuple[list[dict], str]:
    from numpy_gpt.finetune.preference_data import (
        download_preference_data,
        load_preference_data,
        synthetic_preference_data,
    )
    if args.data == "synthetic":
        return synthetic_preference_data(), "synthetic"
    if args.data == "book":
        return download_preference_data(args.data_dir), "book"
    path = Path(args.data)
    if not path.is_file():
        raise FileNotFoundError(f"--data {args.data}: no such file; use synthetic, book or a JSON file of "
                                f"{{instruction, input, output, chosen, rejected}} entries")
    return load_preference_data(path), str(path)


def _respond_all(model, tokenizer, entries: list[dict], max_new_tokens: int, eos_id: int | None) -> list[str]:
    from numpy_gpt.finetune.instruct import respond
    return [respond(model, tokenizer, entry, max_new_tokens, eos_id=eos_id) for entry in entries]


def _cmd_finetune_dpo(args: argparse.Namespace) -> int:
    from numpy_gpt.checkpoint import save_checkpoint
    from numpy_gpt.finetune.classifier import set_trainable
    from numpy_gpt.finetune.data import save_json
    from numpy_gpt.finetune.preference import (
        PreferenceDataLoader,
        PreferenceDataset,
        before_and_after,
        end_of_text_id,
        evaluate_dpo,
        plot_dpo,
        reference_logprobs,
        train_dpo,
    )
    from numpy_gpt.finetune.preference_data import is_polite, split_preference_data
    from numpy_gpt.nn.lora import merge_lora
    from numpy_gpt.optim import AdamW

    _resolve_flags(args)                                # one line for a contradiction, before any work
    lora = args.trainable == "lora"
    out = args.out
    checkpoint_path = out / "dpo-train.npz"
    resume = start_or_resume(args, out, checkpoint_path.name, product="dpo.npz",
                             outputs=("dpo-curves.png", "metrics.json", "responses.json"))
    started = time.perf_counter()

    model, tokenizer, spec = _load_init(args)
    data, data_name = _load_data(args)
    train_data, val_data, test_data = split_preference_data(data)
    if not train_data or not val_data or not test_data:
        raise ValueError(f"--data {args.data}: {len(data)} entries split 85/10/5 (train, test, "
                         f"validation) leave an empty part; use at least 20 entries")
    eos_id = end_of_text_id(tokenizer)
    context = model.cfg["context_length"]
    allowed = min(args.allowed_max_length, context)
    options = {"pad_token_id": 0 if eos_id is None else eos_id, "allowed_max_length": allowed}
    # what to change when a prompt does not fit: the flag while it is below the context, else the model
    advice = (f"raise --allowed-max-length (up to the model's context of {context})" if allowed < context
              else f"the model's context of {context} tokens is the limit: tune a model pretrained with a "
                   f"context that holds them (numpy-gpt pretrain --context-length N, docs/stages.md) or "
                   f"leave these entries out of --data")

    def dataset(part: list[dict], name: str) -> PreferenceDataset:
        return PreferenceDataset(part, tokenizer, eos_id=eos_id, max_length=allowed,
                                 where=f"{data_name} ({name})", advice=advice)

    train_set = dataset(train_data, "train")
    val_set, test_set = dataset(val_data, "validation"), dataset(test_data, "test")
    print(f"Preference pairs: {len(train_set)} training, {len(val_set)} validation, {len(test_set)} test "
          f"({data_name}); model {args.checkpoint} ({model.num_parameters():,} parameters, {spec['kind']} "
          f"tokenizer)")

    set_trainable(model, args.trainable, n_blocks=args.n_blocks, lora_rank=args.lora_rank,
                  lora_alpha=args.lora_alpha, seed=args.seed)
    train_loader = PreferenceDataLoader(train_set, args.batch_size, shuffle=True, drop_last=True,
                                        seed=args.seed, **options)
    if len(train_loader) == 0:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the {len(train_set)} training pairs")
    in_order = {name: PreferenceDataLoader(part, args.batch_size, **options)
                for name, part in (("train", train_set), ("val", val_set), ("test", test_set))}
    print("Reference log-probabilities (the model before tuning, computed once)...", flush=True)
    ref = {name: reference_logprobs(model, loader) for name, loader in in_order.items()}

    shown = test_data[:args.num_responses]
    before = evaluate_dpo(model, in_order["test"], ref["test"], args.beta)
    responses_before = _respond_all(model.eval(), tokenizer, shown, args.max_new_tokens, eos_id)

    trainable = list(model.parameters(trainable_only=True))
    optimizer = AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    model.set_dropout_seed(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    print(f"DPO: beta {args.beta}, lr {args.lr}, {args.epochs} epoch(s) of {len(train_loader)} steps, "
          f"{sum(p.size for p in trainable):,} trainable parameters"
          + (f" (LoRA rank {args.lora_rank})" if lora else f" ({args.trainable})"), flush=True)
    extra = {"task": "dpo", "tokenizer": spec, "init": str(args.checkpoint), "data": data_name,
             "trainable": args.trainable,
             "lora": {"rank": args.lora_rank, "alpha": args.lora_alpha} if lora else None}
    history = train_dpo(model, train_loader, in_order["val"], optimizer, ref["train"], ref["val"],
                        beta=args.beta, num_epochs=args.epochs, eval_freq=args.eval_freq,
                        eval_iter=args.eval_iter, grad_clip=args.grad_clip or None,
                        checkpoint_path=checkpoint_path, checkpoint_freq=args.checkpoint_freq,
                        checkpoint_extra=extra, resume_from=checkpoint_path if resume else None,
                        progress=not args.no_progress and sys.stderr.isatty())

    after = evaluate_dpo(model, in_order["test"], ref["test"], args.beta)
    model.eval()
    merge_lora(model)
    responses_after = _respond_all(model, tokenizer, shown, args.max_new_tokens, eos_id)
    final = save_checkpoint(out / "dpo.npz", model, extra={**extra, "lora": None})
    curves = plot_dpo(history, out / "dpo-curves.png", title=f"DPO on {data_name} (beta {args.beta})")
    answered = [{**entry, "response_before": b, "response_after": a}
                for entry, b, a in zip(shown, responses_before, responses_after, strict=True)]
    save_json(answered, out / "responses.json")
    metrics = {"init": str(args.checkpoint), "data": data_name, "beta": args.beta, "lr": args.lr,
               "epochs": args.epochs, "batch_size": args.batch_size, "trainable": args.trainable,
               "lora_rank": args.lora_rank if lora else 0,
               "test_pairs": len(test_set), "test_before": before, "test_after": after,
               "train_seconds": round(history.train_seconds, 1)}
    if data_name == "synthetic":
        metrics["polite_responses"] = {
            "before": sum(is_polite(r) is True for r in responses_before),
            "after": sum(is_polite(r) is True for r in responses_after), "of": len(shown)}
    save_json(metrics, out / "metrics.json")

    for entry, b, a in zip(shown, responses_before, responses_after, strict=True):
        print(f"\n{entry['instruction']}" + (f" [{entry['input']}]" if entry.get("input") else ""))
        print(f"  before: {b}\n  after:  {a}")
    print(f"\nHeld-out pairs ({len(test_set)}): {before_and_after(before, after)}")
    if "polite_responses" in metrics:
        polite = metrics["polite_responses"]
        print(f"Polite answers among the {polite['of']} shown: {polite['before']} -> {polite['after']}")
    print(f"Training {history.train_seconds:.0f} s, {time.perf_counter() - started:.0f} s in all.")
    print(f"Wrote {final}, {checkpoint_path}, {curves}, {out / 'metrics.json'} and {out / 'responses.json'}")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune-dpo`` to the main parser."""
    p = subparsers.add_parser(
        "finetune-dpo", help="preference tuning (DPO) of an instruction-tuned model",
        description="Direct Preference Optimization on {instruction, input, chosen, rejected} pairs, split "
                    "as chapter 7 splits (85 % train, 10 % test, the last 5 % validation): the synthetic "
                    "polite/curt task (offline, default), the book companion's 1,100 pairs (--data book, "
                    "downloaded) or a JSON file. The reference is the --checkpoint model before tuning. "
                    "Defaults suit the synthetic task and a small model; the book tunes GPT-2 355M with "
                    "--lr 5e-6 --beta 0.1 --epochs 1.")
    p.add_argument("--init", default=None, metavar="checkpoint",
                   help="where the model comes from: checkpoint, the file --checkpoint names (the default "
                        "and only choice; a file here is the older spelling of --checkpoint FILE)")
    p.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="the instruction-tuned model to tune (.npz, .safetensors or an OpenAI folder)")
    p.add_argument("--data", default="synthetic",
                   help="synthetic, book, or a JSON file of preference entries (default: synthetic)")
    p.add_argument("--data-dir", type=Path, default=Path("data"),
                   help="where the book's data and GPT-2's vocabulary are kept (default: data)")
    p.add_argument("--beta", type=positive_float, default=0.1,
                   help="how far the policy may move from the reference: larger keeps it closer "
                        "(default: 0.1)")
    p.add_argument("--lr", type=learning_rate, default=1e-4, help="AdamW learning rate (default: 1e-4)")
    p.add_argument("--epochs", type=positive_int, default=1,
                   help="passes over the training pairs (default: 1)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="pairs per step (default: 8)")
    p.add_argument("--weight-decay", type=non_negative_float, default=0.0,
                   help="AdamW weight decay (default: 0)")
    p.add_argument("--grad-clip", type=non_negative_float, default=1.0,
                   help="max global gradient norm, 0: off "
                                                                "(default: 1.0)")
    add_trainable_flags(p, None, "all")
    p.add_argument("--lora", type=non_negative_int, default=None, metavar="RANK",
                   help="the older spelling of --trainable lora --lora-rank RANK (0: --trainable all)")
    p.add_argument("--allowed-max-length", type=positive_int, default=1024,
                   help="truncate pairs to this many tokens (default: 1024, at most the context)")
    p.add_argument("--drop-rate", type=probability, default=0.0, help="dropout while tuning (default: 0)")
    p.add_argument("--eval-freq", type=positive_int, default=5, help="evaluate every N steps (default: 5)")
    p.add_argument("--eval-iter", type=positive_int, default=None,
                   help="validation batches per evaluation (default: all)")
    p.add_argument("--checkpoint-freq", type=positive_int, default=None,
                   help="also save dpo-train.npz every N steps (it is saved at the end and on Ctrl-C)")
    add_run_folder_flags(p, "dpo-train.npz")
    p.add_argument("--num-responses", type=non_negative_int, default=8,
                   help="held-out prompts answered before and after (default: 8)")
    p.add_argument("--max-new-tokens", type=positive_int, default=64,
                   help="answer length limit (default: 64)")
    p.add_argument("--out", type=Path, default=Path("runs/dpo"), help="output folder (default: runs/dpo)")
    p.add_argument("--seed", type=random_seed, default=123,
                   help="seed of the batches and adapters (default: 123)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none either when stderr is not a terminal)")
    p.set_defaults(func=_cmd_finetune_dpo)
