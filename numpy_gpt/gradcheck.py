"""Finite-difference gradient checking: the proof behind every hand-written backward.

Point ``gradcheck`` at any Module (or at a function with a hand-written backward) and it compares
the analytic gradients with numerical ones obtained by central differences in float64, for every
trainable parameter element θ_i and every element of every floating-point input. The scalar L is a
random projection of the output, L = sum(out * R) with R ~ N(0, 1) of the output's shape, so
dL/dout = R and a single backward(R) yields all analytic gradients at once. This is what the book
gets from ``torch.autograd``; ``torch.autograd.gradcheck`` works the same way.

The textbook central difference D(h) = (L(θ + h·e_i) - L(θ - h·e_i)) / (2h) has a truncation error
of order h² and a rounding error of order 1e-16 / h; for badly conditioned layers (LayerNorm of a
row whose values nearly coincide) no h brings both under 1e-7. We therefore use its fourth-order
version, the same idea with two step sizes,

    dL/dθ_i  ≈  (8·D(eps) - D(2·eps)) / 6  =  (8 (L(+eps) - L(-eps)) - (L(+2eps) - L(-2eps))) / (12 eps),

whose truncation error is of order eps⁴: with eps = 1e-5 both errors are around 1e-11. Each
difference L(+) - L(-) is computed as sum((out(+) - out(-)) * R), so outputs the perturbation does
not reach cancel exactly instead of adding the rounding error of a large sum.

    >>> from numpy_gpt.nn.layernorm import LayerNorm
    >>> report = gradcheck(LayerNorm(8), np.random.default_rng(0).standard_normal((2, 3, 8)))
    >>> report.ok
    True
    >>> print(report)          # a table: one row per parameter and input

A whole model is checked through its loss: ``WithLoss(model, loss_fn)`` is the model followed by a
scalar loss, one Module whose every parameter gradcheck perturbs::

    report = gradcheck(WithLoss(model, lambda logits: cross_entropy(logits, targets)), idx)

Relative error of one element, with a (tensor-wide) floor so that gradients that are exactly zero
(the key bias of attention, by the softmax's shift invariance) are not failed for rounding noise:

    rel_i = |a_i - n_i| / max(|a_i|, |n_i|, floor),
    floor = max(abs_floor, rel_floor * max_j max(|a_j|, |n_j|))   over the checked elements j,

and the tensor passes when max_i rel_i <= tol. Because R ~ N(0, 1), gradients are of order 1 or
less. With the defaults (tol 1e-6, abs_floor 1e-2, rel_floor 1e-3) an element whose gradient is
below 1e-2 (and below 1e-3 of its tensor's largest) is judged by its absolute error, which must
stay under 1e-8: well above the rounding noise of the differences (around 1e-10 for a scalar loss
of order 1), far below the error of any real bug.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from numpy_gpt.nn.module import Module, no_grad


@dataclass
class GradcheckRow:
    """The comparison for one parameter or input tensor."""
    name: str
    shape: tuple[int, ...]
    n_checked: int
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple[int, ...]
    ok: bool


@dataclass
class GradcheckReport:
    """Per-tensor rows; ``ok`` is True when every row passed; ``str(report)`` is a readable table."""
    rows: list[GradcheckRow] = field(default_factory=list)
    tol: float = 1e-6
    eps: float = 1e-5

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def max_rel_error(self) -> float:
        return max((row.max_rel_error for row in self.rows), default=0.0)

    def __str__(self) -> str:
        header = ("tensor", "shape", "checked", "max abs err", "max rel err", "worst at", "ok")
        lines = [(r.name, str(r.shape), str(r.n_checked), f"{r.max_abs_error:.2e}",
                  f"{r.max_rel_error:.2e}", str(r.worst_index), "ok" if r.ok else "FAIL")
                 for r in self.rows]
        widths = [max(len(cells[k]) for cells in [header, *lines]) for k in range(len(header))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        verdict = "OK" if self.ok else "FAILED"
        return "\n".join([f"gradcheck {verdict}: {len(self.rows)} tensors, max rel error "
                          f"{self.max_rel_error:.2e} (tol {self.tol:.0e}, eps {self.eps:.0e})",
                          *(fmt.format(*cells).rstrip() for cells in [header, *lines])])


class WithLoss(Module):
    """``model`` followed by a loss, as one Module whose output is the scalar loss: what gradcheck
    needs to prove a model's backward for every parameter at once.

    ``loss_fn(output) -> (loss, doutput)`` is a loss with its hand-written gradient, such as
    ``cross_entropy(logits, targets)``. forward returns the loss as a 0-d array; backward(dloss)
    sends ``dloss * doutput`` through ``model.backward`` and returns what that returns (the input
    gradients, or None for token ids).
    """

    def __init__(self, model: Module, loss_fn: Callable[[np.ndarray], tuple[float, np.ndarray]]):
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self._cache = None

    def forward(self, *inputs) -> np.ndarray:
        loss, doutput = self.loss_fn(self.model(*inputs))
        if self._need_cache():
            self._cache = doutput
        return np.asarray(loss)

    def backward(self, dloss: np.ndarray):
        return self.model.backward(dloss * self._pop_cache())


def _input_grads(grads, inputs: list, float_ids: list[int]) -> dict[int, np.ndarray]:
    """Map a backward's return value to {input position: gradient} for the floating inputs.

    A tuple/list holds one entry per input (entries of non-floating inputs are ignored); a single
    ndarray is the gradient of the only floating input; None means "no input gradients"."""
    if not float_ids:
        return {}
    if grads is None:
        raise ValueError(f"backward returned None, but inputs {float_ids} are floating-point: "
                         f"return their gradients, or pass check_inputs=False")
    if isinstance(grads, np.ndarray):
        if len(float_ids) != 1:
            raise ValueError(f"backward returned one array but there are {len(float_ids)} floating "
                             f"inputs: return a tuple with one gradient per input")
        grads = [grads if i == float_ids[0] else None for i in range(len(inputs))]
    if len(grads) != len(inputs):
        raise ValueError(f"backward returned {len(grads)} gradients for {len(inputs)} inputs")
    out = {}
    for i in float_ids:
        if grads[i] is None or np.shape(grads[i]) != inputs[i].shape:
            raise ValueError(f"gradient of input {i} has shape {np.shape(grads[i])}, "
                             f"expected {inputs[i].shape}")
        out[i] = np.asarray(grads[i], dtype=np.float64)
    return out


def _numerical_derivative(output: Callable[[], np.ndarray], R: np.ndarray, flat: np.ndarray,
                          i: int, eps: float) -> float:
    """dL/dflat[i] for L = sum(output() * R) by the fourth-order central difference above."""
    original = flat[i]

    def difference(step: float) -> float:                         # L(+step) - L(-step)
        flat[i] = original + step
        plus = output()
        flat[i] = original - step
        minus = output()
        flat[i] = original
        return float(np.sum((plus - minus) * R))

    return (8.0 * difference(eps) - difference(2.0 * eps)) / (12.0 * eps)


def _compare(name: str, analytic: np.ndarray, numeric: np.ndarray, flat_idx: np.ndarray,
             shape: tuple[int, ...], tol: float, abs_floor: float, rel_floor: float) -> GradcheckRow:
    abs_err = np.abs(analytic - numeric)
    magnitude = np.maximum(np.abs(analytic), np.abs(numeric))
    floor = max(abs_floor, rel_floor * float(magnitude.max(initial=0.0)), np.finfo(np.float64).tiny)
    rel_err = abs_err / np.maximum(magnitude, floor)
    worst = int(np.argmax(rel_err)) if rel_err.size else 0
    max_rel = float(rel_err.max(initial=0.0))
    return GradcheckRow(name=name, shape=tuple(shape), n_checked=int(flat_idx.size),
                        max_abs_error=float(abs_err.max(initial=0.0)), max_rel_error=max_rel,
                        worst_index=tuple(int(k) for k in np.unravel_index(flat_idx[worst], shape))
                        if flat_idx.size else (),
                        ok=bool(max_rel <= tol))


def gradcheck(fn_or_module: Module | Callable, inputs: np.ndarray | Sequence, *, eps: float = 1e-5,
              tol: float = 1e-6, abs_floor: float = 1e-2, rel_floor: float = 1e-3, seed: int = 0,
              max_elems_per_param: int | None = None, before_forward: Callable[[], None] | None = None,
              check_inputs: bool = True) -> GradcheckReport:
    """Compare analytic with central-difference gradients in float64; return a GradcheckReport.

    fn_or_module
        A Module: ``out = module(*inputs)``; analytic gradients from ``module.zero_grad();
        dinputs = module.backward(R)``. All its parameters are converted to float64 for the check
        and restored afterwards (data and grad arrays are put back untouched). Every trainable
        parameter is checked; frozen ones take part in forward only.
        Or a function ``f(*inputs) -> (out, backward)`` where ``backward(dout)`` returns the input
        gradients. For example, the loss (a scalar out)::

            def ce(logits):
                loss, dlogits = cross_entropy(logits, targets)
                return loss, lambda dloss: dloss * dlogits
            gradcheck(ce, logits)

        Input gradients (from ``module.backward`` or ``backward``) are a tuple with one entry per
        input (None for integer inputs), or a single array when there is one floating input.
    inputs
        One argument, or a list/tuple of arguments. Floating arrays are copied to float64 and, when
        ``check_inputs``, checked; anything else (integer ids, ints, None) is passed unchanged.
    eps, tol, abs_floor, rel_floor
        Step of the central differences; pass threshold of the relative error; its floor (see the
        module docstring).
    seed, max_elems_per_param
        Seed of the projection R and of the element subset: with ``max_elems_per_param`` at most
        that many elements per tensor, drawn at random, are checked (all by default).
    before_forward
        Called with no arguments before every forward, so that stochastic layers repeat the same
        randomness each time; for Dropout, rewind its generator::

            state = drop.rng.bit_generator.state
            gradcheck(drop, x, before_forward=lambda: setattr(drop.rng.bit_generator, "state", state))
    """
    rng = np.random.default_rng(seed)
    is_module = isinstance(fn_or_module, Module)
    args = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    args = [np.array(a, dtype=np.float64, order="C")
            if isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating) else a for a in args]
    float_ids = [i for i, a in enumerate(args)
                 if check_inputs and isinstance(a, np.ndarray) and a.dtype == np.float64]
    prepare = before_forward if before_forward is not None else (lambda: None)

    saved = []
    if is_module:
        for p in fn_or_module.parameters():
            saved.append((p, p.data, p.grad))
            p.data = p.data.astype(np.float64)
            p.grad = None

    def forward():
        """One pass on the current values: (out, backward) for a function, (out, None) for a Module."""
        prepare()
        return (fn_or_module(*args), None) if is_module else fn_or_module(*args)

    try:
        out, backward = forward()
        R = rng.standard_normal(np.shape(out))                      # dL/dout for L = sum(out * R)
        if is_module:
            fn_or_module.zero_grad()
            dinputs = fn_or_module.backward(R)
            # a parameter the output does not depend on has no gradient yet (None): zero
            tensors = [(name, p.data, np.zeros_like(p.data) if p.grad is None else p.grad.copy())
                       for name, p in fn_or_module.named_parameters(trainable_only=True)]
        else:
            dinputs = backward(R)
            tensors = []
        analytic_in = _input_grads(dinputs, args, float_ids)
        tensors += [(f"input[{i}]", args[i], analytic_in[i]) for i in float_ids]

        def output() -> np.ndarray:
            with no_grad():
                return np.array(forward()[0], dtype=np.float64)     # a copy, even of a view

        report = GradcheckReport(tol=tol, eps=eps)
        for name, array, analytic in tensors:
            flat = array.reshape(-1)                                # a view: writes reach the array
            idx = np.arange(flat.size)
            if max_elems_per_param is not None and flat.size > max_elems_per_param:
                idx = np.sort(rng.choice(flat.size, max_elems_per_param, replace=False))
            numeric = np.array([_numerical_derivative(output, R, flat, i, eps) for i in idx])
            report.rows.append(_compare(name, analytic.reshape(-1)[idx], numeric, idx, array.shape,
                                        tol, abs_floor, rel_floor))
        return report
    finally:
        for p, data, grad in saved:
            p.data, p.grad = data, grad
