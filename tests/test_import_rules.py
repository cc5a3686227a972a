"""The lesson does not import the machinery.

Files a learner reads (numpy_gpt/nn/, model.py, attention_steps.py, optim.py) may take from
``numpy_gpt.fast`` exactly two names: ``enabled`` (the switch) and ``kernels`` (the named kernels a
layer calls in one line beside its readable form); never ``map_chunks`` or the thread machinery,
``runtime`` (malloc and BLAS settings) or ``numpy_gpt.fast.threads``. The tokenizers never import the
downloader. Read from the source with ``ast``, so the rule holds whatever is imported at runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "numpy_gpt"
LESSON = sorted((PACKAGE / "nn").glob("*.py")) + [PACKAGE / name for name in
                                                  ("model.py", "attention_steps.py", "optim.py")]
FORBIDDEN_IN_LESSON = ("numpy_gpt.runtime", "numpy_gpt.fast", "numpy_gpt.tools")
ALLOWED_FROM_FAST = ("numpy_gpt.fast", "numpy_gpt.fast.enabled", "numpy_gpt.fast.kernels")


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


def breaks(names: set[str], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """The names under a forbidden module, except those ``allowed`` exactly (a ``from`` import of
    an allowed name also lists its module, so the module itself is allowed as a name)."""
    return sorted(n for n in names if n not in allowed
                  and any(n == f or n.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", LESSON, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_lesson_takes_only_the_switch_and_the_kernels_from_fast(path):
    assert breaks(imported_modules(path), FORBIDDEN_IN_LESSON, ALLOWED_FROM_FAST) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "tokenizers").glob("*.py")),
                         ids=lambda p: p.name)
def test_tokenizers_do_not_import_the_downloader(path):
    assert breaks(imported_modules(path), ("numpy_gpt.download",)) == []


def test_the_rule_can_fail(tmp_path):
    bad = tmp_path / "layer.py"
    bad.write_text("from numpy_gpt.runtime import set_threads\nimport numpy_gpt.fast.threads\n"
                   "from numpy_gpt.fast import enabled, kernels, map_chunks\n")
    assert breaks(imported_modules(bad), FORBIDDEN_IN_LESSON, ALLOWED_FROM_FAST) == [
        "numpy_gpt.fast.map_chunks", "numpy_gpt.fast.threads", "numpy_gpt.runtime",
        "numpy_gpt.runtime.set_threads"]


# -- no import cycles, no private names across the command line's modules ----------------------------
def module_names(package: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package is its __init__.py)."""
    names = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module an ``from ... import`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports anywhere in its file, function bodies included.
    ``from a import b`` is an edge to a.b when that is a module, else to a; a name outside the
    package's modules is resolved to its longest prefix that is one."""
    modules = module_names(package)

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, name, path.name == "__init__.py")
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    edges.add(child if child in modules else known(source))
        graph[name] = edges - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): every
    module of one can reach every other, so each holds at least one import cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_numpy_gpt():
    assert cycles(import_graph(PACKAGE)) == []


def test_the_cycle_finder_finds_cycles_of_any_length_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from ..c import name\n")
    (package / "c.py").write_text("import pkg.a\n")
    (package / "d.py").write_text("from pkg import c\n")                     # reaches the cycle, not in it
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    (package / "c.py").write_text("")
    assert cycles(import_graph(package)) == []


def private_imports(path: Path, module: str) -> list[str]:
    """``from X import _name`` in ``path`` where X is another module of numpy_gpt."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, path.name == "__init__.py")
            if source.split(".")[0] == "numpy_gpt" and source != module:
                found += [f"{source}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    return found


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_the_command_line_imports_no_private_names(path):
    assert private_imports(path, f"numpy_gpt.cli.{path.stem}") == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_no_command_module_imports_main(path):
    """The command modules share cli/common.py; only the package's __init__ imports main.py."""
    if path.stem in ("__init__", "main"):
        return
    assert "numpy_gpt.cli.main" not in import_graph(PACKAGE)[f"numpy_gpt.cli.{path.stem}"]


def test_the_private_import_rule_can_fail(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from numpy_gpt.cli import _build_tokenizer\nfrom numpy_gpt.plots import save_png\n"
                   "def f():\n    from .common import _helper\n")
    assert private_imports(bad, "numpy_gpt.cli.x") == ["numpy_gpt.cli._build_tokenizer",
                                                       "numpy_gpt.cli.common._helper"]


# -- the two test tiers: reference libraries only through tests/helpers.py ---------------------------
TESTS = Path(__file__).resolve().parent
REFERENCE_MODULES = ("torch", "transformers", "tokenizers", "tiktoken", "tiktoken_ext", "safetensors",
                     "jinja2", "numpy_gpt.tools.torch_reference")


def reference_imports(path: Path) -> list[str]:
    """Where ``path`` reaches a reference library other than through ``helpers.reference``/``needs``:
    an import of one (at any depth: inside a test it fails instead of skipping when the package is
    absent) or ``pytest.importorskip`` of one (a second skip mechanism with another reason), and a
    module-level ``reference(...)`` object used while the module is imported (a decorator, a default
    argument, a module constant), which would need the package to collect the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "importorskip" and node.args and isinstance(node.args[0], ast.Constant)):
            names = [str(node.args[0].value)]
        hit = breaks(set(names), REFERENCE_MODULES)
        if hit:
            found.append(f"line {node.lineno}: {hit[0]}")
    proxies = {target.id for node in tree.body if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "reference"
               for target in node.targets if isinstance(target, ast.Name)}
    for node in _run_at_import(tree):
        if isinstance(node, ast.Name) and node.id in proxies and isinstance(node.ctx, ast.Load):
            found.append(f"line {node.lineno}: {node.id} used at collection time")
    return sorted(found, key=lambda line: int(line.split()[1].rstrip(":")))


def _run_at_import(node: ast.AST):
    """The nodes of a module that run when it is imported: not function bodies (but their decorators
    and default values), and not the ``reference(...)`` assignments themselves."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for expr in [*getattr(child, "decorator_list", []), *child.args.defaults,
                         *(d for d in child.args.kw_defaults if d is not None)]:
                yield from ast.walk(expr)
        elif not (isinstance(child, ast.Assign) and isinstance(child.value, ast.Call)
                  and getattr(child.value.func, "id", None) == "reference"):
            yield child
            yield from _run_at_import(child)


@pytest.mark.parametrize("path", sorted(p for p in TESTS.glob("*.py") if p.name != "helpers.py"),
                         ids=lambda p: p.name)
def test_tests_reach_reference_libraries_only_through_helpers(path):
    """Without torch & co. installed, every test still collects and the reference tests skip with one
    line saying what to install (tests/helpers.py: ``torch = reference("torch")``, ``@needs(...)``)."""
    assert reference_imports(path) == [], (
        f"{path.name} reaches a reference library outside tests/helpers.py: write "
        f"`torch = reference('torch')` (or reference('safetensors.numpy', 'load_file')) at the top and use "
        f"it inside the tests; `@needs('torch')` or `require('torch')` for a subprocess or a fixture")


def test_the_reference_rule_can_fail(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("import pytest\nimport torch.nn.functional as F\nfrom helpers import reference\n"
                   "from numpy_gpt.tools import torch_reference\n"
                   "tiktoken = reference('tiktoken')\nENC = tiktoken.get_encoding('gpt2')\n"
                   "@pytest.mark.parametrize('dtype', [tiktoken.x])\n"
                   "def test_x(dtype, default=tiktoken):\n"
                   "    from transformers import BertConfig\n"
                   "    pytest.importorskip('safetensors.numpy')\n"
                   "    return tiktoken.y, lambda: tiktoken\n")
    assert reference_imports(bad) == [
        "line 2: torch.nn.functional", "line 4: numpy_gpt.tools.torch_reference",
        "line 6: tiktoken used at collection time", "line 7: tiktoken used at collection time",
        "line 8: tiktoken used at collection time", "line 9: transformers", "line 10: safetensors.numpy"]


def test_a_missing_reference_skips_with_one_line_and_fails_under_ci(monkeypatch):
    import helpers

    monkeypatch.setattr(helpers, "installed", lambda package: False)
    monkeypatch.setattr(helpers, "REQUIRE_REFERENCES", False)              # as on a learner's machine
    reason = r"^tiktoken is not installed: this test compares against it; pip install torch==2\.13\.0 && "
    with pytest.raises(pytest.skip.Exception, match=reason):
        _ = helpers.reference("tiktoken").Encoding
    assert helpers.needs("torch").kwargs["reason"].startswith("torch is not installed")
    assert helpers.needs("torch").args == (True,)
    monkeypatch.setattr(helpers, "REQUIRE_REFERENCES", True)               # .ci/run: no skipping
    with pytest.raises(ModuleNotFoundError):
        _ = helpers.reference("numpy_gpt_absent_module", needs="torch").anything
    assert helpers.needs("torch").args == (False,)
    with pytest.raises(ValueError, match="not a reference package"):
        helpers.reference("numpy")
