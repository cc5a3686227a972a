"""Scoring the responses of an instruction-tuned model (section 7.8 of the book).

Two ways to score a test set whose entries carry the model's answer in ``model_response``:

* **An LLM judge** (the book's way): a larger model served by Ollama (``http://localhost:11434``) is
  asked, for each entry, to rate the response against the reference ``output`` on a 0-100 scale.
  ``query_model`` sends one chat request over HTTP and joins the streamed answer;
  ``generate_model_scores`` builds the book's judging prompt per entry and parses the integers.
  ``ollama_is_running`` checks for a server first, so callers can fall back cleanly.
* **Offline metrics** that need no server: exact match and token-level F1 between the response and
  the reference, after lower-casing, dropping punctuation and collapsing whitespace
  (``evaluate_responses``). They reward only literal agreement, so they understate a good paraphrase;
  they are a reproducible floor, not a replacement for a judge.

An offline score means little alone: the book's test answers share many words with their
instructions, so repeating the instruction and input scores an F1 of about 48 % there, more than a
small tuned model. ``baseline_responses`` builds the trivial answers to print beside every score (echo
the instruction and input; the most common training answer), ``score_table`` lays them out with the
untuned and the tuned model, and ``METRIC_NOTE`` says what the numbers can and cannot show.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests

from numpy_gpt.finetune.instruct import format_input

OLLAMA_URL = "http://localhost:11434/api/chat"


class JudgeError(RuntimeError):
    """The judge server could not be reached or answered something that is not a chat response."""


def ollama_is_running(url: str = OLLAMA_URL, timeout: float = 2.0) -> bool:
    """True when an Ollama server answers at the host and port of ``url`` (its root says
    "Ollama is running")."""
    parts = urlsplit(url)
    try:
        response = requests.get(urlunsplit((parts.scheme, parts.netloc, "/", "", "")), timeout=timeout)
    except requests.RequestException:
        return False
    return response.ok


def query_model(prompt: str, model: str = "llama3", url: str = OLLAMA_URL, *, seed: int = 123,
                temperature: float = 0.0, num_ctx: int = 2048, timeout: float = 300.0) -> str:
    """Send ``prompt`` as one user message to Ollama's chat endpoint and return the reply text.

    The request asks for deterministic decoding (``seed``, ``temperature`` in ``options``). Ollama
    streams its answer as one JSON object a line, each with a piece of ``message.content``; a
    non-streamed reply is a single such line. Errors (no server, HTTP error, an ``error`` field,
    a line that is not JSON) raise ``JudgeError`` with the reason.
    """
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"seed": seed, "temperature": temperature, "num_ctx": num_ctx},
    }
    try:
        with requests.post(url, json=payload, stream=True, timeout=timeout) as response:
            if not response.ok:
                raise JudgeError(f"the judge at {url} answered HTTP {response.status_code}: "
                                 f"{response.text[:200]}")
            pieces = []
            for line in response.iter_lines():
                if not line.strip():
                    continue
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    raise JudgeError(f"the judge at {url} sent a line that is not JSON: "
                                     f"{line[:200]!r}") from None
                if not isinstance(message, dict):
                    raise JudgeError(f"the judge at {url} sent {message!r} instead of a chat response")
                if "error" in message:
                    raise JudgeError(f"the judge at {url} reported an error: {message['error']}")
                pieces.append(message.get("message", {}).get("content", ""))
    except requests.RequestException as err:
        raise JudgeError(f"cannot reach the judge at {url} ({err}); start it with `ollama serve` and "
                         f"`ollama pull {model}`, or use the offline metrics") from None
    return "".join(pieces)


def judge_prompt(entry: dict, json_key: str = "model_response") -> str:
    """The book's judging prompt: the task, the reference answer and the model's answer."""
    return (f"Given the input `{format_input(entry)}` "
            f"and correct output `{entry['output']}`, "
            f"score the model response `{entry[json_key]}`"
            f" on a scale from 0 to 100, where 100 is the best score. "
            f"Respond with the integer number only.")


def parse_score(reply: str) -> int | None:
    """The judge's 0-100 score from its reply ("85", " 85.\\n", "Score: 85"), or None if there is none."""
    match = re.search(r"\d+(?:\.\d+)?", reply)
    if match is None:
        return None
    score = round(float(match.group()))
    return score if 0 <= score <= 100 else None


def generate_model_scores(json_data: Sequence[dict], json_key: str = "model_response", model: str = "llama3",
                          url: str = OLLAMA_URL) -> list[int]:
    """Ask the judge to score every entry's ``json_key`` response; an empty response scores 0 without
    a request. Replies without a usable score are reported and left out, as in the book."""
    scores = []
    for i, entry in enumerate(json_data):
        if not entry[json_key].strip():
            scores.append(0)
            continue
        reply = query_model(judge_prompt(entry, json_key), model, url)
        score = parse_score(reply)
        if score is None:
            print(f"entry {i}: could not read a 0-100 score from the judge's reply {reply[:80]!r}")
            continue
        scores.append(score)
    return scores


# -- offline metrics ---------------------------------------------------------------------------
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, remove ASCII punctuation and collapse whitespace."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def exact_match(prediction: str, reference: str) -> bool:
    """True when the normalized prediction equals the normalized reference."""
    return normalize_answer(prediction) == normalize_answer(reference)


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the normalized words shared by prediction and reference (counted with multiplicity).

    precision = shared / len(prediction words), recall = shared / len(reference words),
    F1 = 2 P R / (P + R); two empty answers score 1, one empty answer scores 0.
    """
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    shared = sum((Counter(pred) & Counter(ref)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(pred), shared / len(ref)
    return 2 * precision * recall / (precision + recall)


def evaluate_responses(entries: Sequence[dict], json_key: str = "model_response") -> dict[str, float]:
    """Mean exact match and token F1 of ``entry[json_key]`` against ``entry["output"]``, as fractions
    in [0, 1], with the number of entries ``n``."""
    if not entries:
        raise ValueError("evaluate_responses needs at least one entry")
    missing = [i for i, e in enumerate(entries) if json_key not in e or "output" not in e]
    if missing:
        raise ValueError(f"entries {missing[:10]} lack '{json_key}' or 'output'; generate the responses "
                         f"first")
    em = sum(exact_match(e[json_key], e["output"]) for e in entries) / len(entries)
    f1 = sum(token_f1(e[json_key], e["output"]) for e in entries) / len(entries)
    return {"n": len(entries), "exact_match": em, "f1": f1}


# -- baselines ---------------------------------------------------------------------------------
METRIC_NOTE = (
    "What these scores show: exact match and word-overlap F1 count the words an answer shares with "
    "the one reference answer. They miss a correct paraphrase and reward copying the question's words, "
    "so a model has learned something only where it beats every baseline above; they say nothing "
    "about whether an answer is true or fluent. The response-token loss (perplexity) measures how "
    "likely the reference answers are under the model and improves before generated answers do. "
    "Answer quality is what the book's LLM judge scores (--judge ollama, with an Ollama server).")


def echo_answer(entry: dict) -> str:
    """The instruction and its input, repeated as the answer (the echo baseline)."""
    return f"{entry['instruction']} {entry.get('input', '')}".strip()


def most_common_answer(train_entries: Sequence[dict]) -> tuple[str, int]:
    """The most frequent ``output`` of the training entries (the first of the most frequent on ties)
    and how many entries have it."""
    if not train_entries:
        raise ValueError("most_common_answer needs at least one training entry")
    answer, count = Counter(entry["output"] for entry in train_entries).most_common(1)[0]
    return answer, count


def constant_answer(train_entries: Sequence[dict], max_words: int = 8) -> str:
    """The constant-answer baseline, fitted on the training entries: of the most frequent first
    n words of the training answers (n = 1 ... ``max_words``), the one whose mean token F1 against
    every training answer is highest ("The sentence is", say). One answer for every question: what a
    model that learned only the answers' usual opening would score."""
    if not train_entries:
        raise ValueError("constant_answer needs at least one training entry")
    candidates = []
    for n in range(1, max_words + 1):
        openings = Counter(" ".join(e["output"].split()[:n]) for e in train_entries if e["output"].split())
        if openings:
            candidates.append(openings.most_common(1)[0][0])
    if not candidates:
        return ""
    return max(dict.fromkeys(candidates),
               key=lambda c: sum(token_f1(c, e["output"]) for e in train_entries))


def baseline_responses(train_entries: Sequence[dict], test_entries: Sequence[dict]
                       ) -> dict[str, list[dict]]:
    """Copies of the test entries with trivial answers in ``model_response``: ``"echo"`` repeats the
    instruction and input, ``"constant_answer"`` gives every entry the ``constant_answer`` fitted on
    the training entries, and ``"most_common_answer"`` the most frequent training answer, only when
    some answer occurs more than once (when every answer differs, "the most common" is an arbitrary
    one, and it is left out)."""
    baselines = {"echo": [{**e, "model_response": echo_answer(e)} for e in test_entries]}
    constant = constant_answer(train_entries)
    baselines["constant_answer"] = [{**e, "model_response": constant} for e in test_entries]
    common, count = most_common_answer(train_entries)
    if count > 1:
        baselines["most_common_answer"] = [{**e, "model_response": common} for e in test_entries]
    return baselines


def score_table(scores: Mapping[str, Mapping[str, float]]) -> str:
    """One line per answer source (its label as key): exact match and F1 in percent
    (``evaluate_responses`` results)."""
    width = max(len(name) for name in scores) + 2
    lines = [f"{'':<{width}}{'exact match':>12}{'F1':>9}"]
    lines += [f"{name:<{width}}{s['exact_match'] * 100:>11.1f}%{s['f1'] * 100:>8.1f}%"
              for name, s in scores.items()]
    return "\n".join(lines)
