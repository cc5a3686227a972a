"""The checker itself: it must fail wrong gradients, pass right ones, and leave the module as found."""

import numpy as np
import pytest

from numpy_gpt.gradcheck import gradcheck
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, Parameter


class Scale(Module):
    """y = x * w (elementwise); ``wrong`` scales the weight gradient by 1.01 or drops dx."""

    def __init__(self, n, wrong=None):
        super().__init__()
        self.w = Parameter(np.linspace(0.5, 1.5, n))
        self.wrong = wrong
        self._cache = None

    def forward(self, x):
        self._cache = x
        return x * self.w.data

    def backward(self, dy):
        x = self._pop_cache()
        self.w.add_grad((dy * x).sum(0) * (1.01 if self.wrong == "w" else 1.0))
        return dy * self.w.data * (0.0 if self.wrong == "x" else 1.0)


class ShiftedSoftmax(Module):
    """softmax(x + b) with a scalar b: dL/db is exactly 0 (softmax is shift invariant), the
    situation of the attention key bias."""

    def __init__(self):
        super().__init__()
        self.b = Parameter(np.array([0.3]))
        self._cache = None

    def forward(self, x):
        e = np.exp(x + self.b.data - x.max(-1, keepdims=True))
        s = e / e.sum(-1, keepdims=True)
        self._cache = s
        return s

    def backward(self, dy):
        s = self._pop_cache()
        dx = s * (dy - (dy * s).sum(-1, keepdims=True))
        return dx                                        # and dL/db = sum(dx) = 0: nothing to add


X = np.random.default_rng(0).standard_normal((4, 6))


def test_correct_module_passes_and_report_prints():
    report = gradcheck(Scale(6), X)
    assert report.ok and report.max_rel_error < 1e-8
    text = str(report)
    assert "gradcheck OK" in text and "w" in text and "input[0]" in text and "(6,)" in text
    assert [(r.name, r.shape, r.n_checked) for r in report.rows] == [("w", (6,), 6), ("input[0]", (4, 6), 24)]


@pytest.mark.parametrize("wrong, bad_row", [("w", "w"), ("x", "input[0]")])
def test_wrong_backward_is_reported(wrong, bad_row):
    report = gradcheck(Scale(6, wrong=wrong), X)
    assert not report.ok
    assert {r.name for r in report.rows if not r.ok} == {bad_row}
    assert report.max_rel_error > 1e-3
    assert "FAIL" in str(report) and "gradcheck FAILED" in str(report)


def test_exactly_zero_gradient_is_not_a_false_failure():
    report = gradcheck(ShiftedSoftmax(), X)
    assert report.ok, str(report)
    assert report.rows[0].name == "b" and report.rows[0].max_abs_error < 1e-8
    assert not gradcheck(ShiftedSoftmax(), X, abs_floor=0.0).ok        # rounding noise / 0 without it


def test_plain_function_with_two_inputs_and_an_integer():
    def mul(a, b, k):
        return a * b * k, lambda dout: (dout * b * k, dout * a * k, None)

    y = X[::-1].copy()
    assert gradcheck(mul, [X, y, 3]).ok

    def wrong_mul(a, b, k):
        return a * b * k, lambda dout: (dout * b * k, dout * a, None)

    report = gradcheck(wrong_mul, [X, y, 3])
    assert [r.ok for r in report.rows] == [True, False]


def test_module_is_restored():
    layer = Linear(6, 3, rng=np.random.default_rng(1))
    layer.weight.grad = grad = np.full_like(layer.weight.data, 5.0)   # an accumulated gradient survives
    weight = layer.weight.data
    before = weight.copy()
    assert gradcheck(layer, X.astype(np.float32)).ok         # checked in float64 regardless
    assert layer.weight.data is weight and layer.weight.grad is grad
    assert weight.dtype == np.float32
    np.testing.assert_array_equal(weight, before)
    assert (grad == 5.0).all()


def test_subset_is_seeded():
    layer = Linear(16, 16, rng=np.random.default_rng(2), dtype=np.float64)
    a = gradcheck(layer, X[:, :1].repeat(16, 1), max_elems_per_param=10, seed=3)
    b = gradcheck(layer, X[:, :1].repeat(16, 1), max_elems_per_param=10, seed=3)
    assert a.ok and [r.n_checked for r in a.rows] == [10, 10, 10]
    assert [r.max_abs_error for r in a.rows] == [r.max_abs_error for r in b.rows]


def test_bad_backward_signatures_raise():
    with pytest.raises(ValueError, match="shape"):
        gradcheck(lambda a: (a * 2, lambda d: d[:1]), X)
    with pytest.raises(ValueError, match="returned None"):
        gradcheck(lambda a: (a * 2, lambda d: None), X)
    assert gradcheck(lambda a: (a * 2, lambda d: None), X, check_inputs=False).rows == []
    with pytest.raises(ValueError, match="one gradient per input"):
        gradcheck(lambda a, b: (a * b, lambda d: d * b), [X, X])


def test_with_loss_checks_every_parameter_of_a_model_through_its_loss():
    from helpers import tiny_cfg

    from numpy_gpt.gradcheck import WithLoss
    from numpy_gpt.model import GPTModel
    from numpy_gpt.nn.loss import cross_entropy

    model = GPTModel(tiny_cfg(n_layers=1, vocab_size=11, emb_dim=8), seed=0, dtype=np.float64)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, (2, 4)), rng.integers(0, 11, (2, 4))
    report = gradcheck(WithLoss(model, lambda logits: cross_entropy(logits, targets)), idx,
                       max_elems_per_param=5)
    assert report.ok, str(report)
    assert [row.name for row in report.rows] == [f"model.{name}" for name, _ in model.named_parameters()]

    def wrong(logits):                                    # a gradient off by a factor: must fail
        loss, dlogits = cross_entropy(logits, targets)
        return loss, 1.01 * dlogits
    assert not gradcheck(WithLoss(model, wrong), idx, max_elems_per_param=5).ok
