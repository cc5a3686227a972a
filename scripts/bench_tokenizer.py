"""Benchmark: numpy_gpt's GPT-2 tokenizer against tiktoken (ids checked equal), and BPE training.

    python scripts/bench_tokenizer.py [--text PATH] [--vocab-dir DIR] [--repeat N]

Encodes tinyshakespeare (by default the copy in ../shared/data, else data/ via load_corpus) with
tiktoken's "gpt2" encoding, built offline from the same encoder.json/vocab.bpe, and with
GPT2Tokenizer: cold (empty chunk cache, the first encode of a new text) and warm (second encode).
Reports throughput and the slowdown against tiktoken, then times a 100k-character word and training
a 512-token BPETokenizer on the same text. Timings are the best of --repeat runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from numpy_gpt.corpora import get_gpt2_tokenizer, load_corpus
from numpy_gpt.tokenizers.bpe import GPT2Tokenizer
from numpy_gpt.tokenizers.train_bpe import BPETokenizer

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def best_time(fn, repeat: int, before=None) -> tuple[float, object]:
    """Smallest wall time of ``repeat`` calls of ``fn`` (``before`` runs untimed before each)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", type=Path, default=None, help="text file (default: tinyshakespeare)")
    parser.add_argument("--vocab-dir", type=Path, default=None, help="folder with encoder.json and vocab.bpe")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    if args.text is not None:
        text = args.text.read_text(encoding="utf-8")
    elif (SHARED / "tinyshakespeare.txt").exists():
        text = (SHARED / "tinyshakespeare.txt").read_text(encoding="utf-8")
    else:
        text = load_corpus("tinyshakespeare")
    vocab_dir = args.vocab_dir or (SHARED / "gpt2" if (SHARED / "gpt2").exists() else None)
    if vocab_dir is None:
        ours = get_gpt2_tokenizer()
        vocab_dir = Path("data") / "gpt2"
    else:
        ours = GPT2Tokenizer.from_files(vocab_dir / "encoder.json", vocab_dir / "vocab.bpe")
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab_dir / "vocab.bpe"), str(vocab_dir / "encoder.json"))
    reference = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                  special_tokens={"<|endoftext|>": 50256})

    megabytes = len(text.encode("utf-8")) / 1e6
    t_ref, ids_ref = best_time(lambda: reference.encode(text), args.repeat)
    t_cold, ids_cold = best_time(lambda: ours.encode(text), args.repeat, before=ours.clear_cache)
    t_warm, ids_warm = best_time(lambda: ours.encode(text), args.repeat)
    assert ids_cold == ids_warm == ids_ref, "GPT2Tokenizer and tiktoken disagree"
    print(f"text: {megabytes:.2f} MB, {len(ids_ref):,} tokens (ids identical to tiktoken)")
    print(f"{'encoder':<28}{'seconds':>9}{'MB/s':>8}{'vs tiktoken':>13}")
    for name, seconds in [("tiktoken (Rust)", t_ref), ("GPT2Tokenizer, cold cache", t_cold),
                          ("GPT2Tokenizer, warm cache", t_warm)]:
        print(f"{name:<28}{seconds:>9.3f}{megabytes / seconds:>8.2f}{seconds / t_ref:>12.2f}x")

    word = "a" * 100_000
    t_word, _ = best_time(lambda: ours.encode(word), 3, before=ours.clear_cache)
    t_word_ref, _ = best_time(lambda: reference.encode(word), 3)
    print(f"one 100k-character word: {t_word:.3f} s (tiktoken {t_word_ref:.3f} s)")

    start = time.perf_counter()
    trained = BPETokenizer.train(text, 512)
    t_train = time.perf_counter() - start
    ratio = len(text.encode("utf-8")) / len(trained.encode(text))
    print(f"BPETokenizer.train to 512 tokens: {t_train:.2f} s ({ratio:.2f} bytes per token)")


if __name__ == "__main__":
    main()
