"""Offline stand-ins for the two fine-tuning data sets of chapters 6 and 7, generated from a seed.

The book fine-tunes on the SMS Spam Collection (chapter 6) and on 1,100 instructions (chapter 7), both
downloaded. Without the network, these generators make data of the same shape, so every stage runs
offline (``scripts/synthetic_finetune_data.py`` writes them as files, the notebooks use them directly):

* ``synthetic_spam_rows``: (label, text) pairs like ``read_sms_spam`` returns (750 ham, 250 spam by
  default). Both classes draw their length from the same range, so the message-length baseline is
  near chance; one word of a spam message is replaced by a word of an advertising list, which shares
  only "now" with the ham words, so the label is learnable from the words.
* ``synthetic_instruction_entries``: entries in the book's {instruction, input, output} format, from
  four small tasks whose answer follows from the input by a rule (reverse three letters, upper-case a
  word, name the word's first letter, say a word's plural). The echo and most-common-answer
  baselines stay low.

These are not the book's data sets and their accuracies are not the book's numbers: they show that
the stages run and that the scores are reported beside their baselines. The DPO task's generator is
``numpy_gpt.finetune.preference_data.synthetic_preference_data``.
"""

from __future__ import annotations

import numpy as np

HAM = ("see you at lunch tomorrow ok call me when you get home are we still on for dinner thanks "
       "sorry running late can you pick up some milk love you how was the meeting where are you now "
       "happy birthday did you get my message what time is the game going to bed now good night").split()
SPAM = ("free winner prize cash urgent claim award bonus offer voucher congratulations txt reply now "
        "guaranteed selected").split()
LETTERS = "bcdfghjklmnpqrstvwxz"
NOUNS = ("cat dog house tree car book bird river city lamp chair table cloud stone apple garden "
         "window letter bottle friend").split()


def synthetic_spam_rows(rng: np.random.Generator, n_ham: int = 750,
                        n_spam: int = 250) -> list[tuple[str, str]]:
    """``n_ham`` + ``n_spam`` shuffled (label, text) pairs, label "ham" or "spam" (see above)."""
    rows = []
    for label in ["ham"] * n_ham + ["spam"] * n_spam:
        words = [str(w) for w in rng.choice(HAM, size=int(rng.integers(4, 16)))]
        if label == "spam":
            words[int(rng.integers(len(words)))] = str(rng.choice(SPAM))
        rows.append((label, " ".join(words).capitalize()))
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def synthetic_instruction_entries(rng: np.random.Generator, n: int = 1100) -> list[dict[str, str]]:
    """``n`` {instruction, input, output} entries, the four tasks in turn (see above)."""
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
