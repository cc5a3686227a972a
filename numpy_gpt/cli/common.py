"""What every command of the command line shares: the one-line errors, the help format, the
argument types and the constants.

Every module of numpy_gpt/cli/ imports this one and none imports another command's module (nor
main.py, which puts them together), so the command line has no import cycle. The modules behind a
command are imported when it runs, so ``numpy-gpt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from numpy_gpt.interrupt import should_resume

DEFAULT_CORPUS = "stdlib-docs"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_SCALING_DIR = DEFAULT_RUNS_DIR / "scaling"        # scaling's results, pretrain --preset from-scaling
GPT2_VOCAB_SIZE = 50257
GPT2_SIZE_CHOICES = ("124M", "355M", "774M", "1558M")     # gpt2.convert.GPT2_SIZES, without importing it


class CLIError(Exception):
    """A problem with the command's input, reported as one line without a traceback."""


# What bad input raises (CheckpointError, SafetensorsError and the tokenizers' errors are ValueErrors,
# a disk full or a missing file an OSError, a non-finite loss a FloatingPointError, a size no check
# foresaw a MemoryError): reported by main.main in one line, exit code 1. DownloadError is added
# there, so that this module imports nothing of the library.
USER_ERRORS: tuple[type[BaseException], ...] = (CLIError, OSError, FloatingPointError, ValueError, KeyError,
                                                MemoryError)


def error_text(err: BaseException) -> str:
    """The one line of an error: a KeyError's key without the quotes str() adds, an OSError with the
    path it is about."""
    if isinstance(err, MemoryError):
        return f"not enough memory: {err}; use smaller sizes"
    if isinstance(err, KeyError) and len(err.args) == 1:
        return f"missing {err.args[0]}"
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in str(err):
        return f"{err.filename}: {err.strerror or err}"
    return str(err)


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help, once: not when the help already states its default,
    nor for flags whose default is None or False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or not action.option_strings or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def with_flag_names(message: str, args: argparse.Namespace) -> str:
    """``message`` with the Python names of this command's options (max_new_tokens) written as the
    flags the user typed (--max-new-tokens)."""
    for dest in vars(args):
        if "_" in dest:
            message = re.sub(rf"(?<![\w-]){dest}(?!\w)", "--" + dest.replace("_", "-"), message)
    return message


# -- argument types --------------------------------------------------------------------------------
# One type per concept, used by every command: argparse calls it on the flag's text and reports an
# ArgumentTypeError as "numpy-gpt CMD: error: argument --FLAG: MESSAGE" with exit code 2, before any
# work. A value a type cannot judge alone (--min-lr against --lr, a size against the memory) is
# checked by the command's ``check`` (see ``main.main``), also before any work.
def _number(text: str, kind: type) -> float:
    """``text`` as an int or a float; an int flag refuses "1e3" and "2.5" rather than rounding them."""
    try:
        return int(text) if kind is int else float(text)
    except ValueError:
        expected = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _finite(text: str) -> float:
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A count of at least one: steps, epochs, batch size, widths, tokens to generate."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """A count that may be zero: warmup steps, samples to print, bootstrap resamples, a layer index."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text}")
    return value


def thread_count(text: str) -> int:
    """Threads for BLAS and map_chunks: from one to the CPUs of this machine (more only slow down)."""
    value = positive_int(text)
    cpus = os.cpu_count() or 1
    if value > cpus:
        raise argparse.ArgumentTypeError(f"this machine has {cpus} CPUs; give at most {cpus}, got {text}")
    return value


def random_seed(text: str) -> int:
    """A random seed: a whole number >= 0 (what numpy.random.default_rng accepts)."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a whole number >= 0, got {text}")
    return value


def probability(text: str) -> float:
    """A probability in [0, 1): dropout rates, the MLM masking share, Adam's beta2 (1 would never
    forget and divides by zero in the bias correction)."""
    value = _finite(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def fraction(text: str) -> float:
    """A share strictly between 0 and 1: --val-fraction leaves text on both sides of the split."""
    value = _finite(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be strictly between 0 and 1, got {text}")
    return value


def top_p_mass(text: str) -> float:
    """Nucleus sampling's probability mass, in (0, 1]: 1 keeps every token."""
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def learning_rate(text: str) -> float:
    """A peak learning rate: finite and > 0 (see ``check_min_lr`` for --min-lr)."""
    value = _finite(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"a learning rate must be > 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0: DPO's beta, LoRA's alpha, epochs as a float."""
    value = _finite(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0: weight decay, the gradient-norm limit (0: off), temperature (0: greedy),
    the final learning rate of a cosine."""
    value = _finite(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def port_number(text: str) -> int:
    """A TCP port to listen on: 1 to 65535, or 0 for a free one the system picks."""
    value = _number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a whole number from 0 (a free one) to 65535, got {text}")
    return value


NUMERIC_TYPES = (positive_int, non_negative_int, thread_count, random_seed, probability, fraction, top_p_mass,
                 learning_rate, positive_float, non_negative_float, port_number)


# -- checks of several flags together, before any work ------------------------------------------------
def check_min_lr(args: argparse.Namespace, lr: float | None = None) -> None:
    """--min-lr (the end of the cosine) may not exceed --lr (its peak); ``lr`` when --lr is unset."""
    peak = args.lr if args.lr is not None else lr
    if peak is not None and args.min_lr > peak:
        raise CLIError(f"--min-lr {args.min_lr:g} is above --lr {peak:g}: the cosine decays from --lr "
                       f"down to --min-lr; lower --min-lr")


def check_heads(emb_dim: int, n_heads: int) -> None:
    if emb_dim % n_heads:
        raise CLIError(f"--n-heads {n_heads} does not divide --emb-dim {emb_dim}: every head gets "
                       f"emb_dim / n_heads dimensions; pick a divisor")


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable of /proc/meminfo where there is one,
    else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 1 << 62                                     # unknown: refuse only the impossible


def training_bytes(cfg: dict, batch_size: int, *, itemsize: int = 4, optimizer: bool = True) -> int:
    """About the bytes a GPT-shaped model of ``cfg`` needs to train on batches of ``batch_size``:
    its parameters, their gradients and AdamW's two moments (4 copies), plus the activations kept
    for backward (per layer about 16 (B, T, C) arrays and the (B, heads, T, T) scores twice; the
    logits, their softmax and gradient, 3 (B, T, V)). An estimate to refuse the impossible before
    allocating, not a budget: the real peak is of the same order."""
    V, T, C = cfg["vocab_size"], cfg["context_length"], cfg["emb_dim"]
    L, H = cfg["n_layers"], cfg["n_heads"]
    hidden = cfg.get("hidden_dim") or 4 * C
    per_block = 4 * C * C + 4 * C + 2 * C * hidden + hidden + C + 4 * C
    params = V * C + T * C + L * per_block + 2 * C + C * V
    activations = batch_size * T * (L * (16 * C + 2 * H * T) + 3 * V)
    return itemsize * ((4 if optimizer else 1) * params + activations)


def check_memory(flags: dict[str, object], needed: int, what: str = "the model and its training") -> None:
    """Refuse, in one line naming ``flags`` and the bytes, a size that cannot fit in memory."""
    free = available_memory()
    if needed > free:
        named = " ".join(f"{flag} {value}" for flag, value in flags.items())
        raise CLIError(f"{named}: {what} would need about {needed:.3g} bytes ({needed / 2**30:,.3g} GiB), "
                       f"more than the {free / 2**30:,.1f} GiB free here; make them smaller")


# -- shared pieces of the commands -----------------------------------------------------------------
# Below this width BLAS threads cost more than they save when a command works on one sequence at a
# time (evaluate, generate): the quickstart model (128 wide) scored 50 cloze items in 18.4 s with
# OpenBLAS's default threads and 1.9 s with one, and generating past its context was 15 times slower
# with 2 threads than with 1, on a busy 2-core machine.
SMALL_MODEL_WIDTH = 512
THREADS_HELP = (f"BLAS threads (default: 1 for models narrower than {SMALL_MODEL_WIDTH}, where more "
                f"threads cost more than they save on one sequence, else NumPy's own choice)")


def use_threads(threads: int | None, cfg: dict) -> None:
    """--threads for the commands that run a model on one sequence at a time: the given count, else
    one thread for a model narrower than ``SMALL_MODEL_WIDTH``, else BLAS's default."""
    threads = threads or (1 if cfg["emb_dim"] < SMALL_MODEL_WIDTH else None)
    if threads is not None:
        from numpy_gpt.runtime import set_threads
        set_threads(threads)


def show_bars(args: argparse.Namespace) -> bool:
    """tqdm bars only on a terminal: piped or logged output gets one event per line."""
    return not args.no_progress and sys.stderr.isatty()


def load_split_corpus(args: argparse.Namespace) -> tuple[str, str]:
    """--corpus (its first --max-chars characters), split into training and validation text by
    --val-fraction: the data of pretrain and pretrain-mlm."""
    from numpy_gpt.data import load_corpus, train_val_split

    print(f"Corpus {args.corpus!r}", flush=True)
    text = load_corpus(args.corpus, data_dir=args.data_dir)
    if args.max_chars is not None:
        text = text[:args.max_chars]
    if not text.strip():
        raise CLIError(f"--corpus {args.corpus} is empty" + (f" in its first {args.max_chars} characters"
                                                             if args.max_chars is not None else "")
                       + ": give a text to train on")
    return train_val_split(text, 1.0 - args.val_fraction)


def start_or_resume(args: argparse.Namespace, folder: Path, state: str, *, product: str | None = None,
                    outputs: tuple[str, ...] = ()) -> bool:
    """Whether this training command continues the run in ``folder`` (True) or starts a new one,
    checked before any work: a run already in the folder is never replaced without being asked.

    ``state`` is the file --resume continues (saved on Ctrl-C and every --checkpoint-freq steps),
    ``product`` the finished model (the same file for pretrain), ``outputs`` the other files the
    command writes there (plots, metrics, samples). --resume continues ``state``; --overwrite first
    removes all of these files, so the folder never mixes two runs; without either, a folder that
    holds one of them is refused in one line that names the three ways on."""
    names = dict.fromkeys(n for n in (state, product, *outputs) if n)
    found = [name for name in names if (folder / name).exists()]
    if args.resume:
        if (folder / state).exists():
            return should_resume(folder / state, True)
        if product and (folder / product).exists():
            raise FileExistsError(f"{folder / product} is a finished run, with nothing left to resume: "
                                  f"--overwrite trains it again, --out-dir DIR trains a new one elsewhere")
        return should_resume(folder / state, True)
    if getattr(args, "overwrite", False):
        for name in found:
            (folder / name).unlink()
        if found:
            print(f"--overwrite: removed {', '.join(found)} of the earlier run in {folder}")
        return False
    if found:
        if state == product and (folder / state).exists():
            what = "a run (finished, or saved by Ctrl-C)"
        elif product and (folder / product).exists():
            what = "a finished run"
        elif (folder / state).exists():
            what = "an interrupted run"
        else:
            what = "the files of an earlier run"
        raise FileExistsError(f"{folder} already holds {what} ({', '.join(found)}): --resume continues it, "
                              f"--overwrite replaces it, --out-dir DIR writes a new run elsewhere")
    return False


def add_run_folder_flags(parser: argparse.ArgumentParser, state: str) -> None:
    """--resume and --overwrite, the two ways past a run folder that holds a run (``start_or_resume``)."""
    parser.add_argument("--resume", action="store_true",
                        help=f"continue the run saved in the output folder's {state} (after Ctrl-C or "
                             f"--checkpoint-freq saves)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in the output folder (without it, or --resume, a "
                             "folder that holds a run is refused)")


# What a fine-tuning command trains (finetune.classifier.set_trainable's choices; tests/test_cli.py
# checks they match): the parsers need only the names, not the module.
TRAINABLE_CHOICES = ("last-block", "last-n", "all", "lora")
# Where a fine-tuning command's model comes from (--init): OpenAI's GPT-2, a checkpoint, or random.
GPT2_INITS = tuple(f"gpt2-{size}" for size in GPT2_SIZE_CHOICES)
INIT_CHOICES = (*GPT2_INITS, "checkpoint", "scratch")


def add_trainable_flags(parser: argparse.ArgumentParser, default: str | None, default_text: str = "") -> None:
    """--trainable, --n-blocks, --lora-rank and --lora-alpha: the one spelling of what every fine-tuning
    command trains (finetune-spam, finetune-instruct, finetune-dpo), for set_trainable."""
    parser.add_argument("--trainable", choices=TRAINABLE_CHOICES, default=default,
                        help=f"what is trained, the rest is frozen (default: {default_text or default})")
    parser.add_argument("--n-blocks", type=positive_int, default=1,
                        help="blocks trained with --trainable last-n")
    parser.add_argument("--lora-rank", type=positive_int, default=16,
                        help="rank with --trainable lora (default: 16)")
    parser.add_argument("--lora-alpha", type=positive_float, default=16.0,
                        help="alpha with --trainable lora (default: 16)")


def add_model_source(parser: argparse.ArgumentParser, checkpoint_help: str, hf_help: str) -> None:
    """The one required choice of the model a command runs: --checkpoint FILE, --hf FOLDER or
    --gpt2 SIZE (generate and explore)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help=checkpoint_help)
    source.add_argument("--hf", metavar="FOLDER", help=hf_help)
    source.add_argument("--gpt2", choices=GPT2_SIZE_CHOICES, metavar="SIZE",
                        help=f"OpenAI's GPT-2 weights of this size ({', '.join(GPT2_SIZE_CHOICES)}), "
                             f"read from --models-dir/SIZE, downloaded there once")


def model_file(path: str | os.PathLike, command: str, kinds: tuple[str, ...], *, or_else: str = ""):
    """What the model file ``path`` given to ``command`` holds (``numpy_gpt.model_files.read_model_file``:
    its metadata alone; ``.load_model()`` and ``checkpoint_tokenizer`` take it from there), refused
    unless of ``kinds``: the error says what the file is and which command takes it. ``or_else`` ends
    the error for a file that holds no model at all (e.g. "use --gpt2 124M")."""
    from numpy_gpt.model_files import NotAModelError, read_model_file

    try:
        return read_model_file(path, expect=kinds, use=f"`numpy-gpt {command}`")
    except NotAModelError as err:
        if not or_else:
            raise
        raise CLIError(f"{err}; or {or_else}") from None


def hf_model(path: str | os.PathLike, command: str):
    """(language model in eval mode, tokenizer) of the Hugging Face folder given to ``command`` with
    ``--hf`` (``numpy_gpt.load_hf``: GPT-2, Llama 3.x, SmolLM2, Qwen3). A BERT folder is refused before
    its weights are read: it is an encoder, which fill-mask takes."""
    from numpy_gpt.gpt2.hf import hf_model_type, load_hf, read_hf_config

    if Path(path).is_dir() and hf_model_type(read_hf_config(path), f"{path}/config.json") == "bert":
        raise CLIError(f"--hf {path} is a BERT encoder, not a language model that `numpy-gpt {command}` "
                       f"runs: `numpy-gpt fill-mask --bert {path}` takes it")
    return load_hf(path)


def checkpoint_format(path: str | os.PathLike) -> str:
    """Kept for one release: the format name of ``numpy_gpt.model_files.file_format(path)``."""
    import warnings

    from numpy_gpt.model_files import file_format

    warnings.warn("checkpoint_format is deprecated: use numpy_gpt.model_files.file_format(path).name",
                  DeprecationWarning, stacklevel=2)
    return file_format(path).name
