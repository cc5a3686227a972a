"""AdamW, clip_grad_norm and the learning-rate schedules against PyTorch and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import reference

from numpy_gpt.fast import CHUNK
from numpy_gpt.fast import threads as machinery
from numpy_gpt.nn.embedding import Embedding
from numpy_gpt.nn.layernorm import LayerNorm
from numpy_gpt.nn.linear import Linear
from numpy_gpt.nn.module import Module, Parameter
from numpy_gpt.optim import AdamW, ConstantLR, WarmupCosineLR, clip_grad_norm, configure_param_groups

torch = reference("torch")

SHAPES = [(7, 5), (5,), (3, 4, 2), (1,), (2 * CHUNK // 256 + 3, 256)]     # the last spans 3 CHUNKs
STEPS = 20


def make_params(seed: int = 0, shapes=SHAPES) -> list[Parameter]:
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(s, dtype=np.float32)) for s in shapes]


def torch_copies(params: list[Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]


def grads_for(params, seed: int, steps: int = STEPS) -> list[list[np.ndarray]]:
    """steps lists of float32 gradients (varied scales, so eps and the moments both matter)."""
    rng = np.random.default_rng(seed)
    return [[(rng.standard_normal(p.shape) * 10.0 ** rng.integers(-3, 2)).astype(np.float32)
             for p in params] for _ in range(steps)]


def set_grads(params, tparams, grads):
    for p, tp, g in zip(params, tparams, grads, strict=True):
        p.grad = g.copy()
        tp.grad = torch.from_numpy(g.copy())


def assert_params_close(params, tparams):
    for p, tp in zip(params, tparams, strict=True):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_torch(weight_decay, fast_switch):
    params = make_params(1)
    tparams = torch_copies(params)
    opt = AdamW(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    topt = torch.optim.AdamW(tparams, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=weight_decay)
    for grads in grads_for(params, seed=2):
        set_grads(params, tparams, grads)
        opt.step()
        topt.step()
        assert_params_close(params, tparams)
    for i in range(len(params)):
        assert opt.state[i]["exp_avg"].dtype == opt.state[i]["exp_avg_sq"].dtype == np.float32
        np.testing.assert_allclose(opt.state[i]["exp_avg_sq"], topt.state[tparams[i]]["exp_avg_sq"].numpy(),
                                   rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("threads", [2, 3])
def test_adamw_on_several_threads_matches_one_thread_bit_for_bit_and_torch(threads, monkeypatch):
    """The CHUNK slices are spread over threads (numpy_gpt.fast.map_chunks): same bits as one thread."""
    monkeypatch.setattr(machinery, "PARALLEL_MIN_SIZE", 0)               # small arrays on threads too
    params_1, params_n = make_params(4), make_params(4)
    tparams = torch_copies(params_1)
    opt_1, opt_n = (AdamW(p, lr=1e-2, weight_decay=0.1) for p in (params_1, params_n))
    topt = torch.optim.AdamW(tparams, lr=1e-2, weight_decay=0.1)
    for grads in grads_for(params_1, seed=5, steps=5):
        set_grads(params_1, tparams, grads)
        for p, g in zip(params_n, grads, strict=True):
            p.grad = g.copy()
        monkeypatch.setattr(machinery, "_threads", 1)
        opt_1.step()
        monkeypatch.setattr(machinery, "_threads", threads)
        opt_n.step()
        topt.step()
    for p1, pn in zip(params_1, params_n, strict=True):
        np.testing.assert_array_equal(p1.data, pn.data)
    assert_params_close(params_n, tparams)


def test_adamw_default_hyperparameters_match_torch():
    params = make_params(3)
    tparams = torch_copies(params)
    opt, topt = AdamW(params, lr=1e-3), torch.optim.AdamW(tparams, lr=1e-3)
    for grads in grads_for(params, seed=4):
        set_grads(params, tparams, grads)
        opt.step()
        topt.step()
    assert_params_close(params, tparams)


def test_adamw_two_param_groups_match_torch(fast_switch):
    params = make_params(5)
    tparams = torch_copies(params)
    decay = [i for i, p in enumerate(params) if p.data.ndim >= 2]
    no_decay = [i for i, p in enumerate(params) if p.data.ndim < 2]

    def groups(ps):
        return [{"params": [ps[i] for i in decay], "weight_decay": 0.1},
                {"params": [ps[i] for i in no_decay], "weight_decay": 0.0, "lr": 3e-3}]

    opt = AdamW(groups(params), lr=1e-2, weight_decay=0.5)
    topt = torch.optim.AdamW(groups(tparams), lr=1e-2, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 3e-3]
    for grads in grads_for(params, seed=6):
        set_grads(params, tparams, grads)
        opt.step()
        topt.step()
    assert_params_close(params, tparams)


def test_adamw_lr_schedule_mid_run_matches_torch():
    params = make_params(7)
    tparams = torch_copies(params)
    opt = AdamW(params, lr=0.0, weight_decay=0.1)
    topt = torch.optim.AdamW(tparams, lr=0.0, weight_decay=0.1)
    schedule = WarmupCosineLR(peak_lr=1e-2, total_steps=STEPS, warmup_steps=5, initial_lr=1e-4, min_lr=1e-4)
    for step, grads in enumerate(grads_for(params, seed=8)):
        for group, tgroup in zip(opt.param_groups, topt.param_groups, strict=True):
            group["lr"] = tgroup["lr"] = schedule(step)
        set_grads(params, tparams, grads)
        opt.step()
        topt.step()
        assert_params_close(params, tparams)


def test_state_dict_round_trip_continues_identically():
    params = make_params(9)
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    all_grads = grads_for(params, seed=10)
    for grads in all_grads[:10]:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.copy()
        opt.step()

    # copies, in Fortran order as an .npz may hold them: the optimizer must still update in place
    state = {k: (np.asfortranarray(v.copy()) if isinstance(v, np.ndarray) else v)
             for k, v in opt.state_dict().items()}
    assert all(isinstance(v, np.ndarray) or k == "param_groups" or isinstance(v, int)
               for k, v in state.items())
    resumed = [Parameter(p.data.copy()) for p in params]
    opt2 = AdamW(resumed, lr=123.0, weight_decay=0.0)      # hyperparameters come from the state dict
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["weight_decay"] == 0.1

    for grads in all_grads[10:]:
        for p, q, g in zip(params, resumed, grads, strict=True):
            p.grad = g.copy()
            q.grad = g.copy()
        opt.step()
        opt2.step()
    for p, q in zip(params, resumed, strict=True):
        np.testing.assert_array_equal(p.data, q.data)


def test_load_state_dict_errors_leave_state_unchanged():
    params = make_params(11)
    opt = AdamW(params, lr=1e-2)
    for p in params:
        p.grad = np.full_like(p.data, 1.0)
    opt.step()
    state = dict(opt.state_dict())

    other = AdamW(make_params(11, shapes=[(7, 5), (6,), (3, 4, 2), (1,), (300, 240)]), lr=1e-2)
    with pytest.raises(ValueError, match=r"state\.1\.exp_avg has shape \(5,\) but parameter 1 has "
                                         r"shape \(6,\)"):
        other.load_state_dict(state)
    assert other.state == {}

    with pytest.raises(ValueError, match="has 5 parameters saved, 4 here"):
        AdamW(make_params(11, shapes=SHAPES[:4]), lr=1e-2).load_state_dict(state)
    with pytest.raises(KeyError, match="unexpected entries"):
        AdamW(make_params(11), lr=1e-2).load_state_dict({**state, "state.99.step": 1})
    broken = {k: v for k, v in state.items() if k != "state.2.exp_avg_sq"}
    with pytest.raises(KeyError, match=r"state\.2\.exp_avg_sq"):
        AdamW(make_params(11), lr=1e-2).load_state_dict(broken)
    with pytest.raises(KeyError, match="param_groups"):
        AdamW(make_params(11), lr=1e-2).load_state_dict({})


def test_frozen_parameters_untouched():
    params = make_params(12)
    params[0].trainable = False
    frozen_before = params[0].data.copy()
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    for p in params:
        p.grad = np.full_like(p.data, 0.5)
    opt.step()
    np.testing.assert_array_equal(params[0].data, frozen_before)
    assert 0 not in opt.state and 1 in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in params)              # as torch: every grad back to None


def test_parameters_without_gradient_are_skipped():
    """A parameter whose grad is None (unused in this step, or zero_grad'ed) is not updated at all:
    no weight decay, no moment decay, as in torch.optim.AdamW."""
    params = make_params(14)
    tparams = torch_copies(params)
    opt = AdamW(params, lr=1e-2, weight_decay=0.1)
    topt = torch.optim.AdamW(tparams, lr=1e-2, weight_decay=0.1)
    for step_grads in grads_for(params, seed=15, steps=3):
        set_grads(params, tparams, step_grads)
        params[2].grad, tparams[2].grad = None, None
        opt.step()
        topt.step()
    assert_params_close(params, tparams)
    assert 2 not in opt.state


def test_adamw_rejects_bad_input():
    params = make_params(13)
    with pytest.raises(ValueError, match="empty parameter list"):
        AdamW([], lr=1e-3)
    with pytest.raises(ValueError, match="unknown option"):
        AdamW([{"params": params, "weight_dacay": 0.1}], lr=1e-3)
    with pytest.raises(ValueError, match="more than once"):
        AdamW([{"params": params}, {"params": params[:1]}], lr=1e-3)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        AdamW(params, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW(params, lr=1e-3, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="expected Parameters"):
        AdamW([np.zeros(3)], lr=1e-3)


def test_lr_given_as_numpy_scalar_does_not_upcast():
    params = make_params(14)
    opt = AdamW(params, lr=1e-3)
    opt.param_groups[0]["lr"] = np.float64(1e-3)
    for p in params:
        p.grad = np.full_like(p.data, 1.0)
    opt.step()
    assert all(p.data.dtype == np.float32 for p in params)


class TinyNet(Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.tok_emb = Embedding(11, 4, rng=rng)
        self.norm = LayerNorm(4)
        self.proj = Linear(4, 3, rng=rng)
        self.head = Linear(3, 11, bias=False, rng=rng)


def test_configure_param_groups_splits_matrices_from_the_rest():
    net = TinyNet()
    net.head.weight.trainable = False
    groups = configure_param_groups(net, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    assert [id(p) for p in groups[0]["params"]] == [id(net.proj.weight)]
    assert {id(p) for p in groups[1]["params"]} == {id(net.tok_emb.weight), id(net.norm.scale),
                                                    id(net.norm.shift), id(net.proj.bias)}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0

    with_emb = configure_param_groups(net, weight_decay=0.1, decay_embeddings=True)
    assert {id(p) for p in with_emb[0]["params"]} == {id(net.proj.weight), id(net.tok_emb.weight)}
    opt = AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


# -- clip_grad_norm -------------------------------------------------------------------------------
def test_clip_grad_norm_matches_torch_when_clipping():
    params = make_params(20)
    tparams = torch_copies(params)
    set_grads(params, tparams, grads_for(params, seed=21, steps=1)[0])
    for p in params:
        p.grad *= 100.0
    for tp, p in zip(tparams, params, strict=True):
        tp.grad = torch.from_numpy(p.grad.copy())
    exact = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params))
    norm = clip_grad_norm(params, max_norm=1.0)
    tnorm = torch.nn.utils.clip_grad_norm_(tparams, max_norm=1.0)
    assert isinstance(norm, float) and norm > 1.0
    assert norm == pytest.approx(exact, rel=1e-7)
    assert norm == pytest.approx(float(tnorm), rel=1e-5)      # torch sums a 263k tensor in float32
    for p, tp in zip(params, tparams, strict=True):
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-5, atol=1e-9)   # torch's norm: 2e-6 off
    assert math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params)) == \
        pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_below_threshold_changes_nothing():
    params = make_params(22)
    for p in params:
        p.grad = np.full_like(p.data, 1e-3)
    before = [p.grad.copy() for p in params]
    norm = clip_grad_norm(params, max_norm=1.0)
    expected = math.sqrt(sum(p.size for p in params)) * 1e-3
    assert norm == pytest.approx(expected, rel=1e-5)
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.grad, b)


def test_clip_grad_norm_is_accurate_on_large_gradients():
    p = Parameter(np.zeros(4_000_000, dtype=np.float32))
    p.grad = np.full_like(p.data, 0.125)                 # exact in float32: norm = 0.125 * 2000
    assert clip_grad_norm([p], max_norm=1e9) == pytest.approx(250.0, rel=1e-6)
    p.grad = np.full_like(p.data, 1e-3)
    assert clip_grad_norm([p], max_norm=1e9) == pytest.approx(2000 * float(np.float32(1e-3)), rel=1e-5)


def test_clip_grad_norm_skips_frozen_and_reports_nonfinite():
    params = make_params(23)
    for p in params:
        p.grad = np.full_like(p.data, 1.0)
    params[0].trainable = False
    norm = clip_grad_norm(params, max_norm=1000.0)
    assert norm == pytest.approx(math.sqrt(sum(p.size for p in params[1:])))
    assert all(np.all(p.grad == 1.0) for p in params)
    params[1].grad[0] = np.inf
    assert clip_grad_norm(params, max_norm=1.0) == math.inf
    assert np.all(params[2].grad == 1.0)
    with pytest.raises(FloatingPointError, match="inf/nan"):
        clip_grad_norm(params, max_norm=1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(params, max_norm=0.0)


# -- schedules ------------------------------------------------------------------------------------
def test_warmup_cosine_values_at_key_steps():
    s = WarmupCosineLR(peak_lr=1e-3, total_steps=110, warmup_steps=10, initial_lr=1e-4, min_lr=1e-5)
    assert s(0) == pytest.approx(1e-4)                          # start of warmup: initial_lr
    assert s(5) == pytest.approx(5.5e-4)                        # 1e-4 + 5 * 9e-4 / 10
    assert s(10) == pytest.approx(1e-3)                         # end of warmup: peak_lr
    assert s(35) == pytest.approx(8.550178573e-4)               # 1e-5 + 9.9e-4 * (1 + cos(pi/4)) / 2
    assert s(60) == pytest.approx(5.05e-4)                      # midpoint: (peak + min) / 2
    assert s(110) == pytest.approx(1e-5)                        # end: min_lr
    assert s(500) == pytest.approx(1e-5)                        # stays at min_lr afterwards
    assert s.get_lr(60) == s(60)


def test_schedule_without_warmup_and_constant():
    s = WarmupCosineLR(peak_lr=2e-3, total_steps=4, warmup_steps=0, min_lr=0.0)
    assert [s(i) for i in range(5)] == pytest.approx([2e-3, 1.70710678e-3, 1e-3, 0.29289322e-3, 0.0])
    c = ConstantLR(4e-4)
    assert c(0) == c(10_000) == 4e-4


def test_schedule_rejects_bad_arguments():
    with pytest.raises(ValueError, match="must exceed warmup_steps"):
        WarmupCosineLR(peak_lr=1e-3, total_steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="step must be an integer >= 0"):
        WarmupCosineLR(peak_lr=1e-3, total_steps=10, warmup_steps=2)(-1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        ConstantLR(-1.0)
