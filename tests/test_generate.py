"""Tests for numpy_gpt/generate.py: the sampling filters, and generate() with and without KV cache.

References: the book's greedy loop run on the independent PyTorch GPT (torch_reference), the
defining properties of top-k and nucleus sets checked on sorted probabilities, and the uncached
decoder (the book's algorithm) as the reference for the cached one.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import reference, tiny_cfg, torch_reference
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from numpy_gpt.generate import (
    generate,
    generate_steps,
    sample_next_token,
    sampling_logits,
    softmax,
    text_to_token_ids,
    token_ids_to_text,
    top_k_filter,
    top_p_filter,
)
from numpy_gpt.model import GPTModel
from numpy_gpt.nn.module import no_grad

torch = reference("torch")

TINY = tiny_cfg(vocab_size=61, context_length=12, emb_dim=32, n_heads=4, drop_rate=0.1, qkv_bias=True)


@pytest.fixture(scope="module")
def model() -> GPTModel:
    return GPTModel(TINY, seed=7)


def prompts(batch: int, length: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, TINY["vocab_size"], size=(batch, length))


logit_rows = arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(2, 40)),
                    elements=st.floats(-8, 8, width=32))


# -- pure filters ---------------------------------------------------------------------------------
@given(logits=logit_rows, k=st.integers(1, 45), seed=st.integers(0, 2**32 - 1))
def test_top_k_samples_only_the_k_largest(logits, k, seed):
    filtered = top_k_filter(logits, k)
    for row, kept in zip(logits, np.isfinite(filtered), strict=True):
        kth = np.sort(row)[::-1][min(k, row.size) - 1]
        np.testing.assert_array_equal(kept, row >= kth)          # k largest, ties with the k-th kept
    rng = np.random.default_rng(seed)
    draws = np.stack([sample_next_token(logits, rng, temperature=1.3, top_k=k) for _ in range(20)])
    assert np.isfinite(filtered[np.arange(logits.shape[0]), draws]).all()


@given(logits=logit_rows, p=st.floats(0.01, 1.0), seed=st.integers(0, 2**32 - 1))
@example(logits=np.array([[0.0, 1.1754944e-38]], np.float32), p=0.5, seed=0)   # a tie in float64
def test_top_p_keeps_the_smallest_nucleus_and_samples_only_from_it(logits, p, seed):
    kept = np.isfinite(top_p_filter(logits, p))
    probs = softmax(logits.astype(np.float64))
    for row_probs, row_kept in zip(probs, kept, strict=True):
        n = int(row_kept.sum())
        # Compared as sets, so that tokens of equal probability may be kept in either order.
        assert n == row_probs.size or row_probs[row_kept].min() >= row_probs[~row_kept].max(), \
            "the kept tokens are the most likely ones"
        mass = row_probs[row_kept].sum()
        assert mass >= p - 1e-5 or n == row_probs.size, "the nucleus reaches p"
        assert n == 1 or mass - row_probs[row_kept].min() < p + 1e-5, "and is the smallest that does"
    rng = np.random.default_rng(seed)
    draws = np.stack([sample_next_token(logits, rng, temperature=0.8, top_p=p) for _ in range(20)])
    assert kept[np.arange(logits.shape[0]), draws].all()


@given(logits=logit_rows, k=st.integers(1, 5), p=st.floats(0.05, 1.0), seed=st.integers(0, 2**32 - 1))
def test_top_k_and_top_p_together_sample_from_the_intersection(logits, k, p, seed):
    allowed = np.isfinite(top_k_filter(logits, k)) & np.isfinite(top_p_filter(logits, p))
    rng = np.random.default_rng(seed)
    for _ in range(10):
        ids = sample_next_token(logits, rng, temperature=1.0, top_k=k, top_p=p)
        assert allowed[np.arange(logits.shape[0]), ids].all()


def test_top_p_hand_computed():
    logits = np.log(np.array([[0.1, 0.5, 0.15, 0.25]], dtype=np.float32))
    assert np.isfinite(top_p_filter(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 0.6)).tolist() == [[False, True, False, True]]
    assert np.isfinite(top_p_filter(logits, 0.9)).tolist() == [[False, True, True, True]]
    assert np.isfinite(top_p_filter(logits, 1.0)).all()


def test_sampling_follows_the_softmax_distribution():
    probs = np.array([0.5, 0.3, 0.2, 0.0])
    with np.errstate(divide="ignore"):
        logits = np.tile(np.log(probs).astype(np.float32), (40_000, 1))
    ids = sample_next_token(logits, np.random.default_rng(0), temperature=1.0)
    freq = np.bincount(ids, minlength=4) / ids.size
    np.testing.assert_allclose(freq, probs, atol=0.01)
    assert ids.dtype == np.int64


def test_temperature_sharpens_and_greedy_is_argmax():
    logits = np.array([[1.0, 2.0, 0.5]], dtype=np.float32)
    assert sample_next_token(logits, np.random.default_rng(0)).tolist() == [1]
    rng = np.random.default_rng(1)
    cold = [sample_next_token(logits, rng, temperature=0.05)[0] for _ in range(200)]
    assert set(cold) == {1}


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1.0}, "temperature"), ({"temperature": 1.0, "top_k": 0}, "top_k"),
    ({"temperature": 1.0, "top_p": 0.0}, "top_p"), ({"temperature": 1.0, "top_p": 1.5}, "top_p"),
    ({"temperature": 0.0, "top_k": 2.5}, "top_k"),
])
def test_bad_sampling_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_next_token(np.zeros((1, 5), np.float32), np.random.default_rng(0), **kwargs)


def test_filters_keep_float32():
    logits = np.random.default_rng(0).standard_normal((2, 30)).astype(np.float32)
    assert top_k_filter(logits, 3).dtype == np.float32
    assert top_p_filter(logits, 0.5).dtype == np.float32


# -- generate ---------------------------------------------------------------------------------------
def test_greedy_matches_the_book_loop_on_the_torch_reference(model):
    reference = torch_reference.torch_gpt_from_numpy(model).eval()
    idx = prompts(2, 15, seed=3)                   # longer than the context (12): cropped
    context_size = TINY["context_length"]
    expected = torch.from_numpy(idx)
    with torch.no_grad():
        for _ in range(10):                        # the book's generate_text_simple
            logits = reference(expected[:, -context_size:])[:, -1, :]
            expected = torch.cat([expected, logits.argmax(dim=-1, keepdim=True)], dim=1)
    for use_cache in (True, False):
        out = generate(model, idx, 10, context_size, use_cache=use_cache)
        np.testing.assert_array_equal(out, expected.numpy())


@pytest.mark.parametrize("prompt_len, new, context_size", [(3, 20, 12), (15, 6, 12), (5, 9, 6), (1, 1, 12)])
@pytest.mark.parametrize("sampling", [
    {}, {"temperature": 1.0, "seed": 5}, {"temperature": 0.7, "top_k": 5, "seed": 1},
    {"temperature": 1.5, "top_p": 0.8, "seed": 2}])
def test_kv_cache_gives_the_same_tokens_as_recomputing(model, prompt_len, new, context_size, sampling):
    idx = prompts(3, prompt_len, seed=prompt_len)
    cached = generate(model, idx, new, context_size, use_cache=True, **sampling)
    uncached = generate(model, idx, new, context_size, use_cache=False, **sampling)
    assert cached.shape == (3, prompt_len + new) and cached.dtype == np.int64
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached[:, :prompt_len], idx)


def test_same_seed_same_text_other_seed_other_text(model):
    idx = prompts(1, 4)
    a = generate(model, idx, 15, 12, temperature=1.0, seed=11)
    np.testing.assert_array_equal(a, generate(model, idx, 15, 12, temperature=1.0, seed=11))
    assert not np.array_equal(a, generate(model, idx, 15, 12, temperature=1.0, seed=12))


@pytest.mark.parametrize("use_cache", [True, False])
def test_eos_stops_generation(model, use_cache):
    idx = prompts(1, 4, seed=9)
    free = generate(model, idx, 20, 12)            # greedy, no eos
    first_new = free[0, 4:]
    eos = int(first_new[3])
    stop = int(np.flatnonzero(first_new == eos)[0])
    out = generate(model, idx, 20, 12, eos_id=eos, use_cache=use_cache)
    np.testing.assert_array_equal(out, free[:, :4 + stop])   # the eos itself is not appended


def test_eos_in_a_batch_pads_finished_rows(model):
    idx = prompts(2, 4, seed=21)
    free = generate(model, idx, 12, 12)
    eos = int(free[0, 4 + 1])                      # row 0 produces it at its 2nd new token
    row1_stops = np.flatnonzero(free[1, 4:] == eos)
    out = generate(model, idx, 12, 12, eos_id=eos)
    np.testing.assert_array_equal(out[0, :5], free[0, :5])
    assert (out[0, 5:] == eos).all(), "a finished row is padded with eos"
    if row1_stops.size == 0:                       # row 1 never stops: full length
        assert out.shape[1] == 16
        np.testing.assert_array_equal(out[1], free[1])
    else:
        assert out.shape[1] == max(5, 4 + int(row1_stops[0]))


def test_generate_restores_mode_and_caches_nothing_for_backward(model):
    model.train()
    generate(model, prompts(1, 3), 4, 12, temperature=1.0, seed=0)
    assert model.training
    with pytest.raises(RuntimeError, match="forward"):
        model.backward(np.zeros((1, 3, TINY["vocab_size"]), np.float32))
    model.eval()
    generate(model, prompts(1, 3), 2, 12)
    assert not model.training


def test_steps_give_the_models_own_logits_and_the_tokens_of_generate(model):
    """Each step's logits are the full model's on the text so far (recomputed without a cache, the
    book's way), and its ids are the ones generate appends."""
    idx = prompts(2, 5, seed=4)
    sampling = {"temperature": 0.9, "top_k": 7, "top_p": 0.9, "seed": 3}
    out = generate(model, idx, 9, 12, **sampling)
    text = idx
    for step, (logits, next_ids) in enumerate(generate_steps(model, idx, 9, 12, **sampling)):
        with no_grad():
            expected = model(text[:, -12:])[:, -1, :]
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(next_ids, out[:, 5 + step])
        text = np.concatenate([text, next_ids[:, None]], axis=1)
    assert text.shape == out.shape


def test_sampling_logits_are_what_a_token_is_drawn_from():
    """At temperature T the draws follow softmax(sampling_logits): top-k 3 of 6 keeps 3 tokens whose
    shares match their probabilities."""
    logits = np.array([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]], np.float32)
    probs = softmax(sampling_logits(logits, 0.7, top_k=3).astype(np.float64))[0]
    np.testing.assert_allclose(probs[:3], softmax(logits[:, :3] / 0.7)[0], rtol=1e-6)
    assert (probs[3:] == 0).all()
    rng = np.random.default_rng(0)
    draws = np.concatenate([sample_next_token(np.repeat(logits, 1000, 0), rng, 0.7, top_k=3)
                            for _ in range(20)])
    np.testing.assert_allclose(np.bincount(draws, minlength=6) / draws.size, probs, atol=0.01)
    with pytest.raises(ValueError, match="greedy"):
        sampling_logits(logits, 0.0)


def test_zero_new_tokens_returns_the_prompt(model):
    idx = prompts(2, 5)
    np.testing.assert_array_equal(generate(model, idx, 0, 12), idx)


@pytest.mark.parametrize("idx, context_size, message", [
    (np.arange(4), 12, "2-D"), (np.zeros((1, 3), np.float32), 12, "integer"),
    (np.zeros((1, 0), np.int64), 12, "at least one"), (np.zeros((1, 3), np.int64), 13, "context_size"),
    (np.zeros((1, 3), np.int64), 0, "context_size")])
def test_bad_generate_arguments_are_rejected(model, idx, context_size, message):
    with pytest.raises(ValueError, match=message):
        generate(model, idx, 3, context_size)


class _Chars:
    """A stand-in tokenizer: one id per character of a fixed alphabet."""
    alphabet = "abcdefgh "

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


def test_text_token_round_trip():
    ids = text_to_token_ids("bad cafe", _Chars())
    assert ids.shape == (1, 8) and ids.dtype == np.int64
    assert token_ids_to_text(ids, _Chars()) == "bad cafe"
    assert token_ids_to_text(ids[0], _Chars()) == "bad cafe"
    with pytest.raises(ValueError, match="one sequence"):
        token_ids_to_text(np.zeros((2, 3), np.int64), _Chars())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_new_tokens": None}, "max_new_tokens must be an integer, got None"),
    ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
    ({"context_size": None}, "context_size must be an integer, got None"),
])
def test_generate_names_a_non_integer_length(kwargs, message):
    from numpy_gpt.model import GPTModel
    model = GPTModel(tiny_cfg(vocab_size=11, context_length=6, emb_dim=8, n_layers=1), seed=0)
    args = {"max_new_tokens": 3, "context_size": 6, **kwargs}
    with pytest.raises(TypeError, match=message):
        generate(model, np.zeros((1, 2), np.int64), **args)
