"""The optimizer side of training: AdamW, gradient clipping and learning-rate schedules.

Chapter 5 of the book trains GPTModel with ``torch.optim.AdamW(model.parameters(), lr=0.0004,
weight_decay=0.1)``; appendix D adds a linear learning-rate warmup, cosine decay and gradient
clipping (``torch.nn.utils.clip_grad_norm_``). This module provides the same three pieces for
numpy_gpt's Parameters:

* ``AdamW`` -- Adam with decoupled weight decay, step for step what ``torch.optim.AdamW`` computes;
  parameter groups (dicts with their own ``lr``/``weight_decay``) work as in PyTorch, and
  ``configure_param_groups`` builds the usual "decay the matrices only" split (nanoGPT);
* ``clip_grad_norm`` -- rescale all gradients so their global L2 norm is at most ``max_norm``;
* ``ConstantLR`` and ``WarmupCosineLR`` -- ``get_lr(step)`` callables a training loop calls before
  each step, then writes into every ``optimizer.param_groups[i]["lr"]`` (as appendix D does).

Everything updates the arrays in place and stays in the parameters' dtype (float32): scalars such as
the bias corrections are Python floats, which NumPy applies without promoting float32 arrays.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from numpy_gpt.fast import enabled, kernels
from numpy_gpt.nn.embedding import Embedding
from numpy_gpt.nn.module import Module, Parameter

_GROUP_OPTIONS = ("lr", "betas", "eps", "weight_decay")
_GROUP_KEYS = {"params", "name", *_GROUP_OPTIONS}
_STATE_KEY = re.compile(r"state\.(\d+)\.(step|exp_avg|exp_avg_sq)")
NORM_SLICE = 65536     # elements per float32 dot product in clip_grad_norm (see there)


def _check_lr(lr: Any, where: str) -> float:
    """lr as a float, or a ValueError: a NaN or infinite learning rate would silently turn every
    weight NaN at the next step."""
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"{where} must be a number, got {lr!r}") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{where} must be a finite number >= 0, got {lr!r}")
    return value


def _check_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Validate AdamW hyperparameters and return them as plain Python floats."""
    lr = _check_lr(options["lr"], f"{where}: lr")
    try:
        beta1, beta2 = (float(b) for b in options["betas"])
        eps = float(options["eps"])
        weight_decay = float(options["weight_decay"])
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: lr, eps and weight_decay must be numbers and betas a pair of numbers "
                        f"({err})") from None
    if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
        raise ValueError(f"{where}: betas must lie in [0, 1), got {(beta1, beta2)}")
    if not eps >= 0.0:
        raise ValueError(f"{where}: eps must be >= 0, got {eps}")
    if not weight_decay >= 0.0:
        raise ValueError(f"{where}: weight_decay must be >= 0, got {weight_decay}")
    return {"lr": lr, "betas": (beta1, beta2), "eps": eps, "weight_decay": weight_decay}


def adamw_update(w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *, lr: float, beta1: float,
                 beta2: float, eps: float, weight_decay: float, step: int) -> None:
    """One AdamW step of weights w with gradient g and moments m, v, all updated in place.

    The textbook update (see AdamW), with the bias corrections folded in as torch.optim does, so
    the float32 results match it: sqrt(v_hat) = sqrt(v) / sqrt(1 - beta2^t) and
    lr * m_hat = lr / (1 - beta1^t) * m.
    """
    w *= 1.0 - lr * weight_decay                                 # decoupled weight decay
    m *= beta1
    m += (1.0 - beta1) * g                                       # m = beta1 m + (1 - beta1) g
    v *= beta2
    v += (1.0 - beta2) * (g * g)                                 # v = beta2 v + (1 - beta2) g^2
    denom = np.sqrt(v) / math.sqrt(1.0 - beta2 ** step) + eps    # sqrt(v_hat) + eps
    w -= (lr / (1.0 - beta1 ** step)) * m / denom                # w -= lr m_hat / (sqrt(v_hat) + eps)


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), exactly as ``torch.optim.AdamW``.

    For each trainable parameter w with gradient g, step t (1, 2, ...) does::

        w <- w * (1 - lr * weight_decay)               # decoupled weight decay
        m <- beta1 * m + (1 - beta1) * g               # first moment: a running mean of g
        v <- beta2 * v + (1 - beta2) * g**2            # second moment: a running mean of g^2
        m_hat = m / (1 - beta1**t)                     # bias corrections: m and v start at 0
        v_hat = v / (1 - beta2**t)
        w <- w - lr * m_hat / (sqrt(v_hat) + eps)

    (``adamw_update`` above, one parameter at a time.) Each weight moves by about lr in the
    direction of its averaged gradient, whatever the gradient's scale.

    ``params`` is an iterable of Parameters, or of parameter groups: dicts with ``"params"`` and any
    of ``lr``, ``betas``, ``eps``, ``weight_decay`` (and an optional ``"name"``) overriding the
    defaults given here. ``self.param_groups`` holds those dicts; a schedule sets
    ``group["lr"]`` before each ``step()``. Frozen parameters (``trainable=False``) and those whose
    grad is None are skipped; their moments are only allocated once they are first updated.
    ``m`` and ``v`` have the parameter's dtype.
    """

    def __init__(self, params: Iterable[Parameter] | Iterable[dict[str, Any]], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01):
        defaults = _check_options({"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay},
                                  "AdamW")
        items = list(params)
        if not items:
            raise ValueError("AdamW got an empty parameter list: pass model.parameters() or a list of "
                             "parameter groups")
        if not isinstance(items[0], dict):
            items = [{"params": items}]
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for i, group in enumerate(items):
            self.param_groups.append(self._make_group(group, defaults, f"AdamW parameter group {i}", seen))
        if not seen:
            raise ValueError("AdamW got parameter groups without any parameter")
        # state[i] for the i-th parameter (counting through the groups in order):
        # {"step": int, "exp_avg": m, "exp_avg_sq": v}
        self.state: dict[int, dict[str, Any]] = {}

    @staticmethod
    def _make_group(group: Any, defaults: dict[str, Any], where: str, seen: set[int]) -> dict[str, Any]:
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{where}: expected a Parameter list or dicts with a 'params' entry, "
                            f"got {type(group).__name__}")
        unknown = sorted(set(group) - _GROUP_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown option(s) {unknown}; allowed: {sorted(_GROUP_KEYS)}")
        params = list(group["params"])
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{where}: expected Parameters, got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(f"{where}: a parameter {p} appears more than once")
            seen.add(id(p))
        options = _check_options({k: group.get(k, defaults[k]) for k in _GROUP_OPTIONS}, where)
        made = {"params": params, **options}
        if "name" in group:
            made["name"] = str(group["name"])
        return made

    def _indexed_params(self) -> Iterable[tuple[int, Parameter, dict[str, Any]]]:
        """(flat index, parameter, its group) for every parameter, in group order."""
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield index, p, group
                index += 1

    def step(self) -> None:
        """Update every trainable parameter that has a gradient, once, from its ``.grad``.

        ``kernels.adamw_update`` is ``adamw_update`` run over cache-sized chunks of the flat
        arrays on every core (numpy_gpt/fast): the update's dozen elementwise passes then read each
        150 MB array of GPT-2 124M from memory once instead of a dozen times.
        """
        for group in self.param_groups:                   # a schedule may have set a bad lr
            _check_lr(group["lr"], "AdamW.step: a parameter group's lr")
        for index, p, group in self._indexed_params():
            if not p.trainable or p.grad is None:
                continue
            if p.grad.shape != p.data.shape or p.grad.dtype != p.data.dtype:
                raise ValueError(f"AdamW: parameter {index} has grad {p.grad.shape} {p.grad.dtype} but data "
                                 f"{p.data.shape} {p.data.dtype}; grads must match their parameter")
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                             "exp_avg_sq": np.zeros_like(p.data)}
            state["step"] += 1
            beta1, beta2 = group["betas"]
            update = functools.partial(kernels.adamw_update if enabled("adamw") else adamw_update,
                                       lr=float(group["lr"]), beta1=beta1, beta2=beta2,
                                       eps=group["eps"], weight_decay=group["weight_decay"],
                                       step=state["step"])
            w, g, m, v = (a.reshape(-1) for a in (p.data, p.grad, state["exp_avg"], state["exp_avg_sq"]))
            update(w, g, m, v)                            # in place

    def zero_grad(self) -> None:
        """Set the gradient of every parameter handled by this optimizer to None."""
        for _, p, _ in self._indexed_params():
            p.grad = None

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The optimizer state as a flat dict of plain values, ready for an .npz plus JSON.

        ``"param_groups"`` is a JSON-able list of the groups' hyperparameters and parameter
        indices; for each parameter i updated at least once, ``"state.{i}.step"`` is an int and
        ``"state.{i}.exp_avg"`` / ``"state.{i}.exp_avg_sq"`` are the live moment arrays (copy them
        before mutating). Every value is either an ndarray or JSON-able.
        """
        groups, index = [], 0
        for group in self.param_groups:
            saved = {k: group[k] for k in _GROUP_OPTIONS}
            saved["betas"] = list(group["betas"])
            if "name" in group:
                saved["name"] = group["name"]
            saved["params"] = list(range(index, index + len(group["params"])))
            index += len(group["params"])
            groups.append(saved)
        out: dict[str, Any] = {"param_groups": groups}
        for i in sorted(self.state):
            out[f"state.{i}.step"] = int(self.state[i]["step"])
            out[f"state.{i}.exp_avg"] = self.state[i]["exp_avg"]
            out[f"state.{i}.exp_avg_sq"] = self.state[i]["exp_avg_sq"]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and moments saved by ``state_dict`` (arrays are copied).

        The parameter groups must have the same sizes and every moment the shape of its parameter;
        otherwise nothing is changed and the error says what differs.
        """
        options, new_state = self._checked_state(state_dict)
        for group, opts in zip(self.param_groups, options, strict=True):
            group.update(opts)
        self.state = new_state

    def check_param_groups(self, state_dict: dict[str, Any]) -> list[dict[str, Any]]:
        """Each group's hyperparameters from ``state_dict["param_groups"]`` (a checkpoint keeps them
        in its JSON part), checked as ``load_state_dict`` checks them; nothing is changed and the
        moments are not looked at."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict:
            raise KeyError("AdamW state dict has no 'param_groups' entry: not an AdamW state dict")
        saved_groups = state_dict["param_groups"]
        if not isinstance(saved_groups, list) or not all(isinstance(g, dict) for g in saved_groups):
            raise TypeError("AdamW state dict: param_groups must be a list of groups (JSON objects)")
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"AdamW state dict has {len(saved_groups)} parameter group(s), this optimizer "
                             f"has {len(self.param_groups)}")
        options = []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            indices = saved.get("params", [])
            n_saved = len(indices) if isinstance(indices, list) else -1
            if n_saved != len(group["params"]):
                raise ValueError(f"AdamW state dict: parameter group {i} has {n_saved} parameters saved, "
                                 f"{len(group['params'])} here")
            missing = [k for k in _GROUP_OPTIONS if k not in saved]
            if missing:
                raise KeyError(f"AdamW state dict: parameter group {i} lacks {missing}")
            options.append(_check_options(saved, f"AdamW state dict group {i}"))
        return options

    def _checked_state(self, state_dict: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[int, Any]]:
        """(each group's options, the new per-parameter state) of ``state_dict``, every part checked."""
        options = self.check_param_groups(state_dict)
        params = [p for _, p, _ in self._indexed_params()]
        entries: dict[int, dict[str, Any]] = {}
        unexpected = []
        for key, value in state_dict.items():
            if key == "param_groups":
                continue
            match = _STATE_KEY.fullmatch(key)
            if match is None or int(match[1]) >= len(params):
                unexpected.append(key)
                continue
            entries.setdefault(int(match[1]), {})[match[2]] = value
        if unexpected:
            raise KeyError(f"AdamW state dict has unexpected entries {unexpected[:10]} (this optimizer has "
                           f"{len(params)} parameters)")

        new_state = {}
        for i, entry in sorted(entries.items()):
            missing = [k for k in ("step", "exp_avg", "exp_avg_sq") if k not in entry]
            if missing:
                raise KeyError(f"AdamW state dict: parameter {i} lacks {[f'state.{i}.{k}' for k in missing]}")
            step = entry["step"]
            if isinstance(step, np.ndarray) and step.ndim == 0:
                step = step.item()
            if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
                raise ValueError(f"AdamW state dict: state.{i}.step must be an integer >= 1, got {step!r}")
            p = params[i]
            for k in ("exp_avg", "exp_avg_sq"):
                shape = tuple(np.shape(entry[k]))
                if shape != p.shape:
                    raise ValueError(f"AdamW state dict: state.{i}.{k} has shape {shape} but parameter {i} "
                                     f"has shape {p.shape}")
            new_state[i] = {"step": int(step),
                            "exp_avg": np.array(entry["exp_avg"], dtype=p.data.dtype, order="C"),
                            "exp_avg_sq": np.array(entry["exp_avg_sq"], dtype=p.data.dtype, order="C")}
        return options, new_state


def configure_param_groups(model: Module, weight_decay: float, *,
                           decay_embeddings: bool = False) -> list[dict[str, Any]]:
    """Split a model's trainable parameters into a decayed and a non-decayed AdamW group.

    Matrices (parameters with 2 or more dimensions: Linear weights) get ``weight_decay``; biases and
    LayerNorm scale/shift get none, and so do Embedding weights unless ``decay_embeddings``
    (minGPT/nanoGPT style). Frozen parameters are left out. The book instead decays everything,
    which is ``AdamW(model.parameters(), lr, weight_decay=...)``. Empty groups are dropped.
    """
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    for p in model.parameters(trainable_only=True):
        is_decayed = p.data.ndim >= 2 and (decay_embeddings or id(p) not in embedding_ids)
        (decay if is_decayed else no_decay).append(p)
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def clip_grad_norm(params: Iterable[Parameter], max_norm: float, *,
                   error_if_nonfinite: bool = False) -> float:
    """Scale all trainable gradients in place so that their global L2 norm is at most ``max_norm``.

    total_norm = sqrt(sum over parameters of sum(g**2)); if total_norm > max_norm, every g is
    multiplied by max_norm / (total_norm + 1e-6), as ``torch.nn.utils.clip_grad_norm_`` does.
    Returns total_norm (before clipping) as a float. The sum of squares is a float32 dot product
    per slice of ``NORM_SLICE`` elements, summed in Python floats (float64): one float32 dot over a
    whole 38M-element gradient would be off by up to 1%. Parameters whose grad is None are skipped.
    A non-finite norm leaves the gradients untouched and is returned, or raises with
    ``error_if_nonfinite``.
    """
    max_norm = float(max_norm)
    if not max_norm > 0.0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    grads = [p.grad for p in params if p.trainable and p.grad is not None]
    sum_of_squares = 0.0
    for g in grads:
        flat = g.reshape(-1)
        for start in range(0, flat.size, NORM_SLICE):
            piece = flat[start:start + NORM_SLICE]
            sum_of_squares += float(np.dot(piece, piece))
    total_norm = math.sqrt(sum_of_squares)
    if not math.isfinite(total_norm):
        if error_if_nonfinite:
            raise FloatingPointError(f"clip_grad_norm: the total gradient norm is {total_norm}; the loss "
                                     f"or a backward pass produced inf/nan")
        return total_norm
    clip_coef = max_norm / (total_norm + 1e-6)
    if clip_coef < 1.0:
        for g in grads:
            g *= clip_coef
    return total_norm


# -- learning-rate schedules (appendix D) ---------------------------------------------------------
def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
        raise ValueError(f"step must be an integer >= 0, got {step!r}")
    return int(step)


class ConstantLR:
    """The chapter-5 schedule: ``get_lr(step) = lr`` for every step."""

    def __init__(self, lr: float):
        self.lr = _check_lr(lr, "ConstantLR: lr")

    def get_lr(self, step: int) -> float:
        _check_step(step)
        return self.lr

    def __call__(self, step: int) -> float:
        return self.get_lr(step)

    def __repr__(self) -> str:
        return f"ConstantLR(lr={self.lr})"


class WarmupCosineLR:
    """Appendix D's schedule: linear warmup from ``initial_lr`` to ``peak_lr``, then cosine decay.

    With s the 0-based global step, W = warmup_steps and S = total_steps::

        s <  W:  lr(s) = initial_lr + s * (peak_lr - initial_lr) / W
        s >= W:  progress = min(1, (s - W) / (S - W))
                 lr(s) = min_lr + (peak_lr - min_lr) * 0.5 * (1 + cos(pi * progress))

    so lr(0) = initial_lr, lr(W) = peak_lr, lr at the midpoint of the decay is (peak_lr + min_lr) / 2
    and lr(S) = min_lr. Steps past S stay at min_lr (the book's formula would rise again). The
    defaults for ``initial_lr`` and ``min_lr`` are those of the book's ``train_model``.
    """

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int, initial_lr: float = 3e-5,
                 min_lr: float = 1e-6):
        self.peak_lr = _check_lr(peak_lr, "WarmupCosineLR: peak_lr")
        self.initial_lr = _check_lr(initial_lr, "WarmupCosineLR: initial_lr")
        self.min_lr = _check_lr(min_lr, "WarmupCosineLR: min_lr")
        self.warmup_steps = _check_step(warmup_steps)
        self.total_steps = _check_step(total_steps)
        if self.total_steps <= self.warmup_steps:
            raise ValueError(f"WarmupCosineLR: total_steps ({total_steps}) must exceed warmup_steps "
                             f"({warmup_steps})")

    def get_lr(self, step: int) -> float:
        step = _check_step(step)
        if step < self.warmup_steps:
            return self.initial_lr + step * (self.peak_lr - self.initial_lr) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr + (self.peak_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        return self.get_lr(step)

    def __repr__(self) -> str:
        return (f"WarmupCosineLR(peak_lr={self.peak_lr}, total_steps={self.total_steps}, "
                f"warmup_steps={self.warmup_steps}, initial_lr={self.initial_lr}, min_lr={self.min_lr})")
