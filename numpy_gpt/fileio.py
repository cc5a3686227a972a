"""Atomic file writes: the one place numpy_gpt writes a file that something else will read back.

Checkpoints (chapter 5), token-id arrays and corpora (chapter 2), tokenizer vocabularies, the
fine-tuning datasets (chapters 6-7) and converted GPT-2 weights all take long to make and are
read back later. Writing one in place and crashing half-way (an exception, Ctrl-C, a full disk)
would leave a truncated file where a good one used to be, and the next run would fail on it, or
worse, quietly train on it. So every writer goes through ``atomic_write``: the bytes go to a
temporary file in the same folder, and only a complete file is renamed over the target with
``os.replace`` (atomic on POSIX and Windows when both names are on one file system, which the same
folder guarantees). A reader sees either the old file or the new one, never a mix; on failure the
temporary file is removed and the old file is left untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False,
                 **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield a file open for writing on a temporary file beside ``path``; on a clean exit of the
    ``with`` block it replaces ``path``, on any exception it is deleted and ``path`` is untouched.

    ``mode`` is ``"wb"`` (bytes) or ``"w"`` (text; ``encoding`` defaults to UTF-8, and ``newline``
    etc. are passed to ``open`` in ``open_kwargs``). The parent folder is created if needed.
    ``fsync=True`` also flushes the data to the disk before the rename, so the new file survives a
    power cut, not only a crash of this process. The file gets the permissions a plain ``open``
    would give it (0o666 minus the umask).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    f = open(tmp, "x" + mode[1:], **open_kwargs)               # "x": never reuse an existing file
    try:
        with f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, *, newline: str | None = "\n") -> Path:
    """Write ``text`` as UTF-8 to ``path`` atomically; returns the path.

    ``newline="\\n"`` (the default) writes line ends exactly as they are in ``text`` on every
    platform; ``newline=None`` turns each "\\n" into the platform's line separator.
    """
    path = Path(path)
    with atomic_write(path, "w", newline=newline) as f:
        f.write(text)
    return path


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as indented UTF-8 JSON (non-ASCII kept as is) to ``path`` atomically; returns
    the path. Results, metrics and datasets all go through here."""
    return write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")
