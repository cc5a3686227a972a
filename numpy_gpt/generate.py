"""Text generation: greedy decoding, temperature, top-k, top-p, and a KV cache (chapters 4-5).

The book grows ``generate`` in two steps: ``generate_text_simple`` (chapter 4) always takes the most
likely next token; chapter 5 adds temperature scaling and top-k filtering. This module adds nucleus
(top-p) sampling, stopping at an end-of-text id, and a KV cache (the book's bonus material):

* ``top_k_filter``, ``top_p_filter`` and ``sample_next_token`` are pure functions on arrays of logits
  ``(B, V)``: easy to read and to test on their own.
* ``generate`` runs the model. Without a cache it recomputes the whole (cropped) sequence for every
  new token, exactly as in the book. With ``use_cache=True`` it feeds the prompt once ("prefill"),
  then one token per step, each attending to the keys and values cached for the earlier positions.
* ``generate_steps`` is the same loop one step at a time: it yields each step's next-token logits
  and the token picked from them, so a caller can watch the choice being made (``numpy-gpt
  explore`` draws each step's probabilities, ``sampling_logits`` says which ones a token is drawn
  from). ``generate`` is those steps joined.

GPT-2 has *absolute* positional embeddings, so a cache cannot slide: once the sequence fills the
context window, the next window starts one token later and every cached token would sit at a new
position. From then on each step recomputes the last ``context_size`` tokens in one forward pass
(a re-prefill), which costs what an uncached step costs. Both paths give the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from numpy_gpt.nn.module import no_grad
from numpy_gpt.nn.softmax import softmax


def _check_top_k(top_k: int) -> None:
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer (or None for no top-k), got {top_k!r}")


def _check_top_p(top_p: float) -> None:
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float, np.floating)) or not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be a number in (0, 1] (or None for no top-p), got {top_p!r}")


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)


def top_k_filter(logits: np.ndarray, top_k: int) -> np.ndarray:
    """Keep the ``top_k`` largest logits of each row (B, V); set the rest to ``-inf``.

    As in the book, a logit equal to the k-th largest is kept, so ties may keep a few more than k.
    """
    _check_top_k(top_k)
    vocab_size = logits.shape[-1]
    if top_k >= vocab_size:
        return logits
    kth_largest = np.partition(logits, vocab_size - top_k, axis=-1)[..., vocab_size - top_k, None]
    return np.where(logits < kth_largest, -np.inf, logits).astype(logits.dtype, copy=False)


def top_p_filter(logits: np.ndarray, top_p: float) -> np.ndarray:
    """Nucleus filtering: keep, per row (B, V), the smallest set of most likely tokens whose total
    probability reaches ``top_p``; set the rest to ``-inf``.

    A token is kept when the probability of the tokens ranked above it is still below ``top_p``,
    so the most likely token is always kept.
    """
    _check_top_p(top_p)
    if top_p == 1.0:
        return logits
    order = np.argsort(-logits, axis=-1, kind="stable")               # (B, V) most likely first
    sorted_probs = np.take_along_axis(softmax(logits), order, axis=-1)
    cumulative = np.cumsum(sorted_probs, axis=-1)                     # (B, V)
    keep_sorted = np.ones_like(cumulative, dtype=bool)
    keep_sorted[..., 1:] = cumulative[..., :-1] < top_p                # mass ranked above < top_p
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf).astype(logits.dtype, copy=False)


def sampling_logits(logits: np.ndarray, temperature: float, top_k: int | None = None,
                    top_p: float | None = None) -> np.ndarray:
    """The logits (B, V) a sampled token is drawn from: divided by ``temperature`` (> 0), then
    filtered by top-k, then by top-p (a dropped token's logit is ``-inf``). Their softmax is the
    distribution ``sample_next_token`` draws from."""
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        raise ValueError("sampling_logits needs a temperature > 0: at 0, decoding is greedy (argmax)")
    logits = logits / np.asarray(temperature, dtype=logits.dtype)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def sample_next_token(logits: np.ndarray, rng: np.random.Generator, temperature: float = 0.0,
                      top_k: int | None = None, top_p: float | None = None) -> np.ndarray:
    """Pick one token id per row from next-token logits (B, V) -> (B,) int64.

    ``temperature == 0`` is greedy decoding (argmax; top-k and top-p cannot change the argmax).
    Otherwise the logits are divided by the temperature, filtered by top-k then top-p, and one
    token is drawn from the softmax with ``rng``. A filtered-out token has probability 0 and is
    never drawn.
    """
    _check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(axis=-1).astype(np.int64)
    logits = sampling_logits(logits, temperature, top_k, top_p)
    # Inverse-CDF sampling, vectorised over rows. The running sum is taken in float64 so that the
    # last of 50k small probabilities is not lost to rounding. The chosen index is the first whose
    # cumulative sum exceeds u * total; a zero-probability token never raises the sum, so it can
    # never be that first index.
    cdf = np.cumsum(softmax(logits), axis=-1, dtype=np.float64)       # (B, V)
    targets = rng.random(cdf.shape[0]) * cdf[:, -1]                   # (B,)
    return (cdf <= targets[:, None]).sum(axis=-1).astype(np.int64)


def _check_generate_args(model, idx: np.ndarray, max_new_tokens: int, context_size: int) -> None:
    if not isinstance(idx, np.ndarray) or idx.ndim != 2 or not np.issubdtype(idx.dtype, np.integer):
        got = (f"an array of shape {idx.shape} and dtype {idx.dtype}" if isinstance(idx, np.ndarray)
               else type(idx).__name__)
        raise ValueError("idx must be a 2-D integer array (batch, tokens); for a single prompt pass "
                         f"ids[None, :]. Got {got}")
    if idx.shape[0] < 1 or idx.shape[1] < 1:
        raise ValueError(f"idx must hold at least one token per row, got shape {idx.shape}")
    for name, value in (("max_new_tokens", max_new_tokens), ("context_size", context_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    model_context = model.cfg["context_length"]
    if not 1 <= context_size <= model_context:
        raise ValueError(f"context_size must be between 1 and the model's context_length "
                         f"({model_context}), got {context_size}")


def generate_text_simple(model, idx: np.ndarray, max_new_tokens: int, context_size: int) -> np.ndarray:
    """The book's first generation loop (chapter 4.7): greedy, one token at a time, no cache.

    idx (B, T) token ids -> (B, T + max_new_tokens). Each step feeds the last ``context_size``
    tokens, takes the logits of the last position, and appends the most likely token. ``generate``
    below does the same and more (sampling, top-k/top-p, end-of-text, a KV cache).
    """
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -context_size:]                 # (B, <=context_size) what the model sees
        with no_grad():
            logits = model(idx_cond)                      # (B, T, V)
        logits = logits[:, -1, :]                         # (B, V) the next token's scores
        probas = softmax(logits)                          # (B, V); argmax alone would do, as the book says
        idx_next = np.argmax(probas, axis=-1, keepdims=True)   # (B, 1)
        idx = np.concatenate([idx, idx_next], axis=1)     # (B, T + 1)
    return idx


def generate(model, idx: np.ndarray, max_new_tokens: int, context_size: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             use_cache: bool = True, seed: int | None = None) -> np.ndarray:
    """Extend each row of ``idx`` (B, T) by up to ``max_new_tokens`` tokens -> (B, T + n) int64.

    The model sees at most the last ``context_size`` tokens. Decoding is greedy at
    ``temperature=0``, otherwise sampled (see ``sample_next_token``) from
    ``np.random.default_rng(seed)``, so the same seed gives the same text.

    With ``eos_id``, generation stops once every row has produced it. As in the book, the step on
    which the last row(s) produce it is not appended; a row that finished earlier is padded with
    ``eos_id`` while the others go on.

    Runs in evaluation mode (no dropout) and under ``no_grad``; the model's train/eval mode is
    restored afterwards.
    """
    steps = generate_steps(model, idx, max_new_tokens, context_size, temperature, top_k, top_p, eos_id,
                           use_cache, seed)
    return np.concatenate([idx.astype(np.int64), *(next_ids[:, None] for _, next_ids in steps)], axis=1)


def generate_steps(model, idx: np.ndarray, max_new_tokens: int, context_size: int, temperature: float = 0.0,
                   top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
                   use_cache: bool = True, seed: int | None = None
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``generate``, one step at a time: yields ``(logits, next_ids)`` for each token appended, the
    next-token logits (B, V) the model gave and the ids (B,) picked from them (the arguments are
    ``generate``'s, checked before the first step). ``generate`` joins these steps, so they give
    its tokens exactly.

    The model is in evaluation mode while the steps run (its mode is restored when they end or the
    iterator is closed); each forward pass runs under ``no_grad``.
    """
    _check_generate_args(model, idx, max_new_tokens, context_size)
    _check_sampling(temperature, top_k, top_p)
    rng = np.random.default_rng(seed)

    def pick(logits: np.ndarray) -> np.ndarray:
        return sample_next_token(logits, rng, temperature, top_k, top_p)

    return _in_eval_mode(model, _decode(model, idx.astype(np.int64), max_new_tokens, context_size, pick,
                                        eos_id, use_cache))


def _in_eval_mode(model, steps: Iterator) -> Iterator:
    """``steps`` with the model in eval mode until they end. Not ``nn.module.inference``: its
    ``no_grad`` is one switch for the whole process, and the caller's code runs between the steps."""
    was_training = model.training
    model.eval()
    try:
        yield from steps
    finally:
        model.train(was_training)


def _decode(model, idx: np.ndarray, max_new_tokens: int, context_size: int, pick, eos_id: int | None,
            use_cache: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    def next_logits(x: np.ndarray, cache) -> np.ndarray:
        with no_grad():
            return model(x, kv_cache=cache)[:, -1, :]     # (B, V) for the next position

    batch_size, _ = idx.shape
    if max_new_tokens == 0:
        return
    window = idx[:, -context_size:]                       # (B, <=context_size) what the model sees
    # room for every position this call can fill, not the whole context (Llama 3.2's is 131072)
    room = min(context_size, window.shape[1] + max_new_tokens)
    cache = model.new_kv_cache(batch_size, max_len=room) if use_cache else None
    logits = next_logits(window, cache)                   # prefill
    cached_len = window.shape[1]
    finished = np.zeros(batch_size, dtype=bool)
    for step in range(max_new_tokens):
        next_ids = pick(logits)                           # (B,)
        if eos_id is not None:
            next_ids[finished] = eos_id
            finished |= next_ids == eos_id
            if finished.all():
                return
        yield logits, next_ids
        if step == max_new_tokens - 1:
            return
        next_col = next_ids[:, None]                      # (B, 1)
        window = np.concatenate([window, next_col], axis=1)[:, -context_size:]
        if cache is None:
            logits = next_logits(window, None)
        elif cached_len < context_size:                   # room left: feed just the new token
            logits = next_logits(next_col, cache)
            cached_len += 1
        else:                                             # window slid: positions moved, re-prefill
            cache = model.new_kv_cache(batch_size, max_len=context_size)
            logits = next_logits(window, cache)


def text_to_token_ids(text: str, tokenizer) -> np.ndarray:
    """Encode ``text`` into a (1, T) int64 batch, as the book's helper of the same name."""
    ids = tokenizer.encode(text)
    return np.asarray(ids, dtype=np.int64)[None, :]


def token_ids_to_text(token_ids: np.ndarray | Sequence[int], tokenizer) -> str:
    """Decode a (1, T) or (T,) array of ids back into text."""
    ids = np.asarray(token_ids)
    if ids.ndim == 2:
        if ids.shape[0] != 1:
            raise ValueError(f"token_ids_to_text decodes one sequence, got a batch of {ids.shape[0]}")
        ids = ids[0]
    return tokenizer.decode(ids.tolist())
