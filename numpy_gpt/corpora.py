"""Training texts: the registered corpora, the offline default corpus, and ``load_corpus``.

Chapter 2 of the book trains on Edith Wharton's short story "The Verdict" (``the-verdict``, 20 kB);
nanoGPT's CPU baseline trains a character model on ``tinyshakespeare`` (1.1 MB). Both are downloaded
once into ``data/`` and checked by sha256 (see download.py). GPT-2's vocabulary files are registered
here too (``GPT2_VOCAB_FILES``; ``get_gpt2_tokenizer`` below uses them).

``stdlib-docs`` needs no network: it is the English prose every Python installation carries, read
from the standard library's source files without importing (nor running) any of them. Every module,
class and function docstring, in sorted file order and source order, duplicates dropped, followed by
the reference-manual topics that ``pydoc`` ships (``pydoc_data/topics.py``). On CPython 3.11 that is
about 2.2 MB, enough for a small model trained for a minute to write recognisable technical English.
It is deterministic for a given Python version and cached as ``data/stdlib-docs-py3.X.txt``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import sys
import sysconfig
import tokenize
import warnings
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from numpy_gpt.download import download_file, gather_downloads
from numpy_gpt.fileio import write_text_atomic


@dataclass(frozen=True)
class RemoteFile:
    """A file we know how to fetch: its name under ``data/``, its URLs (primary first), its sha256."""

    filename: str
    urls: tuple[str, ...]
    sha256: str
    size: int | None = None


CORPORA: dict[str, RemoteFile] = {
    "the-verdict": RemoteFile(
        "the-verdict.txt",
        ("https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/"
         "the-verdict.txt",
         "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch05/04_bonus_hparam_tuning/"
         "the-verdict.txt"),
        "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f", 20479),
    "tinyshakespeare": RemoteFile(
        "tinyshakespeare.txt",
        ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",),
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1115394),
}

GPT2_VOCAB_FILES: dict[str, RemoteFile] = {
    "encoder.json": RemoteFile(
        "encoder.json",
        ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
         "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/encoder.json"),
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"),
    "vocab.bpe": RemoteFile(
        "vocab.bpe",
        ("https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
         "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/vocab.bpe"),
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"),
}

OFFLINE_CORPUS = "stdlib-docs"

# Folders of the standard library whose files are tests, test data or third-party packages.
_SKIPPED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}
_MIN_DOCSTRING_WORDS = 3


def corpus_names() -> list[str]:
    """Names ``load_corpus`` accepts besides file paths."""
    return [*CORPORA, OFFLINE_CORPUS]


def download_corpus(name: str, data_dir: str | Path = "data") -> Path:
    """Download a registered corpus into ``data_dir`` (once) and return its path."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; downloadable corpora: {', '.join(CORPORA)}")
    entry = CORPORA[name]
    return download_file(entry.urls, Path(data_dir) / entry.filename, sha256=entry.sha256,
                         size=entry.size, desc=name)


def load_corpus(name_or_path: str | Path, data_dir: str | Path = "data") -> str:
    """The text of a registered corpus (downloaded or built on first use) or of a UTF-8 text file.

    Names: ``the-verdict``, ``tinyshakespeare`` (downloaded into ``data_dir``) and ``stdlib-docs``
    (built offline from this Python's standard library, cached in ``data_dir``).
    """
    if name_or_path == OFFLINE_CORPUS:
        return _read_text(stdlib_docs_path(data_dir))
    if isinstance(name_or_path, str) and name_or_path in CORPORA:
        return _read_text(download_corpus(name_or_path, data_dir))
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"{str(name_or_path)!r} is neither a registered corpus "
                         f"({', '.join(corpus_names())}) nor an existing text file")
    return _read_text(path)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc}); convert it to UTF-8 first") from None


def stdlib_docs_path(data_dir: str | Path = "data") -> Path:
    """Path of the cached ``stdlib-docs`` corpus, building it (a few seconds) if it is absent."""
    path = Path(data_dir) / f"stdlib-docs-py{sys.version_info.major}.{sys.version_info.minor}.txt"
    if not path.exists():
        print(f"building the offline corpus {path} from this Python's standard library docstrings "
              f"(once, about 10 s)", file=sys.stderr, flush=True)
        write_text_atomic(path, build_stdlib_docs())
    return path


def build_stdlib_docs(stdlib_dir: str | Path | None = None) -> str:
    """The offline corpus: docstrings of the standard library's sources, then pydoc's topics.

    Files are parsed with ``ast`` (never imported); files that do not parse are skipped. Docstrings
    shorter than three words and repeats are dropped; texts are separated by blank lines.
    """
    root = Path(stdlib_dir or sysconfig.get_paths()["stdlib"])
    files = sorted((p for p in root.rglob("*.py")
                    if not _SKIPPED_DIRS.intersection(p.relative_to(root).parts[:-1])),
                   key=lambda p: p.relative_to(root).as_posix())
    seen: set[str] = set()
    texts: list[str] = []
    for path in tqdm(files, desc="stdlib docstrings", unit="file", disable=not sys.stderr.isatty(),
                     leave=False):
        tree = _parse(path)
        if tree is None:
            continue
        for doc in _docstrings(tree):
            if len(doc.split()) >= _MIN_DOCSTRING_WORDS and doc not in seen:
                seen.add(doc)
                texts.append(doc)
    topics_file = root / "pydoc_data" / "topics.py"
    tree = _parse(topics_file) if topics_file.is_file() else None
    if tree is not None:
        texts.extend(topic.strip() for topic in _pydoc_topics(tree) if topic.strip())
    return "\n\n".join(texts) + "\n"


def _parse(path: Path) -> ast.Module | None:
    try:
        with tokenize.open(path) as f:  # honours the file's encoding declaration
            source = f.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for odd escapes in old modules
            return ast.parse(source, filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return None


def _docstrings(tree: ast.Module) -> list[str]:
    """Docstrings of the module and of every class and function in it, in source order."""
    found = []
    stack: list[ast.AST] = [tree]  # depth-first, through statements only (definitions live there)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                found.append(doc)
        children = [child for child in ast.iter_child_nodes(node)
                    if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case))]
        stack.extend(reversed(children))
    return found


def _pydoc_topics(tree: ast.Module) -> list[str]:
    """The values of ``topics = {...}`` in pydoc_data/topics.py, by sorted key (a literal, not run)."""
    for statement in tree.body:
        if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "topics"):
            try:
                topics = ast.literal_eval(statement.value)
            except ValueError:
                return []
            if isinstance(topics, dict):
                return [topics[key] for key in sorted(topics) if isinstance(topics[key], str)]
    return []


_MARKUP = set("|>{}[]=_\\")


def prose_paragraphs(text: str, min_chars: int = 80) -> str:
    """The paragraphs of ``text`` that read as plain prose, each on one line, joined by blank lines.

    A paragraph (text between blank lines) is kept when, its whitespace collapsed, it has at least
    ``min_chars`` characters, none of ``| > { } [ ] = _`` or a backslash (tables, doctests, code,
    markup) and at least 95 % letters and spaces. On ``stdlib-docs`` that keeps about 620,000
    characters of English sentences: what the notebooks train their small models on, so that
    samples read as sentences.
    """
    paragraphs = (" ".join(p.split()) for p in text.split("\n\n"))
    return "\n\n".join(p for p in paragraphs
                        if len(p) >= min_chars and not _MARKUP.intersection(p)
                        and sum(ch.isalpha() or ch == " " for ch in p) >= 0.95 * len(p))


_GPT2_TOKENIZERS: dict[Path, object] = {}          # get_gpt2_tokenizer's, by folder


def get_gpt2_tokenizer(data_dir: str | Path = "data", vocab_dir: str | Path | None = None):
    """GPT-2's tokenizer: the one place numpy_gpt builds it (every command and ``tokenizer_from_spec``
    come here).

    From ``vocab_dir``'s ``encoder.json`` and ``vocab.bpe`` when given (nothing is downloaded), else
    from ``data_dir/gpt2``, where the files are downloaded once from OpenAI's public URLs and checked
    by sha256. The loaded tokenizer is cached per folder, so calling this again is free.
    """
    from numpy_gpt.tokenizers.bpe import GPT2Tokenizer

    if vocab_dir is None:
        folder = Path(data_dir) / "gpt2"
        gather_downloads([functools.partial(download_file, entry.urls, folder / name, sha256=entry.sha256,
                                            desc=f"GPT-2 {name}")
                          for name, entry in GPT2_VOCAB_FILES.items()])
    else:
        folder = Path(vocab_dir)
    folder = folder.resolve()
    if folder not in _GPT2_TOKENIZERS:                   # reading the 50,000 merges takes a second
        _GPT2_TOKENIZERS[folder] = GPT2Tokenizer.from_files(folder / "encoder.json", folder / "vocab.bpe")
    return _GPT2_TOKENIZERS[folder]


def build_tokenizer(kind: str, train_text: str, full_text: str, vocab_size: int, data_dir: str | Path,
                    out_dir: Path, *, min_frequency: int = 2):
    """A tokenizer for a new run on a corpus. For a GPT, with an end-of-text token (fine-tuning pads
    and stops with it): ``"char"``, an alphabet of every character of ``full_text`` with
    <|endoftext|> and <|unk|> (tokenizers/char.py); ``"bpe"``, a byte-level BPE of ``vocab_size``
    tokens trained on ``train_text`` with <|endoftext|> (BPETokenizer.train); ``"gpt2"``, GPT-2's own.
    For a BERT-style encoder, ``"wordpiece"``: a WordPiece vocabulary of at most ``vocab_size``
    tokens trained on ``train_text``, merging pairs seen at least ``min_frequency`` times. A trained
    vocabulary is cached in ``out_dir`` under a name made of its settings and a hash of the training
    text, and reused when they match (``pretrain``, ``pretrain-mlm`` and ``scaling`` share it)."""
    if kind == "char":
        from numpy_gpt.tokenizers.char import CHAR_SPECIALS, CharTokenizer
        return CharTokenizer.from_text(full_text, CHAR_SPECIALS)     # every character, val included
    if kind == "gpt2":
        return get_gpt2_tokenizer(data_dir)
    digest = hashlib.sha256(train_text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    if kind == "bpe":
        from numpy_gpt.tokenizers.train_bpe import BPETokenizer
        cached = out_dir / f"tokenizer-bpe{vocab_size}-{digest}.bpe"
        name, load = "BPE tokenizer", BPETokenizer.load

        def train():
            return BPETokenizer.train(train_text, vocab_size)
    elif kind == "wordpiece":
        from numpy_gpt.tokenizers.wordpiece import WordPieceTokenizer, train_wordpiece_vocab
        cached = out_dir / f"vocab-wordpiece{vocab_size}-min{min_frequency}-{digest}.txt"
        name, load = "WordPiece vocabulary", WordPieceTokenizer.from_file

        def train():
            vocab = train_wordpiece_vocab(train_text, vocab_size, min_frequency=min_frequency)
            return WordPieceTokenizer(vocab)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: char, bpe, gpt2 or wordpiece")
    if cached.is_file():
        print(f"Reusing the {name} trained before: {cached}")
        return load(cached)
    print(f"Training a {vocab_size}-token {name} on the training split...", flush=True)
    tokenizer = train()
    tokenizer.save(cached)
    return tokenizer
