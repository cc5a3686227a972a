"""Write stand-ins for the fine-tuning data sets, to run stages 2 and 3 offline (docs/stages.md).

    python scripts/synthetic_finetune_data.py data/synthetic
    numpy-gpt finetune-spam ... --spam-file data/synthetic/SMSSpamCollection
    numpy-gpt finetune-instruct ... --data data/synthetic/instruction-data.json

* ``SMSSpamCollection``: 1,000 lines ``ham<TAB>text`` / ``spam<TAB>text`` in the real file's format
  (750 ham, 250 spam, so finetune-spam balances it to 500 as the book does).
* ``instruction-data.json``: 1,100 entries in the book's {instruction, input, output} format.

The generators, and what makes each task learnable, are in numpy_gpt/finetune/synthetic_data.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from numpy_gpt.fileio import write_text_atomic
from numpy_gpt.finetune.synthetic_data import synthetic_instruction_entries, synthetic_spam_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path,
                        help="folder to write SMSSpamCollection and instruction-data.json to")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"{label}\t{text}" for label, text in synthetic_spam_rows(rng)]
    write_text_atomic(args.out / "SMSSpamCollection", "\n".join(lines) + "\n")
    write_text_atomic(args.out / "instruction-data.json",
                      json.dumps(synthetic_instruction_entries(rng), indent=1))
    print(f"Wrote {args.out / 'SMSSpamCollection'} and {args.out / 'instruction-data.json'}")


if __name__ == "__main__":
    main()
