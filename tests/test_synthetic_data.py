"""Tests for numpy_gpt/finetune/synthetic_data.py: each task follows the rule that makes it learnable."""

from __future__ import annotations

import numpy as np

from numpy_gpt.finetune.data import create_balanced_dataset
from numpy_gpt.finetune.synthetic_data import HAM, SPAM, synthetic_instruction_entries, synthetic_spam_rows


def test_spam_rows_are_labelled_by_one_advertising_word():
    rows = synthetic_spam_rows(np.random.default_rng(0), n_ham=60, n_spam=20)
    assert sorted(label for label, _ in rows).count("spam") == 20 and len(rows) == 80
    only_spam = set(SPAM) - set(HAM)                                # "now" is in both lists
    for label, text in rows:
        words = text.lower().split()
        if label == "ham":
            assert not only_spam & set(words), text
        else:
            assert sum(w in SPAM for w in words) >= 1, text
        assert 4 <= len(text.split()) <= 15
    assert len(create_balanced_dataset(rows)) == 40, "the rows are what read_sms_spam returns"


def test_spam_rows_follow_the_seed():
    a = synthetic_spam_rows(np.random.default_rng(5), 10, 5)
    assert a == synthetic_spam_rows(np.random.default_rng(5), 10, 5)
    assert a != synthetic_spam_rows(np.random.default_rng(6), 10, 5)


def test_instruction_answers_follow_their_rule():
    entries = synthetic_instruction_entries(np.random.default_rng(0), n=40)
    assert len(entries) == 40 and all(set(e) == {"instruction", "input", "output"} for e in entries)
    for e in entries:
        if e["instruction"].startswith("Reverse"):
            assert e["output"].split() == e["input"].split()[::-1]
        elif e["instruction"].startswith("Write the word"):
            assert e["output"] == e["input"].upper()
        elif e["instruction"].startswith("What is the first"):
            assert e["output"] == f"The first letter is {e['input'][0]}."
        else:
            noun = e["instruction"].split("'")[1]
            assert e["output"].startswith(f"The plural of '{noun}' is '{noun[:-1]}") and e["input"] == ""
