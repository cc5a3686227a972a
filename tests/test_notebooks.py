"""The notebooks (notebooks/, issue 25) and the learning-journey PDF built from them.

Every notebook runs from top to bottom in a fresh kernel without an error, and
``scripts/build_learning_journey.py`` builds the PDF where its tools are installed. These tests take
minutes, so they carry the ``notebooks`` marker: the unit suite leaves them out (setup.cfg's addopts)
and ``.ci/run`` runs them as their own step, ``python -m pytest -q -m notebooks``. They need the
``notebooks`` extra (nbclient, nbformat, ipykernel, nbconvert) and skip with the reason when it is
absent; the PDF test also needs chromium, libjs-mathjax and poppler-utils.

The checks of what is committed (every notebook listed in the reading order, saved with its outputs
and without run-to-run noise) need only the standard library and run with the unit suite.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(SCRIPTS))             # build_learning_journey imports run_notebooks
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


run_notebooks = _script("run_notebooks")
ORDER = run_notebooks.ORDER
EXTRA = "needs the notebooks extra: pip install -e '.[notebooks]'"


def test_every_notebook_is_in_the_reading_order():
    on_disk = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert on_disk == sorted(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_a_notebook_is_committed_with_its_outputs_and_without_run_noise(name):
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text(encoding="utf-8"))
    code = [cell for cell in nb["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] for cell in code[1:]), "run it: python scripts/run_notebooks.py"
    assert all(cell["execution_count"] is None and not cell["metadata"] for cell in code)
    errors = [o for cell in code for o in cell["outputs"] if o["output_type"] == "error"]
    streams = [o for cell in code for o in cell["outputs"] if o.get("name") == "stderr"]
    assert not errors and not streams, "an error or a warning was saved"
    for cell in code:
        kinds = [o.get("name", o["output_type"]) for o in cell["outputs"]]
        assert all(a != b or a not in ("stdout", "stderr") for a, b in zip(kinds, kinds[1:], strict=False)), \
            "one stream cut into pieces: run it with scripts/run_notebooks.py, which joins them"
    assert nb["metadata"] == {"kernelspec": {"display_name": "Python 3", "language": "python",
                                             "name": "python3"}, "language_info": {"name": "python"}}
    text = json.dumps(nb)
    assert str(ROOT) not in text, "a path of this machine was saved"


@pytest.mark.notebooks
@pytest.mark.parametrize("name", ORDER)
def test_a_notebook_runs_in_a_fresh_kernel_without_error(name):
    nbformat = pytest.importorskip("nbformat", reason=EXTRA)
    pytest.importorskip("nbclient", reason=EXTRA)
    pytest.importorskip("ipykernel", reason=EXTRA)
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    run_notebooks.execute(nb)                     # raises CellExecutionError, naming the cell, on an error
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    checks = "".join(o.get("text", "") for o in outputs)
    assert "gradcheck FAILED" not in checks


def test_the_pdf_turns_repository_links_into_paths_and_notebook_links_into_chapters():
    rewrite = _script("build_learning_journey").rewrite_links
    text = ("uniform in $[0, 1)$ as `torch.rand`; `Linear` layers "
            "([numpy_gpt/nn/linear.py](../numpy_gpt/nn/linear.py)), see [chapter 3](ch03_attention.ipynb), "
            "[the docs](../docs/encoder.md), [a site](http://127.0.0.1/site)")
    assert rewrite(text) == ("uniform in $[0, 1)$ as `torch.rand`; `Linear` layers "
                             "(`numpy_gpt/nn/linear.py`), see [chapter 3](#nb-ch03_attention), "
                             "the docs (`docs/encoder.md`), [a site](http://127.0.0.1/site)")


@pytest.mark.notebooks
def test_the_learning_journey_builds(tmp_path):
    pytest.importorskip("nbconvert", reason=EXTRA)
    build = _script("build_learning_journey")
    try:
        build.find_tools()
    except build.BuildError as err:
        pytest.skip(str(err))
    path, pages = build.build(tmp_path / "journey.pdf", html_copy=tmp_path / "journey.html")
    assert path.read_bytes()[:5] == b"%PDF-" and pages > 3 * len(ORDER)
    html = (tmp_path / "journey.html").read_text(encoding="utf-8")
    assert "MathJax.js" in html and build.MATHJAX.as_uri() in html, "MathJax is the local copy"
    assert not build._REMOTE.search(html), "nothing is fetched from the network"
    for name in ORDER:
        assert f'id="nb-{name}"' in html
    import subprocess

    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "$$" not in text and "\\frac" not in text and "\\sum" not in text, "an equation was left raw"
    assert "Contents" in text and "Chapter 4: Implementing a GPT model from scratch" in text
