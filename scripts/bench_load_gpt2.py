"""How much memory and time does loading GPT-2 124M take? (benchmark for numpy_gpt.gpt2)

The script writes random weights with exactly the names and shapes of OpenAI's GPT-2 124M into a
temporary folder, as OpenAI's TensorFlow checkpoint (498 MB) and, converted by numpy_gpt, as a
Hugging Face safetensors file. It then loads each with ``load_gpt2`` in a fresh Python process and
reports the process's peak resident memory above its baseline just before loading, next to the
bytes of the model's own parameters. Loading reads every tensor straight into its parameter, so
the difference (the "extra" column) should stay far below one copy of the weights. It also times
crc32c over the whole data file. The temporary folder is deleted at the end.

    python scripts/bench_load_gpt2.py [--tmp DIR]

Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from numpy_gpt.gpt2.openai_tf import crc32c
from numpy_gpt.tools.tf_bundle_writer import write_tf_bundle

MB = 1e6
C, V, T, N_LAYERS, N_HEADS = 768, 50257, 1024, 12, 12     # GPT-2 124M


def gpt2_124m_shapes() -> dict[str, tuple[int, ...]]:
    """OpenAI's tensor names and shapes for GPT-2 124M (the projections are 1x1 convs: (1, in, out))."""
    shapes = {"model/wte": (V, C), "model/wpe": (T, C), "model/ln_f/g": (C,), "model/ln_f/b": (C,)}
    for i in range(N_LAYERS):
        h = f"model/h{i}"
        shapes |= {f"{h}/ln_1/g": (C,), f"{h}/ln_1/b": (C,), f"{h}/ln_2/g": (C,), f"{h}/ln_2/b": (C,),
                   f"{h}/attn/c_attn/w": (1, C, 3 * C), f"{h}/attn/c_attn/b": (3 * C,),
                   f"{h}/attn/c_proj/w": (1, C, C), f"{h}/attn/c_proj/b": (C,),
                   f"{h}/mlp/c_fc/w": (1, C, 4 * C), f"{h}/mlp/c_fc/b": (4 * C,),
                   f"{h}/mlp/c_proj/w": (1, 4 * C, C), f"{h}/mlp/c_proj/b": (C,)}
    return shapes


def write_random_openai_checkpoint(folder: Path, seed: int = 0) -> None:
    """GPT-2 124M's files (hparams.json, checkpoint, model.ckpt.index/.data) with N(0, 0.02) weights."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    weights = {name: rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)
               for name, shape in gpt2_124m_shapes().items()}
    write_tf_bundle(folder / "model.ckpt", weights)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n'
                                       'all_model_checkpoint_paths: "model.ckpt"\n')
    (folder / "hparams.json").write_text(json.dumps(
        {"n_vocab": V, "n_ctx": T, "n_embd": C, "n_head": N_HEADS, "n_layer": N_LAYERS}, indent=2))


# -- measuring, in a fresh process -------------------------------------------------------------------
def _memory_kb() -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of this process, in kB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def child(path: str) -> None:
    """Load ``path`` with load_gpt2 and print JSON: baseline/peak RSS, parameter bytes, seconds."""
    from numpy_gpt.gpt2.convert import load_gpt2

    before = _memory_kb()
    start, start_cpu = time.perf_counter(), time.process_time()
    gpt, _ = load_gpt2(path)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    after = _memory_kb()
    param_bytes = sum(p.data.nbytes for p in gpt.parameters())
    print(json.dumps({"baseline_kb": before["VmRSS"], "peak_kb": after["VmHWM"],
                      "param_bytes": param_bytes,
                      "gpt2_bytes": param_bytes - gpt.out_head.weight.data.nbytes, "seconds": seconds,
                      "cpu_seconds": cpu_seconds}))


def measure(path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", str(path)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the temporary checkpoint")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from numpy_gpt.gpt2.convert import convert

    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_gpt2_") as tmp:
        openai_dir, hf_dir = Path(tmp) / "124M", Path(tmp) / "hf"
        start = time.perf_counter()
        write_random_openai_checkpoint(openai_dir)
        data_file = openai_dir / "model.ckpt.data-00000-of-00001"
        print(f"wrote a random GPT-2 124M checkpoint: {data_file.stat().st_size / MB:.1f} MB "
              f"in {time.perf_counter() - start:.1f} s")
        start = time.perf_counter()
        convert(openai_dir, hf_dir)
        print(f"converted it to safetensors in {time.perf_counter() - start:.1f} s")

        data = np.fromfile(data_file, dtype=np.uint8)
        start, start_cpu = time.perf_counter(), time.process_time()
        crc32c(data)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        print(f"crc32c over the {data.nbytes / MB:.0f} MB data file: {seconds:.2f} s "
              f"({data.nbytes / MB / seconds:.0f} MB/s), {cpu_seconds:.2f} s of CPU "
              f"({data.nbytes / MB / cpu_seconds:.0f} MB/s per CPU second)")
        del data

        print(f"\n{'source':<22} {'load s':>7} {'CPU s':>6} {'params MB':>10} {'peak - baseline MB':>19} "
              f"{'extra MB':>9}")
        for label, path in (("OpenAI TF checkpoint", openai_dir), ("safetensors", hf_dir)):
            r = measure(path)
            grown = (r["peak_kb"] - r["baseline_kb"]) * 1024 / MB
            params = r["param_bytes"] / MB
            print(f"{label:<22} {r['seconds']:>7.2f} {r['cpu_seconds']:>6.2f} {params:>10.1f} {grown:>19.1f} "
                  f"{grown - params:>9.1f}")
        print(f"\nparams = GPTModel's parameters: GPT-2's {r['gpt2_bytes'] / MB:.1f} MB of weights plus "
              f"out_head, its own copy of wte transposed; extra = peak growth beyond them "
              f"(one more copy of the weights would be {r['gpt2_bytes'] / MB:.0f} MB).")


if __name__ == "__main__":
    main()
