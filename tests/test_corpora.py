"""Corpora: the offline stdlib-docs builder, load_corpus, and the registry."""

from __future__ import annotations

import hashlib
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import numpy_gpt.corpora as corpora
from numpy_gpt.corpora import CORPORA, GPT2_VOCAB_FILES, build_stdlib_docs, load_corpus


def _write(path: Path, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")


@pytest.fixture
def fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    marker = tmp_path / "imported"
    _write(root / "zeta.py", '''\
        """Zeta module, last in sorted order."""
        ''')
    _write(root / "alpha.py", f'''\
        """Alpha module docstring here."""
        open({str(marker)!r}, "w").write("side effect")  # must never run


        class Widget:
            """A widget class for tests.

            Second paragraph.
                Indented relative to it.
            """

            def spin(self):
                """Spin the widget around."""
                return lambda: None

        def helper():
            "Short."

        def twin():
            """Spin the widget around."""
        ''')
    _write(root / "pkg" / "__init__.py", '''\
        """Package docstring comes after alpha."""
        if True:
            def nested():
                """Nested in an if block."""
        ''')
    _write(root / "broken.py", "def oops(:\n    '''Never seen at all.'''\n")
    _write(root / "test" / "test_alpha.py", '"""Test files are skipped entirely."""\n')
    _write(root / "site-packages" / "thirdparty.py", '"""Third party code is skipped."""\n')
    _write(root / "pydoc_data" / "topics.py", '''\
        topics = {'zzz': 'Last topic text.\\n', 'aaa': 'First topic text.\\n'}
        ''')
    return root, marker


def test_stdlib_docs_builder(fake_stdlib):
    root, marker = fake_stdlib
    text = build_stdlib_docs(root)
    assert text == ("Alpha module docstring here.\n\n"
                    "A widget class for tests.\n\nSecond paragraph.\n    Indented relative to it.\n\n"
                    "Spin the widget around.\n\n"
                    "Package docstring comes after alpha.\n\n"
                    "Nested in an if block.\n\n"
                    "Zeta module, last in sorted order.\n\n"
                    "First topic text.\n\n"
                    "Last topic text.\n")
    assert not marker.exists()  # nothing was imported or run
    assert build_stdlib_docs(root) == text  # deterministic


def test_stdlib_docs_on_real_standard_library_files():
    # One real package (the whole library takes seconds): it parses, and it is English prose.
    text = build_stdlib_docs(Path(sysconfig.get_paths()["stdlib"]) / "email")
    assert len(text) > 30_000
    assert "message" in text.lower() and text.count(" the ") > 300


def test_load_corpus_builds_and_caches_stdlib_docs(fake_stdlib, tmp_path, monkeypatch):
    root, _ = fake_stdlib
    monkeypatch.setattr(corpora, "build_stdlib_docs", lambda: build_stdlib_docs(root))
    data_dir = tmp_path / "data"
    text = load_corpus("stdlib-docs", data_dir)
    assert text.startswith("Alpha module")
    cache = data_dir / f"stdlib-docs-py{sys.version_info.major}.{sys.version_info.minor}.txt"
    assert [p.name for p in data_dir.iterdir()] == [cache.name]

    def fail():
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(corpora, "build_stdlib_docs", fail)
    assert load_corpus("stdlib-docs", data_dir) == text


def test_load_corpus_registered_name_uses_file_in_place(tmp_path, verdict_path, monkeypatch):
    (tmp_path / "the-verdict.txt").symlink_to(verdict_path)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download a file that is already there")

    monkeypatch.setattr("requests.get", no_network)
    text = load_corpus("the-verdict", tmp_path)
    assert len(text) == 20479 and text.startswith("I HAD always thought Jack Gisburn")


def test_load_corpus_path_and_errors(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("my own text", encoding="utf-8")
    assert load_corpus(path) == "my own text" and load_corpus(str(path)) == "my own text"
    with pytest.raises(ValueError, match="neither a registered corpus"):
        load_corpus(tmp_path / "missing.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus(tmp_path / "latin1.txt")


def test_registry_checksums_match_the_shared_copies(verdict_path, shakespeare_path, gpt2_vocab_dir):
    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert sha(verdict_path) == CORPORA["the-verdict"].sha256
    assert sha(shakespeare_path) == CORPORA["tinyshakespeare"].sha256
    assert shakespeare_path.stat().st_size == CORPORA["tinyshakespeare"].size
    for name, entry in GPT2_VOCAB_FILES.items():
        assert sha(gpt2_vocab_dir / name) == entry.sha256
    assert all(url.startswith("https://") for entry in [*CORPORA.values(), *GPT2_VOCAB_FILES.values()]
               for url in entry.urls)


def test_gpt2_vocabulary_offline_lists_both_files(tmp_path, monkeypatch):
    """No network: get_gpt2_tokenizer names encoder.json AND vocab.bpe in one error."""
    import socket

    from numpy_gpt.corpora import GPT2_VOCAB_FILES, get_gpt2_tokenizer
    from numpy_gpt.download import DownloadError

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError) as err:
        get_gpt2_tokenizer(tmp_path)
    message = str(err.value)
    for name, entry in GPT2_VOCAB_FILES.items():
        assert str(tmp_path / "gpt2" / name) in message and entry.sha256 in message


def test_prose_paragraphs_keeps_sentences_and_drops_code_tables_and_short_lines():
    from numpy_gpt.corpora import prose_paragraphs

    sentence = "Return the number of items in the list, counting every element once, even a repeated one."
    text = "\n\n".join([
        sentence.replace(" the ", "  the\n   "),                  # wrapped and indented: kept, joined
        ">>> len([1, 2, 3])\n3",                                   # a doctest
        "| name | value |\n| a | 1 |",                             # a table
        "x = foo(bar) if baz else qux_quux(corge, grault) + garply * waldo - fred / plugh % xyzzy",
        "Too short.",
        "Numbers 1234567890 1234567890 1234567890 1234567890 1234567890 1234567890 1234567890 12345",
        sentence])
    assert prose_paragraphs(text) == sentence + "\n\n" + sentence
    assert prose_paragraphs(text, min_chars=200) == ""
