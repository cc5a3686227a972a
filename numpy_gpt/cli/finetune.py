"""``numpy-gpt finetune-spam | classify | finetune-instruct | chat``: chapters 6 and 7 from the command line.

    numpy-gpt finetune-spam                          # the book: GPT-2 124M, last block + norm + head
    numpy-gpt finetune-spam --init scratch --spam-file SMSSpamCollection --trainable all --lr 3e-4
    numpy-gpt classify "You are a winner! Call now to claim your prize."
    numpy-gpt finetune-instruct --init gpt2-355M     # the book's chapter 7 model
    numpy-gpt chat                                   # talk to runs/instruct/instruct.npz

Every command takes ``--init``: ``gpt2-124M`` (or another size: OpenAI's weights, downloaded into
``--models-dir`` once), ``checkpoint`` (a file given with ``--checkpoint``) or ``scratch`` (a random
model of ``--preset`` size). A checkpoint is fine-tuned with the tokenizer it records (characters, a
trained BPE or GPT-2's; ``finetune/tokens.py``), padded and stopped with that tokenizer's end-of-text;
GPT-2's tokenizer is read from ``--vocab-dir`` or (downloaded into) ``--data-dir``.
``numpy_gpt/cli/main.py`` adds these parsers through ``add_subcommands`` (also available as
``add_finetune_subcommands``, its older name).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from numpy_gpt.cli.common import (
    GPT2_INITS,
    INIT_CHOICES,
    CLIError,
    add_run_folder_flags,
    add_trainable_flags,
    hf_model,
    learning_rate,
    model_file,
    non_negative_float,
    positive_int,
    probability,
    random_seed,
    start_or_resume,
    top_p_mass,
)
from numpy_gpt.download import gather_downloads

# The parsers need only these names; the modules behind the commands (matplotlib among them) are
# imported when a command runs, so `numpy-gpt --help` stays fast. tests/test_cli.py checks they match.
OLLAMA_URL = "http://localhost:11434/api/chat"                       # finetune.judge's
# What each command writes into its --out folder besides its model and its resumable state.
SPAM_OUTPUTS = ("metrics.json", "loss-plot.png", "accuracy-plot.png")
INSTRUCT_OUTPUTS = ("metrics.json", "loss-plot.png", "instruction-data-with-response.json")
# Random models for --init scratch; vocab_size is GPT-2's (50257), context 256 covers SMS messages.
SCRATCH_PRESETS = {
    "tiny": {"context_length": 256, "emb_dim": 64, "n_heads": 4, "n_layers": 2},
    "small": {"context_length": 256, "emb_dim": 128, "n_heads": 4, "n_layers": 4},
    "medium": {"context_length": 512, "emb_dim": 384, "n_heads": 6, "n_layers": 6},
}
# -- shared pieces --------------------------------------------------------------------------------
def _init_file(args: argparse.Namespace):
    """The model file of ``--init checkpoint --checkpoint FILE`` (its metadata, numpy_gpt.model_files),
    else None: classify takes a classifier, the other commands a GPT language model."""
    from numpy_gpt.model_files import LANGUAGE_MODELS
    if args.init != "checkpoint":
        return None
    if args.checkpoint is None:
        raise CLIError("--init checkpoint needs --checkpoint FILE (.npz, .safetensors or an OpenAI folder)")
    return model_file(args.checkpoint, args.command, ("classifier", "encoder-classifier")
                      if args.command == "classify" else LANGUAGE_MODELS)


def _tokenizer(args: argparse.Namespace, file=None):
    """The FinetuneTokenizer of the model --init names: the checkpoint's own (``file``), else GPT-2's."""
    from numpy_gpt.finetune.tokens import tokenizer_for_checkpoint
    return tokenizer_for_checkpoint(file, data_dir=args.data_dir, vocab_dir=args.vocab_dir)


def _base_model(args: argparse.Namespace, file=None):
    """The GPT a command starts from, as ``--init`` says: GPT-2, the checkpoint's (``file``), or new."""
    from numpy_gpt.gpt2.convert import load_gpt2
    from numpy_gpt.model import GPTModel
    if args.init in GPT2_INITS:
        size = args.init.removeprefix("gpt2-")
        model, _ = load_gpt2(size, args.models_dir, drop_rate=args.drop_rate)
        return model
    if file is not None:
        return file.load_model(drop_rate=args.drop_rate)
    cfg = {"vocab_size": 50257, "drop_rate": args.drop_rate, "qkv_bias": False,
           **SCRATCH_PRESETS[args.preset]}
    return GPTModel(cfg, seed=args.seed)


def _add_init_arguments(parser: argparse.ArgumentParser, default_init: str, checkpoint_help: str,
                        default_checkpoint: Path | None = None) -> None:
    parser.add_argument("--init", choices=INIT_CHOICES, default=default_init,
                        help=f"where the model comes from (default: {default_init})")
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint, help=checkpoint_help)
    parser.add_argument("--models-dir", type=Path, default=Path("gpt2"),
                        help="where GPT-2 weights are downloaded to / read from (default: gpt2)")
    parser.add_argument("--preset", choices=tuple(SCRATCH_PRESETS), default="small",
                        help="model size for --init scratch (default: small)")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="folder for the GPT-2 vocabulary and the data sets (default: data)")
    parser.add_argument("--vocab-dir", type=Path,
                        help="read GPT-2's encoder.json and vocab.bpe from this folder instead of "
                             "DATA_DIR/gpt2 (nothing is downloaded)")
    parser.add_argument("--seed", type=random_seed, default=123, help="random seed (default: 123)")


def _add_training_arguments(parser: argparse.ArgumentParser, *, trainable: str | None, epochs: int, lr: float,
                            eval_freq: int, trainable_default: str = "") -> None:
    add_trainable_flags(parser, trainable, trainable_default)
    parser.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default: {epochs})")
    parser.add_argument("--lr", type=learning_rate, default=lr, help=f"AdamW learning rate (default: {lr:g})")
    parser.add_argument("--weight-decay", type=non_negative_float, default=0.1,
                        help="AdamW weight decay (default: 0.1)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="batch size (default: 8)")
    parser.add_argument("--eval-freq", type=positive_int, default=eval_freq,
                        help=f"evaluate every this many steps (default: {eval_freq})")
    parser.add_argument("--eval-iter", type=positive_int, default=5,
                        help="batches per evaluation (default: 5)")
    parser.add_argument("--drop-rate", type=probability, default=0.0,
                        help="dropout while training (default: 0.0)")
    parser.add_argument("--checkpoint-freq", type=positive_int, default=None,
                        help="also save the run every N steps (it is always saved on Ctrl-C; --resume "
                             "continues it)")


# -- finetune-spam / classify (chapter 6) ---------------------------------------------------------
_SPAM_COPY = ("--spam-file FILE (the spam data: SMSSpamCollection or its zip; a download is checked against "
              "the published file's sha256)")
_LOCAL_COPIES = (f"Or use local copies: {_SPAM_COPY}, --vocab-dir DIR (GPT-2's encoder.json and vocab.bpe), "
                 f"--init checkpoint --checkpoint FILE or --init scratch (the model).")


def _check_finetune_spam(args: argparse.Namespace) -> None:
    """--arch and the flags that go with it, before any work."""
    encoder = args.arch == "encoder"
    if args.trainable is None:
        args.trainable = "all" if encoder else "last-block"
    if encoder and args.init not in ("checkpoint", "scratch"):
        raise CLIError(f"--arch encoder starts from an encoder: --init checkpoint --checkpoint "
                       f"runs/<corpus>-mlm/model.npz (numpy-gpt pretrain-mlm) or --init scratch, not --init "
                       f"{args.init}")
    if encoder and args.trainable != "all":
        raise CLIError(f"--arch encoder trains every parameter (--trainable all), not --trainable "
                       f"{args.trainable}")


def _encoder_classifier(args: argparse.Namespace, train_csv: Path):
    """(PaddedSequenceClassifier, WordPiece tokenizer) of --arch encoder: the encoder of pretrain-mlm's
    checkpoint (its masked-language head dropped) or a new one whose WordPiece vocabulary is trained on
    the training messages (as scripts/encoder_vs_decoder_spam.py did), with a new 2-class head on the
    pooled [CLS] state."""
    from numpy_gpt.encoder import EncoderClassifier
    from numpy_gpt.finetune.classifier import PaddedSequenceClassifier
    from numpy_gpt.finetune.data import read_spam_csv
    from numpy_gpt.model_files import checkpoint_tokenizer
    from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer, train_wordpiece_vocab

    if args.init == "checkpoint":
        if args.checkpoint is None:
            raise CLIError("--init checkpoint needs --checkpoint FILE (pretrain-mlm's model.npz)")
        file = model_file(args.checkpoint, "finetune-spam --arch encoder", ("encoder",))
        tokenizer, cfg = checkpoint_tokenizer(file), {**file.cfg, "drop_rate": args.drop_rate}
        classifier = EncoderClassifier(cfg, 2, "cls", seed=args.seed)
        pretrained = file.load_model().state_dict()
        classifier.encoder.load_state_dict({k: v for k, v in pretrained.items()
                                            if not k.startswith("mlm_head.")})
    else:
        messages = read_spam_csv(train_csv)[0]
        tokenizer = WordPieceTokenizer(train_wordpiece_vocab("\n".join(messages), args.vocab_size))
        cfg = {"vocab_size": tokenizer.n_vocab, "drop_rate": args.drop_rate, "qkv_bias": True,
               **SCRATCH_PRESETS[args.preset]}
        classifier = EncoderClassifier(cfg, 2, "cls", seed=args.seed)
    return PaddedSequenceClassifier(classifier, tokenizer.pad_id, cfg), tokenizer


def _cmd_finetune_spam(args: argparse.Namespace) -> int:
    from numpy_gpt.finetune.classifier import finetune_spam_classifier, plot_values, save_classifier
    from numpy_gpt.finetune.data import prepare_spam_data, read_spam_csv, save_json, split_overlap
    from numpy_gpt.finetune.tokens import FinetuneTokenizer, check_tokenizer_fits
    from numpy_gpt.tokenizers.spec import tokenizer_spec

    resume = start_or_resume(args, args.out, "spam-train.npz", product="spam-classifier.npz",
                             outputs=SPAM_OUTPUTS)
    def spam_data():
        return prepare_spam_data(args.data_dir / "sms_spam_collection", source=args.spam_file,
                                 seed=args.seed, dedupe=args.dedupe)

    if args.arch == "encoder":                 # the same data, loop and baselines; the encoder's tokens
        (csv_paths,) = gather_downloads([spam_data], hint=_LOCAL_COPIES)
        model, tokenizer = _encoder_classifier(args, csv_paths["train"])
        tokens = FinetuneTokenizer(tokenizer, tokenizer_spec(tokenizer), tokenizer.pad_id)
    else:
        file = _init_file(args)
        csv_paths, tokens, model = gather_downloads([spam_data, lambda: _tokenizer(args, file),
                                                     lambda: _base_model(args, file)], hint=_LOCAL_COPIES)
        check_tokenizer_fits(tokens, model, str(args.checkpoint or args.init))
    texts = {name: read_spam_csv(path)[0] for name, path in csv_paths.items()}
    overlap = split_overlap(texts)
    print(f"Messages repeated word for word across the splits: {overlap['test_in_train']} of "
          f"{len(texts['test'])} test and {overlap['validation_in_train']} of {len(texts['validation'])} "
          f"validation messages are also in train, {overlap['test_in_validation']} test messages in "
          f"validation" + (" (--dedupe: each message once)" if args.dedupe else
                           " (the book's splits keep repeats; --dedupe removes them)"))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "spam-train.npz"                    # model, optimizer, data position (Ctrl-C, --resume)
    result = finetune_spam_classifier(
        model, tokens.tokenizer, csv_paths, trainable=args.trainable, n_blocks=args.n_blocks,
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, num_epochs=args.epochs, lr=args.lr,
        weight_decay=args.weight_decay, batch_size=args.batch_size, eval_freq=args.eval_freq,
        eval_iter=args.eval_iter, max_length=args.max_length, pad_token_id=tokens.eot_id, seed=args.seed,
        checkpoint_path=run_file, checkpoint_freq=args.checkpoint_freq,
        resume_from=run_file if resume else None)
    epochs = np.linspace(0, result.num_epochs, len(result.train_losses))
    examples = np.linspace(0, result.examples_seen, len(result.train_losses))
    plot_values(epochs, examples, result.train_losses, result.val_losses, "loss", out / "loss-plot.png")
    epochs = np.linspace(0, result.num_epochs, len(result.train_accs))
    examples = np.linspace(0, result.examples_seen, len(result.train_accs))
    plot_values(epochs, examples, result.train_accs, result.val_accs, "accuracy", out / "accuracy-plot.png")
    metrics = {"arch": args.arch, "init": args.init, "tokenizer": tokens.kind, "trainable": args.trainable,
               "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
               "max_length": result.max_length,
               "truncation": "longer messages keep their first max_length tokens",
               "truncated_messages": result.truncated, "split_sizes": result.split_sizes,
               "trainable_parameters": result.trainable_parameters,
               "accuracy_before": result.accuracy_before, "accuracy_after": result.accuracy_after,
               "accuracy_covers": "every message of each split", "baselines": result.baselines,
               "dedupe": args.dedupe, "overlap": overlap,
               "train_seconds": round(result.train_seconds, 1)}
    save_json(metrics, out / "metrics.json")
    path = save_classifier(out / "spam-classifier.npz", result.model, max_length=result.max_length,
                           pad_token_id=tokens.eot_id, extra={"tokenizer": tokens.spec, "init": args.init})
    print(f"Wrote {path}, {out / 'metrics.json'}, {out / 'loss-plot.png'} and {out / 'accuracy-plot.png'}")
    return 0


def _check_classify(args: argparse.Namespace) -> None:
    """A text with nothing to classify is refused before the model loads."""
    for i, text in enumerate(args.text, start=1):
        if not text.strip():
            raise CLIError(f"text {i} of {len(args.text)} is empty: give the message to classify")


def _cmd_classify(args: argparse.Namespace) -> int:
    from numpy_gpt.finetune.classifier import LABELS, add_classification_head, class_probabilities
    from numpy_gpt.finetune.tokens import check_tokenizer_fits

    max_length = args.max_length
    if args.init == "checkpoint":
        if args.checkpoint is None or not args.checkpoint.exists():
            raise CLIError(f"no classifier checkpoint at {args.checkpoint}: train one with `numpy-gpt "
                        f"finetune-spam` or pass --checkpoint FILE")
        file = _init_file(args)
        model, extra = file.load_model(), file.extra
        max_length = extra.get("max_length") if max_length is None else max_length
        pad_token_id = extra["pad_token_id"]
        if file.kind == "encoder-classifier":       # finetune-spam --arch encoder: [CLS] text [SEP]
            from numpy_gpt.finetune.classifier import PaddedSequenceClassifier
            from numpy_gpt.model_files import checkpoint_tokenizer
            model = PaddedSequenceClassifier(model, pad_token_id, file.cfg)
            tokens = None
            tokenizer = checkpoint_tokenizer(file)
        else:
            tokens = _tokenizer(args, file)
            tokenizer = tokens.tokenizer
    else:
        tokens, model = gather_downloads([lambda: _tokenizer(args), lambda: _base_model(args)],
                                         hint=_LOCAL_COPIES)
        model = add_classification_head(model, 2, seed=args.seed)
        pad_token_id, tokenizer = tokens.eot_id, tokens.tokenizer
        print("note: the classification head is untrained (random), so is the answer", file=sys.stderr)
    if tokens is not None:
        check_tokenizer_fits(tokens, model, str(args.checkpoint or args.init))
    for text in args.text:                  # a longer text keeps its first max_length tokens, as in training
        probabilities = class_probabilities(text, model, tokenizer, max_length, pad_token_id)
        best = int(probabilities.argmax())
        print(f"{LABELS[best]:<8} (p = {probabilities[best]:.3f})  {' '.join(text.split())}")
    return 0


# -- finetune-instruct / chat (chapter 7) ---------------------------------------------------------
def _load_instruction_entries(args: argparse.Namespace) -> list[dict]:
    from numpy_gpt.finetune.data import download_instruction_data, load_instruction_data
    if args.data is not None:
        return load_instruction_data(args.data)
    return download_instruction_data(args.data_dir)


def _judge(args: argparse.Namespace, answered: list[dict], baselines: dict[str, list[dict]],
           labels: dict[str, str]) -> dict:
    """Offline scores of the fine-tuned answers beside the baselines' (printed as one table, with
    what the metric can and cannot show), then the Ollama judge when asked for and available."""
    from numpy_gpt.finetune.judge import (
        METRIC_NOTE,
        JudgeError,
        evaluate_responses,
        generate_model_scores,
        ollama_is_running,
        score_table,
    )
    offline = {name: evaluate_responses(entries) for name, entries in baselines.items()}
    offline["fine_tuned_model"] = evaluate_responses(answered)
    print(f"\nOffline scores on the {len(answered)} test entries:")
    print(score_table({labels[name]: value for name, value in offline.items()}))
    print(METRIC_NOTE)
    scores = {"offline": offline.pop("fine_tuned_model"), "baselines": offline}
    if args.judge == "none":
        return scores
    if not ollama_is_running(args.ollama_url):
        message = f"no Ollama server answers at {args.ollama_url}"
        if args.judge == "ollama":
            raise CLIError(f"{message}: start it (`ollama serve`, `ollama pull {args.judge_model}`) or use "
                        f"--judge auto / none")
        print(f"{message}: skipping the LLM judge (the offline metrics above need no server)")
        return scores
    try:
        judged = generate_model_scores(answered, "model_response", args.judge_model, args.ollama_url)
    except JudgeError as err:
        raise CLIError(str(err)) from None
    scores["ollama"] = {"model": args.judge_model, "n": len(judged),
                        "average_score": float(np.mean(judged)) if judged else float("nan")}
    print(f"{args.judge_model} scored {len(judged)} of {len(answered)} responses: average "
          f"{scores['ollama']['average_score']:.2f} / 100")
    return scores


def _cmd_finetune_instruct(args: argparse.Namespace) -> int:
    from numpy_gpt.checkpoint import save_checkpoint
    from numpy_gpt.finetune.classifier import set_trainable
    from numpy_gpt.finetune.data import save_json, split_instruction_data
    from numpy_gpt.finetune.instruct import (
        InstructionDataLoader,
        InstructionDataset,
        format_input,
        generate_responses,
        prompt_budget,
        response_loss,
        save_responses,
    )
    from numpy_gpt.finetune.judge import baseline_responses, constant_answer, most_common_answer
    from numpy_gpt.finetune.tokens import check_tokenizer_fits
    from numpy_gpt.nn.lora import merge_lora
    from numpy_gpt.optim import AdamW
    from numpy_gpt.plots import plot_losses
    from numpy_gpt.train import calc_loss_loader, perplexity_from_loss, train_model

    resume = start_or_resume(args, args.out, "instruct-train.npz", product="instruct.npz",
                             outputs=INSTRUCT_OUTPUTS)
    file = _init_file(args)
    data, tokens, model = gather_downloads([
        lambda: _load_instruction_entries(args), lambda: _tokenizer(args, file),
        lambda: _base_model(args, file)],
        hint=_LOCAL_COPIES.replace(_SPAM_COPY, "--data FILE (the instruction data)"))
    check_tokenizer_fits(tokens, model, str(args.checkpoint or args.init))
    tokenizer, eot = tokens.tokenizer, tokens.eot_id
    train_data, val_data, test_data = split_instruction_data(data)
    if args.limit is not None:
        train_data, val_data, test_data = (part[:args.limit] for part in (train_data, val_data, test_data))
    print(f"Training set length: {len(train_data)}, validation: {len(val_data)}, test: {len(test_data)}")
    set_trainable(model, args.trainable, n_blocks=args.n_blocks, lora_rank=args.lora_rank,
                  lora_alpha=args.lora_alpha, seed=args.seed)
    context = model.cfg["context_length"]
    train_set = InstructionDataset(train_data, tokenizer, max_length=context)
    val_set = InstructionDataset(val_data, tokenizer, max_length=context)
    truncated = {"train": train_set.num_truncated, "validation": val_set.num_truncated}
    needed = max(train_set.context_needed, val_set.context_needed)
    if len(train_set) and truncated["train"] == len(train_set):
        header = len(tokenizer.encode(format_input({"instruction": ""})))
        raise CLIError(f"a context of {context} tokens cuts every one of the {len(train_set)} training "
                       f"examples (a prompt keeps its last {prompt_budget(context)} tokens, and the "
                       f"instruction header alone is {header}): the model would learn only cut prompts. "
                       f"Tune a model with a context of at least {needed} tokens, which cuts none (e.g. "
                       f"numpy-gpt pretrain --context-length {-(-needed // 64) * 64}, docs/stages.md)")
    print(f"{tokens.kind} tokenizer, end-of-text id {eot} pads and stops. Context {context}: a prompt keeps "
          f"its last {prompt_budget(context)} tokens (here and in chat), then a text its first {context}: "
          f"{truncated['train']} of {len(train_set)} training and {truncated['validation']} of "
          f"{len(val_set)} validation examples cut"
          + (f" (a context of {needed} would cut none)" if needed > context else ""))
    loader_options = {"pad_token_id": eot, "mask_prompt": args.mask_prompt,
                      "allowed_max_length": args.allowed_max_length}
    train_loader = InstructionDataLoader(train_set, args.batch_size, shuffle=True, drop_last=True,
                                         seed=args.seed, **loader_options)
    val_loader = InstructionDataLoader(val_set, args.batch_size, **loader_options)
    model.eval()
    print(f"Initial losses: training {calc_loss_loader(train_loader, model, 5):.3f}, "
          f"validation {calc_loss_loader(val_loader, model, 5):.3f}")
    loss_before, n_response = response_loss(model, val_set, args.batch_size, pad_token_id=eot)
    print("Answering the test set with the untuned model (a baseline)...")
    untuned = generate_responses(model, tokenizer, test_data, args.max_new_tokens, eos_id=eot, progress=True)

    # the sample printed while training: the first prompt the context holds whole (a cut one would
    # start mid-word), else one cut as respond() cuts it; it stops at end-of-text as chat does
    prompts = [tokenizer.encode(format_input(entry)) for entry in (val_data + train_data)[:64]]
    sample_prompt = tokenizer.decode(next((ids for ids in prompts if len(ids) <= prompt_budget(context)),
                                          prompts[0][-prompt_budget(context):]))
    model.set_dropout_seed(args.seed)
    optimizer = AdamW(model.parameters(trainable_only=True), lr=args.lr, weight_decay=args.weight_decay)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "instruct-train.npz"                # model, optimizer, data position (Ctrl-C, --resume)
    start = time.perf_counter()
    # The book's train_model_simple step by step (no schedule, no clipping), in train_model, which
    # also saves the run on Ctrl-C and continues it exactly with --resume.
    history = train_model(model, train_loader, val_loader, optimizer, num_epochs=args.epochs,
                          eval_freq=args.eval_freq, eval_iter=args.eval_iter, grad_clip=None,
                          tokenizer=tokenizer, start_context=sample_prompt, sampling={"eos_id": eot},
                          checkpoint_path=run_file, checkpoint_freq=args.checkpoint_freq,
                          checkpoint_extra={"tokenizer": tokens.spec, "init": args.init},
                          resume_from=run_file if resume else None,
                          progress=sys.stderr.isatty())     # a bar on a terminal, lines in a log
    train_losses, val_losses, tokens_seen = history.train_losses, history.val_losses, history.tokens_seen
    minutes = (time.perf_counter() - start) / 60
    print(f"Training completed in {minutes:.2f} minutes.")
    loss_after, _ = response_loss(model, val_set, args.batch_size, pad_token_id=eot)
    response = {"tokens": n_response, "loss_before": loss_before, "loss_after": loss_after,
                "perplexity_before": perplexity_from_loss(loss_before),
                "perplexity_after": perplexity_from_loss(loss_after)}
    print(f"Validation loss on the {n_response} response tokens (answers and their end-of-text): "
          f"{loss_before:.3f} before (perplexity {response['perplexity_before']:.1f}), {loss_after:.3f} "
          f"after (perplexity {response['perplexity_after']:.1f})")

    merge_lora(model)
    plot_losses(history.eval_steps, tokens_seen, train_losses, val_losses, out / "loss-plot.png")
    path = save_checkpoint(out / "instruct.npz", model,
                           extra={"task": "instruct", "tokenizer": tokens.spec, "init": args.init})
    answered = generate_responses(model, tokenizer, test_data, args.max_new_tokens, eos_id=eot, progress=True)
    save_responses(answered, out / "instruction-data-with-response.json")
    common, count = most_common_answer(train_data)
    constant = constant_answer(train_data)
    labels = {"echo": "echo the instruction and input",
              "constant_answer": f"constant answer {constant!r} (the training answers' usual opening)",
              "most_common_answer": f"most common training answer ({count} of {len(train_data)})",
              "untuned_model": "untuned model", "fine_tuned_model": "fine-tuned model"}
    scores = _judge(args, answered, {**baseline_responses(train_data, test_data), "untuned_model": untuned},
                    labels)
    save_json({"init": args.init, "tokenizer": tokens.kind, "trainable": args.trainable,
               "mask_prompt": args.mask_prompt, "epochs": args.epochs, "train_minutes": round(minutes, 2),
               "context_length": context, "prompt_budget": prompt_budget(context),
               "truncation": "a prompt keeps its last prompt_budget tokens, then a text its first "
                             "context_length",
               "truncated_examples": truncated, "constant_answer": constant,
               "most_common_answer": common if count > 1 else None,
               "validation_response_loss": response, **scores}, out / "metrics.json")
    run_file.unlink(missing_ok=True)          # only --resume needs it, and the run is done: instruct.npz
    print(f"Wrote {path}, {out / 'instruction-data-with-response.json'}, {out / 'loss-plot.png'} and "
          f"{out / 'metrics.json'} (the resumable {run_file.name} is removed: the run is finished)")
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from numpy_gpt.finetune.instruct import respond, respond_with_chat_template
    from numpy_gpt.finetune.tokens import check_tokenizer_fits

    if args.hf is not None:                 # a Hugging Face folder: its own chat template, one message
        model, tokenizer = hf_model(args.hf, "chat")
        options = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                   "seed": args.seed}

        def answer(instruction: str, input_text: str) -> str:
            content = f"{instruction}\n\n{input_text}" if input_text else instruction
            return respond_with_chat_template(model, tokenizer, [{"role": "user", "content": content}],
                                              args.max_new_tokens, **options)
        return _chat_loop(args, answer)
    if args.init == "checkpoint" and (args.checkpoint is None or not args.checkpoint.exists()):
        raise CLIError(f"no instruction-tuned checkpoint at {args.checkpoint}: train one with `numpy-gpt "
                    f"finetune-instruct` or pass --checkpoint FILE")
    file = _init_file(args)
    tokens, model = gather_downloads([lambda: _tokenizer(args, file), lambda: _base_model(args, file)],
                                     hint=_LOCAL_COPIES)
    check_tokenizer_fits(tokens, model, str(args.checkpoint or args.init))
    model.eval()
    options = {"eos_id": tokens.eot_id, "temperature": args.temperature, "top_k": args.top_k,
               "top_p": args.top_p, "seed": args.seed}

    def answer(instruction: str, input_text: str) -> str:   # a long prompt keeps its last context tokens
        entry = {"instruction": instruction, "input": input_text}
        return respond(model, tokens.tokenizer, entry, args.max_new_tokens, **options)

    return _chat_loop(args, answer)


def _chat_loop(args: argparse.Namespace, answer) -> int:
    """One answer to --instruction, or the interactive loop."""
    if args.instruction is not None:
        print(answer(args.instruction, args.input or ""))
        return 0
    print("Type an instruction (and, when asked, an optional input); an empty instruction, 'quit' or "
          "Ctrl-D ends.")
    while True:
        try:
            instruction = input("Instruction> ").strip()
            if instruction.lower() in ("", "quit", "exit"):
                return 0
            input_text = input("Input (optional)> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        print(answer(instruction, input_text), flush=True)


# -- the parsers ----------------------------------------------------------------------------------
def add_finetune_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``finetune-spam``, ``classify``, ``finetune-instruct`` and ``chat`` to the main parser."""
    spam = subparsers.add_parser(
        "finetune-spam", help="fine-tune a GPT as an SMS spam classifier (chapter 6)",
        description="Download the SMS Spam Collection (or read --spam-file), balance it, split it "
                    "70/10/20, fine-tune a 2-class head plus the --trainable part, and write the "
                    "classifier, accuracy/loss plots and metrics.json (accuracy before/after, time) to "
                    "--out.")
    _add_init_arguments(spam, "gpt2-124M", "pretrained GPT to start from with --init checkpoint")
    spam.add_argument("--spam-file", type=Path,
                      help="a local SMSSpamCollection file or its zip (no download)")
    spam.add_argument("--dedupe", action="store_true",
                      help="keep each message text once before balancing and splitting (the collection "
                           "repeats some messages, and the book's splits share them: without --dedupe, "
                           "the book's way, metrics.json's overlap counts them)")
    spam.add_argument("--max-length", type=positive_int, help="pad/truncate messages to this many tokens "
                                                     "(default: the longest training message)")
    add_run_folder_flags(spam, "spam-train.npz")
    spam.add_argument("--out", type=Path, default=Path("runs/spam"),
                      help="output folder (default: runs/spam)")
    _add_training_arguments(spam, trainable=None, epochs=5, lr=5e-5, eval_freq=50,
                            trainable_default="last-block; all with --arch encoder")
    spam.add_argument("--arch", choices=("decoder", "encoder"), default="decoder",
                      help="decoder: a GPT reading the last token (the book); encoder: a BERT-style "
                           "encoder reading [CLS] (EncoderClassifier), from pretrain-mlm's model.npz "
                           "(--init checkpoint) or new (--init scratch, a WordPiece vocabulary trained on "
                           "the training messages), with the same data, loop, accuracies and baselines")
    spam.add_argument("--vocab-size", type=positive_int, default=400,
                      help="the WordPiece vocabulary of --arch encoder --init scratch")
    spam.set_defaults(func=_cmd_finetune_spam, check=_check_finetune_spam)

    classify = subparsers.add_parser("classify", help="label texts spam / not spam with a fine-tuned "
                                                      "classifier",
                                     description="Print 'spam' or 'not spam' for each TEXT, with the "
                                                 "classifier's probability of that label and the text.")
    classify.add_argument("text", nargs="+", help="text(s) to classify")
    _add_init_arguments(classify, "checkpoint", "classifier written by finetune-spam "
                                                "(default: runs/spam/spam-classifier.npz)",
                        Path("runs/spam/spam-classifier.npz"))
    classify.add_argument("--max-length", type=positive_int,
                          help="padding length (default: the checkpoint's)")
    classify.add_argument("--drop-rate", type=probability, default=0.0, help=argparse.SUPPRESS)
    classify.set_defaults(func=_cmd_classify, check=_check_classify)

    instruct = subparsers.add_parser(
        "finetune-instruct", help="instruction fine-tuning on Alpaca-format data (chapter 7)",
        description="Fine-tune on instruction-data.json (downloaded, or --data), split as the book does "
                    "(85 % train, 10 % test, the last 5 % validation), generate "
                    "answers for the test set and score them (exact match and token F1 offline; an "
                    "Ollama judge when a server runs). Writes instruct.npz, the responses JSON, a loss "
                    "plot and metrics.json to --out.")
    _add_init_arguments(instruct, "gpt2-124M", "pretrained GPT to start from with --init checkpoint")
    instruct.add_argument("--data", type=Path, help="a JSON list of {instruction, input, output} "
                                                   "(default: download the book's instruction-data.json)")
    instruct.add_argument("--mask-prompt", action="store_true",
                          help="leave the prompt tokens out of the loss (exercise 7.2)")
    instruct.add_argument("--allowed-max-length", type=positive_int, default=1024,
                          help="cut training batches to this many tokens, keeping their start, as the "
                               "book does (default: 1024; texts are also fitted to the model's context)")
    instruct.add_argument("--max-new-tokens", type=positive_int, default=256,
                          help="answer length limit (default: 256)")
    instruct.add_argument("--limit", type=positive_int,
                          help="use only the first N entries of each split (quick runs)")
    instruct.add_argument("--judge", choices=("auto", "ollama", "none"), default="auto",
                          help="score with an Ollama judge: auto = when a server answers (default)")
    instruct.add_argument("--judge-model", default="llama3",
                          help="the Ollama model that judges (default: llama3)")
    instruct.add_argument("--ollama-url", default=OLLAMA_URL,
                          help=f"Ollama chat endpoint (default: {OLLAMA_URL})")
    instruct.add_argument("--out", type=Path, default=Path("runs/instruct"),
                          help="output folder (default: runs/instruct)")
    add_run_folder_flags(instruct, "instruct-train.npz")
    _add_training_arguments(instruct, trainable="all", epochs=2, lr=5e-5, eval_freq=5)
    instruct.set_defaults(func=_cmd_finetune_instruct)

    chat = subparsers.add_parser("chat", help="answer instructions with an instruction-tuned model",
                                 description="An interactive prompt loop in the Alpaca format, or one "
                                             "answer with --instruction.")
    _add_init_arguments(chat, "checkpoint", "instruction-tuned checkpoint "
                                            "(default: runs/instruct/instruct.npz)",
                        Path("runs/instruct/instruct.npz"))
    chat.add_argument("--hf", metavar="FOLDER",
                      help="chat with a Hugging Face model folder (Llama 3.x, SmolLM2, Qwen3 instruct: "
                           "with its chat template) instead of --checkpoint")
    chat.add_argument("--instruction", help="answer this one instruction and exit")
    chat.add_argument("--input", help="the optional input for --instruction")
    chat.add_argument("--max-new-tokens", type=positive_int, default=256,
                      help="answer length limit (default: 256)")
    chat.add_argument("--temperature", type=non_negative_float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--top-k", type=positive_int, help="sample from the k most likely tokens")
    chat.add_argument("--top-p", type=top_p_mass, help="nucleus sampling threshold")
    chat.add_argument("--drop-rate", type=probability, default=0.0, help=argparse.SUPPRESS)
    chat.set_defaults(func=_cmd_chat)


add_subcommands = add_finetune_subcommands
