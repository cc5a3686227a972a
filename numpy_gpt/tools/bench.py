"""``numpy-gpt bench``: numpy_gpt against PyTorch and Hugging Face, side by side on this machine.

The project aims to train small models at PyTorch's CPU speed with a GPT written in NumPy, every
backward by hand. This module measures how close it gets, in one run, on the same machine, with the
same thread count, shapes and dtype (float32):

1. **Training step** (forward + loss + backward + AdamW), numpy_gpt with its named kernels
   (``numpy_gpt.fast.kernels``, the default) and with the layers' readable forms
   (``NUMPY_GPT_FAST=0``), for a GPT_CONFIG_124M-shaped model (untied
   head, batch 2, 256 tokens) and for nanoGPT's shakespeare-char CPU model (4 layers, 4 heads,
   128 wide, block 64, batch 12, vocab 65): numpy_gpt against two PyTorch eager models of
   ``numpy_gpt.tools.torch_reference`` holding the same weights: the book's, whose LayerNorm, GELU and
   attention softmax are chains of elementwise torch operations, and the same model on torch's
   fused kernels (``F.layer_norm``, ``F.gelu``, ``F.scaled_dot_product_attention``), as nanoGPT
   writes it. On the small model the fused one is much faster (measured 40-58 against 74-100
   ms per step), so both are shown: the first is the book's code, the second what a PyTorch user
   would run. The step functions are timed in turns (numpy, torch book, torch fused; then torch
   book, torch fused, numpy; ...: each turn starts with the next library) after a warm-up, so a
   busy neighbour slows all of them; the table gives medians, the time ratios, tokens/s and the
   model FLOPs utilisation (MFU) against a float32 matmul peak measured at the start and the end
   of the run (the higher).
2. **Generation**: batch 1, a 20-token prompt, 200 new tokens, greedy, with numpy_gpt's KV cache,
   without it, and with transformers' ``GPT2LMHeadModel`` and its cache.
   The kernels' value: **each kernel's share**, the step with every kernel on against the step with
   that one kernel off (and with all of them off), in ABBA order (on, off, off, on) in the same
   process; and **their scaling**: each kernel's time on the step's arrays at 1 and 2 threads
   (``map_chunks``) against its readable form, from which an Amdahl model predicts the step at 4
   and 8 cores and which kernels would save >= 3 % there (a model, not measured here).
3. **Peak resident memory** of training steps, numpy_gpt and both PyTorch models each in a fresh
   process (VmHWM, or ``ru_maxrss`` where /proc is missing; it includes the interpreter and the
   imported libraries).

One library must not slow the other down. After a product, OpenBLAS's worker threads (NumPy's)
keep spinning on their core for up to 2^28 cycles (~0.1 s here, ``OPENBLAS_THREAD_TIMEOUT``)
waiting for the next one, and torch's OpenMP threads briefly do the same. Timed back to back, the
second library would share its cores with the first one's spinning threads: measured, that made
PyTorch's shakespeare-char step 150 instead of 85 ms. So every timed call starts after a pause of
``SETTLE_S`` seconds, when every idle thread has gone to sleep; each library then pays for waking
its own threads, as it would at the start of any step.

Both libraries run in a process where ``numpy_gpt.runtime.reuse_freed_memory()`` is on (glibc keeps
freed memory for reuse instead of page-faulting it back in every step), as in numpy_gpt's own
training loops; the JSON records whether it was available.

torch and transformers are optional: without them their columns are left empty and the table says
why. ``--quick`` uses small models and few repeats (well under a minute); the full run takes a few
minutes. The table is printed and written as JSON (``--json``).

FLOPs of a training step (the usual estimate, as in nanoGPT and the PaLM paper): every weight of a
matmul costs 2 FLOPs per token forward and 4 backward, so 6 * N_matmul * tokens with N_matmul the
weights of all Linear layers (the embedding tables are lookups, not matmuls); attention adds
2 * 2 * T * C per token and layer forward (the scores q k^T and the mix P v over the full T x T
square), three times that with backward: 12 * n_layers * T * C per token.

The issue that set the targets quotes PyTorch at "about 54 % of the peak" with a looser count:
6 * (all parameters, embedding tables included) * tokens, 500 GFLOP per 124M step against the 394
GFLOP above. The JSON records that figure too (``mfu_6n_all_params``) and the table prints it
under the main one, so both conventions can be read off the same run; the table's MFU columns
use the count above.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from numpy_gpt import fast
from numpy_gpt.fileio import write_json_atomic
from numpy_gpt.generate import generate
from numpy_gpt.model import GPT_CONFIG_124M, GPTModel
from numpy_gpt.nn.loss import cross_entropy
from numpy_gpt.optim import AdamW
from numpy_gpt.runtime import reuse_freed_memory, set_threads
from numpy_gpt.scaling import attention_flops_per_token, block_matmul_params

SHAKESPEARE_CHAR_CONFIG = {"vocab_size": 65, "context_length": 64, "emb_dim": 128, "n_heads": 4,
                           "n_layers": 4, "drop_rate": 0.0, "qkv_bias": False}
TINY_CONFIG = {"vocab_size": 97, "context_length": 32, "emb_dim": 32, "n_heads": 2, "n_layers": 2,
               "drop_rate": 0.1, "qkv_bias": False}

# name: (config, batch size, tokens per row)
TRAIN_CASES = {
    "124M": (GPT_CONFIG_124M, 2, 256),
    "shakespeare-char": (SHAKESPEARE_CHAR_CONFIG, 12, 64),
    "tiny": (TINY_CONFIG, 2, 16),
}
# "repeats": timed steps per library; "case_repeats" overrides it for some cases. The small model's
# steps take ~0.1 s and vary by +-20 % from one to the next on a shared host, so it gets more.
# "shares": ABBA rounds of the kernel-share measurement per case; "scaling": cases whose kernels are
# timed alone at 1 and 2 threads.
FULL = {"train": ["124M", "shakespeare-char"], "generate": "124M", "rss": ["124M", "shakespeare-char"],
        "repeats": 7, "case_repeats": {"shakespeare-char": 31}, "gen_repeats": 3, "prompt": 20,
        "new_tokens": 200, "gemm": 2048, "shares": {"124M": 1, "shakespeare-char": 8},
        "scaling": ["124M", "shakespeare-char"]}
QUICK = {"train": ["shakespeare-char"], "generate": "shakespeare-char", "rss": ["shakespeare-char"],
         "repeats": 5, "gen_repeats": 3, "prompt": 20, "new_tokens": 40, "gemm": 1024,
         "shares": {"shakespeare-char": 2}, "scaling": ["shakespeare-char"]}
LR, WEIGHT_DECAY = 1e-4, 0.1
# The two PyTorch models timed against numpy_gpt: JSON key -> torch_reference's builtin_kernels
TORCH_FORMS = {"torch": False, "torch_builtin": True}
SETTLE_S = 0.25   # pause before each timed call, longer than OpenBLAS's default ~0.1 s of spinning


def _optional(name: str):
    """Import an optional module, or return None (its columns are skipped, with a note)."""
    try:
        return __import__(name)
    except ImportError:
        return None


def _run_once(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) time of one call. The CPU time (every thread of the process) does not count the
    time spent waiting for a core: on a machine shared with other jobs it is the steadier measure of
    a one-thread step (at more threads it is not a step time)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall, CPU) time of one call, after a pause that lets idle BLAS threads stop spinning
    (docstring)."""
    time.sleep(SETTLE_S)
    return _run_once(fn)


def _time(fn: Callable[[], Any]) -> float:
    """Wall time of one call after the pause of ``_timed``."""
    return _timed(fn)[0]


def _timed_run(fn: Callable[[], Any], n: int) -> tuple[float, float]:
    """(wall, CPU) median of ``n`` consecutive calls, after the pause of ``_timed`` and one untimed
    call."""
    _timed(fn)
    runs = [_run_once(fn) for _ in range(n)]
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul rate of this machine, GFLOP/s: the max over ``repeats`` (n x n) @ (n x n)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b                                                           # warm-up: threads, pages
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def flops_6n_all_params(model: GPTModel, batch_size: int, num_tokens: int) -> float:
    """The looser count: 6 FLOPs per parameter (embeddings included) per token (module docstring)."""
    return 6.0 * model.num_parameters() * batch_size * num_tokens


def train_step_flops(cfg: dict, batch_size: int, num_tokens: int) -> float:
    """FLOPs of one training step (see the module docstring): 6 N_matmul + 12 L T C per token."""
    n_matmul = cfg["n_layers"] * block_matmul_params(cfg) + cfg["emb_dim"] * cfg["vocab_size"]   # + out_head
    per_token = 6 * n_matmul + attention_flops_per_token(cfg, num_tokens)
    return float(per_token * batch_size * num_tokens)


def _batch(cfg: dict, batch_size: int, num_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    shape = (batch_size, num_tokens)
    return rng.integers(0, cfg["vocab_size"], shape), rng.integers(0, cfg["vocab_size"], shape)


def numpy_train_step(cfg: dict, batch_size: int, num_tokens: int,
                     kernels: bool = True) -> Callable[[], float]:
    """A function running one numpy_gpt training step on a fixed batch; returns the loss. With
    ``kernels=False`` the step runs the layers' readable forms (``numpy_gpt.fast.readable()``)."""
    model = GPTModel(cfg, seed=0)
    optimizer = AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x, y = _batch(cfg, batch_size, num_tokens)

    def step() -> float:
        with contextlib.nullcontext() if kernels else fast.readable():
            optimizer.zero_grad()
            loss, dlogits = cross_entropy(model(x), y)
            model.backward(dlogits)
            optimizer.step()
        return loss
    step.model = model                                              # for torch_train_step's weights
    step.optimizer = optimizer                                      # for kernel_workloads
    return step


def torch_train_step(cfg: dict, batch_size: int, num_tokens: int, numpy_model: GPTModel | None = None,
                     builtin_kernels: bool = False) -> Callable[[], float]:
    """The same step in PyTorch eager (torch.optim.AdamW with its default foreach kernels). With
    ``numpy_model`` the torch model starts from its weights; else from torch's own init.
    ``builtin_kernels``: torch's fused LayerNorm, GELU and attention (``torch_reference``)."""
    import torch

    from numpy_gpt.tools.torch_reference import GPTModel as TorchGPTModel
    from numpy_gpt.tools.torch_reference import torch_gpt_from_numpy
    model = (torch_gpt_from_numpy(numpy_model, builtin_kernels=builtin_kernels) if numpy_model is not None
             else TorchGPTModel(cfg, builtin_kernels))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    x, y = (torch.from_numpy(a) for a in _batch(cfg, batch_size, num_tokens))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def mfu(flops: float, seconds: float, peak_gflops: float) -> float:
    """Model FLOPs utilisation: the achieved FLOP rate as a fraction of the measured matmul peak."""
    return flops / seconds / (peak_gflops * 1e9)


def ratio_of_pairs(a_times: list[float], b_times: list[float]) -> float:
    """The median over turns of a's time / b's time within the same turn. Steps timed a few seconds
    apart see the same host speed, so this ratio is less moved by the host's drift during a run."""
    return statistics.median(a / b for a, b in zip(a_times, b_times, strict=True))


def bench_train(name: str, repeats: int, use_torch: bool = True) -> dict:
    """Median step times of numpy_gpt and (if available) of torch in both forms (the book's model,
    ``torch``, and with torch's fused kernels, ``torch_builtin``), timed in turns. MFU is added by
    ``run_bench`` once the matmul peak has been measured at the end of the run too."""
    cfg, batch_size, num_tokens = TRAIN_CASES[name]
    steps = {"numpy_gpt": numpy_train_step(cfg, batch_size, num_tokens),
             "numpy_gpt_readable": numpy_train_step(cfg, batch_size, num_tokens, kernels=False)}
    note = ""
    if use_torch and _optional("torch") is not None:
        for library, builtin in TORCH_FORMS.items():
            steps[library] = torch_train_step(cfg, batch_size, num_tokens, steps["numpy_gpt"].model, builtin)
    else:
        note = "torch not installed" if use_torch else "torch skipped"
    for _ in range(2):               # warm-up: Adam state, then the heap settles (runtime.reuse_freed_memory)
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {library: [] for library in steps}
    cpu: dict[str, list[float]] = {library: [] for library in steps}
    order = list(steps)
    for turn in range(repeats):
        # Each turn starts with another library: whatever the first (or last) step of a turn
        # gains or loses is shared out evenly.
        for library in order[turn % len(order):] + order[:turn % len(order)]:
            wall, cpu_s = _timed(steps[library])
            times[library].append(wall)
            cpu[library].append(cpu_s)
    tokens = batch_size * num_tokens

    def stats(library: str) -> dict | None:
        if library not in times:
            return None
        median = statistics.median(times[library])
        return {"median_s": median, "times_s": times[library], "tokens_per_s": tokens / median,
                "cpu_median_s": statistics.median(cpu[library]), "cpu_times_s": cpu[library]}
    row = {"case": name, "batch_size": batch_size, "num_tokens": num_tokens, "config": cfg,
           "flops_per_step": train_step_flops(cfg, batch_size, num_tokens),
           "flops_6n_all_params": flops_6n_all_params(steps["numpy_gpt"].model, batch_size, num_tokens),
           "numpy_gpt": stats("numpy_gpt"), "numpy_gpt_readable": stats("numpy_gpt_readable"), "note": note}
    row["kernels_over_readable"] = ratio_of_pairs(times["numpy_gpt"], times["numpy_gpt_readable"])
    row["kernels_over_readable_cpu"] = ratio_of_pairs(cpu["numpy_gpt"], cpu["numpy_gpt_readable"])
    for library in TORCH_FORMS:
        suffix = library.removeprefix("torch")                        # "" or "_builtin"
        row[library] = stats(library)
        row["ratio" + suffix] = row["ratio_of_pairs" + suffix] = None
        if row[library] is not None:
            row["ratio" + suffix] = row["numpy_gpt"]["median_s"] / row[library]["median_s"]
            row["ratio_of_pairs" + suffix] = ratio_of_pairs(times["numpy_gpt"], times[library])
            row["ratio_of_pairs_cpu" + suffix] = ratio_of_pairs(cpu["numpy_gpt"], cpu[library])
    return row


def bench_kernel_shares(name: str, rounds: int, steps: int = 5) -> dict:
    """Each kernel's share of a training step: the step with every kernel on (A) against the step
    with that kernel off (B), timed A B B A in ``rounds`` rounds in one process, one model; also
    every kernel off at once ("all"). Each of A and B is the median of ``steps`` consecutive steps
    (after the settling pause and one untimed step, so that no measured step starts with cold
    caches). saving = 1 - median(A) / median(B): the fraction of the step without the kernel that
    the kernel saves."""
    cfg, batch_size, num_tokens = TRAIN_CASES[name]
    step = numpy_train_step(cfg, batch_size, num_tokens)
    for _ in range(2):
        step()
    shares = {}
    for kernel in (*fast.KERNELS, "all"):
        names = fast.KERNELS if kernel == "all" else (kernel,)

        def without(names: tuple[str, ...] = names) -> None:
            with fast.readable(*names):
                step()
        on, off, per_round, on_cpu, off_cpu = [], [], [], [], []
        for _ in range(rounds):
            (a1, a1c), (b1, b1c), (b2, b2c), (a2, a2c) = (_timed_run(step, steps), _timed_run(without, steps),
                                                          _timed_run(without, steps), _timed_run(step, steps))
            on += [a1, a2]
            off += [b1, b2]
            on_cpu += [a1c, a2c]
            off_cpu += [b1c, b2c]
            per_round.append(1.0 - (a1 + a2) / (b1 + b2))
        shares[kernel] = {"on_s": on, "off_s": off, "per_round": per_round,
                          "saving": 1.0 - statistics.median(on) / statistics.median(off),
                          "on_cpu_s": on_cpu, "off_cpu_s": off_cpu,
                          "saving_cpu": 1.0 - statistics.median(on_cpu) / statistics.median(off_cpu)}
    return {"case": name, "rounds": rounds, "shares": shares}


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def kernel_workloads(name: str, step: Callable[[], float]) -> dict[str, tuple[Callable[[], Any], ...]]:
    """For each kernel of ``numpy_gpt.fast.KERNELS``, on one training step of case ``name``: (its
    readable form, the kernel), each callable running the whole step's worth of calls: AdamW over
    every parameter of ``step``'s model, after ``step`` has run, with its gradients and moments."""
    from numpy_gpt.fast import kernels
    from numpy_gpt.optim import adamw_update
    state = step.optimizer.state
    adam = [[a.reshape(-1) for a in (p.data, p.grad, state[i]["exp_avg"], state[i]["exp_avg_sq"])]
            for i, p in enumerate(step.model.parameters())]
    options = {"lr": LR, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": WEIGHT_DECAY, "step": 3}

    def adamw(update: Callable) -> Callable[[], None]:
        def run() -> None:
            for w, g, m, v in adam:
                update(w, g, m, v, **options)
        return run
    return {"adamw": (adamw(adamw_update), adamw(kernels.adamw_update))}


def bench_kernel_scaling(name: str, repeats: int = 5, cores: tuple[int, ...] = (4, 8)) -> dict:
    """Each kernel alone, on one step's arrays: the readable form (one core: NumPy's ufuncs) and the
    kernel at 1 and 2 threads; the whole step (kernels on) at 1 and 2 threads. Then an Amdahl model
    for ``cores``: each part p (every kernel, and the rest of the step: BLAS, LayerNorm, Python)
    keeps the parallel fraction f its 1 -> 2 thread speed-up s implies (s = 1 / (1 - f + f/2)),
    so its time at n cores is T1 (1 - f + f/n); the readable forms stay on one core. A kernel
    "pays" at n cores when readable - kernel >= 3 % of the step with the readable form in its
    place. Fastest of ``repeats`` calls everywhere (the machine is shared)."""
    cfg, batch_size, num_tokens = TRAIN_CASES[name]
    step = numpy_train_step(cfg, batch_size, num_tokens)
    step()
    work = kernel_workloads(name, step)
    result: dict[str, Any] = {"case": name, "kernels": {}, "model": {}}
    threads_before = fast.num_threads()
    try:
        for n in (1, 2):
            set_threads(n, use_torch=False)
            result[f"step_{n}t_s"] = _best(step, max(2, repeats // 2))
            for kernel, (readable, kernel_fn) in work.items():
                row = result["kernels"].setdefault(kernel, {})
                if n == 1:
                    row["readable_s"] = _best(readable, repeats)
                row[f"kernel_{n}t_s"] = _best(kernel_fn, repeats)
    finally:
        set_threads(threads_before, use_torch=False)

    def fraction(t1: float, t2: float) -> float:           # Amdahl's f from the 1 -> 2 speed-up
        return min(1.0, max(0.0, 2.0 * (1.0 - t2 / t1)))

    rest1 = result["step_1t_s"] - sum(r["kernel_1t_s"] for r in result["kernels"].values())
    rest2 = result["step_2t_s"] - sum(r["kernel_2t_s"] for r in result["kernels"].values())
    result["rest_1t_s"], result["rest_2t_s"] = rest1, rest2
    for n in cores:
        def at(t1: float, t2: float, n: int = n) -> float:
            f = fraction(t1, t2)
            return t1 * (1.0 - f + f / n)
        kernel_times = {k: at(r["kernel_1t_s"], r["kernel_2t_s"]) for k, r in result["kernels"].items()}
        step_n = at(rest1, rest2) + sum(kernel_times.values())
        readable = {k: r["readable_s"] for k, r in result["kernels"].items()}
        savings = {k: (readable[k] - kt) / (step_n - kt + readable[k]) for k, kt in kernel_times.items()}
        result["model"][str(n)] = {"step_s": step_n, "kernel_s": kernel_times, "saving": savings}
    return result


def bench_generate(name: str, prompt_len: int, new_tokens: int, repeats: int,
                   use_torch: bool = True) -> dict:
    """Greedy generation, batch 1: numpy_gpt with and without its KV cache, and transformers'
    GPT2LMHeadModel (random weights of the same shape) with its cache. Tokens/s counts new tokens.

    The two cached generators are timed interleaved, ``repeats`` times each; the uncached one, the
    slowest by far, once.
    """
    cfg = {**TRAIN_CASES[name][0], "drop_rate": 0.0}
    model = GPTModel(cfg, seed=0)
    prompt = np.random.default_rng(2).integers(0, cfg["vocab_size"], (1, prompt_len))
    context = cfg["context_length"]
    results: dict[str, Any] = {"case": name, "prompt": prompt_len, "new_tokens": new_tokens,
                               "hf_cache": None, "vs_hf": None, "note": ""}

    def numpy_cached() -> None:
        generate(model, prompt, new_tokens, context)

    hf_generate = None
    transformers = _optional("transformers") if use_torch and _optional("torch") else None
    if transformers is None:
        results["note"] = "transformers/torch not installed" if use_torch else "transformers skipped"
    else:
        import torch
        hf_cfg = transformers.GPT2Config(vocab_size=cfg["vocab_size"], n_positions=context,
                                         n_embd=cfg["emb_dim"], n_layer=cfg["n_layers"],
                                         n_head=cfg["n_heads"], resid_pdrop=0.0, embd_pdrop=0.0,
                                         attn_pdrop=0.0)
        hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
        ids = torch.from_numpy(prompt)

        def hf_generate() -> None:
            with torch.no_grad():
                hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                            pad_token_id=0)
    times: dict[str, list[float]] = {"numpy_gpt_cache": [], "hf_cache": []}
    numpy_cached()                                                  # warm-up
    if hf_generate is not None:
        hf_generate()
    for _ in range(repeats):
        times["numpy_gpt_cache"].append(_time(numpy_cached))
        if hf_generate is not None:
            times["hf_cache"].append(_time(hf_generate))
    times["numpy_gpt_no_cache"] = [_time(
        lambda: generate(model, prompt, new_tokens, context, use_cache=False))]
    for key, key_times in times.items():
        if key_times:
            median = statistics.median(key_times)
            results[key] = {"median_s": median, "times_s": key_times,
                            "tokens_per_s": new_tokens / median}
    cache = results["numpy_gpt_cache"]["tokens_per_s"]
    results["cache_speedup"] = cache / results["numpy_gpt_no_cache"]["tokens_per_s"]
    if results["hf_cache"] is not None:
        results["vs_hf"] = cache / results["hf_cache"]["tokens_per_s"]
    return results


def rss_worker(argv: list[str]) -> None:
    """Entry point of the child process of ``peak_rss``: ``<numpy|torch|torch_builtin> <case> <steps>``;
    prints {"peak_rss_mb": ...} as JSON after running the steps."""
    library, name, steps = argv[0], argv[1], int(argv[2])
    reuse_freed_memory()                                            # as in run_bench, for both libraries
    cfg, batch_size, num_tokens = TRAIN_CASES[name]
    if library == "numpy":
        step = numpy_train_step(cfg, batch_size, num_tokens)
    else:
        step = torch_train_step(cfg, batch_size, num_tokens, builtin_kernels=TORCH_FORMS[library])
    for _ in range(steps):
        step()
    print(json.dumps({"peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM is per address space, so (unlike ru_maxrss,
    which Linux carries over an exec) it does not include the parent that started us."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(library: str, name: str, steps: int = 2, threads: int | None = None) -> float:
    """Peak resident set size (MB) of a fresh process that runs ``steps`` training steps."""
    code = "import sys; from numpy_gpt.tools.bench import rss_worker; rss_worker(sys.argv[1:])"
    env = dict(os.environ)
    if threads is not None:
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-c", code, library, name, str(steps)],
                          capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"peak-RSS worker for {library}/{name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def bench_rss(name: str, use_torch: bool = True, threads: int | None = None) -> dict:
    has_torch = use_torch and _optional("torch") is not None
    row = {"case": name, "numpy_gpt_mb": peak_rss("numpy", name, threads=threads),
           "note": "" if has_torch else "torch not installed" if use_torch else "torch skipped"}
    for library in TORCH_FORMS:                                   # keys torch_mb, torch_builtin_mb
        row[library + "_mb"] = peak_rss(library, name, threads=threads) if has_torch else None
    return row


def machine_info(use_torch: bool = True) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
    torch = _optional("torch") if use_torch else None
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    transformers = _optional("transformers") if torch is not None else None
    if transformers is not None:
        info["transformers"] = transformers.__version__
    info["OPENBLAS_NUM_THREADS"] = os.environ.get("OPENBLAS_NUM_THREADS")
    info["OPENBLAS_THREAD_TIMEOUT"] = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    return info


def run_bench(plan: dict, use_torch: bool = True, threads: int | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Run every part of ``plan`` (FULL or QUICK, or a custom dict of the same keys) with
    ``threads`` threads in both libraries (default: as many as CPU cores)."""
    threads = threads or os.cpu_count() or 1
    blas_set = set_threads(threads, use_torch)
    # Process-wide, so torch's tensors get it too (see numpy_gpt.runtime).
    memory_reused = reuse_freed_memory()
    result: dict[str, Any] = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "machine": machine_info(use_torch), "threads": threads,
                              "numpy_blas_threads_set": blas_set, "reuse_freed_memory": memory_reused,
                              "load_average_start": _load_average(), "plan": plan}
    log("measuring the float32 matmul peak (again at the end) ...")
    peak_start = sgemm_peak(plan["gemm"])
    result["train"] = []
    for name in plan["train"]:
        log(f"training step, {name} ...")
        repeats = plan.get("case_repeats", {}).get(name, plan["repeats"])
        result["train"].append(bench_train(name, repeats, use_torch))
    result["kernel_shares"] = []
    for name, rounds in plan.get("shares", {}).items():
        log(f"kernel shares, {name}, {rounds} ABBA rounds ...")
        result["kernel_shares"].append(bench_kernel_shares(name, rounds))
    result["kernel_scaling"] = []
    for name in plan.get("scaling", []):
        log(f"kernel scaling at 1 and 2 threads, {name} ...")
        result["kernel_scaling"].append(bench_kernel_scaling(name))
    result["generate"] = None
    if plan["generate"] is not None:
        log(f"generation, {plan['generate']} ...")
        result["generate"] = bench_generate(plan["generate"], plan["prompt"], plan["new_tokens"],
                                            plan["gen_repeats"], use_torch)
    result["rss"] = []
    for name in plan["rss"]:
        log(f"peak RSS, {name} ...")
        result["rss"].append(bench_rss(name, use_torch, threads))
    # The host of a shared VM can take cycles away for seconds at a time, which makes one peak
    # measurement read low (seen: 127 instead of ~240 GFLOP/s). Measure again at the end and keep
    # the higher value, so MFU is not overstated.
    peak_end = sgemm_peak(plan["gemm"])
    result["sgemm_peak_gflops_start"], result["sgemm_peak_gflops_end"] = peak_start, peak_end
    peak = result["sgemm_peak_gflops"] = max(peak_start, peak_end)
    for row in result["train"]:
        for library in ("numpy_gpt", *TORCH_FORMS):
            if row[library] is not None:
                row[library]["mfu"] = mfu(row["flops_per_step"], row[library]["median_s"], peak)
                row[library]["mfu_6n_all_params"] = mfu(row["flops_6n_all_params"],
                                                        row[library]["median_s"], peak)
    result["load_average_end"] = _load_average()
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    """The benchmark result as a Markdown table (what the README shows)."""
    m = result["machine"]
    lines = [f"numpy_gpt bench, {result['date']}, {m['cpu']} ({m['cores']} cores), numpy {m['numpy']}, "
             f"torch {m.get('torch', '-')}, transformers {m.get('transformers', '-')}, "
             f"{result['threads']} thread(s); "
             f"float32 matmul peak {result['sgemm_peak_gflops']:.0f} GFLOP/s; load average "
             f"{result['load_average_start']} -> {result['load_average_end']}", "",
             "Two PyTorch eager models with the same weights: the book's (LayerNorm, GELU and softmax "
             "written out of torch operations) and one with torch's fused kernels (F.layer_norm, "
             "F.gelu, F.scaled_dot_product_attention).", "",
             "| training step (median) | numpy_gpt | readable forms | numpy/readable | torch, book | "
             "torch, fused | numpy/book | numpy/fused | numpy tok/s | numpy MFU | book MFU | fused MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["train"]:
        n, t, f = row["numpy_gpt"], row["torch"] or {}, row["torch_builtin"] or {}

        def ms(stats: dict) -> str:
            return f"{stats['median_s'] * 1e3:.0f} ms" if stats else "-"
        lines.append(f"| {row['case']} (B={row['batch_size']}, T={row['num_tokens']}) "
                     f"| {ms(n)} | {ms(row.get('numpy_gpt_readable'))} "
                     f"| {_fmt(row.get('kernels_over_readable'), '.2f')} "
                     f"| {ms(t)} | {ms(f)} | {_fmt(row['ratio'], '.2f')} "
                     f"| {_fmt(row['ratio_builtin'], '.2f')} | {n['tokens_per_s']:.0f} | {n['mfu']:.0%} "
                     f"| {_fmt(t.get('mfu'), '.0%')} | {_fmt(f.get('mfu'), '.0%')} |")
    pair_ratios = "; ".join(f"{row['case']} {_fmt(row['ratio_of_pairs'], '.2f')} (book), "
                            f"{_fmt(row['ratio_of_pairs_builtin'], '.2f')} (fused)"
                            for row in result["train"])
    lines += ["", "Median of the per-turn ratios (each numpy step against the torch steps of the same "
              f"turn): {pair_ratios}"]
    cpu_ratios = "; ".join(
        f"{row['case']} numpy_gpt {row['numpy_gpt']['cpu_median_s'] * 1e3:.0f} ms, readable "
        f"{row['numpy_gpt_readable']['cpu_median_s'] * 1e3:.0f} ms ({row['kernels_over_readable_cpu']:.2f}), "
        f"against book {_fmt(row.get('ratio_of_pairs_cpu'), '.2f')}, fused "
        f"{_fmt(row.get('ratio_of_pairs_cpu_builtin'), '.2f')}" for row in result["train"])
    lines += ["", f"CPU time per step (every thread; a step time only at 1 thread), medians and per-turn "
              f"ratios: {cpu_ratios}"]
    lines += ["", "MFU with 6 x all parameters x tokens (embeddings included, the convention of the issue's "
              "targets): " + "; ".join(
                  f"{row['case']} numpy_gpt {row['numpy_gpt']['mfu_6n_all_params']:.0%}, torch book "
                  f"{_fmt((row['torch'] or {}).get('mfu_6n_all_params'), '.0%')}, fused "
                  f"{_fmt((row['torch_builtin'] or {}).get('mfu_6n_all_params'), '.0%')}"
                  for row in result["train"])]
    lines += format_kernels(result)
    g = result["generate"]
    if g is not None:
        hf = g["hf_cache"] or {}
        lines += ["", f"| generation, {g['case']}, batch 1, prompt {g['prompt']}, {g['new_tokens']} new, "
                  "greedy | tokens/s |", "|---|---|",
                  f"| numpy_gpt, KV cache | {g['numpy_gpt_cache']['tokens_per_s']:.1f} |",
                  f"| numpy_gpt, no cache | {g['numpy_gpt_no_cache']['tokens_per_s']:.1f} |",
                  f"| transformers GPT2LMHeadModel, cache | {_fmt(hf.get('tokens_per_s'), '.1f')} |",
                  f"| cache speed-up {g['cache_speedup']:.1f}x; numpy_gpt/HF {_fmt(g['vs_hf'], '.2f')} | |"]
    lines += ["", "| peak RSS of training steps | numpy_gpt | torch, book | torch, fused |",
              "|---|---|---|---|"]
    for row in result["rss"]:
        cells = [f"{_fmt(row[key], '.0f')}{' MB' if row[key] else ''}"
                 for key in ("numpy_gpt_mb", "torch_mb", "torch_builtin_mb")]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    notes = {r["note"] for r in [*result["train"], result["generate"] or {"note": ""}, *result["rss"]]
             if r["note"]}
    if notes:
        lines += ["", "Notes: " + "; ".join(sorted(notes))]
    return "\n".join(lines)


def format_kernels(result: dict) -> list[str]:
    """The kernels' share of the step (ABBA) and the Amdahl model of their scaling, as Markdown."""
    lines: list[str] = []
    for row in result.get("kernel_shares", []):
        lines += ["", f"| {row['case']}: kernel (ABBA, {row['rounds']} rounds) | step, on "
                  "| step, this kernel off | saving (1 - on/off) | per round | saving, CPU time |",
                  "|---|---|---|---|---|---|"]
        for kernel, s in row["shares"].items():
            per_round = ", ".join(f"{x:+.1%}" for x in s["per_round"])
            lines.append(f"| {kernel} | {statistics.median(s['on_s']) * 1e3:.1f} ms "
                         f"| {statistics.median(s['off_s']) * 1e3:.1f} ms | {s['saving']:+.1%} | {per_round} "
                         f"| {s['saving_cpu']:+.1%} |")
    for row in result.get("kernel_scaling", []):
        cores = sorted(row["model"], key=int)
        lines += ["", f"| {row['case']}: per step, alone | readable (1 core) | kernel, 1 thread "
                  "| kernel, 2 threads | 2-thread speed-up | "
                  + " | ".join(f"saving at {n} cores (model)" for n in cores) + " |",
                  "|---|---|---|---|---|" + "---|" * len(cores)]
        for kernel, k in row["kernels"].items():
            lines.append(f"| {kernel} | {k['readable_s'] * 1e3:.2f} ms | {k['kernel_1t_s'] * 1e3:.2f} ms "
                         f"| {k['kernel_2t_s'] * 1e3:.2f} ms | {k['kernel_1t_s'] / k['kernel_2t_s']:.2f} | "
                         + " | ".join(f"{row['model'][n]['saving'][kernel]:+.1%}" for n in cores) + " |")
        lines.append(f"| the step (kernels on) | - | {row['step_1t_s'] * 1e3:.1f} ms "
                     f"| {row['step_2t_s'] * 1e3:.1f} ms | {row['step_1t_s'] / row['step_2t_s']:.2f} | "
                     + " | ".join(f"{row['model'][n]['step_s'] * 1e3:.1f} ms" for n in cores) + " |")
    return lines


def write_json(result: dict, path: Path) -> None:
    """Write the result as JSON, atomically (fileio.write_json_atomic)."""
    write_json_atomic(path, result, indent=1)
