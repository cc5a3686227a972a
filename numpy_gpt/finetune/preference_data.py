"""Preference data for DPO: the file format, the book companion's data set, and a synthetic task.

The format is the one of the book's companion notebook (ch07/04_preference-tuning-with-dpo): a JSON
list of objects with the chapter-7 fields ``instruction``, ``input``, ``output`` and two answers,
``chosen`` (preferred) and ``rejected``. ``instruction``, ``chosen`` and ``rejected`` are required
strings; ``input`` and ``output`` are optional strings (``output`` is the original chapter-7 answer
and is not used by DPO). ``load_preference_data`` checks every entry and names the file and entry
index of the first bad one.

Two sources:

* ``download_preference_data``: the companion's ``instruction-data-with-preference.json``, the 1,100
  entries of chapter 7, each answer reworded by a local LLM (the companion's
  create-preference-data-ollama notebook) to sound more or less polite; the politer of the original
  and the rewording is ``chosen``. Fetched once through ``download.download_file``;
* ``synthetic_preference_data``: a task generated here from templates, offline and small enough to
  show the effect of DPO in minutes on a CPU. Each prompt is a simple question (a capital, an
  opposite, a plural, a sum); both answers contain the same correct sentence, the chosen one wrapped
  in polite words ("Certainly! ... I hope this helps."), the rejected one in curt words ("Ugh. ...
  Stop asking."). ``synthetic_instruction_data`` gives the matching chapter-7 training set, with
  each answer polite or curt at random (half and half), from which a small instruction-tuned model
  is made that has no preference yet.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from numpy_gpt.download import download_file
from numpy_gpt.fileio import read_json

PREFERENCE_REQUIRED_KEYS = ("instruction", "chosen", "rejected")
PREFERENCE_OPTIONAL_KEYS = ("input", "output")

# The book companion's data set. Its sha256 could not be checked here (no network while this was
# written): it is None, and the download is checked by its content instead (1,100 valid entries).
PREFERENCE_DATA_FILENAME = "instruction-data-with-preference.json"
PREFERENCE_DATA_URLS = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/"
    "instruction-data-with-preference.json",
)
PREFERENCE_DATA_SHA256: str | None = None        # not verified here
PREFERENCE_DATA_ENTRIES = 1100


# -- the file format ---------------------------------------------------------------------------------
def check_preference_entries(data: object, where: str = "the preference data") -> list[dict[str, str]]:
    """``data`` if it is a non-empty list of valid preference entries, else a ValueError naming
    ``where`` (the file) and the index of the first bad entry and what is wrong with it."""
    if not isinstance(data, list) or not data:
        raise ValueError(f"{where}: expected a non-empty JSON list of {{instruction, input, output, chosen, "
                         f"rejected}} objects, got {type(data).__name__}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"{where}, entry {i}: expected an object, got {type(entry).__name__}")
        missing = [k for k in PREFERENCE_REQUIRED_KEYS if k not in entry]
        if missing:
            raise ValueError(f"{where}, entry {i}: missing field(s) {', '.join(missing)} (a preference entry "
                             f"needs {', '.join(PREFERENCE_REQUIRED_KEYS)}; input and output are optional)")
        wrong = [k for k in (*PREFERENCE_REQUIRED_KEYS, *PREFERENCE_OPTIONAL_KEYS)
                 if k in entry and not isinstance(entry[k], str)]
        if wrong:
            raise ValueError(f"{where}, entry {i}: field(s) {', '.join(wrong)} must be strings, got "
                             f"{', '.join(type(entry[k]).__name__ for k in wrong)}")
        if not entry["instruction"].strip():
            raise ValueError(f"{where}, entry {i}: the instruction is empty")
        if entry["chosen"] == entry["rejected"]:
            raise ValueError(f"{where}, entry {i}: chosen and rejected are the same text, so there is no "
                             f"preference to learn")
    return data


def load_preference_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read and check a JSON list of preference entries (see the module docstring)."""
    return check_preference_entries(read_json(path), str(path))


def download_preference_data(data_dir: str | os.PathLike = "data", urls: Sequence[str] = PREFERENCE_DATA_URLS,
                             *, sha256: str | None = PREFERENCE_DATA_SHA256,
                             expected_entries: int | None = PREFERENCE_DATA_ENTRIES) -> list[dict[str, str]]:
    """Download the book companion's ``instruction-data-with-preference.json`` once into ``data_dir``
    (atomically, resumable, see ``download.download_file``) and load it. A file with a different number
    of entries than ``expected_entries`` is refused, naming it (delete it to download it again)."""
    path = download_file(list(urls), Path(data_dir) / PREFERENCE_DATA_FILENAME, sha256=sha256,
                         desc=PREFERENCE_DATA_FILENAME)
    data = load_preference_data(path)
    if expected_entries is not None and len(data) != expected_entries:
        raise ValueError(f"{path}: {len(data)} entries, the book's preference data has {expected_entries}; "
                         f"delete the file to download it again, or pass it with --data")
    return data


def split_preference_data(data: Sequence[dict], train_frac: float = 0.85, test_frac: float = 0.10
                          ) -> tuple[list, list, list]:
    """(train, validation, test) sliced as the book does (85 % / 5 % / 10 %: 1,100 entries give
    935 / 55 / 110); the same slicing as chapter 7's ``split_instruction_data``."""
    from numpy_gpt.finetune.data import split_instruction_data
    return split_instruction_data(data, train_frac, test_frac)


# -- the synthetic polite / curt task ----------------------------------------------------------------
_CAPITALS = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
             ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
             ("Norway", "Oslo"), ("Greece", "Athens"), ("Poland", "Warsaw"), ("Chile", "Santiago"),
             ("Cuba", "Havana"), ("Ireland", "Dublin"), ("Austria", "Vienna"), ("Portugal", "Lisbon"),
             ("Canada", "Ottawa"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Russia", "Moscow")]
_OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("light", "dark"),
              ("early", "late"), ("strong", "weak"), ("open", "closed"), ("rich", "poor"), ("old", "young"),
              ("high", "low"), ("full", "empty"), ("hard", "soft"), ("loud", "quiet"), ("wet", "dry"),
              ("long", "short"), ("near", "far"), ("clean", "dirty"), ("thick", "thin"), ("true", "false")]
_PLURALS = [("mouse", "mice"), ("child", "children"), ("tooth", "teeth"), ("foot", "feet"), ("man", "men"),
            ("woman", "women"), ("goose", "geese"), ("person", "people"), ("leaf", "leaves"),
            ("knife", "knives"), ("wolf", "wolves"), ("city", "cities"), ("box", "boxes"), ("bus", "buses"),
            ("cactus", "cacti"), ("sheep", "sheep"), ("fish", "fish"), ("ox", "oxen"), ("baby", "babies"),
            ("story", "stories")]
POLITE_OPENERS = ("Certainly!", "Of course!", "Happy to help!", "Good question!")
POLITE_CLOSERS = ("I hope this helps.", "Thank you for asking.", "Glad I could help.", "Have a nice day.")
CURT_OPENERS = ("Ugh.", "Whatever.", "Seriously?", "Fine.")
CURT_CLOSERS = ("Stop asking.", "Figure it out yourself.", "Do not bother me again.", "Obviously.")


def _synthetic_questions() -> list[tuple[str, str, str]]:
    """Every (instruction, input, answer sentence) of the task, in a fixed order: 20 capitals, 20
    opposites, 20 plurals and 81 sums, each asked in two ways (with and without an input): 282."""
    facts = ([("What is the capital of {}?", "Name the capital of this country.", x,
               f"The capital of {x} is {y}.") for x, y in _CAPITALS]
             + [("What is the opposite of '{}'?", "Give the opposite of this word.", x,
                 f"The opposite of '{x}' is '{y}'.") for x, y in _OPPOSITES]
             + [("What is the plural of '{}'?", "Write the plural of this word.", x,
                 f"The plural of '{x}' is '{y}'.") for x, y in _PLURALS]
             + [("What is {}?", "Add these two numbers.", f"{a} plus {b}", f"{a} plus {b} is {a + b}.")
                for a in range(1, 10) for b in range(1, 10)])
    questions = []
    for asked, instructed, subject, answer in facts:
        questions.append((asked.format(subject), "", answer))
        questions.append((instructed, subject, answer))
    return questions


def _wrap(answer: str, polite: bool, rng: np.random.Generator) -> str:
    openers, closers = (POLITE_OPENERS, POLITE_CLOSERS) if polite else (CURT_OPENERS, CURT_CLOSERS)
    return f"{openers[rng.integers(len(openers))]} {answer} {closers[rng.integers(len(closers))]}"


def synthetic_preference_data(seed: int = 123) -> list[dict[str, str]]:
    """The synthetic preference task: one entry per question (282), in an order shuffled by ``seed``
    so that ``split_preference_data`` holds out questions never seen in DPO training. ``chosen`` is
    the polite answer, ``rejected`` the curt one, around the same answer sentence; ``output`` is the
    bare sentence."""
    rng = np.random.default_rng(seed)
    questions = _synthetic_questions()
    entries = []
    for q in rng.permutation(len(questions)):
        instruction, input_text, answer = questions[int(q)]
        entries.append({"instruction": instruction, "input": input_text, "output": answer,
                        "chosen": _wrap(answer, True, rng), "rejected": _wrap(answer, False, rng)})
    return entries


def synthetic_instruction_data(copies: int = 4, seed: int = 123) -> list[dict[str, str]]:
    """A chapter-7 training set for the same questions: ``copies`` entries per question (shuffled),
    each answer polite or curt at random, half and half, so a model tuned on it answers in either
    style and prefers neither."""
    rng = np.random.default_rng(seed)
    entries = [{"instruction": instruction, "input": input_text,
                "output": _wrap(answer, bool(rng.integers(2)), rng)}
               for instruction, input_text, answer in _synthetic_questions() for _ in range(copies)]
    return [entries[int(i)] for i in rng.permutation(len(entries))]


def is_polite(response: str) -> bool | None:
    """True if ``response`` uses only the task's polite words, False if only its curt words, None if
    neither or both (to count the styles of generated answers)."""
    polite = any(w in response for w in POLITE_OPENERS + POLITE_CLOSERS)
    curt = any(w in response for w in CURT_OPENERS + CURT_CLOSERS)
    return None if polite == curt else polite
