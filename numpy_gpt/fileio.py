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

A process killed outright (``kill -9``, a power cut) cannot remove its temporary file, so each write
also sweeps the folder for stale ones of our own naming pattern (``.<name>.<16 hex digits>.tmp``):
files no writer is holding (every writer keeps an exclusive ``flock`` on its own) and untouched for
``STALE_TEMP_SECONDS``. Nothing else in the folder is ever removed.

``read_json`` is the matching reader: a JSON file or entry whose problems (bad UTF-8, bad JSON,
nesting too deep for Python's parser) come back as one ``ValueError`` line that names the file.
``zip_member_errors`` does the same for a zip member that lies about itself (its size, its
checksum, a compression method no zip reader knows): the checkpoint reader, the spam data and
WikiText are all zips.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:             # Windows: stale temporary files are told apart by their age alone
    fcntl = None

# What Python's zipfile raises for a member whose bytes contradict its headers: a CRC or size that does
# not match (BadZipFile), a corrupt deflate stream (zlib.error), data that ends early (EOFError), a
# compression method zipfile cannot read (NotImplementedError, e.g. method 99, AES encryption).
ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)
# A temporary file untouched for this long, and not locked by a writer, was left by a dead process.
STALE_TEMP_SECONDS = 600
_TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")


def _lock(f: IO[Any], blocking: bool = True) -> bool:
    """Take an exclusive advisory lock on an open file (where the OS has flock); False if another
    process holds it. The lock goes away with the process, even on kill -9."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def remove_stale_temp_files(folder: str | os.PathLike, *, older_than: float = STALE_TEMP_SECONDS
                            ) -> list[Path]:
    """Delete the temporary files ``atomic_write`` left in ``folder`` when its process was killed:
    names of the form ``.<name>.<16 hex digits>.tmp``, last modified more than ``older_than``
    seconds ago and locked by no live writer. Returns the paths removed; errors are ignored (another
    process may be sweeping the same folder)."""
    removed = []
    cutoff = time.time() - older_than
    try:
        candidates = [p for p in Path(folder).iterdir() if _TEMP_NAME.fullmatch(p.name)]
    except OSError:
        return removed
    for candidate in candidates:
        try:
            if not candidate.is_file() or candidate.is_symlink() or candidate.stat().st_mtime > cutoff:
                continue
            with open(candidate, "rb") as f:
                if not _lock(f, blocking=False):
                    continue                                 # a live writer holds it
            candidate.unlink()                               # no writer reopens a temp file by name
            removed.append(candidate)
        except OSError:
            continue
    return removed


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
    remove_stale_temp_files(path.parent)
    tmp = _temp_path(path)
    f = open(tmp, "x" + mode[1:], **open_kwargs)               # "x": never reuse an existing file
    try:
        with f:
            _lock(f)                                           # tells the sweep this file is in use
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json(source: str | os.PathLike | bytes, where: str | os.PathLike | None = None) -> Any:
    """Parse JSON from a file path, or from ``bytes`` read out of the file ``where``.

    Any problem is one ``ValueError`` naming the file: not UTF-8, not valid JSON, or nested deeper
    than Python's parser can follow (which it reports as a RecursionError, not as bad input).
    """
    if isinstance(source, bytes):
        raw, where = source, "<bytes>" if where is None else where
    else:
        where = source if where is None else where
        try:
            raw = Path(source).read_bytes()
        except OSError as err:
            raise ValueError(f"cannot read {where}: {err.strerror or err}") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not UTF-8 text (byte {err.start}: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{where}: the JSON is nested too deeply to parse (arrays or objects inside "
                         f"each other thousands of levels deep); it is corrupt or hostile") from None


@contextlib.contextmanager
def zip_member_errors(archive: str | os.PathLike, member: str) -> Iterator[None]:
    """Inside this block, reading ``member`` of the zip file ``archive`` fails with one ``ValueError``
    line naming both, whatever way the member lies about itself (``ZIP_READ_ERRORS``)."""
    try:
        yield
    except ZIP_READ_ERRORS as err:
        detail = str(err) or type(err).__name__
        raise ValueError(f"{archive}: zip member {member!r} cannot be read ({detail}): the archive is "
                         f"corrupt or its headers lie; download or copy it again") from None


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
