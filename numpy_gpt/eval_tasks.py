"""Benchmark tasks for ``numpy-gpt evaluate``: their data files, parsers and scoring (after chapter 5).

Each task turns a data set into the requests of ``evaluation.py`` and the metrics papers report:

==============  ======================================================  ==========================
task            items and prompt                                        metrics
==============  ======================================================  ==========================
stdlib-cloze    built here, offline: sentences of the held-out last     acc, acc_norm
                10 % of the ``stdlib-docs`` corpus with their last
                word blanked and 3 distractor words (see make_cloze_items)
hellaswag       HellaSwag validation (10,042 items, 4 endings each),    acc, acc_norm
                lm-evaluation-harness's preprocessing
lambada         OpenAI's LAMBADA test file (5,153 passages): the last   acc (greedy), perplexity
                word given the rest, as the harness's lambada_openai
wikitext        WikiText-2 (raw) test text, windowed perplexity          perplexity, bits_per_byte
sms-spam        the SMS Spam Collection's test split (chapter 6),       acc, acc_norm
                "Message: ...\\nLabel:" -> " ham" or " spam"
==============  ======================================================  ==========================

Multiple-choice prompts follow the harness: the context is the (few-shot) prompt, each choice is
scored as " " + choice, ``acc`` takes the largest sum of log-probs and ``acc_norm`` the largest per
character of the choice. ``--shots k`` puts k solved examples from the task's training split before
each item (``evaluation.fewshot_context``, examples separated by a blank line), drawn with a fixed
seed so every model sees the same ones.

Downloads go through ``download.download_file`` with the sha256 recorded in ``EVAL_FILES``: a file
whose hash differs is refused. Hashes that could not be checked when this was written are None and
marked so; the file's sha256 is then printed so it can be recorded. Those files are checked by their
published row counts instead (HellaSwag's validation set has 10,042 rows, LAMBADA's test set
5,153): a download cut short at a line boundary parses cleanly, and only its length gives it away.

A data file whose text holds one of the tokenizer's special tokens (``<|endoftext|>``) is refused,
naming the file and the entry. lm-evaluation-harness's Hugging Face tokenizers would read the
string as the end-of-text token, a document boundary the text does not mean, and its tiktoken-based
models stop with tiktoken's error; neither scores the item as published, so neither is done here.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt.download import download_file, sha256_of
from numpy_gpt.evaluation import (
    MultipleChoice,
    choice_picks,
    encode_pair,
    fewshot_context,
    loglikelihood,
    mean_and_stderr,
    perplexity,
    sample_shots,
    shots_in_window,
)
from numpy_gpt.fileio import zip_member_errors

TASK_NAMES = ("stdlib-cloze", "hellaswag", "lambada", "wikitext", "sms-spam")
OFFLINE_TASK = "stdlib-cloze"
DEFAULT_SEED = 1234                       # the harness's default few-shot seed
CLOZE_ITEMS = 200
MAX_JSONL_LINE = 1 << 20                  # one HellaSwag or LAMBADA row is a few kB


@dataclass(frozen=True)
class EvalFile:
    """A data file of a task: where it comes from, where it goes under data_dir, how to check it.
    ``sha256`` None means no published hash could be checked (see ``note``)."""

    filename: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None = None
    note: str = ""
    rows: int | None = None           # the published number of rows, checked after parsing
    title: str = ""                   # what the file is, for messages


EVAL_FILES: dict[str, EvalFile] = {
    "hellaswag-val": EvalFile(
        "eval/hellaswag_val.jsonl",
        ("https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",),
        None, note="sha256 not verified: no published hash was found", rows=10_042,
        title="HellaSwag's validation set"),
    "hellaswag-train": EvalFile(
        "eval/hellaswag_train.jsonl",
        ("https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_train.jsonl",),
        None, note="sha256 not verified: no published hash was found", rows=39_905,
        title="HellaSwag's training set"),
    "lambada": EvalFile(
        "eval/lambada_test.jsonl",
        ("https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",),
        None, note="sha256 not verified: no published hash was found", rows=5_153,
        title="LAMBADA's test set"),
    "wikitext-2": EvalFile(
        "eval/wikitext-2-raw-v1.zip",
        ("https://huggingface.co/datasets/ggml-org/ci/resolve/main/wikitext-2-raw-v1.zip",
         "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-raw-v1.zip"),
        "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11", 4721645,
        note="sha256 and size as recorded by a third party for the ggml-org/ci copy; not re-checked "
             "here (no network)"),
}
WIKITEXT_TEST_MEMBER = "wikitext-2-raw/wiki.test.raw"


def fetch(name: str, data_dir: str | Path = "data") -> Path:
    """Download (once) the registered file ``name`` into data_dir, checked by its sha256."""
    entry = EVAL_FILES[name]
    dest = Path(data_dir) / entry.filename
    path = download_file(entry.urls, dest, sha256=entry.sha256, size=entry.size, desc=name)
    if entry.sha256 is None:
        print(f"{name}: {entry.note}; this copy has sha256 {sha256_of(path)}", file=sys.stderr)
    return path


def check_rows(name: str, path: Path, rows: int) -> None:
    """Refuse a registered file whose number of rows is not the published one."""
    entry = EVAL_FILES[name]
    if entry.rows is not None and rows != entry.rows:
        raise ValueError(f"{path}: {rows:,} rows where {entry.title or name} has {entry.rows:,}; the "
                         f"download was cut short or this is another file: delete it and run again")


def read_task_file(name: str, data_dir: str | Path, reader: Callable[[Path], list]) -> list:
    """Fetch the registered file ``name``, parse it with ``reader`` and check its row count."""
    path = fetch(name, data_dir)
    items = reader(path)
    check_rows(name, path, len(items))
    return items


def refuse_special_tokens(tokenizer, items: Sequence[MultipleChoice | tuple[str, str]], source: str | Path
                          ) -> None:
    """One line naming ``source`` and the entry (counted from 1) if an item's text holds one of the
    tokenizer's special tokens, which its encode would read as a control token or refuse."""
    specials = sorted(getattr(tokenizer, "special_tokens_set", None) or ())
    for number, item in enumerate(items, start=1):
        texts = (item.query, *item.choices) if isinstance(item, MultipleChoice) else item
        for token in specials:
            if any(token in text for text in texts):
                raise ValueError(f"{source}, entry {number}: the text holds the special token {token!r}, "
                                 f"which would not be read as text; remove it from the file")


def required_files(tasks: Sequence[str], shots: Sequence[int]) -> list[str]:
    """The EVAL_FILES the tasks will read (HellaSwag's training split only for shots > 0)."""
    names = {"hellaswag": ["hellaswag-val"], "lambada": ["lambada"], "wikitext": ["wikitext-2"]}
    needed = [name for task in tasks for name in names.get(task, [])]
    if "hellaswag" in tasks and any(shots):
        needed.append("hellaswag-train")
    return needed


# -- parsers ---------------------------------------------------------------------------------------
def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line of a JSON-lines file; a line that is not a
    JSON object, or not UTF-8, is an error naming the file and the line."""
    path = Path(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if len(raw) > MAX_JSONL_LINE:
                raise ValueError(f"{path}, line {lineno}: longer than {MAX_JSONL_LINE} bytes; is this "
                                 f"the right file?")
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}, line {lineno}: not UTF-8 text ({err.reason})") from None
            except (ValueError, RecursionError) as err:
                raise ValueError(f"{path}, line {lineno}: not valid JSON ({err})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}, line {lineno}: expected a JSON object, got "
                                 f"{type(row).__name__}")
            yield lineno, row


def hellaswag_preprocess(text: str) -> str:
    """The harness's clean-up of HellaSwag text: strip, " [title]" becomes ". ", other bracketed
    WikiHow markers are dropped, a double space becomes one."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag(path: str | Path) -> list[MultipleChoice]:
    """HellaSwag rows -> items. Query = preprocess(activity_label + ": " + ctx_a + " " +
    ctx_b.capitalize()), choices = preprocessed endings, gold = label."""
    items = []
    for lineno, row in read_jsonl(path):
        where = f"{path}, line {lineno}"
        for key in ("activity_label", "ctx_a", "ctx_b"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{where}: '{key}' must be a string, got {row.get(key)!r:.60}")
        endings = row.get("endings")
        if not isinstance(endings, list) or len(endings) < 2 or not all(isinstance(e, str) for e in endings):
            raise ValueError(f"{where}: 'endings' must be a list of at least 2 strings")
        label = row.get("label")
        if isinstance(label, str) and label.isdigit():
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(endings):
            raise ValueError(f"{where}: 'label' must be an index into the {len(endings)} endings, "
                             f"got {row.get('label')!r}")
        context = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        items.append(MultipleChoice(hellaswag_preprocess(row["activity_label"] + ": " + context),
                                    tuple(hellaswag_preprocess(e) for e in endings), label))
    if not items:
        raise ValueError(f"{path} holds no HellaSwag rows")
    return items


def read_lambada(path: str | Path) -> list[tuple[str, str]]:
    """LAMBADA rows {"text": passage} -> (context, target) with target = " " + the last word and
    context = the words before it, split at single spaces as the harness's lambada_openai does
    (trailing whitespace removed first, where the harness would make the target " ")."""
    items = []
    for lineno, row in read_jsonl(path):
        text = row.get("text")
        if not isinstance(text, str) or " " not in text.strip():
            raise ValueError(f"{path}, line {lineno}: expected {{\"text\": passage}} with at least two "
                             f"words, got {str(row)[:60]}")
        context, word = text.rstrip().rsplit(" ", 1)           # the last word, not a trailing space
        items.append((context, " " + word))
    if not items:
        raise ValueError(f"{path} holds no LAMBADA rows")
    return items


def read_wikitext(path: str | Path, member: str = WIKITEXT_TEST_MEMBER) -> str:
    """The WikiText-2 raw test text, from the zip (``member``) or from an extracted wiki.test.raw."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise ValueError(f"{path}: the archive has no {member}; is it "
                                 f"wikitext-2-raw-v1.zip?") from None
            if info.file_size > 100_000_000:
                raise ValueError(f"{path}: {member} claims {info.file_size} bytes, too many for WikiText-2")
            with zip_member_errors(path, member):
                data = archive.read(info)
    else:
        data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None
    if not text.strip():
        raise ValueError(f"{path}: the WikiText text is empty")
    return text


# -- the offline cloze task -----------------------------------------------------------------------
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")
_WORD = re.compile(r"[A-Za-z]{4,}")


def make_cloze_items(text: str, n_items: int, seed: int = 0, n_choices: int = 4) -> list[MultipleChoice]:
    """Cloze questions from a text: "<sentence without its last word>" -> the word, or a distractor.

    Sentences are the runs of text ending in . ! or ? on one line, with 6 to 40 words, whose last
    word is 4+ ASCII letters followed by the end mark. The distractors are other such last words of
    the text (distinct from the answer, any case), so every choice is a plausible sentence end.
    ``np.random.default_rng(seed)`` picks the sentences (in text order) and the distractors and
    shuffles the choices: the same text and seed give the same items everywhere.
    """
    candidates = []
    for match in _SENTENCE.finditer(text):
        sentence = " ".join(match.group().split())
        words = sentence.split(" ")
        last = words[-1][:-1]
        if 6 <= len(words) <= 40 and _WORD.fullmatch(last):
            candidates.append((" ".join(words[:-1]), last))
    vocabulary = sorted({last for _, last in candidates})
    if len(vocabulary) < n_choices:
        raise ValueError(f"the text has too few distinct sentence-final words ({len(vocabulary)}) for "
                         f"{n_choices}-way cloze questions")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(candidates), size=min(n_items, len(candidates)), replace=False))
    items = []
    for i in picked:
        query, answer = candidates[i]
        distractors: list[str] = []
        while len(distractors) < n_choices - 1:
            word = vocabulary[int(rng.integers(len(vocabulary)))]
            if word.lower() != answer.lower() and word.lower() not in {d.lower() for d in distractors}:
                distractors.append(word)
        gold = int(rng.integers(n_choices))
        choices = distractors[:gold] + [answer] + distractors[gold:]
        items.append(MultipleChoice(query, tuple(choices), gold))
    return items


def stdlib_cloze(data_dir: str | Path = "data", val_fraction: float = 0.1, n_items: int = CLOZE_ITEMS,
                 seed: int = 0, with_train: bool = True) -> tuple[list[MultipleChoice], list[MultipleChoice]]:
    """(test items, training items) of the offline task: cloze questions from the last
    ``val_fraction`` of the ``stdlib-docs`` corpus (the part ``numpy-gpt pretrain`` holds out for
    validation by default) and, for few-shot prompts (``with_train``), 1,000 from the rest."""
    from numpy_gpt.corpora import load_corpus
    text = load_corpus("stdlib-docs", data_dir)
    cut = int(len(text) * (1.0 - val_fraction))
    train = make_cloze_items(text[:cut], 1000, seed + 1) if with_train else []
    return make_cloze_items(text[cut:], n_items, seed), train


# -- SMS spam as a k-shot classification task ---------------------------------------------------
SPAM_CHOICES = ("ham", "spam")


def spam_items(texts: Sequence[str], labels: Sequence[int]) -> list[MultipleChoice]:
    """Chapter 6's messages as two-way items: "Message: <text>\\nLabel:" -> " ham" / " spam"."""
    return [MultipleChoice(f"Message: {' '.join(text.split())}\nLabel:", SPAM_CHOICES, int(label))
            for text, label in zip(texts, labels, strict=True)]


def sms_spam(data_dir: str | Path = "data", spam_file: str | Path | None = None
             ) -> tuple[list[MultipleChoice], list[MultipleChoice]]:
    """(test items, training items) from the book's balanced 70/10/20 split (seed 123), the very
    test split ``numpy-gpt finetune-spam`` reports its accuracy on."""
    from numpy_gpt.finetune.data import prepare_spam_data, read_spam_csv
    paths = prepare_spam_data(Path(data_dir) / "sms_spam_collection", source=spam_file)
    return spam_items(*read_spam_csv(paths["test"])), spam_items(*read_spam_csv(paths["train"]))


# -- running a task ------------------------------------------------------------------------------
@dataclass
class TaskResult:
    """What one task measured: rows of (metric, value, stderr or nan), the item count and timing."""

    task: str
    shots: int
    metrics: list[tuple[str, float, float]]
    items: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else math.inf


Progress = Callable[[int, int], None]           # (items done, items in all)


def evaluate_multiple_choice(model, tokenizer, items: Sequence[MultipleChoice], *,
                             train: Sequence[MultipleChoice] = (), shots: int = 0, seed: int = DEFAULT_SEED,
                             same_pool: bool = False, progress: Progress | None = None,
                             batch_size: int = 32, details: dict[str, Any] | None = None
                             ) -> dict[str, tuple[float, float]]:
    """acc and acc_norm (mean, stderr) over ``items``, and ``majority``, the score of always giving
    the most common right answer; each prompt has ``shots`` solved examples of ``train`` before it
    (``same_pool``: train is the evaluated list, so an item never shows itself).

    An answer is the choice's text when every item offers the same choices (class labels such as
    ham / spam), else its position. ``details``, if given, receives per item ``shots_kept`` (how
    many shots the model's window holds whole, ``shots_in_window``) and the ``answers`` acc and
    acc_norm gave."""
    window = int(model.cfg["context_length"])
    labels = len({item.choices for item in items}) == 1
    scores: dict[str, list[float]] = {"acc": [], "acc_norm": []}
    answers: dict[str, list[str | int]] = {"acc": [], "acc_norm": []}
    golds, kept = [], []
    for index, item in enumerate(items):
        chosen = sample_shots(len(train), shots, seed, index, exclude=index if same_pool else None)
        shown = [(train[j].query, train[j].choices[train[j].gold]) for j in chosen]
        context = fewshot_context(shown, item.query)
        requests = [encode_pair(tokenizer, context, " " + choice) for choice in item.choices]
        longest = max(len(cont) for _, cont in requests)
        fits = len(requests[0][0]) + longest <= window + 1
        kept.append(len(shown) if fits else shots_in_window(tokenizer, shown, item.query, longest, window))
        lls = [ll for ll, _ in loglikelihood(model, requests, batch_size=batch_size)]
        for name, pick in zip(("acc", "acc_norm"), choice_picks(lls, item.choices), strict=True):
            scores[name].append(float(pick == item.gold))
            answers[name].append(item.choices[pick] if labels else pick)
        golds.append(item.choices[item.gold] if labels else item.gold)
        if progress is not None:
            progress(index + 1, len(items))
    if details is not None:
        details.update(shots_kept=kept, answers=answers)
    majority = Counter(golds).most_common(1)[0][1] / len(golds) if golds else math.nan
    return {**{name: mean_and_stderr(values) for name, values in scores.items()},
            "majority": (majority, math.nan)}


def multiple_choice_warnings(label: str, shots: int, window: int, details: dict[str, Any]) -> list[str]:
    """One line per thing a score hides: shots the window cut (the harness cuts them silently), and
    a model that gave one answer to every item (its score is that answer's share)."""
    warnings, kept = [], details["shots_kept"]
    if shots and min(kept, default=shots) < shots:
        cut = sum(k < shots for k in kept)
        warnings.append(f"{label}: {np.mean(kept):.1f} of {shots} shots fit the model's {window}-token "
                        f"window on average; {cut} of {len(kept)} prompts lost shots, cut from the left")
    for metric, picked in details["answers"].items():
        if len(picked) > 1 and len(set(picked)) == 1:
            answer = picked[0] if isinstance(picked[0], str) else f"choice {picked[0]}"
            warnings.append(f"{label}: {metric} gives the same answer ({answer!r}) to all {len(picked)} "
                            f"items: its score is that answer's share, as the majority row shows")
    return warnings


def evaluate_lambada(model, tokenizer, items: Sequence[tuple[str, str]], *,
                     progress: Progress | None = None, chunk: int = 16) -> dict[str, tuple[float, float]]:
    """acc (the whole last word is the greedy continuation) and perplexity exp(-mean log p(word))."""
    lls, greedy = [], []
    for start in range(0, len(items), chunk):
        part = items[start:start + chunk]
        for ll, is_greedy in loglikelihood(model, [encode_pair(tokenizer, c, t) for c, t in part]):
            lls.append(ll)
            greedy.append(float(is_greedy))
        if progress is not None:
            progress(start + len(part), len(items))
    return {"acc": mean_and_stderr(greedy), "perplexity": (math.exp(-float(np.mean(lls))), math.nan)}


def _no_shots(task: str, shots: int) -> None:
    if shots:
        raise ValueError(f"{task} has no training split to draw shots from; use --shots 0 for it")


def run_task(name: str, model, tokenizer, *, shots: int = 0, limit: int | None = None,
             seed: int = DEFAULT_SEED, data_dir: str | Path = "data", stride: int | None = None,
             spam_file: str | Path | None = None, progress: Progress | None = None) -> TaskResult:
    """Load task ``name``'s data (downloading it once if needed), score the model, time it."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASK_NAMES)}")
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    if name == "wikitext":
        _no_shots(name, shots)
        text = read_wikitext(fetch("wikitext-2", data_dir))
        ids = tokenizer.encode(text)
        if limit is not None:
            ids = ids[:limit]
            text = tokenizer.decode(ids)
        result = perplexity(model, ids, stride, byte_length=len(text.encode("utf-8")), progress=progress)
        extra = {k: result[k] for k in ("windows", "stride", "context_length", "bytes")}
        metrics = [("perplexity", result["perplexity"], math.nan), ("nll", result["nll"], math.nan),
                   ("bits_per_byte", result["bits_per_byte"], math.nan)]
        return TaskResult(name, shots, metrics, int(result["tokens"]), time.perf_counter() - started,
                          {**extra, "unit": "tokens"})
    if name == "lambada":
        _no_shots(name, shots)
        items = read_task_file("lambada", data_dir, read_lambada)[:limit]
        refuse_special_tokens(tokenizer, items, Path(data_dir) / EVAL_FILES["lambada"].filename)
        scores = evaluate_lambada(model, tokenizer, items, progress=progress)
    else:
        if name == "hellaswag":
            items = read_task_file("hellaswag-val", data_dir, read_hellaswag)[:limit]
            train = read_task_file("hellaswag-train", data_dir, read_hellaswag) if shots else []
            sources = [Path(data_dir) / EVAL_FILES[f].filename for f in ("hellaswag-val", "hellaswag-train")]
        elif name == "sms-spam":
            items, train = sms_spam(data_dir, spam_file)
            items = items[:limit]
            sources = [Path(data_dir) / "sms_spam_collection" / f"{part}.csv" for part in ("test", "train")]
        else:
            items, train = stdlib_cloze(data_dir, with_train=shots > 0)
            items = items[:limit]
            sources = [f"the stdlib-docs corpus's {part} cloze items" for part in ("test", "training")]
        refuse_special_tokens(tokenizer, items, sources[0])
        refuse_special_tokens(tokenizer, train, sources[1])
        details: dict[str, Any] = {}
        scores = evaluate_multiple_choice(model, tokenizer, items, train=train, shots=shots, seed=seed,
                                          progress=progress, details=details)
        window = int(model.cfg["context_length"])
        extra = {"shots_kept": float(np.mean(details["shots_kept"])) if items else math.nan,
                 "warnings": multiple_choice_warnings(f"{name} ({shots}-shot)", shots, window, details)}
    metrics = [(metric, mean, stderr) for metric, (mean, stderr) in scores.items()]
    return TaskResult(name, shots, metrics, len(items), time.perf_counter() - started, extra)
