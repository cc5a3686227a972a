"""``numpy-gpt download`` and ``numpy-gpt convert``: GPT-2's weights from the command line (chapter 5).

    numpy-gpt download --gpt2 124M                  # OpenAI's files into gpt2/124M, checksums verified
    numpy-gpt convert gpt2/124M gpt2-124M.npz      # OpenAI folder -> numpy_gpt checkpoint
    numpy-gpt convert run/model.npz hf-model/      # numpy_gpt -> safetensors + config.json (transformers)
    numpy-gpt convert model.safetensors model.npz  # Hugging Face's gpt2 file -> numpy_gpt

``numpy_gpt/cli/main.py`` calls ``add_subcommands`` to add these parsers to the main command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from numpy_gpt.gpt2.convert import GPT2_BASE_URLS, GPT2_SIZES, convert, download_gpt2
from numpy_gpt.gpt2.openai_tf import TFCheckpointReader


def _verify_checkpoint(model_dir: Path) -> int:
    """Read every tensor once so that its crc32c is checked; return how many there are."""
    reader = TFCheckpointReader(model_dir)
    for name in reader:
        reader.read(name)
    return len(reader)


def _cmd_download(args: argparse.Namespace) -> int:
    model_dir = download_gpt2(args.gpt2, args.models_dir, base_urls=args.base_url or GPT2_BASE_URLS)
    if args.verify:
        count = _verify_checkpoint(model_dir)
        print(f"GPT-2 {args.gpt2} is in {model_dir}: {count} tensors, every crc32c checked")
    else:
        print(f"GPT-2 {args.gpt2} is in {model_dir}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    src = Path(args.src)
    if not src.exists():                     # the README's `convert gpt2/124M ...` run before the download
        size = src.name if src.name in GPT2_SIZES else None
        raise FileNotFoundError(f"{src} does not exist" + (
            f": download OpenAI's weights there first with `numpy-gpt download --gpt2 {size}"
            + (f" --models-dir {src.parent}`" if src.parent != Path("gpt2") else "`") if size else
            ": give an OpenAI GPT-2 folder, a .safetensors or a .npz file"))
    written = convert(args.src, args.dst, models_dir=args.models_dir, dtype=np.dtype(args.dtype))
    print(f"wrote {written}")
    if written.suffix == ".safetensors":
        print(f"wrote {written.parent / 'config.json'} beside it (the model's shape, for transformers)")
    return 0


def add_subcommands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``download`` and ``convert`` to the main parser's subcommands."""
    sizes = list(GPT2_SIZES)
    download = subparsers.add_parser(
        "download", help="download OpenAI's pretrained GPT-2 weights (no TensorFlow needed)",
        description="Download OpenAI's seven GPT-2 files (resumable, size-checked, with a fallback "
                    "mirror) into MODELS_DIR/SIZE, then check every tensor's crc32c.")
    download.add_argument("--gpt2", metavar="SIZE", required=True, choices=sizes,
                          help=f"model size: {', '.join(sizes)}")
    download.add_argument("--models-dir", type=Path, default=Path("gpt2"),
                          help="where the SIZE folder goes (default: gpt2)")
    download.add_argument("--base-url", action="append", metavar="URL",
                          help="download from URL/SIZE/FILE instead; repeat for mirrors tried in order "
                               f"(default: {' then '.join(GPT2_BASE_URLS)})")
    download.add_argument("--no-verify", dest="verify", action="store_false",
                          help="skip reading every tensor to check its crc32c (default: check them)")
    download.set_defaults(func=_cmd_download)

    conv = subparsers.add_parser(
        "convert", help="convert GPT-2 weights: OpenAI folder / safetensors / .npz",
        description="Convert a GPT-2 checkpoint. SRC: an OpenAI folder (hparams.json, model.ckpt.*), "
                    "a .safetensors file or a folder with model.safetensors, a numpy_gpt .npz, or a "
                    f"size ({', '.join(sizes)}) to download. DST: a .npz (numpy_gpt), a .safetensors "
                    "file, or a folder (model.safetensors + config.json, loads in "
                    "transformers.GPT2LMHeadModel.from_pretrained). OpenAI's TensorFlow format is "
                    "read, not written.")
    conv.add_argument("src", help="checkpoint to read")
    conv.add_argument("dst", help="file or folder to write")
    conv.add_argument("--models-dir", type=Path, default=Path("gpt2"),
                      help="where a SRC given as a size is downloaded (default: gpt2)")
    conv.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                      help="dtype of the converted weights (default: float32; a .npz source keeps its own)")
    conv.set_defaults(func=_cmd_convert)
