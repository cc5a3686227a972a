"""Scaling laws: FLOP counts against a hand count and torch's FLOP counter, the three Chinchilla fits
against synthetic data from a known law, and the sweep's resumption after Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
from helpers import reference, torch_reference

from numpy_gpt import scaling
from numpy_gpt.cli.pretrain import apply_scaling_recommendation
from numpy_gpt.cli.scaling import parse_budget
from numpy_gpt.model import GPTModel
from numpy_gpt.scaling import ScalingError, append_result, read_results, recommend

torch = reference("torch")
FlopCounterMode = reference("torch.utils.flop_counter", "FlopCounterMode")

TINY = {"vocab_size": 10, "context_length": 4, "emb_dim": 8, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0,
        "qkv_bias": False}
# A law in the range of our sweep (losses in nats per character, N from 1e4, D from 1e4).
TRUE_LAW = {"E": 1.3, "A": 40.0, "B": 150.0, "alpha": 0.35, "beta": 0.40}
# A coarser grid of starting points than Chinchilla's 4,500 (used once below), to keep the tests fast.
SMALL_GRID = {"a": np.array([0.0, 10.0, 20.0]), "alpha": np.array([0.25, 0.75, 1.5]),
              "b": np.array([0.0, 10.0, 20.0]), "beta": np.array([0.25, 0.75, 1.5]),
              "e": np.array([-0.5, 0.5])}


# -- FLOPs -----------------------------------------------------------------------------------------


def test_flops_per_token_matches_a_hand_count():
    # TINY by hand, d = 8, L = 2, T = 4, V = 10.
    # Parameters per block: W_query, W_key, W_value 3 x 64, out_proj 64 + 8, feed-forward 8 x 32 + 32
    # and 32 x 8 + 8, two LayerNorms 2 x 16: 192 + 72 + 288 + 264 + 32 = 848; two blocks and the
    # final LayerNorm (16): N = 1712.
    assert scaling.non_embedding_params(TINY) == 1712
    # Forward matrix products per token and block: q, k, v 3 x 2 x 8 x 8 = 384, scores 2 x 4 x 8 = 64,
    # P V 64, out_proj 128, feed-forward 2 x 8 x 32 x 2 = 1024: 1664; two blocks 3328, head 2 x 8 x 10 = 160.
    # Training = 3 x forward = 10464, plus 6 FLOPs per bias and LayerNorm parameter (1712 - 2 x 768 = 176):
    assert scaling.flops_per_token(TINY) == 3 * (3328 + 160) + 6 * 176 == 11520


def test_non_embedding_params_counts_the_model():
    shapes = scaling.SWEEP_SHAPES[:4]
    configs = [scaling.model_config(shape, vocab_size=65, context_length=32) for shape in shapes]
    configs.append({**configs[0], "hidden_dim": 3 * configs[0]["emb_dim"] + 1, "qkv_bias": True})
    for cfg in configs:
        model = GPTModel(cfg, seed=0)
        outside = sum(p.data.size for name, p in model.named_parameters()
                      if not name.startswith(("tok_emb", "pos_emb", "out_head")))
        assert scaling.non_embedding_params(cfg) == outside


def test_matrix_flops_match_torch_flop_counter():
    """torch's FlopCounterMode counts the products of an independent torch GPT, forward + backward."""
    model = torch_reference.GPTModel(TINY)
    idx = torch.randint(0, TINY["vocab_size"], (3, TINY["context_length"]))
    with FlopCounterMode(display=False) as counter:
        model(idx).sum().backward()
    per_token = counter.get_total_flops() / idx.numel()
    d, layers, t, v = TINY["emb_dim"], TINY["n_layers"], TINY["context_length"], TINY["vocab_size"]
    matrix_flops = 72 * layers * d * d + 12 * layers * t * d + 6 * d * v
    assert per_token == matrix_flops
    biases_and_norms = scaling.non_embedding_params(TINY) - 12 * layers * d * d
    assert scaling.flops_per_token(TINY) == matrix_flops + 6 * biases_and_norms


# -- the grid ----------------------------------------------------------------------------------------


def test_plan_sweep_spends_each_budget_and_leaves_out_extreme_runs():
    runs, skipped = scaling.plan_sweep(scaling.SWEEP_SHAPES, [1e11, 1e12], seeds=2, vocab_size=65,
                                       context_length=64, batch_size=8, train_tokens=1_000_000)
    assert runs and skipped
    for run in runs:
        assert abs(run.flops - run.budget) <= run.flops_per_token * run.batch_tokens / 2
        assert 40 <= run.steps and run.tokens <= 4 * 1_000_000
    assert any("steps <" in s for s in skipped) and any("epochs >" in s for s in skipped)
    assert len({r.key for r in runs}) == len(runs) and {r.seed for r in runs} == {0, 1}


# -- fits on synthetic data from a known law --------------------------------------------------------------


def _isoflop_design(law, budgets, per_budget=9, span=1.0):
    """Per budget, sizes log-spaced over +-span decades around the law's optimum; D = C / (6N)."""
    n_opt, _ = scaling.optimal_allocation(law, np.asarray(budgets))
    n = np.concatenate([n0 * np.logspace(-span, span, per_budget) for n0 in n_opt])
    budget = np.repeat(budgets, per_budget)
    return n, budget / (6 * n), budget


def test_fit_parametric_recovers_a_known_law_from_noisy_data():
    rng = np.random.default_rng(0)
    n, d, _ = _isoflop_design(TRUE_LAW, np.geomspace(3e10, 3e13, 6))
    loss = scaling.predict_loss(TRUE_LAW, n, d) * np.exp(rng.normal(0.0, 0.005, n.size))   # 0.5 % noise
    fit = scaling.fit_parametric(n, d, loss)
    # Tolerances: exponents within 0.03, E within 3 %, A and B (which trade off against the
    # exponents) within a factor 1.5, the allocation exponent a within 0.02.
    assert fit["alpha"] == pytest.approx(TRUE_LAW["alpha"], abs=0.03)
    assert fit["beta"] == pytest.approx(TRUE_LAW["beta"], abs=0.03)
    assert fit["E"] == pytest.approx(TRUE_LAW["E"], rel=0.03)
    assert 1 / 1.5 < fit["A"] / TRUE_LAW["A"] < 1.5 and 1 / 1.5 < fit["B"] / TRUE_LAW["B"] < 1.5
    assert fit["a"] == pytest.approx(TRUE_LAW["beta"] / (TRUE_LAW["alpha"] + TRUE_LAW["beta"]), abs=0.02)


def test_fit_parametric_is_exact_without_noise_and_robust_to_an_outlier():
    n, d, _ = _isoflop_design(TRUE_LAW, np.geomspace(1e11, 1e13, 4), per_budget=7)
    loss = scaling.predict_loss(TRUE_LAW, n, d)
    fit = scaling.fit_parametric(n, d, loss, starts=SMALL_GRID)
    for key, value in TRUE_LAW.items():
        assert fit[key] == pytest.approx(value, rel=2e-3)
    loss[3] *= 1.5                                     # one diverged run: the Huber loss shrugs it off
    fit = scaling.fit_parametric(n, d, loss, starts=SMALL_GRID)
    assert fit["alpha"] == pytest.approx(TRUE_LAW["alpha"], abs=0.01)
    assert fit["beta"] == pytest.approx(TRUE_LAW["beta"], abs=0.01)


def test_three_approaches_agree_on_synthetic_isoflop_data():
    law = {**TRUE_LAW, "beta": TRUE_LAW["alpha"]}      # alpha = beta: no asymmetry bias in approach 2
    budgets = np.geomspace(1e11, 1e14, 5)
    n, d, budget = _isoflop_design(law, budgets, per_budget=11, span=0.8)
    loss = scaling.predict_loss(law, n, d)
    true_a = 0.5
    fit2 = scaling.fit_isoflop(n, budget, loss)
    fit3 = scaling.fit_parametric(n, d, loss, starts=SMALL_GRID)
    # Approach 1: each run's training curve is the law along its own tokens.
    curves = []
    for n_i, d_i in zip(n, d, strict=True):
        tokens = np.geomspace(d_i / 30, d_i, 30)
        curves.append((n_i, 6 * n_i, tokens, scaling.predict_loss(law, n_i, tokens)))
    fit1 = scaling.fit_envelope(curves)
    for fit in (fit1, fit2, fit3):
        assert fit["a"] == pytest.approx(true_a, abs=0.04)
        assert fit["a"] + fit["b"] == pytest.approx(1.0, abs=0.02)


def test_bootstrap_intervals_cover_the_truth():
    rng = np.random.default_rng(1)
    n, d, budget = _isoflop_design(TRUE_LAW, np.geomspace(1e11, 1e13, 4), per_budget=7)
    loss = scaling.predict_loss(TRUE_LAW, n, d) * np.exp(rng.normal(0.0, 0.003, n.size))
    fit3 = scaling.fit_parametric(n, d, loss, starts=SMALL_GRID)
    boot = scaling.bootstrap({"N": n, "D": d, "budget": budget, "L": loss}, samples=60, fit3=fit3)
    low, high = boot["approach3"]["alpha"]
    assert low <= high and low - 0.02 <= TRUE_LAW["alpha"] <= high + 0.02
    low, high = boot["approach2"]["a"]
    assert low <= high and 0.3 < low and high < 0.75


def test_isoflop_minimum_outside_the_sizes_is_flagged():
    n = np.array([1e4, 2e4, 4e4, 1e4, 2e4, 4e4])
    budget = np.array([1e10] * 3 + [1e11] * 3)
    loss = np.array([2.0, 2.2, 2.5, 1.8, 1.7, 1.75])      # first budget: still falling at the smallest size
    minima = scaling.isoflop_minima(n, budget, loss)
    assert [m["inside"] for m in minima] == [False, True]
    with pytest.raises(ValueError, match="at least two budgets"):
        scaling.fit_isoflop(n, budget, loss)


# -- results, recommendation ------------------------------------------------------------------------------


def _record(key, settings=None, **changes):
    """A run record as train_run writes it (the fields the fits read), with ``changes``."""
    record = {"key": key, "N": 1000, "D": 5e5, "C": 3e9, "budget": 3e9, "flops_per_token": 6000,
              "flops_per_second": 1e9, "val_loss": 2.5, "curve": [[1000, 3.0], [5e5, 2.5]],
              "settings": settings or {"corpus": "c", "context_length": 16}}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def test_results_file_appends_whole_lines_and_names_a_broken_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_result(path, _record("a"))
    append_result(path, _record("b"))
    assert [r["key"] for r in read_results(path)] == ["a", "b"]
    path.write_text(path.read_text() + '{"key": "c", "val_lo\n')
    with pytest.raises(ScalingError, match=r"results.jsonl, line 3"):
        read_results(path)


def test_each_record_is_checked_when_read_and_what_was_skipped_is_said(tmp_path):
    """Issue 24 item 15: a NaN loss, a duplicate, a record without N or with a curve that is not a list
    never reach the fits; each skipped line is named with its reason."""
    path = tmp_path / "results.jsonl"
    lines = [_record("a"), _record("b", val_loss=float("nan")), _record("a"), _record("c", N=...),
             _record("d", curve="[[1, 2]]"), _record("e", N=-3), _record("f")]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    skipped = []
    assert [r["key"] for r in read_results(path, skipped)] == ["a", "f"]
    reasons = dict(line.split(": skipped, ", 1) for line in skipped)
    assert reasons == {f"{path}, line 2": "val_loss is nan, not a finite number",
                       f"{path}, line 3": "a second record of run a",
                       f"{path}, line 4": "no number N",
                       f"{path}, line 5": "curve is not a list of [tokens, loss] pairs",
                       f"{path}, line 6": "N is -3, not a finite positive number"}
    with pytest.warns(UserWarning, match="line 2: skipped"):
        read_results(path)
    other = [_record(k, {"corpus": "other"}) for k in "xy"]
    said = []
    kept = scaling.one_sweep([_record("a"), *other, _record("f")], said)
    assert [r["key"] for r in kept] == ["a", "f"] and "skipped 2 record(s) of another sweep" in said[0]


def test_recommend_refuses_a_zero_budget_and_skips_another_sweeps_records(tmp_path, monkeypatch, capsys):
    from numpy_gpt.cli import main

    with pytest.raises(SystemExit) as refused:
        main(["scaling", "--recommend", "0s", "--out-dir", str(tmp_path)])
    assert refused.value.code == 2
    assert "--recommend" in capsys.readouterr().err and not (tmp_path / "recommendation.json").exists()
    monkeypatch.setattr(scaling, "CHINCHILLA_GRID", SMALL_GRID)
    settings = {"vocab_size": 65, "context_length": 64, "batch_size": 8, "corpus": "c", "tokenizer": "char"}
    good = [{**r, "key": f"k{i}", "curve": [[1, 1.0]], "C": r["budget"], "settings": settings}
            for i, r in enumerate(_law_records(settings))]
    stray = {**good[0], "key": "stray", "val_loss": 0.01, "settings": {**settings, "corpus": "other"}}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*good, stray]))
    assert main(["scaling", "--recommend", "1e13", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 record(s) of another sweep" in out and f"approach 3, {len(good)} runs)" in out


@pytest.mark.parametrize("field, value, said", [
    ("steps", -5, "--max-steps must be positive"), ("lr", float("nan"), "lr must be positive"),
    ("warmup_steps", 2.5, "--warmup-steps must be positive")])
def test_pretrain_refuses_a_recommendation_that_could_train_nothing(field, value, said, tmp_path,
                                                                   monkeypatch, capsys):
    """'"steps": -5' in recommendation.json trained nothing and exited 0: one line, before any work."""
    from numpy_gpt.cli import main
    from numpy_gpt.fileio import write_json_atomic

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scaling, "CHINCHILLA_GRID", SMALL_GRID)
    settings = {"corpus": "corpus.txt", "tokenizer": "char", "vocab_size": 18, "max_chars": None,
                "val_fraction": 0.1, "context_length": 16, "batch_size": 2, "eval_tokens": 256}
    rec = recommend(_law_records(settings), settings, 1e10, None)
    rec[field] = value
    write_json_atomic(Path("runs/scaling/recommendation.json"), rec)
    assert main(["pretrain", "--preset", "from-scaling", "--no-progress"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "recommendation.json" in line and said in line
    assert not any(Path("runs").glob("*-from-scaling-*"))


def _law_records(settings):
    records = []
    for budget in (1e11, 1e12, 1e13):
        for shape in scaling.SWEEP_SHAPES:
            cfg = scaling.model_config(shape, settings["vocab_size"], settings["context_length"])
            fpt = scaling.flops_per_token(cfg)
            n = scaling.non_embedding_params(cfg)
            loss = float(scaling.predict_loss(TRUE_LAW, n, budget / fpt))
            records.append({"N": n, "D": budget / fpt, "val_loss": loss,
                            "flops_per_second": 1e10, "flops_per_token": fpt, "budget": budget})
    return records


def test_recommend_picks_the_ladder_shape_with_the_lowest_fitted_loss(monkeypatch):
    monkeypatch.setattr(scaling, "CHINCHILLA_GRID", SMALL_GRID)
    settings = {"vocab_size": 65, "context_length": 64, "batch_size": 8}
    rec = recommend(_law_records(settings), settings, 1e13, None)
    losses = {}
    for shape in scaling.SIZE_LADDER:
        cfg = scaling.model_config(shape, 65, 64)
        losses[shape] = scaling.predict_loss(TRUE_LAW, scaling.non_embedding_params(cfg),
                                             1e13 / scaling.flops_per_token(cfg))
    best = min(losses.values())
    chosen = scaling.Shape(*rec["shape"])
    assert losses[chosen] <= best * 1.005               # the chosen size is (nearly) the best rung
    timed = recommend(_law_records(settings), settings, None, 600.0)        # 10 min at 1e10 FLOP/s
    assert timed["budget_flops"] == pytest.approx(6e12)
    assert parse_budget("10min") == (None, 600.0) and parse_budget("1e15") == (1e15, None)
    with pytest.raises(ScalingError, match="--recommend"):
        parse_budget("lots")


def test_pretrain_from_scaling_without_a_recommendation_is_one_clear_error(tmp_path):
    args = Namespace(out_dir=None, max_steps=None, epochs=None)
    with pytest.raises(ScalingError, match="no .*recommendation.json yet.*numpy-gpt scaling"):
        apply_scaling_recommendation(args, tmp_path)


# -- the sweep, interrupted and resumed --------------------------------------------------------------------


def _sweep_command(corpus: Path, out_dir: Path) -> list[str]:
    return [sys.executable, "-m", "numpy_gpt", "scaling", "--corpus", str(corpus), "--max-chars", "40000",
            "--context-length", "16", "--batch-size", "4", "--sizes", "2", "--budgets", "1e8,2e8,4e8",
            "--seeds", "2", "--min-steps", "5", "--eval-tokens", "256", "--bootstrap", "0",
            "--out-dir", str(out_dir), "--no-progress"]


def test_interrupted_sweep_resumes_without_rerunning_finished_runs(tmp_path, shakespeare_path):
    out_dir = tmp_path / "sweep"
    results = out_dir / "results.jsonl"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(_sweep_command(shakespeare_path, out_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if results.is_file() and results.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "run the same command again" in err
    first = read_results(results)
    assert 1 <= len(first) < 12

    done = subprocess.run(_sweep_command(shakespeare_path, out_dir), capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(first)} already in" in done.stdout
    final = read_results(results)
    assert len(final) == 12 and len({r["key"] for r in final}) == 12
    assert final[:len(first)] == first                       # finished runs were kept, not redone
    trained_again = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(trained_again) == 12 - len(first)
    for record in final:
        assert record["C"] == pytest.approx(record["flops_per_token"] * record["D"])
        assert record["curve"][-1][0] == record["D"]
    assert json.loads((out_dir / "fit.json").read_text())["runs"] == 12


def test_pretrain_from_scaling_trains_the_recommended_model(tmp_path, monkeypatch):
    from numpy_gpt.checkpoint import load_checkpoint
    from numpy_gpt.cli import main
    from numpy_gpt.fileio import write_json_atomic

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scaling, "CHINCHILLA_GRID", SMALL_GRID)
    Path("corpus.txt").write_text("To be, or not to be, that is the question. " * 100, encoding="utf-8")
    settings = {"corpus": "corpus.txt", "tokenizer": "char", "vocab_size": 18, "max_chars": None,
                "val_fraction": 0.1, "context_length": 16, "batch_size": 2, "eval_tokens": 256}
    rec = recommend(_law_records(settings), settings, 1e10, None)
    write_json_atomic(Path("runs/scaling/recommendation.json"), rec)
    assert main(["pretrain", "--preset", "from-scaling", "--max-steps", "2", "--eval-iter", "1",
                 "--num-samples", "0", "--sample-tokens", "2", "--no-progress"]) == 0
    (run,) = Path("runs").glob("*-from-scaling-char")
    cfg = load_checkpoint(run / "model.npz", load_optimizer=False).cfg
    assert {k: cfg[k] for k in ("emb_dim", "n_layers", "n_heads", "context_length")} == \
        {k: rec["cfg"][k] for k in ("emb_dim", "n_layers", "n_heads", "context_length")}


def _envelope_curves(law, sizes, tokens_per_param):
    """One training curve per size: the law along D = tokens_per_param * N, 200 points."""
    return [(n, 6 * n, n * tokens_per_param, scaling.predict_loss(law, n, n * tokens_per_param))
            for n in sizes]


def test_envelope_fits_only_flop_counts_whose_optimum_is_bracketed():
    """Chinchilla's law (a = 0.28 / 0.62 = 0.45), 12 sizes spanning 1e5-1e8, each trained from 1e-3 N
    to 1e3 N tokens. At low FLOPs the smallest run is the best one there and at high FLOPs the
    largest: N_opt(c) lies beyond the trained sizes, and fitting those counts too gave a = 0.34."""
    law = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    curves = _envelope_curves(law, np.geomspace(1e5, 1e8, 12), np.geomspace(1e-3, 1e3, 200))
    fit = scaling.fit_envelope(curves)
    assert fit["a"] == pytest.approx(law["beta"] / (law["alpha"] + law["beta"]), abs=0.02)
    assert 0 < fit["bracketed"] < 200 and fit["sizes"] == 10 and fit["warning"] is None
    assert 1e5 < fit["N_opt"].min() and fit["N_opt"].max() < 1e8     # the smallest and largest never win


def test_envelope_warns_or_refuses_when_too_few_sizes_are_bracketed():
    law = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
    fit = scaling.fit_envelope(_envelope_curves(law, [1e5, 1e6, 1e7, 1e8], np.geomspace(1e-3, 1e3, 200)))
    assert fit["sizes"] == 2 and "only 2 sizes are best" in fit["warning"]
    assert "only 2 sizes" in scaling.fit_table({"runs": 4, "C_max": 1e12, "date": "d", "errors": {},
                                                "approach1": {**fit, "tokens_per_param": 20.0}},
                                               {"corpus": "c", "tokenizer": "t", "vocab_size": 1,
                                                "context_length": 1, "batch_size": 1})
    with pytest.raises(ValueError, match="bracketed by a smaller and a larger one"):
        scaling.fit_envelope(_envelope_curves(law, [1e5, 1e6], np.geomspace(1e-3, 1e3, 200)))


def test_scaling_quick_offline_says_how_to_sweep_the_offline_corpus(tmp_path, monkeypatch, capsys):
    """Issue 24 item 23: the documented `scaling --quick` downloads tinyshakespeare; offline, the error
    names the corpus that needs no network, and that command gets past the data."""
    import socket

    from numpy_gpt.cli import main

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.chdir(tmp_path)
    assert main(["scaling", "--quick", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "tinyshakespeare" in err and "numpy-gpt scaling --quick --corpus stdlib-docs" in err
    command = err.split("instead: ", 1)[1].split(" (")[0].split()[1:]
    (tmp_path / "data").mkdir(exist_ok=True)                  # the offline corpus, small, already built
    (tmp_path / "data" / f"stdlib-docs-py{sys.version_info.major}.{sys.version_info.minor}.txt").write_text(
        "Return the value of the key. " * 2000, encoding="utf-8")
    assert main([*command, "--vocab-size", "260", "--budgets", "1", "--no-progress"]) == 1
    assert "the grid has no run" in capsys.readouterr().err             # past the data, offline
