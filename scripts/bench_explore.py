"""How long the explore page waits for the server: one generation step, the attention and the logit lens.

    python scripts/bench_explore.py                 # the quickstart model's shape, then GPT-2 124M's
    python scripts/bench_explore.py --quick         # the quickstart shape only
    python scripts/bench_explore.py --threads 1     # BLAS threads (default: numpy-gpt explore's rule)

Random weights (the time does not depend on them): the quickstart model (``numpy-gpt pretrain``'s
small preset, 4 layers, 128 wide, context 64, a BPE of 1024 tokens) and GPT-2 124M's shape (12 layers,
768 wide, context 1024, vocabulary 50257). A step is what the server does for one streamed event:
the model's forward pass of one token with the KV cache, the distribution after temperature, top-k and
top-p, and the ten most likely tokens with their pieces (``Explorer.generate``'s iterator). The
median of the steps of a generation is printed, and the attention and logit-lens requests over the
text it produced (or over a long text for 124M).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from numpy_gpt.cli.common import THREADS_HELP, thread_count, use_threads
from numpy_gpt.explore import Explorer
from numpy_gpt.generate import sampling_logits
from numpy_gpt.model import GPT_CONFIG_124M, GPTModel
from numpy_gpt.nn.softmax import softmax
from numpy_gpt.runtime import configure, num_threads, set_threads

BLAS_DEFAULT = num_threads()


class Ids:
    """A stand-in tokenizer of ``n`` ids: each id is its own piece (the time is the model's)."""

    def __init__(self, n: int):
        self.n_vocab = n

    def encode(self, text: str) -> list[int]:
        return [ord(c) % self.n_vocab for c in text]

    def decode(self, ids) -> str:
        return "".join(f"<{i}>" for i in ids)


def measure(name: str, cfg: dict, prompt_tokens: int, new_tokens: int, sampling: dict,
            threads: int | None) -> None:
    set_threads(BLAS_DEFAULT)                                 # a fresh process's, then explore's rule
    use_threads(threads, cfg)
    model = GPTModel(cfg, seed=0)
    explorer = Explorer(model, Ids(cfg["vocab_size"]), name=name)
    prompt = "".join(chr(65 + i % 50) for i in range(prompt_tokens))
    _, steps = explorer.generate(prompt, new_tokens, **sampling)
    times, ids = [], []
    while True:
        started = time.perf_counter()
        step = next(steps, None)
        if step is None:
            break
        times.append(time.perf_counter() - started)
        ids.append(step["id"])
    # what explore adds to generate's own step: the distribution shown and its ten most likely tokens
    logits = np.random.default_rng(0).standard_normal((1, cfg["vocab_size"])).astype(np.float32)
    started = time.perf_counter()
    for _ in range(20):
        probs = softmax(sampling_logits(logits, sampling["temperature"] or 1.0, sampling.get("top_k"),
                                        sampling.get("top_p")))[0]
        explorer._candidates(probs, int(probs.argmax()))
    added = (time.perf_counter() - started) / 20
    text = explorer.encode(prompt) + ids
    started = time.perf_counter()
    explorer.attention(text[-128:], cfg["n_layers"] - 1, 0)
    attention = time.perf_counter() - started
    started = time.perf_counter()
    explorer.logit_lens(text[-cfg["context_length"]:])
    lens = time.perf_counter() - started
    print(f"{name}, {num_threads()} BLAS thread(s): prompt {prompt_tokens} tokens, {new_tokens} steps "
          f"{sampling}: first step (prefill) "
          f"{times[0] * 1e3:.1f} ms, median step {statistics.median(times[1:]) * 1e3:.1f} ms (of which "
          f"explore's probabilities and top ten {added * 1e3:.1f} ms), "
          f"slowest {max(times[1:]) * 1e3:.1f} ms; attention over {min(128, len(text))} tokens "
          f"{attention * 1e3:.0f} ms; logit lens over {min(len(text), cfg['context_length'])} tokens "
          f"{lens * 1e3:.0f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quickstart model only")
    parser.add_argument("--threads", type=thread_count, help=THREADS_HELP)
    args = parser.parse_args()
    configure()
    quickstart = {"vocab_size": 1024, "context_length": 64, "emb_dim": 128, "n_heads": 4, "n_layers": 4,
                  "drop_rate": 0.0, "qkv_bias": False}
    for sampling in ({"temperature": 0.0}, {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1}):
        measure("quickstart (4 x 128, V 1024)", quickstart, 8, 50, sampling, args.threads)
    if not args.quick:
        for sampling in ({"temperature": 0.0}, {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1}):
            measure("GPT-2 124M shape", GPT_CONFIG_124M, 8, 30, sampling, args.threads)
        measure("GPT-2 124M shape, long prompt", GPT_CONFIG_124M, 900, 20, {"temperature": 0.0},
                args.threads)


if __name__ == "__main__":
    main()
