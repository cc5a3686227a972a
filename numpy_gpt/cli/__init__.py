"""The command line as a package: ``main(argv)`` runs it (main.py maps its modules).

``numpy-gpt`` (setup.cfg's ``numpy_gpt.cli:main``) and ``python -m numpy_gpt`` call ``main``. The
other names below are those the single-module ``numpy_gpt/cli.py`` offered, kept for its users.
"""

from numpy_gpt.cli.common import CLIError, checkpoint_format, load_split_corpus, positive_int
from numpy_gpt.cli.main import build_parser, main
from numpy_gpt.cli.pretrain import PRESETS
from numpy_gpt.tokenizers.spec import tokenizer_from_spec, tokenizer_spec

__all__ = ["PRESETS", "CLIError", "build_parser", "checkpoint_format", "load_split_corpus", "main",
           "positive_int", "tokenizer_from_spec", "tokenizer_spec"]
