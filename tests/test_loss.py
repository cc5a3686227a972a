"""cross_entropy: hand values, finite differences, PyTorch parity (with ignore_index), errors."""

import math

import numpy as np
import pytest
from helpers import reference
from hypothesis import given
from hypothesis import strategies as st

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.loss import cross_entropy, log_softmax_at, softmax_and_nll

torch = reference("torch")
F = reference("torch.nn.functional")


def test_uniform_logits_give_log_vocab_size():
    V = 50
    loss, dlogits = cross_entropy(np.zeros((2, 3, V), np.float32), np.array([[0, 1, 2], [3, 4, 49]]))
    assert loss == pytest.approx(math.log(V), rel=1e-6)
    expected = np.full((2, 3, V), 1 / V / 6, np.float32)
    expected[0, 0, 0] = expected[0, 1, 1] = expected[0, 2, 2] = (1 / V - 1) / 6
    expected[1, 0, 3] = expected[1, 1, 4] = expected[1, 2, 49] = (1 / V - 1) / 6
    np.testing.assert_allclose(dlogits, expected, rtol=1e-6)


def test_hand_computed_single_row():
    loss, dlogits = cross_entropy(np.array([[1.0, 2.0, 3.0]]), np.array([2]))
    z = math.exp(1) + math.exp(2) + math.exp(3)
    assert loss == pytest.approx(math.log(z) - 3, rel=1e-12)
    np.testing.assert_allclose(dlogits[0], [math.exp(1) / z, math.exp(2) / z, math.exp(3) / z - 1],
                               rtol=1e-12)


@given(batch=st.integers(1, 3), seq=st.integers(1, 8), vocab=st.integers(1, 16),
       seed=st.integers(0, 2**16))
def test_gradcheck_float64(batch, seq, vocab, seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, vocab, (batch, seq))
    targets[rng.random((batch, seq)) < 0.3] = -100
    targets[0, 0] = 0                                   # at least one target counts

    def loss_fn(logits):
        loss, dlogits = cross_entropy(logits, targets)
        return loss, lambda dloss: dloss * dlogits

    report = gradcheck(loss_fn, 2 * rng.standard_normal((batch, seq, vocab)), seed=seed)
    assert report.ok and report.max_rel_error < 1e-6, str(report)


@pytest.mark.parametrize("shape", [(2, 7, 33), (9, 33), (2, 5, 20000)])   # the last: several row groups
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_matches_torch_float32(shape, ignore_index, threads):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape, dtype=np.float32) * 4
    targets = rng.integers(0, shape[-1], shape[:-1])
    targets.reshape(-1)[::3] = ignore_index
    loss, dlogits = cross_entropy(logits, targets, ignore_index=ignore_index)

    tl = torch.from_numpy(logits).requires_grad_()
    ref = F.cross_entropy(tl.reshape(-1, shape[-1]), torch.from_numpy(targets).reshape(-1),
                          ignore_index=ignore_index)
    ref.backward()
    assert isinstance(loss, float)
    assert loss == pytest.approx(ref.item(), rel=1e-5)
    assert dlogits.dtype == np.float32 and dlogits.shape == logits.shape
    np.testing.assert_allclose(dlogits, tl.grad.numpy(), atol=1e-6, rtol=1e-4)
    assert not dlogits.reshape(-1, shape[-1])[::3].any()         # ignored rows get no gradient


def test_large_logits_are_stable():
    logits = np.array([[1e4, -1e4, 0.0], [-5e3, 5e3, 5e3]], np.float32)
    loss, dlogits = cross_entropy(logits, np.array([1, 2]))
    tl = torch.from_numpy(logits).requires_grad_()
    ref = F.cross_entropy(tl, torch.tensor([1, 2]))
    ref.backward()
    assert np.isfinite(loss) and loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(dlogits, tl.grad.numpy(), atol=1e-6)


@pytest.mark.parametrize("shape", [(9, 33), (2, 7, 33)])
def test_log_softmax_at_matches_torch_and_is_the_losss_own(shape):
    """The one log-softmax at the targets (DPO and evaluation call it too): torch's log_softmax picked at
    the targets, and bit for bit the negative of the per-row loss the cross-entropy averages."""
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(shape, dtype=np.float32) * 4
    targets = rng.integers(0, shape[-1], shape[:-1])
    logp = log_softmax_at(logits, targets)
    ref = torch.log_softmax(torch.from_numpy(logits), -1).gather(-1, torch.from_numpy(targets)[..., None])
    assert logp.dtype == np.float32 and logp.shape == shape[:-1]
    np.testing.assert_allclose(logp, ref[..., 0].numpy(), rtol=1e-5, atol=1e-5)
    nll, probs = softmax_and_nll(logits.reshape(-1, shape[-1]), targets.reshape(-1))
    assert np.array_equal(-nll, logp.reshape(-1))
    same, softmax = log_softmax_at(logits, targets, with_softmax=True)
    assert np.array_equal(same, logp) and np.array_equal(softmax.reshape(probs.shape), probs)


def test_log_softmax_at_large_logits_by_hand():
    logp, probs = log_softmax_at(np.array([[1e4, -1e4, 0.0]]), np.array([2]), with_softmax=True)
    assert logp.tolist() == [-1e4] and probs.tolist() == [[1.0, 0.0, 0.0]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_and_logits_untouched(dtype):
    logits = np.random.default_rng(1).standard_normal((4, 10)).astype(dtype)
    before = logits.copy()
    _, dlogits = cross_entropy(logits, np.arange(4))
    assert dlogits.dtype == dtype
    assert not np.shares_memory(dlogits, logits)
    np.testing.assert_array_equal(logits, before)


def test_all_ignored_batch_raises():
    with pytest.raises(ValueError, match="every target equals ignore_index=-100"):
        cross_entropy(np.zeros((2, 3, 5), np.float32), np.full((2, 3), -100))


def test_bad_inputs_raise():
    logits = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(ValueError, match=r"targets shape \(2, 4\) must equal"):
        cross_entropy(logits, np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="integer"):
        cross_entropy(logits, np.zeros((2, 3), np.float32))
    with pytest.raises(IndexError, match=r"target 5 at position \(1, 2\)"):
        cross_entropy(logits, np.array([[0, 1, 2], [3, 4, 5]]))
    with pytest.raises(IndexError, match="target -1"):
        cross_entropy(logits, np.array([[0, -1, 2], [3, 4, -100]]))
    with pytest.raises(ValueError, match="at least one leading axis"):
        cross_entropy(np.zeros(5, np.float32), np.array(1))
    with pytest.raises(TypeError, match="floating"):
        cross_entropy(np.zeros((2, 5), np.int64), np.array([0, 1]))
