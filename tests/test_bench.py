"""The benchmark's plumbing at tiny sizes: a well-formed table and JSON, with and without torch.

No timing is asserted (the machine is shared): only that every part runs, the numbers have the
right types and signs, and the FLOP count matches a hand count.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from helpers import needs

import numpy_gpt.tools.bench as bench
from numpy_gpt.cli import tools as bench_cli
from numpy_gpt.tools.bench import (
    TINY_CONFIG,
    format_table,
    mfu,
    ratio_of_pairs,
    run_bench,
    train_step_flops,
    write_json,
)

TINY_PLAN = {"train": ["tiny"], "generate": "tiny", "rss": ["tiny"], "repeats": 2, "gen_repeats": 1,
             "prompt": 4, "new_tokens": 5, "gemm": 64}


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_train_step_flops_by_hand():
    # C = 32, L = 2, V = 97: per block 12 C^2 = 12288 matmul weights, head 32 * 97 = 3104
    n_matmul = 2 * 12288 + 3104
    per_token = 6 * n_matmul + 12 * 2 * 16 * 32
    assert train_step_flops(TINY_CONFIG, 2, 16) == per_token * 2 * 16


def test_mfu_and_pair_ratios_by_hand():
    # 394 GFLOP in 3.6 s on a 212 GFLOP/s peak: 394 / 3.6 / 212 = 0.5162...
    assert mfu(394e9, 3.6, 212.0) == pytest.approx(0.516247, rel=1e-5)
    # turns (2, 1), (3, 2), (5, 4): ratios 2, 1.5, 1.25 -> median 1.5 (the ratio of medians is 1.5 too,
    # but with (9, 4) as the last turn it would be 1.5 against a median-of-ratios of 2)
    assert ratio_of_pairs([2.0, 3.0, 5.0], [1.0, 2.0, 4.0]) == 1.5
    assert ratio_of_pairs([2.0, 3.0, 9.0], [1.0, 2.0, 4.0]) == 2.0


def test_quick_logic_without_torch(tmp_path):
    plan = {**TINY_PLAN, "case_repeats": {"tiny": 3, "124M": 1}}     # a case's own count wins
    result = run_bench(plan, use_torch=False, threads=1, log=lambda s: None)
    (row,) = result["train"]
    assert row["torch"] is None and row["ratio"] is None and row["note"] == "torch skipped"
    assert row["torch_builtin"] is None and row["ratio_builtin"] is None
    assert row["ratio_of_pairs"] is None and row["ratio_of_pairs_builtin"] is None
    assert len(row["numpy_gpt"]["times_s"]) == 3
    assert all(_positive(row["numpy_gpt"][k]) for k in ("median_s", "tokens_per_s", "mfu"))
    peak = result["sgemm_peak_gflops"]                 # the higher of two measurements
    assert peak == max(result["sgemm_peak_gflops_start"], result["sgemm_peak_gflops_end"])
    # The looser count, by hand for TINY_CONFIG (C = 32, L = 2, V = 97, context 32, qkv_bias False):
    # token and position tables 97*32 + 32*32; per block W_q, W_k, W_v 3*32*32, out_proj 32*32 + 32,
    # feed-forward 32*128 + 128 + 128*32 + 32, two LayerNorms 4*32; final LayerNorm 2*32; head 32*97.
    per_block = 3 * 32 * 32 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32 + 4 * 32
    n_params = 97 * 32 + 32 * 32 + 2 * per_block + 2 * 32 + 32 * 97
    assert row["flops_6n_all_params"] == 6 * n_params * 2 * 16
    gen = result["generate"]
    assert gen["hf_cache"] is None and gen["vs_hf"] is None
    assert _positive(gen["numpy_gpt_cache"]["tokens_per_s"]) and _positive(gen["cache_speedup"])
    (rss,) = result["rss"]
    assert _positive(rss["numpy_gpt_mb"]) and rss["torch_mb"] is None and rss["torch_builtin_mb"] is None
    table = format_table(result)
    assert "| tiny (B=2, T=16) |" in table and "Notes:" in table and "torch skipped" in table
    path = tmp_path / "out" / "bench.json"
    write_json(result, path)
    assert json.loads(path.read_text())["train"][0]["case"] == "tiny"
    assert not list(path.parent.glob("*.tmp"))


@needs("torch", "transformers")
def test_quick_logic_with_torch_and_transformers():
    result = run_bench(TINY_PLAN, use_torch=True, threads=1, log=lambda s: None)
    (row,) = result["train"]
    for torch_key, suffix in (("torch", ""), ("torch_builtin", "_builtin")):
        ratio, times = row["ratio" + suffix], row[torch_key]["times_s"]
        assert _positive(ratio) and _positive(row[torch_key]["mfu"]) and len(times) == 2
        assert _positive(row["ratio_of_pairs" + suffix])
        assert _positive(result["rss"][0][torch_key + "_mb"])
    assert _positive(result["generate"]["vs_hf"])
    assert result["machine"]["torch"] and result["threads"] == 1
    assert "Notes:" not in format_table(result)


def test_subcommand_is_registered(tmp_path, monkeypatch):
    parser = argparse.ArgumentParser()
    bench_cli.add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", "--quick", "--no-torch", "--threads", "1",
                              "--json", str(tmp_path / "b.json")])
    assert args.quick and args.no_torch and args.threads == 1 and callable(args.func)
    monkeypatch.setattr(bench, "QUICK", TINY_PLAN)
    assert args.func(args) == 0
    assert json.loads((tmp_path / "b.json").read_text())["plan"] == TINY_PLAN


def _script(name: str = "profile_step"):
    """scripts/NAME.py, imported as a module (scripts/ is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_profile_step_self_time_by_hand(monkeypatch):
    """With a clock that only moves when told: outer runs 1 s, calls inner (2 s), runs 3 s more.
    Self time is outer 4 s, inner 2 s: the nested call is counted once, for inner."""
    script = _script("profile_step")
    clock = [0.0]
    monkeypatch.setattr(script.time, "perf_counter", lambda: clock[0])
    timer = script.SelfTimer()

    def tick(seconds):
        clock[0] += seconds

    inner = timer.wrap(lambda: tick(2.0), "inner")
    outer = timer.wrap(lambda: (tick(1.0), inner(), tick(3.0)), "outer")
    outer()
    outer()
    assert timer.totals == {"outer": 8.0, "inner": 4.0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_attention_core_measurement_compares_equal_bits(threads, dtype):
    """scripts/bench_attention_core.py times a fused attention core against the layer's readable
    lines; its figures mean something only if both give the same bits. Checked here on odd sizes
    (5 heads cut into chunks of 2, 7 tokens), on 1 and 2 threads, against the layer's own
    _attention_weights and the softmax_backward formula, not against the script's readable copy."""
    from numpy_gpt.nn.attention import MultiHeadAttention
    from numpy_gpt.nn.softmax import softmax_backward

    script = _script("bench_attention_core")
    b, h, t, hd = 2, 5, 7, 3
    layer = MultiHeadAttention(h * hd, h * hd, t, 0.0, h, dtype=dtype)
    rng = np.random.default_rng(3)
    q, k, v, dctx = (rng.standard_normal((b, h, t, hd)).astype(dtype) for _ in range(4))
    P = layer._attention_weights(q, k, 0)
    fused_P, fused_ctx = script.fused_forward(q, k, v, rows=2)
    assert fused_P.dtype == dtype and np.array_equal(fused_P, P) and np.array_equal(fused_ctx, P @ v)
    dS = softmax_backward(P, dctx @ v.swapaxes(-1, -2))
    dq, dk, dv = script.fused_backward(q, k, v, P, dctx, layer.scale, rows=2)
    assert np.array_equal(dq, (dS @ k) * layer.scale)
    assert np.array_equal(dk, dS.swapaxes(-1, -2) @ q) and np.array_equal(dv, P.swapaxes(-1, -2) @ dctx)


def test_profile_step_script_runs():
    """The script end to end on the tiny model, in its own process (it wraps the layer classes'
    methods in timers): a row for every layer type, none negative."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "profile_step.py"
    done = subprocess.run([sys.executable, str(script), "--case", "tiny", "--steps", "2", "--threads", "1"],
                          capture_output=True, text=True, check=True, timeout=120)
    rows = dict(re.findall(r"^  (.+?)\s+(-?[\d.]+) ms$", done.stdout, flags=re.M))
    for name in ("Linear forward", "Linear backward", "attention (outside its Linears) forward",
                 "LayerNorm backward", "GELU forward", "AdamW", "Embedding backward", "other"):
        assert name in rows, (name, done.stdout)
    assert all(float(v) >= 0 for k, v in rows.items() if k != "other"), done.stdout


def test_kernel_shares_and_scaling_at_tiny_sizes():
    """Every kernel gets an ABBA share and a 1/2-thread timing; the Amdahl model gives a step time
    and a saving per kernel for 4 and 8 cores; the table shows all of them."""
    from numpy_gpt import fast
    shares = bench.bench_kernel_shares("tiny", 1)
    assert set(shares["shares"]) == {*fast.KERNELS, "all"}
    for s in shares["shares"].values():
        assert len(s["on_s"]) == len(s["off_s"]) == 2 and len(s["per_round"]) == 1
        assert math.isfinite(s["saving"])
    assert fast.enabled()                                   # the switch is as it was
    scaling = bench.bench_kernel_scaling("tiny", repeats=1)
    assert set(scaling["kernels"]) == set(fast.KERNELS)
    assert all(_positive(scaling["kernels"][k][key]) for k in fast.KERNELS
               for key in ("readable_s", "kernel_1t_s", "kernel_2t_s"))
    assert set(scaling["model"]) == {"4", "8"} and _positive(scaling["model"]["8"]["step_s"])
    table = "\n".join(bench.format_kernels({"kernel_shares": [shares], "kernel_scaling": [scaling]}))
    for kernel in fast.KERNELS:
        assert f"| {kernel} |" in table
    assert "saving at 8 cores (model)" in table
