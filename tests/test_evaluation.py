"""Tests for numpy_gpt/evaluation.py: windowed perplexity and continuation log-likelihoods equal
transformers' GPT2LMHeadModel on the gpt2-tiny fixture; the few-shot prompt builder gives the prompts
written out by hand; acc, acc_norm and stderr by hand.

The transformers references are written here from its documentation ("Perplexity of fixed-length
models": labels set to -100 outside each window's targets; log-likelihoods from log_softmax of the
logits), not from numpy_gpt's code.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.evaluation import (
    choice_scores,
    encode_pair,
    fewshot_context,
    loglikelihood,
    mean_and_stderr,
    perplexity,
    sample_shots,
    sliding_windows,
)
from numpy_gpt.gpt2.convert import load_openai_checkpoint

torch = reference("torch")
GPT2LMHeadModel = reference("transformers", "GPT2LMHeadModel")


@pytest.fixture(scope="module")
def models(gpt2_tiny_dir):
    ours = load_openai_checkpoint(gpt2_tiny_dir / "openai")
    torch.manual_seed(0)
    theirs = GPT2LMHeadModel.from_pretrained(gpt2_tiny_dir / "hf").eval()
    return ours, theirs


def hf_perplexity(model, ids: np.ndarray, max_length: int, stride: int, *, as_published: bool = False
                  ) -> tuple[float, int]:
    """transformers' documented loop: labels -100 except the last trg_len tokens of each window, each
    window weighted by the targets its loss averages (those past the first position).

    ``as_published``: weighted as the guide prints it, by ``num_valid_tokens - batch_size`` ("subtract
    batch_size due to internal label shift"). The shift drops the window's first label, a target only
    in the first window: every later window's loss averages trg_len targets and is counted as
    trg_len - 1."""
    encodings = torch.tensor(ids)[None]
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = encodings[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        if as_published:
            num_loss_tokens = int((target_ids != -100).sum()) - target_ids.size(0)
        else:
            num_loss_tokens = int((target_ids[:, 1:] != -100).sum())
        nll_sum += float(loss) * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    return math.exp(nll_sum / n_tokens), n_tokens


def test_the_hf_guide_loop_drops_a_token_per_later_window(models, verdict_path, gpt2_vocab_dir):
    """docs/evaluation.md's numbers: the first 160 GPT-2 tokens of the-verdict, context 128. At
    stride 1 the guide weights all 32 windows after the first by 0 and counts 127 of the 159
    targets; ours (and the corrected loop above) counts 159. At stride = context it is right: a
    window's first token is no target there."""
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
    ours, theirs = models
    tokenizer = GPT2Tokenizer.from_files(gpt2_vocab_dir / "encoder.json", gpt2_vocab_dir / "vocab.bpe")
    ids = np.array(tokenizer.encode(verdict_path.read_text(encoding="utf-8"))[:160])
    guide, guide_tokens = hf_perplexity(theirs, ids, 128, 1, as_published=True)
    right, right_tokens = hf_perplexity(theirs, ids, 128, 1)
    got = perplexity(ours, ids, stride=1)
    assert (guide_tokens, right_tokens, got["tokens"]) == (127, 159, 159)
    assert got["perplexity"] == pytest.approx(right, rel=1e-4) and guide != pytest.approx(right, rel=1e-4)
    at_context = hf_perplexity(theirs, ids, 128, 128, as_published=True)[1]
    assert at_context == perplexity(ours, ids)["tokens"] == 158
    docs = " ".join((Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text().split())
    assert "127 of its 159 targets" in docs and f"{guide:,.0f}" in docs and f"{right:,.0f}" in docs


@pytest.mark.parametrize("stride", [None, 50, 97])
def test_perplexity_matches_transformers(models, stride):
    ours, theirs = models
    ids = np.random.default_rng(1).integers(0, 50257, size=300)
    expected, n_tokens = hf_perplexity(theirs, ids, 128, stride or 128)
    got = perplexity(ours, ids, stride=stride, batch_size=3)
    assert got["tokens"] == n_tokens
    assert got["perplexity"] == pytest.approx(expected, rel=1e-4)
    assert got["nll"] == pytest.approx(math.log(expected), rel=1e-4)


def test_perplexity_of_one_window_and_bits_per_byte(models):
    ours, theirs = models
    ids = np.arange(1000, 1040)
    with torch.no_grad():
        loss = float(theirs(torch.tensor(ids)[None], labels=torch.tensor(ids)[None]).loss)
    got = perplexity(ours, ids, byte_length=100)
    assert got["tokens"] == 39 and got["windows"] == 1
    assert got["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert got["bits_per_byte"] == pytest.approx(loss * 39 / (math.log(2) * 100), rel=1e-4)


def test_sliding_windows_by_hand():
    # 10 tokens, window 4, stride 2: [0,4) scores 1..3, [2,6) scores 4..5, [4,8) 6..7, [6,10) 8..9.
    assert sliding_windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    # stride = window: the windows' first tokens 4 and 8 are never scored.
    assert sliding_windows(10, 4, 4) == [(0, 4, 1), (4, 8, 5), (8, 10, 9)]
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)


def test_perplexity_rejects_bad_input(models):
    ours, _ = models
    with pytest.raises(ValueError, match="stride"):
        perplexity(ours, np.arange(10), stride=0)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(ours, [5])
    with pytest.raises(ValueError, match="1-D"):
        perplexity(ours, np.zeros((2, 3), dtype=np.int64))


def hf_loglikelihood(model, context, continuation, window=128):
    """The harness's recipe, written with transformers: (ctx + cont)[-(window+1):][:-1]."""
    whole = (list(context) + list(continuation))[-(window + 1):]
    inp = torch.tensor(whole[:-1])[None]
    with torch.no_grad():
        logp = torch.log_softmax(model(inp).logits[0].double(), dim=-1)
    n = len(continuation)
    scored = logp[-n:]
    target = torch.tensor(list(continuation))
    total = float(scored.gather(1, target[:, None]).sum())
    return total, bool((scored.argmax(-1) == target).all())


def test_loglikelihood_matches_transformers(models):
    ours, theirs = models
    rng = np.random.default_rng(2)
    shared = rng.integers(0, 50257, size=30).tolist()
    long_context = rng.integers(0, 50257, size=200).tolist()      # longer than the window (128)
    requests = [(shared, rng.integers(0, 50257, size=n).tolist()) for n in (1, 3, 5, 2)]
    requests += [([7], [8, 9]), (long_context, [11, 12, 13]), (long_context, list(range(100, 140))),
                 (shared[:5], rng.integers(0, 50257, size=128).tolist())]
    # A continuation that is greedy by construction: the model's own argmax tokens.
    context = [464, 3290, 318]
    greedy_cont = []
    for _ in range(4):
        with torch.no_grad():
            greedy_cont.append(int(theirs(torch.tensor(context + greedy_cont)[None]).logits[0, -1].argmax()))
    requests.append((context, greedy_cont))
    got = loglikelihood(ours, requests, batch_size=3)
    for (ctx, cont), (logp, greedy) in zip(requests, got, strict=True):
        expected, expected_greedy = hf_loglikelihood(theirs, ctx, cont)
        assert logp == pytest.approx(expected, rel=1e-4)
        assert greedy == expected_greedy
    assert got[-1][1] is True


def test_scoring_turns_dropout_off_and_restores_the_mode(gpt2_tiny_dir, models):
    ours, _ = models
    noisy = load_openai_checkpoint(gpt2_tiny_dir / "openai", drop_rate=0.5).train()
    requests = [([1, 2, 3], [4, 5]), ([1, 2, 3], [6])]
    assert loglikelihood(noisy, requests) == loglikelihood(ours, requests)
    assert perplexity(noisy, np.arange(50))["nll"] == perplexity(ours, np.arange(50))["nll"]
    assert noisy.training and not ours.training


def test_loglikelihood_rejects_bad_requests(models):
    ours, _ = models
    with pytest.raises(ValueError, match=r"requests\[0\].*continuation is empty"):
        loglikelihood(ours, [([1], [])])
    with pytest.raises(ValueError, match=r"requests\[1\].*context is empty"):
        loglikelihood(ours, [([1], [2]), ([], [2])])
    with pytest.raises(ValueError, match="more than the model's context length"):
        loglikelihood(ours, [([1], list(range(129)))])


class _WordTokenizer:
    """Words and single spaces as tokens: enough to see where encode_pair cuts."""

    def encode(self, text):
        import re
        return [hash(t) % 1000 for t in re.findall(r" ?\S+| ", text)]


def test_encode_pair_moves_trailing_space_to_the_continuation():
    tok = _WordTokenizer()
    ctx, cont = encode_pair(tok, "The capital is ", "Paris")
    assert ctx == tok.encode("The capital is") and cont == tok.encode(" Paris")


def test_fewshot_prompt_by_hand():
    shots = [("Q: 2+2?", "4"), ("Q: 3+3?", "6")]
    assert fewshot_context(shots, "Q: 1+1?") == "Q: 2+2? 4\n\nQ: 3+3? 6\n\nQ: 1+1?"
    assert fewshot_context([], "Q: 1+1?") == "Q: 1+1?"
    assert fewshot_context(shots[:1], "Text: hi\nLabel:", description="Spam or ham.\n\n") == \
        "Spam or ham.\n\nQ: 2+2? 4\n\nText: hi\nLabel:"


def test_sample_shots_is_fixed_by_the_seed_and_skips_the_item():
    first = sample_shots(10, 4, seed=1234, item_index=3)
    assert first == sample_shots(10, 4, seed=1234, item_index=3)
    assert first == np.random.default_rng([1234, 3]).permutation(10)[:4].tolist()
    assert 5 not in sample_shots(10, 9, seed=0, item_index=0, exclude=5)
    assert len(set(sample_shots(10, 9, seed=0, item_index=0, exclude=5))) == 9
    with pytest.raises(ValueError, match="only 9 examples"):
        sample_shots(10, 10, seed=0, item_index=0, exclude=5)


def test_acc_acc_norm_and_stderr_by_hand():
    # choice 0 has the best sum, choice 1 the best per character: -4/8 = -0.5 > -3/3 = -1.
    scores = choice_scores([-3.0, -4.0, -9.0], ["abc", "abcdefgh", "x"], gold=1)
    assert scores == {"acc": 0.0, "acc_norm": 1.0}
    mean, stderr = mean_and_stderr([1.0, 0.0, 1.0, 1.0])
    assert mean == 0.75 and stderr == pytest.approx(math.sqrt(0.25 / 4))
    assert math.isnan(mean_and_stderr([1.0])[1])


def test_acc_norm_of_an_empty_choice_follows_the_harness():
    """lm-evaluation-harness computes np.argmax(lls / completion_len) with completion_len =
    len(choice): an empty choice gives -2 / 0 = -inf and is never the pick; the three others tie at
    -10 / 4 = -2.5 and argmax takes the first, index 0."""
    choices = ["abcd", "efgh", "ijkl", ""]
    assert choice_scores([-10, -10, -10, -2], choices, 0) == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_scores([-10, -10, -10, -2], choices, 3) == {"acc": 1.0, "acc_norm": 0.0}
    assert choice_scores([-10, -10, -10, 0.0], choices, 3)["acc_norm"] == 1.0   # 0 / 0 = nan: argmax's pick
