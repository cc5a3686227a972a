"""``numpy-gpt explore``: see inside a model in the browser (numpy_gpt/explore/).

    numpy-gpt explore --checkpoint runs/stdlib-docs-small-bpe/model.npz
    numpy-gpt explore --gpt2 124M
    numpy-gpt explore --hf SmolLM2-135M/           # a Hugging Face folder: GPT-2, Llama, Qwen3, BERT

starts a local server (127.0.0.1, a free port unless --port) and prints the address to open: the prompt
as tokens, generation one step at a time with the next token's probabilities, attention heatmaps and
the logit lens of the model; a classifier's class probabilities, an encoder's fill-mask. Ctrl-C stops
it. ``numpy_gpt/cli/main.py`` adds the parser with ``add_subcommands``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from numpy_gpt.cli.common import (
    THREADS_HELP,
    add_model_source,
    model_file,
    port_number,
    thread_count,
    use_threads,
)


def load_explorer(args: argparse.Namespace):
    """The ``Explorer`` of the model --checkpoint, --gpt2 or --hf names, loaded the one way each is
    loaded: ``numpy_gpt.load`` for a model file (any kind numpy_gpt writes, a safetensors or OpenAI
    GPT-2, a transformers BERT folder), ``load_gpt2`` for OpenAI's weights, ``load_hf`` for a Hugging
    Face folder (GPT-2, Llama 3.x, SmolLM2, Qwen3, BERT)."""
    from numpy_gpt.explore import Explorer
    from numpy_gpt.model_files import KINDS, checkpoint_tokenizer, load

    if args.gpt2 is not None:
        from numpy_gpt.gpt2.convert import load_gpt2

        model, _ = load_gpt2(args.gpt2, args.models_dir)
        return Explorer(model, checkpoint_tokenizer(None, data_dir=args.data_dir), name=f"GPT-2 {args.gpt2}")
    if args.hf is not None:
        from numpy_gpt.gpt2.hf import load_hf

        model, tokenizer = load_hf(args.hf)
        return Explorer(model, tokenizer, name=Path(args.hf).resolve().name)
    extra = model_file(args.checkpoint, "explore", tuple(KINDS), or_else="use --gpt2 124M").extra
    model, tokenizer = load(args.checkpoint, data_dir=args.data_dir)
    prompt = extra.get("prompt")                           # pretrain's sample prompt: the page starts with it
    return Explorer(model, tokenizer, name=Path(args.checkpoint).name,
                    prompt=prompt if isinstance(prompt, str) and prompt.strip() else None,
                    max_length=extra.get("max_length"), pad_token_id=extra.get("pad_token_id"))


def _cmd_explore(args: argparse.Namespace) -> int:
    from numpy_gpt.explore import make_server

    explorer = load_explorer(args)
    use_threads(args.threads, explorer.cfg)                  # one sequence at a time, as generate
    try:
        server = make_server(explorer, args.host, args.port)
    except OSError as err:                                 # the port is taken, the host is not ours
        raise OSError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    with server:
        print(f"Exploring {explorer.name}, a {explorer.kind} of {explorer.cfg['n_layers']} layers.")
        if not server.loopback_only:
            print(f"Listening on {args.host}: anyone who can reach this machine can use the page.")
        print(f"Open {server.url} in a browser; Ctrl-C stops the server.", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("numpy-gpt explore: stopped")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``explore`` to the main parser's subcommands."""
    p = subparsers.add_parser(
        "explore", help="see inside a model in the browser: tokens, generation step by step, attention",
        description="Start a local web page that shows the model at work: the prompt as tokens, generation "
                    "one step at a time with the ten most likely next tokens, the attention weights of any "
                    "layer and head, and the logit lens (what each layer would predict); the class "
                    "probabilities of a classifier, the fill-mask candidates of an encoder. Everything is "
                    "computed by numpy_gpt on this machine; the page loads nothing from the network.")
    add_model_source(p, "a model file numpy_gpt reads: a model.npz written by pretrain, "
                                             "finetune-spam or pretrain-mlm, a .safetensors file, an OpenAI "
                                             "GPT-2 folder or a transformers BERT folder",
                     "a Hugging Face model folder (config.json, "
                                                     "model.safetensors or its shards, tokenizer.json or "
                                                     "vocab.txt): GPT-2, Llama 3.x, SmolLM2, Qwen3, BERT")
    p.add_argument("--host", default="127.0.0.1",
                   help="the address to listen on; another than 127.0.0.1 opens the page to the network")
    p.add_argument("--port", type=port_number, default=0, help="the port to listen on (0: a free one)")
    p.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    p.add_argument("--models-dir", default="gpt2", help="where GPT-2 weights are kept (with --gpt2)")
    p.add_argument("--data-dir", default="data", help="where GPT-2's vocabulary is kept")
    p.set_defaults(func=_cmd_explore)
