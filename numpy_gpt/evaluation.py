"""Evaluation: windowed perplexity, log-likelihood scoring and few-shot prompts (after chapter 5).

Chapter 5 of the book judges a model by its validation loss. Papers and leaderboards ask three
further questions, and this module answers each the way the field does, so that a number printed
here can sit next to a published one:

* **How well does it predict a long text?** ``perplexity``: exp of the mean negative log-likelihood
  per token, computed with the sliding window that transformers documents for GPT-2 ("Perplexity of
  fixed-length models"). A window holds ``context_length`` tokens and moves by ``stride``; the
  targets of a window are its tokens that no earlier window scored, never its first token (nothing
  before it in the window predicts it). With ``stride = context_length`` the windows do not overlap;
  a smaller stride gives every scored token more left context.
* **Which continuation does it prefer?** ``loglikelihood``: for (context, continuation) token-id
  pairs, the sum over the continuation of log p(token | everything before it), and whether greedy
  decoding would have produced exactly the continuation. These are lm-evaluation-harness's
  ``loglikelihood`` requests; multiple-choice tasks score each choice this way and pick the largest
  (``acc``) or the largest per character of the choice (``acc_norm``).
* **Can it do a task from examples alone?** ``fewshot_context`` builds the k-shot prompt: k solved
  examples, then the question, separated as the harness separates them.

Everything here runs in eval mode (no dropout) under ``no_grad``: no activation is kept for a
backward pass. Choices that share
a context share its computation: the context is run once into a KV cache (``GPTModel.new_kv_cache``),
the cache is copied for each choice, and all choices run as one batch on top of it.

The tasks that use these pieces (HellaSwag, LAMBADA, WikiText-2, the offline cloze task, SMS spam)
are in ``eval_tasks.py``; the command is ``numpy-gpt evaluate`` (``cli/evaluate.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from numpy_gpt.nn.loss import log_softmax_at
from numpy_gpt.nn.module import inference

LN2 = math.log(2.0)
# How the harness joins a prompt: "<query><TARGET_DELIMITER><answer>" for one example and
# FEWSHOT_DELIMITER between examples.
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
LOGITS_BUDGET = 1 << 26           # floats of logits per forward pass (256 MB in float32)


def _as_ids(token_ids, what: str) -> np.ndarray:
    """A 1-D int64 copy of ``token_ids`` or a ValueError naming ``what``."""
    ids = np.asarray(token_ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise ValueError(f"{what} must be a 1-D sequence of integer token ids, got shape {ids.shape} "
                         f"and dtype {ids.dtype}")
    return ids.astype(np.int64)


def target_logprobs(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log p(target) and "target is the argmax" at every position.

    logits (B, T, V), targets (B, T) int -> logprobs (B, T), greedy (B, T) bool, where
    log p(t) = logits[t] - logsumexp(logits) (``nn.loss.log_softmax_at``, the training loss's own).
    Only the picked entries are kept, never the whole (B, T, V) log-softmax.
    """
    return log_softmax_at(logits, targets), logits.argmax(axis=-1) == targets


# -- perplexity ------------------------------------------------------------------------------------
def sliding_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows of the strided perplexity: (begin, end, first_target) for each.

    Window i covers tokens [begin, end) with begin = i * stride and end = min(begin + window, n);
    its targets are tokens [first_target, end) with first_target = max(end of the previous window,
    begin + 1): the tokens no earlier window scored, never the window's first. The last window is
    the first one that reaches the end of the text.
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"stride must be between 1 and the window ({window}), got {stride}")
    windows, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        first = max(prev_end, begin + 1)
        if first < end:
            windows.append((begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return windows


def perplexity(model, token_ids, stride: int | None = None, *, byte_length: int | None = None,
               batch_size: int | None = None, progress: Callable[[int, int], None] | None = None
               ) -> dict[str, float | int]:
    """Perplexity of a token sequence with the sliding window (see ``sliding_windows``).

    Args:
        model: a GPTModel; the window is its ``context_length``.
        token_ids: the whole text's ids, 1-D.
        stride: how far the window moves (None: the window, no overlap).
        byte_length: the text's length in UTF-8 bytes; adds ``bits_per_byte``.
        batch_size: windows of the same length computed together (default: as many as keep the
            logits (B, T, V) under ``LOGITS_BUDGET`` floats; 1 for GPT-2 124M's 1024 x 50257).
        progress: called with (windows done, windows in all) after each batch.

    Returns:
        ``{"perplexity": exp(nll), "nll": mean nats per scored token, "tokens": tokens scored,
        "windows", "stride", "context_length"}`` and, with ``byte_length``,
        ``"bits_per_byte"`` = (sum of nll) / (ln 2 * bytes) and ``"bytes"``.
    """
    ids = _as_ids(token_ids, "token_ids")
    window = int(model.cfg["context_length"])
    stride = window if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= window:
        raise ValueError(f"stride must be an integer between 1 and the context length ({window}), "
                         f"got {stride!r}")
    if len(ids) < 2:
        raise ValueError(f"perplexity needs at least 2 tokens (the first is only context), got {len(ids)}")
    if byte_length is not None and byte_length < 1:
        raise ValueError(f"byte_length must be positive, got {byte_length}")
    if batch_size is None:
        batch_size = max(1, LOGITS_BUDGET // (window * int(model.cfg["vocab_size"])))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    windows = sliding_windows(len(ids), window, int(stride))
    nll_sum, scored, done = 0.0, 0, 0
    by_length: dict[int, list[tuple[int, int, int]]] = {}
    for w in windows:
        by_length.setdefault(w[1] - w[0], []).append(w)
    with inference(model):
        for group in by_length.values():
            for start in range(0, len(group), batch_size):
                batch = group[start:start + batch_size]
                x = np.stack([ids[begin:end] for begin, end, _ in batch])          # (B, T)
                logits = model(x)                                                  # (B, T, V)
                # Position p's logits predict token p + 1: targets x[:, 1:] from logits[:, :-1].
                logp, _ = target_logprobs(logits[:, :-1], x[:, 1:])                # (B, T-1)
                for row, (begin, _, first) in enumerate(batch):
                    scored_logp = logp[row, first - begin - 1:]
                    nll_sum -= float(scored_logp.sum(dtype=np.float64))
                    scored += scored_logp.size
                done += len(batch)
                if progress is not None:
                    progress(done, len(windows))
    nll = nll_sum / scored
    result: dict[str, float | int] = {"perplexity": math.exp(nll), "nll": nll, "tokens": scored,
                                      "windows": len(windows), "stride": int(stride),
                                      "context_length": window}
    if byte_length is not None:
        result["bits_per_byte"] = nll_sum / (LN2 * byte_length)
        result["bytes"] = int(byte_length)
    return result


# -- log-likelihood of continuations ---------------------------------------------------------------
def _expand_cache(model, prefix_cache: list, batch_size: int, max_len: int) -> list:
    """A KV cache of ``batch_size`` rows, each a copy of the one-row ``prefix_cache``."""
    cache = model.new_kv_cache(batch_size, max_len)
    for big, small in zip(cache, prefix_cache, strict=True):
        n = small.length
        big.keys[:, :, :n] = small.keys[:, :, :n]          # (1, H, n, hd) broadcast to (B, H, n, hd)
        big.values[:, :, :n] = small.values[:, :, :n]
        big.length = n
    return cache


def loglikelihood(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                  batch_size: int = 32) -> list[tuple[float, bool]]:
    """Score continuations: for each (context_ids, continuation_ids) the pair
    (sum_i log p(cont_i | context, cont_<i), whether greedy decoding gives exactly cont).

    As lm-evaluation-harness: the model reads (context + continuation)[-(window + 1):][:-1], so a
    context too long for the window loses its oldest tokens; the continuation must fit the window.
    Requests whose (truncated) context is the same form one group: the context minus its last token
    runs once into a KV cache, and the choices run together on copies of it as one batch of rows
    [last context token, cont_0, ..., cont_{n-2}], right-padded (padding comes after the scored
    positions, so causal attention never lets it change them); at most ``batch_size`` rows, and no
    more than keep the logits under ``LOGITS_BUDGET`` floats, run at once. Results come back in
    request order.
    """
    window, vocab_size = int(model.cfg["context_length"]), int(model.cfg["vocab_size"])
    groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for i, (context, continuation) in enumerate(requests):
        ctx = _as_ids(context, f"requests[{i}] context")
        cont = _as_ids(continuation, f"requests[{i}] continuation")
        if len(cont) == 0:
            raise ValueError(f"requests[{i}]: the continuation is empty; there is nothing to score")
        if len(ctx) == 0:
            raise ValueError(f"requests[{i}]: the context is empty; start it with a token such as "
                             f"<|endoftext|>, as the harness does")
        if len(cont) > window:
            raise ValueError(f"requests[{i}]: the continuation has {len(cont)} tokens, more than the "
                             f"model's context length {window}")
        kept = max(0, len(ctx) + len(cont) - (window + 1))         # oldest context tokens dropped
        groups.setdefault(tuple(ctx[kept:].tolist()), []).append((i, cont))
    results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
    with inference(model):
        for ctx_key, members in groups.items():
            prefix = np.asarray(ctx_key[:-1], dtype=np.int64)
            longest = max(len(cont) for _, cont in members)
            rows_per_pass = min(batch_size, max(1, LOGITS_BUDGET // (longest * vocab_size)))
            prefix_cache = None
            if len(prefix):
                prefix_cache = model.new_kv_cache(1, len(prefix))
                model(prefix[None], kv_cache=prefix_cache)               # the shared context, once
            for start in range(0, len(members), rows_per_pass):
                chunk = members[start:start + rows_per_pass]
                rows = np.zeros((len(chunk), longest), dtype=np.int64)    # (B, T) right-padded
                targets = np.zeros_like(rows)
                for r, (_, cont) in enumerate(chunk):
                    rows[r, 0] = ctx_key[-1]
                    rows[r, 1:len(cont)] = cont[:-1]
                    targets[r, :len(cont)] = cont
                if prefix_cache is None:
                    logits = model(rows)                                  # (B, T, V)
                else:
                    cache = _expand_cache(model, prefix_cache, len(chunk), len(prefix) + longest)
                    logits = model(rows, kv_cache=cache)                  # (B, T, V)
                logp, greedy = target_logprobs(logits, targets)           # (B, T) each
                for r, (i, cont) in enumerate(chunk):
                    n = len(cont)
                    results[i] = (float(logp[r, :n].sum(dtype=np.float64)), bool(greedy[r, :n].all()))
    return results


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) as the harness makes them: trailing spaces of the
    context move to the continuation, the whole text is encoded once, and the continuation is what
    follows the context's own encoding. So " Paris" after "The capital is" stays GPT-2's one
    token " Paris", as the model would have seen it in running text."""
    stripped = context.rstrip()
    if stripped != context:
        continuation = context[len(stripped):] + continuation
        context = stripped
    context_ids = list(tokenizer.encode(context))
    whole = list(tokenizer.encode(context + continuation))
    return context_ids, whole[len(context_ids):]


# -- multiple choice and metrics -------------------------------------------------------------------
@dataclass(frozen=True)
class MultipleChoice:
    """One multiple-choice item: the prompt, its choices (text without the leading delimiter), the
    index of the right one."""

    query: str
    choices: tuple[str, ...]
    gold: int


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error, sample std (n - 1) / sqrt(n) as the harness reports it; the
    stderr is nan for fewer than two values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan
    return float(x.mean()), float(x.std(ddof=1) / math.sqrt(x.size))


def choice_scores(loglikelihoods: Sequence[float], choices: Sequence[str], gold: int) -> dict[str, float]:
    """acc and acc_norm of one item: 1.0 if the right choice has the largest log-likelihood (acc),
    or the largest log-likelihood per character of the choice (acc_norm, as the harness divides by
    ``len(choice)``, which equals the UTF-8 byte count for ASCII text), else 0.0.

    An empty choice has length 0, and the harness divides by it as NumPy does: its log-likelihood
    (that of the delimiter " ", below 0) over 0 is -inf, so it is never picked by acc_norm (and a
    log-likelihood of exactly 0 gives nan, which ``np.argmax`` picks first). Ties go to the first."""
    pick, pick_norm = choice_picks(loglikelihoods, choices)
    return {"acc": float(pick == gold), "acc_norm": float(pick_norm == gold)}


def choice_picks(loglikelihoods: Sequence[float], choices: Sequence[str]) -> tuple[int, int]:
    """The indices acc and acc_norm pick: the largest log-likelihood, and the largest per character
    (``choice_scores`` says how an empty choice is divided)."""
    lls = np.asarray(loglikelihoods, dtype=np.float64)
    lengths = np.asarray([len(c) for c in choices], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_char = lls / lengths
    return int(np.argmax(lls)), int(np.argmax(per_char))


# -- few-shot prompts ------------------------------------------------------------------------------
def sample_shots(pool_size: int, k: int, seed: int, item_index: int, exclude: int | None = None) -> list[int]:
    """Indices of the k examples shown before item ``item_index``: a permutation of the pool drawn
    from ``np.random.default_rng([seed, item_index])``, its first k (skipping ``exclude``, the item
    itself when the pool is the evaluated split). The same seed gives every model the same shots,
    in the same order."""
    if k < 0:
        raise ValueError(f"the number of shots must be >= 0, got {k}")
    available = pool_size - (exclude is not None and 0 <= exclude < pool_size)
    if k > available:
        raise ValueError(f"{k} shots asked for but the training split has only {available} examples")
    order = np.random.default_rng([seed, item_index]).permutation(pool_size)
    return [int(j) for j in order if j != exclude][:k]


def fewshot_context(shots: Sequence[tuple[str, str]], query: str, *, description: str = "",
                    target_delimiter: str = TARGET_DELIMITER,
                    fewshot_delimiter: str = FEWSHOT_DELIMITER) -> str:
    """The k-shot prompt, as lm-evaluation-harness lays it out:

        description + shot_1 + FD + ... + shot_k + FD + query

    with shot_i = question_i + TD + answer_i (TD = " ", FD = "\\n\\n"). The model then scores
    TD + choice after it. With no shots it is just ``description + query``.
    """
    examples = "".join(q + target_delimiter + a + fewshot_delimiter for q, a in shots)
    return description + examples + query


def shots_in_window(tokenizer, shots: Sequence[tuple[str, str]], query: str, continuation_tokens: int,
                    window: int) -> int:
    """How many of the k ``shots`` the model reads whole: the largest m such that the prompt of the
    last m shots and the query, with a continuation of ``continuation_tokens`` tokens, fits the
    ``window`` (``loglikelihood`` reads the last window + 1 tokens, so a long prompt loses its
    first shots). 0 when not even the query and the continuation fit with one shot."""
    for m in range(len(shots), 0, -1):
        context = fewshot_context(shots[len(shots) - m:], query)
        if len(tokenizer.encode(context)) + continuation_tokens <= window + 1:
            return m
    return 0
