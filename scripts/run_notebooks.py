"""Execute the notebooks in place, each in a fresh kernel, and keep their outputs small and stable.

    python scripts/run_notebooks.py                      # every notebook, in reading order
    python scripts/run_notebooks.py ch04_gpt_model       # one (or more), by name

The notebooks are committed with their outputs so they read on a repository page without running.
After running, this strips what changes from run to run without changing what a reader sees: the
execution counts, per-cell timing metadata and the kernel's version details. It prints, per notebook,
the wall time, the kernel's CPU time, the figures and the gradient checks shown. The kernel imports
numpy_gpt from this repository (its folder is put first on PYTHONPATH) and starts in notebooks/.

Needs the ``notebooks`` extra: ``pip install -e ".[notebooks]"``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
# The reading order: the book's chapters, its appendix E, then what goes beyond the book.
ORDER = ("ch02_text_data", "ch03_attention", "ch04_gpt_model", "ch05_pretraining", "ch06_classification",
         "ch07_instruction_tuning", "appendix_e_lora", "encoder_vs_decoder", "evaluation_and_scaling",
         "preference_tuning")


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The notebooks named (default: all of ORDER), as paths; an unknown name is an error."""
    names = list(ORDER) if not names else [Path(n).stem for n in names]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise SystemExit(f"unknown notebook(s) {unknown}; the notebooks are {', '.join(ORDER)}")
    return [NOTEBOOK_DIR / f"{name}.ipynb" for name in names]


def kernel_environment() -> None:
    """Make a kernel started from this process import numpy_gpt from this repository."""
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(ROOT) if not path else os.pathsep.join([str(ROOT), path])
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")     # a debugger warning on stderr


def execute(nb, timeout: int = 600):
    """Run every cell of ``nb`` in a fresh python3 kernel started in notebooks/; raises on an error."""
    from nbclient import NotebookClient

    kernel_environment()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()
    return nb


def normalise(nb) -> None:
    """Strip what changes from run to run: execution counts, cell metadata, kernel version details,
    and how the kernel happened to cut printed text into messages (consecutive pieces of one stream
    become one output, as Jupyter shows them)."""
    for cell in nb.cells:
        cell.metadata = {}
        if cell.cell_type == "code":
            cell.execution_count = None
            outputs = []
            for output in cell.outputs:
                if "execution_count" in output:
                    output.execution_count = None
                previous = outputs[-1] if outputs else None
                if (output.output_type == "stream" and previous is not None
                        and previous.output_type == "stream" and previous.name == output.name):
                    previous.text += output.text
                else:
                    outputs.append(output)
            cell.outputs = outputs
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}


def count_outputs(nb) -> tuple[int, int]:
    """(figures, gradient checks) shown in ``nb``'s outputs."""
    figures = checks = 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            figures += "image/png" in output.get("data", {})
            text = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            checks += text.count("gradcheck OK") + text.count("gradcheck FAILED")
    return figures, checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"notebooks to run (default: all): {', '.join(ORDER)}")
    parser.add_argument("--timeout", type=int, default=600, help="seconds one cell may take")
    args = parser.parse_args(argv)
    import nbformat

    total = 0.0
    print(f"{'notebook':<26} {'wall s':>7} {'CPU s':>7} {'figures':>8} {'gradchecks':>11}")
    for path in notebook_paths(args.names):
        nb = nbformat.read(path, as_version=4)
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        execute(nb, args.timeout)
        wall = time.perf_counter() - start
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        normalise(nb)
        nbformat.write(nb, path)
        figures, checks = count_outputs(nb)
        total += wall
        print(f"{path.stem:<26} {wall:7.1f} {cpu:7.1f} {figures:8d} {checks:11d}", flush=True)
    print(f"{'total':<26} {total:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
