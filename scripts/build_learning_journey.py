"""Build docs/learning-journey.pdf from the notebooks, offline: one document with a title page, a table
of contents with page numbers, every notebook as a chapter (its text, equations, code and outputs).

    python scripts/build_learning_journey.py                   # from the committed outputs
    python scripts/build_learning_journey.py --execute         # run the notebooks first, in place
    python scripts/build_learning_journey.py --html out.html   # also keep the HTML that was printed

How: the notebooks, in reading order, become one notebook (a raw HTML cell opens each chapter), which
nbconvert turns into HTML with its JupyterLab template; headless Chromium prints that to PDF. The
equations are typeset by MathJax from Debian's ``libjs-mathjax`` (a file:// URL: nothing comes from the
network). Printing twice gives the table of contents its page numbers: after the first print,
``pdftotext`` (poppler-utils) finds the page each chapter starts on.

Needs the ``notebooks`` extra (nbconvert) and three Debian packages::

    apt-get install -y --no-install-recommends chromium libjs-mathjax poppler-utils

Links into the repository (``../numpy_gpt/nn/layernorm.py``) become the path in code type: a PDF has no
repository beside it. Links between notebooks become links to the chapter.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_notebooks import NOTEBOOK_DIR, ORDER, ROOT, execute, normalise  # noqa: E402

MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
OUT = ROOT / "docs" / "learning-journey.pdf"
TITLE = "numpy_gpt: a learning journey"
SUBTITLE = ("Build a Large Language Model (From Scratch), chapter by chapter, in pure NumPy, with every "
            "backward pass written by hand and proven")

PRINT_CSS = """
@page { size: A4; margin: 16mm 15mm 18mm 15mm;
        @bottom-center { content: counter(page); font-size: 9pt; color: #555; } }
@page :first { @bottom-center { content: none; } }
body { font-size: 10.5pt; }
main { padding: 0 !important; }
.jp-Cell { padding: 2px 0 !important; }
.jp-OutputArea-output pre, .jp-RenderedText pre, .highlight pre {
  white-space: pre-wrap !important; word-break: break-word; overflow-wrap: anywhere; margin: 0; }
.highlight pre { padding: 3px 5px !important; }
.jp-InputArea-editor, .jp-InputArea-editor pre { font-size: 8.2pt !important; }
.jp-OutputArea-output pre, .jp-RenderedText pre { font-size: 7.4pt !important; }
.jp-RenderedImage img, .jp-OutputArea-output img { max-width: 100% !important; max-height: 235mm;
  height: auto; break-inside: avoid; }
.jp-OutputArea-output { break-inside: auto; }
.jp-RenderedImage { break-inside: avoid; }
h1, h2, h3 { break-after: avoid-page; break-inside: avoid; }
.title-page, .toc { font-family: var(--jp-content-font-family); }
.jp-MarkdownOutput table { font-size: 9pt; }
.chapter { break-before: page; }
.title-page { height: 250mm; display: flex; flex-direction: column; justify-content: center;
               text-align: center; }
.title-page h1 { font-size: 30pt; margin-bottom: 8mm; border: none; }
.title-page p { font-size: 13pt; color: #333; margin: 2mm 20mm; }
.toc { break-before: page; }
.toc h1 { font-size: 20pt; }
.toc ol { list-style: none; padding-left: 0; font-size: 12pt; }
.toc li { display: flex; margin: 3mm 0; }
.toc li a { color: #111; text-decoration: none; }
.toc li .dots { flex: 1; border-bottom: 1px dotted #999; margin: 0 2mm 1.2mm; }
.toc li .sections { display: block; font-size: 9pt; color: #555; margin-left: 6mm; }
code.repo-path { font-size: 0.92em; }
"""

TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}<style type="text/css">{{ resources.print_css }}</style>{% endblock extra_css %}
"""


# what would make the browser fetch: a script or stylesheet, an @import or a url() in CSS, an image
_REMOTE = re.compile(r"""<(?:script|link|img)[^>]+(?:src|href)=["']?(?:https?:)?//"""
                     r"""|url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:https?:)?//""")


class BuildError(RuntimeError):
    """A tool is missing or failed: the message says which and what to install."""


def find_tools() -> tuple[str, str]:
    """(chromium, pdftotext) executables, after checking MathJax and nbconvert are there."""
    chromium = next((shutil.which(name) for name in CHROMIUM_NAMES if shutil.which(name)), None)
    pdftotext = shutil.which("pdftotext")
    missing = [what for what, found in (("chromium", chromium), ("poppler-utils (pdftotext)", pdftotext),
                                         ("libjs-mathjax", MATHJAX.is_file() or None)) if not found]
    if missing:
        raise BuildError(f"missing {', '.join(missing)}: apt-get install -y --no-install-recommends chromium "
                         f"libjs-mathjax poppler-utils")
    try:
        import nbconvert  # noqa: F401
    except ImportError:
        raise BuildError('nbconvert is not installed: pip install -e ".[notebooks]"') from None
    return chromium, pdftotext


def _heading(cell, level: str) -> list[str]:
    return [line[len(level):].strip() for line in cell.source.splitlines() if line.startswith(level)]


def chapters(notebooks: dict) -> list[tuple[str, str, list[str]]]:
    """(name, title, section titles) of each notebook: its first '# ' heading and its '## ' ones."""
    out = []
    for name, nb in notebooks.items():
        markdown = [c for c in nb.cells if c.cell_type == "markdown"]
        titles = [t for c in markdown for t in _heading(c, "# ")]
        out.append((name, titles[0] if titles else name, [t for c in markdown for t in _heading(c, "## ")]))
    return out


_LINK = re.compile(r"\[([^\[\]]+)\]\(([^)\s]+)\)")          # [text](target), text without brackets


def rewrite_links(markdown: str) -> str:
    """Links to other notebooks point at their chapter; links into the repository become the path."""
    def replace(match: re.Match) -> str:
        text, target = match.groups()
        notebook = Path(target.split("#")[0])
        if notebook.suffix == ".ipynb" and notebook.stem in ORDER:
            return f"[{text}](#nb-{notebook.stem})"
        if target.startswith("../"):
            path = target[3:]
            shown = text.strip("`")
            return f"`{path}`" if shown in (path, target) else f"{text} (`{path}`)"
        return match.group(0)
    return _LINK.sub(replace, markdown)


def title_and_contents(parts: list[tuple[str, str, list[str]]], pages: dict[str, int] | None) -> str:
    """The title page and the table of contents, as HTML (page numbers when ``pages`` is given)."""
    items = []
    for name, title, sections in parts:
        number = str(pages[name]) if pages and name in pages else ""
        listed = "".join(f"{html.escape(s)}; " for s in sections).rstrip("; ")
        items.append(f'<li><a href="#nb-{name}">{html.escape(title)}</a><span class="dots"></span>'
                     f'<span class="page">{number}</span></li>'
                     f'<li><span class="sections">{listed}</span></li>')
    notebooks = ", ".join(f"notebooks/{name}.ipynb" for name, _, _ in parts[:2])
    return (f'<section class="title-page"><h1 id="journey-title">{html.escape(TITLE)}</h1>'
            f"<p>{html.escape(SUBTITLE)}</p>"
            f"<p>Built from the {len(parts)} notebooks of the repository ({notebooks}, ...), with the "
            f"outputs "
            f"they printed when last run. Every diagram is drawn in code from the model object.</p></section>"
            f'<section class="toc"><h1 id="journey-contents">Contents</h1><ol>{"".join(items)}</ol>'
            f"</section>")


def combined_notebook(notebooks: dict):
    """One notebook: each notebook behind a raw HTML chapter marker (a div that nbconvert keeps)."""
    import nbformat

    book = nbformat.v4.new_notebook()
    book.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}}
    for name, nb in notebooks.items():
        book.cells.append(nbformat.v4.new_raw_cell(f'<div class="chapter" id="nb-{name}"></div>',
                                                   metadata={"raw_mimetype": "text/html"}))
        for cell in nb.cells:
            cell = nbformat.from_dict(cell)
            if cell.cell_type == "markdown":
                cell.source = rewrite_links(cell.source)
            book.cells.append(cell)
    for i, cell in enumerate(book.cells):
        cell.id = f"cell-{i}"
    return book


def to_html(book, front_matter: str = "") -> str:
    """nbconvert's JupyterLab HTML of ``book``, with local MathJax and the print stylesheet;
    ``front_matter`` (the title page and contents) goes first. It is inserted after the conversion:
    nbconvert cleans the HTML of raw cells down to a few tags."""
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input_prompt=True, exclude_output_prompt=True,
                            mathjax_url=f"{MATHJAX.as_uri()}?config=TeX-AMS_CHTML-full,Safe",
                            extra_loaders=[jinja2.DictLoader({"journey.html.j2": TEMPLATE})],
                            template_file="journey.html.j2")
    body, _ = exporter.from_notebook_node(book, resources={"print_css": PRINT_CSS,
                                                           "metadata": {"name": TITLE}})
    if _REMOTE.search(body):
        raise BuildError("the HTML loads something from the network; check the template")
    return body.replace("<main>", "<main>" + front_matter, 1)


def print_pdf(chromium: str, html_path: Path, pdf_path: Path) -> None:
    """Headless Chromium prints ``html_path`` to ``pdf_path`` once MathJax is done (virtual time)."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--no-pdf-header-footer", "--print-to-pdf-no-header", "--virtual-time-budget=60000",
               "--run-all-compositor-stages-before-draw", f"--print-to-pdf={pdf_path}", html_path.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise BuildError(f"chromium could not print {html_path}: {result.stderr.strip()[-500:]}")


def chapter_pages(pdftotext: str, pdf_path: Path, parts: list[tuple[str, str, list[str]]]) -> dict[str, int]:
    """The page each chapter starts on: the first page after the contents that begins with its title."""
    text = subprocess.run([pdftotext, "-layout", str(pdf_path), "-"], capture_output=True, text=True,
                          check=True).stdout
    pages = text.split("\f")
    found, start = {}, 2                                  # page 1 is the title page, then the contents
    for name, title, _ in parts:
        words = " ".join(title.split())
        for number in range(start, len(pages)):
            if " ".join(pages[number].split()).startswith(words):
                found[name] = number + 1
                start = number + 1
                break
    return found


def build(out: Path = OUT, html_copy: Path | None = None, execute_first: bool = False) -> tuple[Path, int]:
    """Write the PDF to ``out``; returns (path, pages)."""
    import nbformat

    chromium, pdftotext = find_tools()
    notebooks = {}
    for name in ORDER:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        if execute_first:
            execute(nb)
            normalise(nb)
            nbformat.write(nb, NOTEBOOK_DIR / f"{name}.ipynb")
        notebooks[name] = nb
    parts = chapters(notebooks)
    with tempfile.TemporaryDirectory(prefix="learning-journey-") as tmp:
        html_path, pdf_path = Path(tmp) / "learning-journey.html", Path(tmp) / "learning-journey.pdf"
        pages = None
        for _ in range(2):                                # the second print knows the chapters' pages
            html_path.write_text(to_html(combined_notebook(notebooks), title_and_contents(parts, pages)),
                                 encoding="utf-8")
            print_pdf(chromium, html_path, pdf_path)
            pages = chapter_pages(pdftotext, pdf_path, parts)
        missing = [name for name, _, _ in parts if name not in pages]
        if missing:
            raise BuildError(f"chapters {missing} were not found in the printed PDF")
        count = int(re.search(r"Pages:\s+(\d+)", subprocess.run(
            [shutil.which("pdfinfo") or "pdfinfo", str(pdf_path)], capture_output=True, text=True,
            check=True).stdout).group(1))
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(pdf_path, out)
        if html_copy is not None:
            shutil.copyfile(html_path, html_copy)
    return out, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT,
                        help=f"the PDF to write (default: {OUT.relative_to(ROOT)})")
    parser.add_argument("--html", type=Path, help="also keep the HTML that was printed, here")
    parser.add_argument("--execute", action="store_true", help="run every notebook first, in place")
    args = parser.parse_args(argv)
    try:
        path, pages = build(args.out, args.html, args.execute)
    except BuildError as err:
        print(f"build_learning_journey: {err}", file=sys.stderr)
        return 1
    print(f"Wrote {path} ({pages} pages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
