"""``numpy-gpt scaling``: train a grid of GPTs, fit the scaling laws, recommend a compute-optimal model.

    numpy-gpt scaling --quick                       # about 3 minutes: 5 sizes x 3 budgets
    numpy-gpt scaling                               # the default sweep: 9 sizes x 4 budgets
    numpy-gpt scaling --recommend 1e13              # best size and tokens for 1e13 FLOPs
    numpy-gpt scaling --recommend 10min             # ... for ten minutes of this machine
    numpy-gpt pretrain --preset from-scaling        # train the recommended model

The sweep writes into ``--out-dir`` (default runs/scaling): ``results.jsonl`` (one line per
finished run, appended by rewriting the file atomically), ``fit.json`` and ``fit.md`` (the fitted
laws, the table of docs/scaling.md) and three PNGs. Run the same command again after Ctrl-C: the
runs already in results.jsonl are skipped. The pieces without training (FLOP counts, the grid, the
fits) are in numpy_gpt/scaling.py; numpy_gpt/cli.py adds this command with ``add_subcommands``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from numpy_gpt.cli import positive_int

DEFAULT_OUT_DIR = Path("runs") / "scaling"
DEFAULT_CORPUS = "tinyshakespeare"
DEFAULT_BUDGETS = (3e10, 1e11, 3e11, 1e12)
QUICK_BUDGETS = (3e10, 1e11, 3e11)
QUICK_SHAPES = slice(0, 5)                   # rungs 3K ... 113K of scaling.SIZE_LADDER
DEFAULT_MAX_EPOCHS = 12.0                    # tiny models cannot memorise 1M characters: repeats barely hurt
QUICK_MAX_EPOCHS = 2.0                       # leaves the slow smallest models out of the largest budgets
RESULTS_NAME = "results.jsonl"
RECOMMENDATION_NAME = "recommendation.json"
# Published values the table sets ours beside (Hoffmann et al. 2022, table 2 and eq. 10; Kaplan et
# al. 2020, eqs. 1.1, 1.2 and 6.1).
CHINCHILLA = {"a": (0.50, 0.49, 0.46), "b": (0.50, 0.51, 0.54), "E": 1.69, "A": 406.4, "B": 410.7,
              "alpha": 0.34, "beta": 0.28, "tokens_per_param": 20}
KAPLAN = {"alpha_N": 0.076, "alpha_D": 0.095, "a": 0.73, "b": 0.27}


class ScalingError(ValueError):
    """Bad input to the scaling command, reported as one line."""


# -- corpus, tokenizer and data --------------------------------------------------------------------


def _settings(args: argparse.Namespace, tokenizer_kind: str, vocab_size: int) -> dict[str, Any]:
    """What every run of one sweep shares; a resumed sweep must have the same."""
    return {"corpus": str(args.corpus), "tokenizer": tokenizer_kind, "vocab_size": vocab_size,
            "max_chars": args.max_chars, "val_fraction": args.val_fraction,
            "context_length": args.context_length, "batch_size": args.batch_size,
            "eval_tokens": args.eval_tokens}


def _tokenizer_kind(args: argparse.Namespace) -> str:
    if args.tokenizer != "auto":
        return args.tokenizer
    from numpy_gpt.corpora import OFFLINE_CORPUS
    return "bpe" if args.corpus == OFFLINE_CORPUS else "char"


def _load_data(args: argparse.Namespace, kind: str, out_dir: Path):
    """(tokenizer, train ids, val ids). The validation split is the last ``val_fraction`` of the text;
    no run ever trains on it. A trained BPE is cached in ``out_dir`` (as ``pretrain`` caches it)."""
    import numpy as np

    from numpy_gpt.cli import _build_tokenizer
    from numpy_gpt.data import encode_text, load_corpus, train_val_split

    text = load_corpus(args.corpus, data_dir=args.data_dir)
    if args.max_chars is not None:
        text = text[:args.max_chars]
    train_text, val_text = train_val_split(text, 1.0 - args.val_fraction)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(kind, train_text, text, args.vocab_size, args.data_dir, out_dir)
    train_ids = np.asarray(encode_text(tokenizer, train_text), dtype=np.int64)
    val_ids = np.asarray(encode_text(tokenizer, val_text), dtype=np.int64)
    if len(val_ids) <= args.context_length or len(train_ids) <= args.context_length * args.batch_size:
        raise ScalingError(f"{args.corpus}: {len(train_ids):,} training and {len(val_ids):,} validation "
                           f"tokens "
                           f"are too few for batches of {args.batch_size} x {args.context_length}: use more "
                           f"text, a larger --val-fraction or a smaller --context-length")
    return tokenizer, train_ids, val_ids


def _val_loader(val_ids, context_length: int, eval_tokens: int):
    """Windows spread evenly over the whole validation split, about ``eval_tokens`` tokens, the same
    for every run (so differences between runs are not sampling noise of the evaluation)."""
    from numpy_gpt.data import DataLoader, GPTDatasetV1

    windows = max(1, eval_tokens // context_length)
    stride = max(1, (len(val_ids) - context_length - 1) // windows)
    dataset = GPTDatasetV1(val_ids, max_length=context_length, stride=stride)
    return DataLoader(dataset, batch_size=32, shuffle=False, drop_last=False)


# -- results file ----------------------------------------------------------------------------------


def read_results(path: Path) -> list[dict[str, Any]]:
    """The runs recorded in a results.jsonl; a broken line is an error naming the file and line."""
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ScalingError(f"{path}, line {number}: not valid JSON ({err}); delete that line to rerun "
                               f"the run") from None
        if not isinstance(record, dict) or "key" not in record or "val_loss" not in record:
            raise ScalingError(f"{path}, line {number}: not a run record of numpy-gpt scaling")
        records.append(record)
    return records


def append_result(path: Path, record: dict[str, Any]) -> None:
    """Add one line to the results file by writing the whole new file and renaming it over the old
    one: an interruption leaves either the old or the new file, never half a line."""
    from numpy_gpt.fileio import write_text_atomic

    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(record) + "\n")


# -- one run ----------------------------------------------------------------------------------------


def _curve(step_losses: list[float], batch_tokens: int, points: int = 32) -> list[list[float]]:
    """(tokens seen, smoothed training loss) at up to ``points`` log-spaced steps after warmup; the
    loss at step s is the mean over the last s/10 steps (at least one)."""
    import numpy as np

    losses = np.asarray(step_losses, dtype=np.float64)
    start = min(len(losses) - 1, max(1, len(losses) // 10))
    steps = np.unique(np.geomspace(start, len(losses), points).round().astype(int))
    curve = []
    for s in steps:
        window = max(1, s // 10)
        curve.append([int(s * batch_tokens), float(losses[s - window:s].mean())])
    return curve


def train_run(run, cfg: dict[str, Any], train_ids, val_loader, batch_size: int, stop) -> dict[str, Any]:
    """Train one planned run with warmup + cosine to 10 % over exactly its steps; return its record.

    ``stop`` is the interrupt flag of ``stop_on_interrupt``: after a Ctrl-C the current step ends
    and ``TrainingInterrupted`` is raised (nothing of this run is recorded)."""
    from numpy_gpt.data import create_dataloader_v1
    from numpy_gpt.interrupt import TrainingInterrupted
    from numpy_gpt.model import GPTModel
    from numpy_gpt.optim import AdamW, WarmupCosineLR, clip_grad_norm, configure_param_groups
    from numpy_gpt.scaling import peak_lr, warmup_steps
    from numpy_gpt.train import NonFiniteLossError, calc_loss_batch, calc_loss_loader

    lr = peak_lr(run.n_params)
    warmup = warmup_steps(run.steps)
    schedule = WarmupCosineLR(lr, run.steps, warmup, initial_lr=lr / (warmup + 1), min_lr=0.1 * lr)
    model = GPTModel(cfg, seed=run.seed)
    optimizer = AdamW(configure_param_groups(model, 0.1), lr=lr, betas=(0.9, 0.99))
    params = list(model.parameters(trainable_only=True))
    loader = create_dataloader_v1(train_ids, batch_size=batch_size, max_length=cfg["context_length"],
                                  stride=cfg["context_length"], shuffle=True, drop_last=True, seed=run.seed)

    def batches():
        epoch = 0
        while True:
            loader.epoch = epoch
            yield from loader
            epoch += 1

    stream = batches()
    step_losses = []
    started = time.perf_counter()
    model.train()
    for step in range(run.steps):
        lr_now = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        optimizer.zero_grad()
        inputs, targets = next(stream)
        loss = calc_loss_batch(inputs, targets, model, backward=True)
        if not math.isfinite(loss):
            raise NonFiniteLossError(f"run {run.key}: the training loss is {loss} at step {step}")
        clip_grad_norm(params, 1.0)
        optimizer.step()
        step_losses.append(loss)
        if stop.requested:
            raise TrainingInterrupted(step + 1, run.steps, None)
    train_seconds = time.perf_counter() - started
    model.eval()
    val_loss = calc_loss_loader(val_loader, model)
    return {"key": run.key, "n_layers": run.shape.n_layers, "emb_dim": run.shape.emb_dim,
            "n_heads": run.shape.n_heads, "N": run.n_params, "params_total": model.num_parameters(),
            "flops_per_token": run.flops_per_token, "budget": run.budget, "C": run.flops, "D": run.tokens,
            "steps": run.steps, "seed": run.seed, "lr": lr, "warmup": warmup, "val_loss": val_loss,
            "train_loss": float(sum(step_losses[-max(1, run.steps // 10):]) / max(1, run.steps // 10)),
            "curve": _curve(step_losses, run.batch_tokens), "train_seconds": train_seconds,
            "flops_per_second": run.flops / train_seconds,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _seconds_per_step(shapes, vocab_size: int, context_length: int, batch_size: int) -> dict:
    """Time two training steps of each shape on random tokens (after one untimed step)."""
    import numpy as np

    from numpy_gpt.model import GPTModel
    from numpy_gpt.optim import AdamW, clip_grad_norm, configure_param_groups
    from numpy_gpt.scaling import model_config
    from numpy_gpt.train import calc_loss_batch

    rng = np.random.default_rng(0)
    x = rng.integers(0, vocab_size, (batch_size, context_length))
    timing = {}
    for shape in shapes:
        model = GPTModel(model_config(shape, vocab_size, context_length), seed=0)
        optimizer = AdamW(configure_param_groups(model, 0.1), lr=1e-4)
        for i in range(3):
            if i == 1:
                started = time.perf_counter()
            optimizer.zero_grad()
            calc_loss_batch(x, x, model, backward=True)
            clip_grad_norm(list(model.parameters()), 1.0)
            optimizer.step()
        timing[shape] = (time.perf_counter() - started) / 2
    return timing


# -- the analysis -------------------------------------------------------------------------------------


def _fpt_of(records: list[dict[str, Any]]):
    """flops_per_token as a function of N, interpolated in log-log between the sizes trained."""
    import numpy as np

    pairs = sorted({(r["N"], r["flops_per_token"]) for r in records})
    log_n = np.log([p[0] for p in pairs])
    log_f = np.log([p[1] for p in pairs])

    def fpt(n):
        n = np.log(np.asarray(n, dtype=np.float64))
        slope = (log_f[-1] - log_f[0]) / (log_n[-1] - log_n[0]) if len(pairs) > 1 else 1.0
        inside = np.interp(n, log_n, log_f)                    # beyond the ends: extend the end slope
        outside = np.where(n < log_n[0], log_f[0] + slope * (n - log_n[0]),
                           log_f[-1] + slope * (n - log_n[-1]))
        return np.exp(np.where((n >= log_n[0]) & (n <= log_n[-1]), inside, outside))
    return fpt


def analyse(records: list[dict[str, Any]], bootstrap_samples: int = 200) -> dict[str, Any]:
    """The three fits and their bootstrap intervals, as a JSON-ready dict."""
    import numpy as np

    from numpy_gpt import scaling

    arrays = {k: np.array([r[k] for r in records], dtype=np.float64) for k in ("N", "D", "C", "budget")}
    arrays["L"] = np.array([r["val_loss"] for r in records])
    curves = [(r["N"], r["flops_per_token"], [p[0] for p in r["curve"]], [p[1] for p in r["curve"]])
              for r in records]
    fpt = _fpt_of(records)
    c_max = float(arrays["budget"].max())
    result: dict[str, Any] = {"runs": len(records), "C_max": c_max,
                              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    errors = {}
    try:
        env = scaling.fit_envelope(curves)
        result["approach1"] = {"a": env["a"], "b": env["b"], "N_coef": env["N_coef"], "D_coef": env["D_coef"]}
    except ValueError as err:
        errors["approach1"] = str(err)
    try:
        iso = scaling.fit_isoflop(arrays["N"], arrays["budget"], arrays["L"], fpt)
        result["approach2"] = {k: iso[k] for k in ("a", "b", "N_coef", "D_coef", "minima")}
    except ValueError as err:
        errors["approach2"] = str(err)
        result["isoflop_minima"] = scaling.isoflop_minima(arrays["N"], arrays["budget"], arrays["L"])
    fit3 = None
    try:
        fit3 = scaling.fit_parametric(arrays["N"], arrays["D"], arrays["L"])
        result["approach3"] = fit3
    except ValueError as err:
        errors["approach3"] = str(err)
    for name in ("approach1", "approach2"):
        if name in result:
            fit = result[name]
            n_opt, d_opt = fit["N_coef"] * c_max ** fit["a"], fit["D_coef"] * c_max ** fit["b"]
            fit["tokens_per_param"] = d_opt / n_opt
    if fit3 is not None:
        n_opt, d_opt = scaling.optimal_allocation(fit3, c_max)
        fit3["tokens_per_param"] = float(d_opt / n_opt)
    result["bootstrap_samples"] = bootstrap_samples
    if bootstrap_samples:
        result["bootstrap"] = scaling.bootstrap(arrays, curves, samples=bootstrap_samples, fit3=fit3,
                                                flops_per_token_of=fpt)
    result["errors"] = errors
    return result


def _fmt(value: float | None, interval: tuple[float, float] | None = None, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    return f"{text} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else text


def fit_table(fit: dict[str, Any], settings: dict[str, Any]) -> str:
    """The markdown table of fit.md: our three approaches beside Chinchilla's and Kaplan's numbers."""
    boot = fit.get("bootstrap", {})
    boot_samples = fit.get("bootstrap_samples", 0)
    rows = ["| | alpha | beta | E | a (N_opt ~ C^a) | b (D_opt ~ C^b) | tokens/param at C_max |",
            "|---|---|---|---|---|---|---|"]
    for i, name in enumerate(("approach1", "approach2", "approach3"), start=1):
        f = fit.get(name)
        if f is None:
            rows.append(f"| ours, approach {i} | - | - | - | failed: {fit['errors'].get(name, '')} | | |")
            continue
        b = boot.get(name, {})
        alpha = _fmt(f.get("alpha"), b.get("alpha")) if "alpha" in f else "-"
        beta = _fmt(f.get("beta"), b.get("beta")) if "beta" in f else "-"
        e = _fmt(f.get("E"), b.get("E")) if "E" in f else "-"
        fits = f" ({b['fits']} of {boot_samples} resamples)" if b and b["fits"] < boot_samples else ""
        rows.append(f"| ours, approach {i}{fits} | {alpha} | {beta} | {e} | {_fmt(f['a'], b.get('a'))} | "
                    f"{_fmt(f['b'], b.get('b'))} | {f['tokens_per_param']:.1f} |")
    ca, cb = CHINCHILLA["a"], CHINCHILLA["b"]
    rows.append(f"| Chinchilla (approaches 1 / 2 / 3) | {CHINCHILLA['alpha']} | {CHINCHILLA['beta']} | "
                f"{CHINCHILLA['E']} | {ca[0]} / {ca[1]} / {ca[2]} | {cb[0]} / {cb[1]} / {cb[2]} | "
                f"~{CHINCHILLA['tokens_per_param']} |")
    rows.append(f"| Kaplan et al. | alpha_N = {KAPLAN['alpha_N']} | alpha_D = {KAPLAN['alpha_D']} | - | "
                f"{KAPLAN['a']} | {KAPLAN['b']} | falls as C grows |")
    header = (f"Sweep of {fit['runs']} runs on {settings['corpus']} ({settings['tokenizer']} tokenizer, "
              f"vocabulary {settings['vocab_size']}, context {settings['context_length']}, "
              f"batch {settings['batch_size']}), "
              f"fitted {fit['date']}. Brackets: 10th-90th percentile over bootstrap resamples of the runs. "
              f"C_max = {fit['C_max']:.0e} FLOPs.")
    return header + "\n\n" + "\n".join(rows) + "\n"


# -- recommend ---------------------------------------------------------------------------------------


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(s|sec|min|m|h)\s*$", re.IGNORECASE)


def parse_budget(text: str) -> tuple[float | None, float | None]:
    """(FLOPs, None) for "1e15", (None, seconds) for "90s", "10min", "2h"."""
    match = _DURATION.match(text)
    if match:
        value, unit = float(match[1]), match[2].lower()
        return None, value * {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}[unit]
    try:
        flops = float(text)
    except ValueError:
        raise ScalingError(f"--recommend {text!r}: give FLOPs (1e15) or a duration (90s, 10min, 2h)"
                           ) from None
    if not (math.isfinite(flops) and flops > 0):
        raise ScalingError(f"--recommend {text!r}: the FLOP budget must be a positive number")
    return flops, None


def recommend(records: list[dict[str, Any]], settings: dict[str, Any], flops: float | None,
              seconds: float | None) -> dict[str, Any]:
    """The compute-optimal ladder shape for a budget, and its tokens D = C / its flops_per_token.

    The size comes from approach 2's power law N_opt = k C^a (the ladder shape nearest in log N)
    when the sweep bracketed at least two IsoFLOP minima, else from approach 3 (the shape with the
    lowest fitted L(N, D)); the predicted loss is approach 3's. A wall-clock budget becomes FLOPs
    with the FLOP/s measured in the sweep for a model of that size (interpolated in log N); since
    the size depends on the budget, the two are iterated together."""
    import numpy as np

    from numpy_gpt import scaling

    n_runs = np.array([r["N"] for r in records], dtype=np.float64)
    losses = np.array([r["val_loss"] for r in records])
    fit = scaling.fit_parametric(n_runs, [r["D"] for r in records], losses)
    try:
        iso = scaling.fit_isoflop(n_runs, [r["budget"] for r in records], losses, _fpt_of(records))
        method = f"approach 2, N_opt = {iso['N_coef']:.3g} C^{iso['a']:.3f}"
    except ValueError:
        iso, method = None, "approach 3, the lowest fitted L(N, D)"
    order = np.argsort(n_runs)
    speed = np.log([records[i]["flops_per_second"] for i in order])

    def flops_per_second(n: float) -> float:
        return float(np.exp(np.interp(np.log(n), np.log(n_runs[order]), speed)))

    def best_for(c: float):
        options = []
        for shape in scaling.SIZE_LADDER:
            cfg = scaling.model_config(shape, settings["vocab_size"], settings["context_length"])
            n, tokens = scaling.non_embedding_params(cfg), c / scaling.flops_per_token(cfg)
            loss = float(scaling.predict_loss(fit, n, tokens))
            rank = abs(math.log(n / (iso["N_coef"] * c ** iso["a"]))) if iso else loss
            options.append((rank, loss, shape, cfg, tokens))
        return min(options, key=lambda o: o[0])[1:]

    if flops is None:
        flops = seconds * flops_per_second(1e5)
        for _ in range(10):
            n = scaling.non_embedding_params(best_for(flops)[2])
            flops = seconds * flops_per_second(n)
    loss, shape, cfg, tokens = best_for(flops)
    batch_tokens = settings["batch_size"] * settings["context_length"]
    steps = max(1, round(tokens / batch_tokens))
    n_params = scaling.non_embedding_params(cfg)
    n_opt, d_opt = scaling.optimal_allocation(fit, flops)
    return {"budget_flops": flops, "shape": [shape.n_layers, shape.emb_dim, shape.n_heads], "cfg": cfg,
            "N": n_params, "tokens": steps * batch_tokens, "steps": steps, "predicted_val_loss": loss,
            "estimated_seconds": flops / flops_per_second(n_params), "lr": scaling.peak_lr(n_params),
            "warmup_steps": scaling.warmup_steps(steps), "settings": settings, "method": method,
            "fit": {k: fit[k] for k in ("E", "A", "B", "alpha", "beta", "a", "b")},
            "law_N_opt": float(n_opt), "law_D_opt": float(d_opt),
            "largest_budget_swept": float(max(r["budget"] for r in records)),
            "at_ladder_end": shape == scaling.SIZE_LADDER[-1]}


def apply_scaling_recommendation(args: argparse.Namespace, folder: Path = DEFAULT_OUT_DIR) -> None:
    """For ``pretrain --preset from-scaling``: set the corpus, tokenizer, model and training flags
    from ``folder/recommendation.json`` (written by ``numpy-gpt scaling --recommend``)."""
    from numpy_gpt.fileio import read_json

    path = folder / RECOMMENDATION_NAME
    if not path.is_file():
        raise ScalingError(f"--preset from-scaling: no {path} yet; run `numpy-gpt scaling` (or --quick), "
                           f"then `numpy-gpt scaling --recommend 1e13` to write it")
    rec = read_json(path)
    try:
        cfg, settings = rec["cfg"], rec["settings"]
        args.corpus, args.max_chars = settings["corpus"], settings["max_chars"]
        args.tokenizer, args.val_fraction = settings["tokenizer"], settings["val_fraction"]
        if settings["tokenizer"] == "bpe":
            args.vocab_size = settings["vocab_size"]
        args.context_length, args.emb_dim = cfg["context_length"], cfg["emb_dim"]
        args.n_layers, args.n_heads, args.drop_rate = cfg["n_layers"], cfg["n_heads"], 0.0
        args.batch_size, args.lr, args.min_lr = settings["batch_size"], rec["lr"], 0.1 * rec["lr"]
        args.warmup_steps = rec["warmup_steps"]
        if args.max_steps is None and args.epochs is None:
            args.max_steps = rec["steps"]
    except (KeyError, TypeError) as err:
        raise ScalingError(f"{path} is not a recommendation of numpy-gpt scaling (missing {err})") from None
    args.preset = "tiny"                                     # every model flag above overrides it
    if args.out_dir is None:
        args.out_dir = str(Path("runs") / f"{Path(str(args.corpus)).stem}-from-scaling-{args.tokenizer}")
    print(f"--preset from-scaling ({path}): {rec['N']:,} non-embedding parameters "
          f"({cfg['n_layers']} layers x {cfg['emb_dim']}), {rec['tokens']:,} tokens, "
          f"{rec['budget_flops']:.2e} FLOPs on {args.corpus}")


# -- the command ---------------------------------------------------------------------------------------


def _say(bar) -> Any:
    return bar.write if not bar.disable else (lambda line: print(line, flush=True))


def _cmd_scaling(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from numpy_gpt import scaling
    from numpy_gpt.fileio import write_json_atomic, write_text_atomic
    from numpy_gpt.interrupt import TrainingInterrupted, stop_on_interrupt
    from numpy_gpt.runtime import set_threads

    out_dir = Path(args.out_dir)
    results_path = out_dir / RESULTS_NAME
    records = read_results(results_path)
    if args.recommend is not None:
        return _cmd_recommend(args, records, results_path, out_dir)

    set_threads(args.threads)
    kind = _tokenizer_kind(args)
    print(f"Corpus {args.corpus!r} ({kind} tokenizer); results in {results_path}", flush=True)
    tokenizer, train_ids, val_ids = _load_data(args, kind, out_dir)
    settings = _settings(args, kind, tokenizer.n_vocab)
    for record in records:
        if record.get("settings") != settings:
            raise ScalingError(f"{results_path} holds runs with other settings ({record.get('settings')}); "
                               f"use another --out-dir for this sweep")
    shapes = scaling.SWEEP_SHAPES[QUICK_SHAPES] if args.quick else scaling.SWEEP_SHAPES[:args.sizes]
    budgets = args.budgets or (QUICK_BUDGETS if args.quick else DEFAULT_BUDGETS)
    max_epochs = args.max_epochs or (QUICK_MAX_EPOCHS if args.quick else DEFAULT_MAX_EPOCHS)
    plan, skipped = scaling.plan_sweep(shapes, budgets, args.seeds, vocab_size=tokenizer.n_vocab,
                                       context_length=args.context_length, batch_size=args.batch_size,
                                       train_tokens=len(train_ids), min_steps=args.min_steps,
                                       max_epochs=max_epochs)
    if not plan:
        raise ScalingError("the grid has no run: every size has too few steps or too many epochs for the "
                           "budgets; raise --budgets or lower --min-steps")
    done = {r["key"] for r in records}
    todo = [run for run in plan if run.key not in done]
    print(f"{len(train_ids):,} training and {len(val_ids):,} validation tokens "
          f"(vocabulary {tokenizer.n_vocab})")
    print("Timing two steps of each size...", flush=True)
    timing = _seconds_per_step(sorted({run.shape for run in todo}, key=lambda s: s.emb_dim),
                               tokenizer.n_vocab, args.context_length, args.batch_size)
    eval_steps = max(1, args.eval_tokens // (args.batch_size * args.context_length)) / 3
    print(f"\n{'run':<34} {'N':>10} {'tokens':>10} {'steps':>6} {'epochs':>6} {'est. s':>7}")
    total = 0.0
    for run in plan:
        if run.key in done:
            print(f"{run.key:<34} {run.n_params:>10,} {run.tokens:>10,} {run.steps:>6} "
                  f"{run.tokens / len(train_ids):>6.2f} {'done':>7}")
            continue
        estimate = (run.steps + eval_steps) * timing[run.shape]
        total += estimate
        print(f"{run.key:<34} {run.n_params:>10,} {run.tokens:>10,} {run.steps:>6} "
              f"{run.tokens / len(train_ids):>6.2f} {estimate:>7.0f}")
    for reason in skipped:
        print(f"  left out: {reason}")
    print(f"\n{len(plan)} runs planned, {len(plan) - len(todo)} already in {results_path}, "
          f"{len(todo)} to train; "
          f"estimated {total / 60:.1f} min (from the timing above: the CPU is shared, it may vary)\n",
          flush=True)

    val_loader = _val_loader(val_ids, args.context_length, args.eval_tokens)
    bar = tqdm(total=len(plan), initial=len(plan) - len(todo), desc="runs", unit="run",
               disable=args.no_progress or not sys.stderr.isatty(), dynamic_ncols=True)
    say = _say(bar)
    with stop_on_interrupt() as stop, bar:
        for i, run in enumerate(todo):
            cfg = scaling.model_config(run.shape, tokenizer.n_vocab, args.context_length)
            try:
                record = train_run(run, cfg, train_ids, val_loader, args.batch_size, stop)
            except TrainingInterrupted:
                print(f"numpy-gpt scaling: interrupted during run {run.key}; {len(plan) - len(todo) + i} "
                      f"finished runs are in {results_path}; run the same command again to continue",
                      file=sys.stderr)
                return 130
            record["settings"] = settings
            append_result(results_path, record)
            records.append(record)
            bar.update(1)
            say(f"[{len(plan) - len(todo) + i + 1}/{len(plan)}] {run.key}: val loss {record['val_loss']:.4f} "
                f"(N {run.n_params:,}, D {run.tokens:,}, {record['train_seconds']:.1f} s, "
                f"{record['flops_per_second'] / 1e9:.1f} GFLOP/s)")
            if stop.requested:
                print(f"numpy-gpt scaling: interrupted; {len(plan) - len(todo) + i + 1} finished runs are in "
                      f"{results_path}; run the same command again to continue", file=sys.stderr)
                return 130

    in_plan = {run.key for run in plan}
    used = [r for r in records if r["key"] in in_plan]
    print(f"\nFitting the scaling laws to {len(used)} runs (bootstrap: {args.bootstrap} resamples)...",
          flush=True)
    fit = analyse(used, args.bootstrap)
    table = fit_table(fit, settings)
    write_json_atomic(out_dir / "fit.json", _jsonable(fit))
    write_text_atomic(out_dir / "fit.md", table)
    print("\n" + table)
    for name, message in fit["errors"].items():
        print(f"{name}: {message}")
    from numpy_gpt.plots import plot_frontier, plot_isoflop, plot_loss_vs_n_and_d
    pictures = [plot_isoflop(used, fit, out_dir / "isoflop.png"),
                plot_loss_vs_n_and_d(used, fit, out_dir / "loss_vs_n_d.png"),
                plot_frontier(used, fit, out_dir / "frontier.png")]
    measured = np.median([r["flops_per_second"] for r in used]) / 1e9
    print(f"Median training speed {measured:.1f} GFLOP/s. Wrote {out_dir / 'fit.md'}, "
          f"{out_dir / 'fit.json'}, "
          + ", ".join(str(p) for p in pictures))
    print(f"Next: numpy-gpt scaling --out-dir {out_dir} --recommend 1e13")
    return 0


def _jsonable(value: Any) -> Any:
    """Turn tuples and NumPy scalars and arrays into JSON types."""
    import numpy as np

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _cmd_recommend(args, records, results_path: Path, out_dir: Path) -> int:
    from numpy_gpt.fileio import write_json_atomic

    flops, seconds = parse_budget(args.recommend)
    if len(records) < 5:
        raise ScalingError(f"--recommend needs a finished sweep: {results_path} has {len(records)} runs "
                           f"(at least 5 are needed to fit the law); run `numpy-gpt scaling --quick` first")
    settings = records[0]["settings"]
    rec = recommend(records, settings, flops, seconds)
    write_json_atomic(out_dir / RECOMMENDATION_NAME, _jsonable(rec))
    f = rec["fit"]
    budget = (f"{args.recommend} at the measured speed = {rec['budget_flops']:.2e} FLOPs" if seconds
              else f"{rec['budget_flops']:.2e} FLOPs")
    print(f"Fitted law (approach 3, {len(records)} runs): L = {f['E']:.3f} + {f['A']:.3g} / "
          f"N^{f['alpha']:.3f} "
          f"+ {f['B']:.3g} / D^{f['beta']:.3f}")
    print(f"Budget {budget}")
    ratio = rec["budget_flops"] / rec["largest_budget_swept"]
    if ratio > 3:
        print(f"Note: {ratio:.0f} times the largest budget of the sweep; the law is extrapolated that far.")
    print(f"Size from {rec['method']}")
    print(f"Compute-optimal model: {rec['shape'][0]} layers x {rec['shape'][1]} wide, "
          f"{rec['shape'][2]} heads, "
          f"{rec['N']:,} non-embedding parameters")
    print(f"Train it on {rec['tokens']:,} tokens ({rec['steps']:,} steps of {settings['batch_size']} x "
          f"{settings['context_length']}; {rec['tokens'] / rec['N']:.1f} tokens per parameter), peak lr "
          f"{rec['lr']:.2e}; predicted validation loss {rec['predicted_val_loss']:.3f}; about "
          f"{rec['estimated_seconds'] / 60:.1f} min here")
    print(f"Approach 3's analytic optimum (C = 6ND): N_opt = {rec['law_N_opt']:,.0f}, "
          f"D_opt = {rec['law_D_opt']:,.0f}")
    if rec["at_ladder_end"]:
        print("Note: that is the largest shape of the ladder; the law asks for at least this size.")
    print(f"Wrote {out_dir / RECOMMENDATION_NAME}; train it with: numpy-gpt pretrain --preset from-scaling")
    return 0


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated FLOP counts like 3e10,1e11, got {text!r}"
                                         ) from None
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"FLOP budgets must be positive, got {text!r}")
    return values



def add_subcommands(subparsers) -> None:
    """Add ``scaling`` to the main command's subparsers."""
    p = subparsers.add_parser(
        "scaling", help="scaling laws: train a grid of sizes x compute budgets, fit, recommend a model",
        description="Train GPTs of 3K-3M non-embedding parameters at several compute budgets (each with "
                    "warmup + cosine matched to its own token budget), then fit Chinchilla's three "
                    "approaches and plot them. Resumes after Ctrl-C. --recommend C prints the "
                    "compute-optimal size for C FLOPs (or a duration) from the fitted law.")
    p.add_argument("--corpus", default=DEFAULT_CORPUS,
                   help="tinyshakespeare (characters), stdlib-docs (offline, BPE) or a UTF-8 text file")
    p.add_argument("--data-dir", default="data", help="where corpora are kept")
    p.add_argument("--tokenizer", choices=("auto", "char", "bpe"), default="auto",
                   help="auto: a trained BPE for stdlib-docs, characters otherwise")
    p.add_argument("--vocab-size", type=positive_int, default=1024, help="vocabulary of the trained BPE")
    p.add_argument("--max-chars", type=positive_int, default=None, help="use only the first N characters")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text kept for validation")
    p.add_argument("--quick", action="store_true",
                   help="5 sizes x 3 budgets, about 3 minutes (a subset of the default grid)")
    p.add_argument("--sizes", type=positive_int, default=9,
                   help="use only the first N of the nine sizes, smallest first")
    p.add_argument("--budgets", type=_float_list, default=None,
                   help="comma-separated compute budgets in FLOPs (default 3e10,1e11,3e11,1e12)")
    p.add_argument("--seeds", type=positive_int, default=1, help="repeat every run with this many seeds")
    p.add_argument("--context-length", type=positive_int, default=64, help="tokens per window")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per optimizer step")
    p.add_argument("--min-steps", type=positive_int, default=40, help="leave out runs with fewer steps")
    p.add_argument("--max-epochs", type=float, default=None,
                   help=f"leave out runs with more passes over the training split "
                        f"(default {DEFAULT_MAX_EPOCHS:g}, --quick {QUICK_MAX_EPOCHS:g})")
    p.add_argument("--eval-tokens", type=positive_int, default=16384,
                   help="validation tokens each run is evaluated on at its end")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="bootstrap resamples for the intervals (0: none)")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="BLAS threads (tiny matrices: one thread was fastest here)")
    p.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="folder of results.jsonl, fits and plots")
    p.add_argument("--recommend", default=None, metavar="BUDGET",
                   help="FLOPs (1e15) or a duration (10min): print the compute-optimal model from the sweep "
                        "in --out-dir and write recommendation.json for pretrain --preset from-scaling")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_scaling)
