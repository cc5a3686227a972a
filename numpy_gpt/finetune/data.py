"""Data for fine-tuning: the SMS Spam Collection (chapter 6) and the instruction data set (chapter 7).

Chapter 6 downloads the UCI SMS Spam Collection, a zip holding ``SMSSpamCollection``: one message a
line, ``label<TAB>text`` with label ``ham`` or ``spam``. The book then

1. balances the classes by undersampling ham down to the 747 spam messages (``create_balanced_dataset``),
2. shuffles and splits 70 / 10 / 20 % (``random_split``): 1,045 / 149 / 300 messages,
3. writes ``train.csv``, ``validation.csv`` and ``test.csv`` with columns ``Label`` (0 = ham, 1 = spam)
   and ``Text`` (``write_spam_csv``; read back by ``read_spam_csv``).

``prepare_spam_data`` does all of it. The zip is opened by ``safe_extract_zip``, which refuses members
that would land outside the target folder (``../``, absolute paths, symlinks) and archives whose sizes
or compression ratios look like a zip bomb. The book reads the file with pandas, whose CSV parser
treats a message that starts with a double quote as a quoted field running over the next line break,
so it merges a few messages; here each line is one message, as the collection's readme describes.

Chapter 7 fine-tunes on ``instruction-data.json``: a JSON list of 1,100 objects with ``instruction``,
``input`` and ``output`` strings (``load_instruction_data``, ``download_instruction_data``), split
85 / 10 / 5 % into training, test and validation parts (``split_instruction_data``).
"""

from __future__ import annotations

import csv
import io
import os
import stat
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from numpy_gpt.download import download_file, sha256_of
from numpy_gpt.fileio import atomic_write, read_json, write_json_atomic, write_text_atomic, zip_member_errors

SPAM_URLS = (
    "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
    "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",  # the book's mirror
)
SPAM_MEMBER = "SMSSpamCollection"
# sha256 of the extracted SMSSpamCollection (5,574 lines, 477,907 bytes), the same from UCI and the
# book's mirror. The zips themselves differ between hosts, so the message file is what is checked.
SPAM_SHA256 = "7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d"
SPAM_LABELS = {"ham": 0, "spam": 1}

INSTRUCTION_DATA_URLS = (
    "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/"
    "instruction-data.json",
)
INSTRUCTION_KEYS = ("instruction", "input", "output")


# -- safe zip extraction ---------------------------------------------------------------------------
def _check_member_name(name: str) -> PurePosixPath:
    """The relative path a zip member may be written to, or a ValueError saying why not."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise ValueError(f"zip member {name!r} has an absolute path; refusing to extract the archive")
    if ".." in path.parts:
        raise ValueError(f"zip member {name!r} points outside the target folder (..); refusing to extract "
                         f"the archive")
    return path


def safe_extract_zip(zip_path: str | os.PathLike, dest_dir: str | os.PathLike, *,
                     members: Sequence[str] | None = None, max_total_size: int = 100_000_000,
                     max_ratio: float = 200.0) -> list[Path]:
    """Extract regular files of a zip archive into ``dest_dir``; returns the paths written.

    Before writing anything, every member of the archive is checked: its name must be a relative
    path without ``..`` (no path traversal), it must not be a symbolic link, the declared sizes must
    add up to at most ``max_total_size`` bytes and no member may expand more than ``max_ratio``
    times (zip bombs). While copying, a member that produces more bytes than its header declared is
    refused too. ``members`` restricts extraction to those names. Each file is written to a
    temporary file beside it, then renamed.
    """
    dest_dir = Path(dest_dir)
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{zip_path} is not a valid zip archive ({err}); delete it and download it "
                         f"again") from None
    with archive:
        infos = archive.infolist()
        total = 0
        for info in infos:
            _check_member_name(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"zip member {info.filename!r} is a symbolic link; refusing to extract "
                                 f"the archive")
            total += info.file_size
            if info.file_size > max_ratio * max(info.compress_size, 1) and info.file_size > 1_000_000:
                raise ValueError(f"zip member {info.filename!r} expands {info.file_size} bytes from "
                                 f"{info.compress_size} (more than {max_ratio:g}x): looks like a zip bomb")
        if total > max_total_size:
            raise ValueError(f"{zip_path} would expand to {total} bytes, more than the limit of "
                             f"{max_total_size}; refusing to extract it")
        wanted = {info.filename for info in infos} if members is None else set(members)
        missing = wanted - {info.filename for info in infos}
        if missing:
            raise ValueError(f"{zip_path} has no member(s) {sorted(missing)}; it holds "
                             f"{sorted(i.filename for i in infos)}")
        written = []
        for info in infos:
            if info.filename not in wanted or info.is_dir():
                continue
            target = dest_dir.joinpath(*_check_member_name(info.filename).parts)
            written.append(_extract_member(archive, info, target))
        return written


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> Path:
    """Copy one member to ``target`` atomically, refusing more bytes than its header declares; a
    member whose bytes contradict its headers (checksum, size, compression method) is one line."""
    with zip_member_errors(archive.filename, info.filename), atomic_write(target, "wb") as out, \
            archive.open(info) as src:
        copied = 0
        while chunk := src.read(1 << 20):
            copied += len(chunk)
            if copied > info.file_size:
                raise ValueError(f"zip member {info.filename!r} holds more data than the "
                                 f"{info.file_size} bytes its header declares; refusing it")
            out.write(chunk)
    return target


# -- the SMS Spam Collection -----------------------------------------------------------------------
def download_spam_data(data_dir: str | os.PathLike = "data/sms_spam_collection",
                       urls: Sequence[str] = SPAM_URLS, sha256: str | None = SPAM_SHA256) -> Path:
    """Download the SMS Spam Collection zip (UCI, then the book's mirror) into ``data_dir`` and
    extract ``SMSSpamCollection``; returns its path. Nothing is fetched when the file is there. The
    extracted file must have the ``sha256`` given (the published collection's by default): otherwise
    the zip and the file are removed and ValueError says so."""
    data_dir = Path(data_dir)
    data_file = data_dir / SPAM_MEMBER
    if data_file.is_file():
        return data_file
    zip_path = download_file(list(urls), data_dir / "sms_spam_collection.zip")
    safe_extract_zip(zip_path, data_dir, members=[SPAM_MEMBER])
    if sha256 is not None and (digest := sha256_of(data_file)) != sha256:
        data_file.unlink()
        zip_path.unlink()
        raise ValueError(f"the downloaded {SPAM_MEMBER} has sha256 {digest}, not the published collection's "
                         f"{sha256}; it was removed. Place the real file at {data_file} or pass --spam-file")
    return data_file


def read_sms_spam(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read ``SMSSpamCollection`` (or a zip holding it) into a list of (label, text) pairs.

    Every non-empty line must be ``ham<TAB>text`` or ``spam<TAB>text``; anything else is an error
    naming the line.
    """
    path = Path(path)
    if zipfile.is_zipfile(path):
        with tempfile.TemporaryDirectory() as tmp:
            (extracted,) = safe_extract_zip(path, tmp, members=[SPAM_MEMBER])
            return read_sms_spam(extracted)
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(_utf8_lines(f, path), start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            label, sep, text = line.partition("\t")
            if not sep or label not in SPAM_LABELS:
                raise ValueError(f"{path}, line {lineno}: expected 'ham<TAB>text' or 'spam<TAB>text', "
                                 f"got {line[:60]!r}")
            rows.append((label, text))
    if not rows:
        raise ValueError(f"{path} holds no messages")
    return rows


def _utf8_lines(lines, path: Path):
    """The lines of a text file opened as UTF-8; a byte that is not UTF-8 is an error naming the file."""
    done = 0
    try:
        for line in lines:
            yield line
            done += 1
    except UnicodeDecodeError as err:              # text is decoded in blocks: the line is a lower bound
        raise ValueError(f"{path}, after line {done}: not UTF-8 text ({err.reason}); save the file as "
                         f"UTF-8") from None


def create_balanced_dataset(rows: Sequence[tuple[str, str]], seed: int = 123) -> list[tuple[str, str]]:
    """Undersample ham to as many messages as there are spam (drawn with ``seed``); spam follows ham,
    as in the book."""
    spam = [r for r in rows if r[0] == "spam"]
    ham = [r for r in rows if r[0] == "ham"]
    if len(ham) < len(spam):
        raise ValueError(f"cannot balance by undersampling ham: {len(ham)} ham < {len(spam)} spam")
    keep = np.random.default_rng(seed).choice(len(ham), size=len(spam), replace=False)
    return [ham[i] for i in keep] + spam


def random_split(rows: Sequence, train_frac: float = 0.7, validation_frac: float = 0.1,
                 seed: int = 123) -> tuple[list, list, list]:
    """Shuffle ``rows`` with ``seed`` and cut them into (train, validation, test).

    As in the book, train gets int(n * train_frac) rows, validation int(n * validation_frac) and
    test the rest: 1,494 balanced messages give 1,045 / 149 / 300.
    """
    if not (0 < train_frac and 0 <= validation_frac and train_frac + validation_frac <= 1):
        raise ValueError(f"need 0 < train_frac, 0 <= validation_frac and train_frac + validation_frac <= 1, "
                         f"got {train_frac}, {validation_frac}")
    order = np.random.default_rng(seed).permutation(len(rows))
    shuffled = [rows[i] for i in order]
    train_end = int(len(rows) * train_frac)
    validation_end = train_end + int(len(rows) * validation_frac)
    return shuffled[:train_end], shuffled[train_end:validation_end], shuffled[validation_end:]


def write_spam_csv(rows: Sequence[tuple[str, str]], path: str | os.PathLike) -> Path:
    """Write (label, text) rows as a CSV with header ``Label,Text`` and labels 0 (ham) / 1 (spam),
    the book's train.csv format; atomically."""
    path = Path(path)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["Label", "Text"])
    for label, text in rows:
        if label not in SPAM_LABELS:
            raise ValueError(f"unknown label {label!r}: expected one of {sorted(SPAM_LABELS)}")
        writer.writerow([SPAM_LABELS[label], text])
    write_text_atomic(path, buffer.getvalue())
    return path


def read_spam_csv(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Read a ``Label,Text`` CSV (labels 0/1) into (texts, labels int64 (N,)).

    The CSV is read strictly: an unterminated quote (which would swallow the rest of the file into
    one message), a field over ``csv.field_size_limit()`` characters or text that is not UTF-8 is an
    error naming the file and the row."""
    texts, labels = [], []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header != ["Label", "Text"]:
                raise ValueError(f"{path}: expected the header 'Label,Text', got {header}")
            for row in reader:
                if len(row) != 2 or row[0] not in ("0", "1"):
                    raise ValueError(f"{path}, row {reader.line_num}: expected 'label,text' with label 0 or "
                                     f"1, got {str(row)[:200]}")
                labels.append(int(row[0]))
                texts.append(row[1])
        except csv.Error as err:
            raise ValueError(f"{path}, row {reader.line_num}: not valid CSV ({err}); is a quote left "
                             f"open?") from None
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}, after row {reader.line_num}: not UTF-8 text ({err.reason}); save "
                             f"the file as UTF-8") from None
    return texts, np.asarray(labels, dtype=np.int64)


def dedupe_messages(rows: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rows with each message text kept once (its first row): the SMS Spam Collection holds
    hundreds of repeated messages ("Sorry, I'll call later" alone 30 times), which a random split
    puts on both sides of it."""
    seen: set[str] = set()
    kept = []
    for label, text in rows:
        if text not in seen:
            seen.add(text)
            kept.append((label, text))
    return kept


def split_overlap(texts: dict[str, Sequence[str]]) -> dict[str, int]:
    """How many messages of each later split appear word for word in an earlier one:
    ``validation_in_train``, ``test_in_train`` and ``test_in_validation`` (a leak: a model can score
    on them by memory)."""
    train, validation = set(texts["train"]), set(texts["validation"])
    return {"validation_in_train": sum(t in train for t in texts["validation"]),
            "test_in_train": sum(t in train for t in texts["test"]),
            "test_in_validation": sum(t in validation for t in texts["test"])}


def prepare_spam_data(out_dir: str | os.PathLike = "data/sms_spam_collection",
                      source: str | os.PathLike | None = None, seed: int = 123, *,
                      dedupe: bool = False) -> dict[str, Path]:
    """The whole of section 6.2: get the collection (``source``, a local ``SMSSpamCollection`` or its
    zip, else the download), balance, split 70/10/20 and write train/validation/test CSVs into
    ``out_dir``. Returns {"train": path, "validation": path, "test": path}. The book keeps repeated
    messages (the default); ``dedupe`` keeps each text once before balancing, so no split repeats
    another (``split_overlap`` counts what the book's splits share)."""
    out_dir = Path(out_dir)
    rows = read_sms_spam(source if source is not None else download_spam_data(out_dir))
    if dedupe:
        rows = dedupe_messages(rows)
    balanced = create_balanced_dataset(rows, seed=seed)
    parts = random_split(balanced, 0.7, 0.1, seed=seed)
    return {name: write_spam_csv(part, out_dir / f"{name}.csv")
            for name, part in zip(("train", "validation", "test"), parts, strict=True)}


# -- the instruction data (chapter 7) --------------------------------------------------------------
def load_instruction_data(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a JSON list of {"instruction", "input", "output"} string entries, checking every entry."""
    data = read_json(path)                  # bad UTF-8, bad or too deeply nested JSON: name the file
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of instruction entries")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or any(not isinstance(entry.get(k), str) for k in INSTRUCTION_KEYS):
            raise ValueError(f"{path}, entry {i}: expected an object with string fields "
                             f"{', '.join(INSTRUCTION_KEYS)}; got {str(entry)[:80]}")
    return data


def download_instruction_data(data_dir: str | os.PathLike = "data",
                              urls: Sequence[str] = INSTRUCTION_DATA_URLS) -> list[dict[str, str]]:
    """Download the book's ``instruction-data.json`` (1,100 entries) once into ``data_dir`` and load it."""
    path = download_file(list(urls), Path(data_dir) / "instruction-data.json")
    return load_instruction_data(path)


def split_instruction_data(data: Sequence[dict], train_frac: float = 0.85, test_frac: float = 0.10
                           ) -> tuple[list, list, list]:
    """(train, validation, test) in the book's slicing: the first int(n * 0.85) entries train, the next
    int(n * 0.1) test, the remaining ~5 % validate (1,100 entries: 935 / 55 / 110)."""
    if not (0 < train_frac and 0 <= test_frac and train_frac + test_frac <= 1):
        raise ValueError(f"need 0 < train_frac, 0 <= test_frac and train_frac + test_frac <= 1, "
                         f"got {train_frac}, {test_frac}")
    train_end = int(len(data) * train_frac)
    test_end = train_end + int(len(data) * test_frac)
    return list(data[:train_end]), list(data[test_end:]), list(data[train_end:test_end])


def save_json(data, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically."""
    return write_json_atomic(path, data, indent=4)
