"""Downloading corpora, vocabularies and checkpoints safely (the book's ``urllib`` calls, hardened).

The book fetches ``the-verdict.txt`` (chapter 2), GPT-2's weights (chapter 5) and the fine-tuning data
(chapters 6 and 7) with one-line ``urllib.request.urlretrieve`` calls. ``download_file`` does the same
job so that a slow, flaky or absent network never leaves a broken file behind:

* the bytes stream into ``<dest>.part`` in the destination folder, and only a file whose size and
  sha256 check out is renamed to ``dest`` (``os.replace``, atomic);
* a transfer cut short is resumed with an HTTP ``Range`` request on the next attempt, after a pause
  that doubles each time (``backoff``); several URLs are tried in order (mirrors). A resume is
  validated: it sends ``If-Range`` with the ETag or Last-Modified of the first response, so a file
  that changed on the server comes back whole (200) instead of being spliced onto the old bytes; with
  neither validator nor sha256 the download restarts from zero;
* server errors (5xx), time-outs and dropped connections are retried; "not found" (4xx) is not;
* no network at all (the host name does not resolve, or the connection is refused) fails at once,
  without retries or mirrors, so a command can list every missing file quickly (``gather_downloads``);
* if every attempt fails, the partial file and any folder the call created are deleted (unless
  ``keep_partial``) and ``DownloadError`` says which file, which URLs were tried, why each failed,
  and how to put the file in place by hand (its URL, destination, sha256 and size);
* a ``dest`` that already exists with the right size/sha256 is not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

_HASH_BLOCK_BYTES = 1 << 20
_STREAM_BLOCK_BYTES = 1 << 16  # small enough that a cut transfer keeps nearly all it received
_PROGRESS_MIN_BYTES = 1 << 20  # files known to be smaller than this download without a progress bar
_PERMANENT_STATUSES = range(400, 500)
_TRANSIENT_4XX = {408, 425, 429}


@dataclass(frozen=True)
class MissingFile:
    """A file that could not be downloaded: where it comes from, where it goes, how to check it."""

    name: str
    url: str
    dest: Path
    sha256: str | None = None
    size: int | None = None

    def how_to_fetch(self) -> str:
        checks = [f"sha256 {self.sha256.lower()}" if self.sha256 else "sha256 not known",
                  *([f"{self.size:,} bytes"] if self.size is not None else [])]
        return f"{self.name}: {self.url} -> {self.dest} ({', '.join(checks)})"


class DownloadError(RuntimeError):
    """A file could not be downloaded; the message says what was tried and how to fix it by hand.

    ``missing`` lists the files (URL, destination, checksum) and ``offline`` says that there was no
    network at all (name resolution failed or the connection was refused)."""

    def __init__(self, message: str, missing: Sequence[MissingFile] = (), offline: bool = False) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.offline = offline


class _AttemptFailed(Exception):
    """One attempt at one URL failed. ``permanent`` means retrying the same URL is pointless;
    ``offline`` that there is no network, so no other URL will work either."""

    def __init__(self, reason: str, permanent: bool = False, offline: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent or offline
        self.offline = offline


def _no_network(exc: BaseException) -> bool:
    """Whether ``exc`` (a requests error) comes from a failed name lookup or a refused connection."""
    seen, stack = set(), [exc]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, (socket.gaierror, ConnectionRefusedError)):
            return True
        if type(err).__name__ == "NameResolutionError":           # urllib3 2's wrapper of gaierror
            return True
        stack += [err.__cause__, err.__context__, getattr(err, "reason", None),
                  *(a for a in getattr(err, "args", ()) if isinstance(a, BaseException))]
    return False


def gather_downloads(jobs: Sequence[Callable[[], Any]], hint: str = "") -> list[Any]:
    """Run every job (each may download files) even when some fail; return their results in order.

    If any raised ``DownloadError``, raise one ``DownloadError`` that lists every missing file with
    its URL, destination and checksum, so that an offline user sees all of them at once; ``hint``
    (e.g. the flags that point to local copies) ends the message."""
    results, errors = [], []
    for job in jobs:
        try:
            results.append(job())
        except DownloadError as err:
            errors.append(err)
            results.append(None)
    if not errors:
        return results
    if len(errors) == 1 and not hint:
        raise errors[0]
    missing = [m for err in errors for m in err.missing]
    offline = any(err.offline for err in errors)
    why = "there is no network" if offline else "the downloads failed"
    lines = "\n".join(f"  - {m.how_to_fetch()}" for m in missing) or "\n".join(str(e) for e in errors)
    raise DownloadError(f"{len(missing) or len(errors)} file(s) missing and {why}. For each, place the "
                        f"file by hand where the arrow points (fetched on a machine with network "
                        f"access):\n{lines}"
                        + (f"\n{hint}" if hint else ""), missing, offline)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, sha256: str | None, size: int | None) -> str | None:
    """None if ``path`` has the expected size and sha256 (those given), else what is wrong."""
    if size is not None and (actual := path.stat().st_size) != size:
        return f"has {actual} bytes, expected {size}"
    if sha256 is not None and (actual_sha := sha256_of(path)) != sha256.lower():
        return f"has sha256 {actual_sha}, expected {sha256.lower()}"
    return None


def download_file(urls: str | Sequence[str], dest: str | Path, *, sha256: str | None = None,
                  size: int | None = None, desc: str | None = None, retries: int = 3,
                  timeout: float = 30.0, progress: bool = True, backoff: float = 1.0,
                  keep_partial: bool = False) -> Path:
    """Download ``dest`` from the first of ``urls`` that works, verified by ``sha256`` and/or ``size``.

    Args:
        urls: one URL or several (tried in order: a primary and its mirrors).
        dest: where the file goes; its folder is created.
        sha256, size: the expected hex digest / byte count (either, both, or neither).
        desc: a name for the file in the progress bar and in errors (default: its file name).
        retries: extra attempts per URL after a transient failure (time-out, dropped connection, 5xx).
        timeout: seconds to wait for the connection and between received blocks.
        progress: show a tqdm progress bar for files of 1 MiB or more.
        backoff: seconds before the first retry; doubled before each further one.
        keep_partial: on failure keep ``<dest>.part`` so that the next call resumes from it.

    Returns:
        ``dest`` as a Path.

    Raises:
        DownloadError: no URL gave a file that passes the checks.
    """
    url_list = [urls] if isinstance(urls, str) else list(urls)
    if not url_list:
        raise ValueError("download_file needs at least one URL")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    dest = Path(dest)
    name = desc or dest.name
    if dest.exists():
        problem = _verify(dest, sha256, size)
        if problem is None:
            return dest
        print(f"{dest} exists but {problem}: downloading it again", file=sys.stderr)
    created = [d for d in (dest.parent, *dest.parent.parents) if not d.exists()]   # deepest first
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    offline = False
    try:
        for url in url_list:
            for attempt in range(retries + 1):
                if attempt:
                    time.sleep(backoff * 2 ** (attempt - 1))
                try:
                    _fetch_into(url, part, timeout=timeout, progress=progress, desc=name,
                                splice_ok=sha256 is not None)
                except _AttemptFailed as exc:
                    failures.append(f"{url}: {exc}")
                    offline = exc.offline
                    if exc.permanent:
                        break
                    continue
                problem = _verify(part, sha256, size)
                if problem is not None:
                    # A wrong file from this URL will be wrong again: go to the next mirror.
                    part.unlink()
                    failures.append(f"{url}: the downloaded file {problem}")
                    break
                os.replace(part, dest)
                _validator_path(part).unlink(missing_ok=True)
                return dest
            if offline:
                break                                 # no network: the mirrors will not answer either
    finally:
        if not keep_partial:
            part.unlink(missing_ok=True)
            _validator_path(part).unlink(missing_ok=True)
            for folder in created:                    # leave no empty folder behind
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
    missing = MissingFile(name, url_list[0], dest, sha256, size)
    if offline:
        raise DownloadError(f"no network ({failures[-1].split(': ', 1)[1]}). Place the file by hand: "
                            f"{missing.how_to_fetch()}", [missing], offline=True)
    raise DownloadError(_failure_message(name, dest, url_list, failures, sha256, size, keep_partial),
                        [missing])


def _validator_path(part: Path) -> Path:
    """Where the ETag or Last-Modified of the response that started ``part`` is kept."""
    return part.with_name(part.name + ".validator")


def _fetch_into(url: str, part: Path, *, timeout: float, progress: bool, desc: str,
                splice_ok: bool = False) -> None:
    """One attempt: stream ``url`` into ``part``, resuming after the bytes already there.

    The resume sends ``If-Range`` with the validator saved when ``part`` was started: a server whose
    file changed answers 200 with the whole new file. Without a validator it resumes only when
    ``splice_ok`` (a sha256 will check the result), else it starts over."""
    validator_file = _validator_path(part)
    validator = validator_file.read_text(encoding="utf-8").strip() if validator_file.is_file() else ""
    if part.exists() and not validator and not splice_ok:
        part.unlink()
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and validator:
        headers["If-Range"] = validator
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
            if response.status_code == 416 and offset:  # our partial file does not fit the server's file
                part.unlink()
                validator_file.unlink(missing_ok=True)
                return _fetch_into(url, part, timeout=timeout, progress=progress, desc=desc,
                                   splice_ok=splice_ok)
            if response.status_code >= 400:
                reason = f"HTTP {response.status_code} {response.reason or ''}".rstrip()
                permanent = response.status_code in _PERMANENT_STATUSES and \
                    response.status_code not in _TRANSIENT_4XX
                raise _AttemptFailed(reason, permanent=permanent)
            start, total = _resume_point(response, offset)
            mode = "ab" if start else "wb"
            if not start:                              # a new file: remember what identifies it
                new = response.headers.get("ETag") or response.headers.get("Last-Modified") or ""
                if new:
                    validator_file.write_text(new, encoding="utf-8")
                else:
                    validator_file.unlink(missing_ok=True)
            received = start
            small = total is not None and total < _PROGRESS_MIN_BYTES
            with open(part, mode) as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                             unit_divisor=1024, desc=desc, leave=False,
                                             disable=not progress or small) as bar:
                for block in response.iter_content(chunk_size=_STREAM_BLOCK_BYTES):
                    f.write(block)
                    received += len(block)
                    bar.update(len(block))
    except requests.exceptions.ConnectionError as exc:
        if _no_network(exc):
            host = requests.utils.urlparse(url).netloc
            raise _AttemptFailed(f"cannot reach {host}: the name does not resolve or the connection is "
                                 f"refused; are you offline?", offline=True) from None
        raise _AttemptFailed(f"the connection broke ({_short(exc)})") from None
    except requests.exceptions.Timeout:
        raise _AttemptFailed(f"no answer within {timeout:g} s") from None
    except requests.exceptions.RequestException as exc:
        raise _AttemptFailed(f"transfer failed ({_short(exc)})") from None
    if total is not None and received != total:
        raise _AttemptFailed(f"the transfer stopped after {received} of {total} bytes")


def _resume_point(response: requests.Response, offset: int) -> tuple[int, int | None]:
    """Where this response's body starts in the file, and the file's total size if the server says."""
    length = response.headers.get("Content-Length")
    length = int(length) if length and length.isdigit() else None
    if response.status_code == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", "").strip())
        if match and int(match.group(1)) == offset:
            total = match.group(3)
            return offset, int(total) if total != "*" else None
        raise _AttemptFailed("the server answered the resume request with a range we did not ask for")
    return 0, length  # 200: the whole file from byte 0


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def _failure_message(name: str, dest: Path, urls: list[str], failures: list[str], sha256: str | None,
                     size: int | None, keep_partial: bool) -> str:
    tried = "\n".join(f"  - {failure}" for failure in failures)
    checks = []
    if size is not None:
        checks.append(f"{size} bytes")
    if sha256 is not None:
        checks.append(f"sha256 {sha256.lower()}")
    expected = f" (it must have {' and '.join(checks)})" if checks else ""
    kept = (f"\nThe partial download is kept at {dest}.part; run again to resume it."
            if keep_partial and dest.with_name(dest.name + ".part").exists() else "")
    return (f"Could not download {name} to {dest}.\nTried:\n{tried}\n"
            f"If you are offline or behind a proxy, place the file by hand: fetch {urls[0]} "
            f"(in a browser, or `curl -L -o {dest} {urls[0]}`) on a machine with network access and "
            f"save it as {dest}{expected}.{kept}")
