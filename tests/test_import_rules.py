"""The lesson does not import the machinery.

Files a learner reads (numpy_gpt/nn/, model.py, attention_steps.py, optim.py) may reach the thread
machinery only through ``numpy_gpt.fast`` (``map_chunks``, the one bridge); never ``runtime`` (malloc
and BLAS settings) or ``numpy_gpt.fast.threads`` directly. The tokenizers never import the
downloader. Read from the source with ``ast``, so the rule holds whatever is imported at runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "numpy_gpt"
LESSON = sorted((PACKAGE / "nn").glob("*.py")) + [PACKAGE / name for name in
                                                  ("model.py", "attention_steps.py", "optim.py")]
FORBIDDEN_IN_LESSON = ("numpy_gpt.runtime", "numpy_gpt.fast.threads", "numpy_gpt.tools")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, as dotted names (``from a import b`` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def breaks(names: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", LESSON, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lesson_reaches_the_machinery_only_through_fast(path):
    assert breaks(imported_modules(path), FORBIDDEN_IN_LESSON) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "tokenizers").glob("*.py")),
                         ids=lambda p: p.name)
def test_tokenizers_do_not_import_the_downloader(path):
    assert breaks(imported_modules(path), ("numpy_gpt.download",)) == []


def test_the_rule_can_fail(tmp_path):
    bad = tmp_path / "layer.py"
    bad.write_text("from numpy_gpt.runtime import set_threads\nimport numpy_gpt.fast.threads\n")
    assert breaks(imported_modules(bad), FORBIDDEN_IN_LESSON) == ["numpy_gpt.fast.threads",
                                                                  "numpy_gpt.runtime",
                                                                  "numpy_gpt.runtime.set_threads"]
