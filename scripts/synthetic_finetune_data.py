"""Write stand-ins for the fine-tuning data sets, to run stages 2 and 3 offline (docs/stages.md).

    python scripts/synthetic_finetune_data.py data/synthetic
    numpy-gpt finetune-spam ... --spam-file data/synthetic/SMSSpamCollection
    numpy-gpt finetune-instruct ... --data data/synthetic/instruction-data.json

* ``SMSSpamCollection``: 1,000 lines ``ham<TAB>text`` / ``spam<TAB>text`` in the real file's format
  (750 ham, 250 spam, so finetune-spam balances it to 500 as the book does). Both classes draw their
  length from the same range, so the message-length baseline is near chance; a spam message contains
  one word of an advertising list, a ham message none, so the label is learnable from the words.
* ``instruction-data.json``: 1,100 entries in the book's {instruction, input, output} format, from
  four small tasks whose answer follows from the input by a rule (reverse three letters, upper-case a
  word, name the word's first letter, say a word's plural). A real model learns them from a few
  hundred examples; the echo and most-common-answer baselines stay low.

These are not the book's data sets and their accuracies are not the book's numbers: they show that
the stages run and that the scores are reported beside their baselines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from numpy_gpt.fileio import write_text_atomic

HAM = ("see you at lunch tomorrow ok call me when you get home are we still on for dinner thanks "
       "sorry running late can you pick up some milk love you how was the meeting where are you now "
       "happy birthday did you get my message what time is the game going to bed now good night").split()
SPAM = ("free winner prize cash urgent claim award bonus offer voucher congratulations txt reply now "
        "guaranteed selected").split()
LETTERS = "bcdfghjklmnpqrstvwxz"
NOUNS = ("cat dog house tree car book bird river city lamp chair table cloud stone apple garden "
         "window letter bottle friend").split()


def spam_lines(rng: np.random.Generator, n_ham: int = 750, n_spam: int = 250) -> list[str]:
    lines = []
    for label in ["ham"] * n_ham + ["spam"] * n_spam:
        words = [str(w) for w in rng.choice(HAM, size=int(rng.integers(4, 16)))]
        if label == "spam":
            words[int(rng.integers(len(words)))] = str(rng.choice(SPAM))
        lines.append(f"{label}\t{' '.join(words).capitalize()}")
    order = rng.permutation(len(lines))
    return [lines[i] for i in order]


def instruction_entries(rng: np.random.Generator, n: int = 1100) -> list[dict[str, str]]:
    entries = []
    for i in range(n):
        task = i % 4
        if task == 0:
            letters = [str(c) for c in rng.choice(list(LETTERS), size=3)]
            entries.append({"instruction": "Reverse the order of the letters.", "input": " ".join(letters),
                            "output": " ".join(letters[::-1])})
            continue
        noun = str(rng.choice(NOUNS))
        if task == 1:
            entries.append({"instruction": "Write the word in capital letters.", "input": noun,
                            "output": noun.upper()})
        elif task == 2:
            entries.append({"instruction": "What is the first letter of the word?", "input": noun,
                            "output": f"The first letter is {noun[0]}."})
        else:
            plural = noun + ("es" if noun.endswith(("s", "ch", "sh", "x")) else "s")
            plural = "cities" if noun == "city" else plural
            entries.append({"instruction": f"What is the plural of '{noun}'?", "input": "",
                            "output": f"The plural of '{noun}' is '{plural}'."})
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path,
                        help="folder to write SMSSpamCollection and instruction-data.json to")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "SMSSpamCollection", "\n".join(spam_lines(rng)) + "\n")
    write_text_atomic(args.out / "instruction-data.json", json.dumps(instruction_entries(rng), indent=1))
    print(f"Wrote {args.out / 'SMSSpamCollection'} and {args.out / 'instruction-data.json'}")


if __name__ == "__main__":
    main()
