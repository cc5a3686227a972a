"""Tests for numpy_gpt/finetune/data.py: safe zip extraction, the spam data pipeline, instruction JSON.

All data is made by the tests; downloads go to an HTTP server on 127.0.0.1 started here.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import stat
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpy_gpt.finetune.data import (
    create_balanced_dataset,
    download_spam_data,
    load_instruction_data,
    prepare_spam_data,
    random_split,
    read_sms_spam,
    read_spam_csv,
    safe_extract_zip,
    split_instruction_data,
    write_spam_csv,
)


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def sms_lines(n_ham: int, n_spam: int) -> str:
    lines = [f"ham\tHey, are we still meeting at {i}? \"ok\"" for i in range(n_ham)]
    lines += [f"spam\tWIN a FREE prize no. {i}, call now!" for i in range(n_spam)]
    return "\n".join(lines) + "\n"


# -- safe_extract_zip -----------------------------------------------------------------------------
def test_extracts_regular_members(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"SMSSpamCollection": b"ham\thi\n", "sub/readme": b"read me"})
    written = safe_extract_zip(archive, tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == ["SMSSpamCollection",
                                                                                   "sub/readme"]
    assert (tmp_path / "out" / "sub" / "readme").read_bytes() == b"read me"


@pytest.mark.parametrize("name", ["../evil.txt", "ok/../../evil.txt", "/tmp/evil.txt", "..\\evil.txt",
                                  "C:/evil.txt"])
def test_refuses_members_outside_the_target(tmp_path, name):
    archive = make_zip(tmp_path / "bad.zip", {"fine.txt": b"x", name: b"owned"})
    out = tmp_path / "deep" / "out"
    with pytest.raises(ValueError, match="outside|absolute"):
        safe_extract_zip(archive, out)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "deep" / "evil.txt").exists()
    assert not out.exists()                          # checked before anything is written


def test_refuses_symlinks(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "l.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ValueError, match="symbolic link"):
        safe_extract_zip(tmp_path / "l.zip", tmp_path / "out")


def test_refuses_zip_bombs(tmp_path):
    archive = make_zip(tmp_path / "bomb.zip", {"zeros": bytes(5_000_000)})
    with pytest.raises(ValueError, match="zip bomb"):
        safe_extract_zip(archive, tmp_path / "out")
    stored = make_zip(tmp_path / "big.zip", {"data": bytes(3000)}, compression=zipfile.ZIP_STORED)
    with pytest.raises(ValueError, match="limit"):
        safe_extract_zip(stored, tmp_path / "out", max_total_size=2000)


def lie_about_size(archive: Path, declared: int, method: int) -> Path:
    """Patch the one member's uncompressed size (and, stored, its compressed size) in both of the zip's
    headers, the local one and the central directory's, to ``declared`` bytes."""
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    for offset in (22, central + 24) + ((18, central + 20) if method == zipfile.ZIP_STORED else ()):
        data[offset:offset + 4] = declared.to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    return archive


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_member_that_lies_about_its_size_is_one_line_naming_the_zip(tmp_path, method):
    """Issue 24 item 18: a spam zip whose member declares 100 bytes gave zipfile's 'Bad CRC-32' traceback."""
    text = "".join(f"{'spam' if i % 3 == 0 else 'ham'}\tmessage {i}\n" for i in range(50)).encode()
    archive = make_zip(tmp_path / "spam.zip", {"SMSSpamCollection": text}, compression=method)
    lie_about_size(archive, 100, method)
    with pytest.raises(ValueError, match=r"spam.zip: zip member 'SMSSpamCollection' cannot be read "
                                         r"\(.*\): the archive is corrupt or its headers lie"):
        read_sms_spam(archive)


def test_refuses_non_zip_and_missing_members(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid zip"):
        safe_extract_zip(tmp_path / "x.zip", tmp_path / "out")
    archive = make_zip(tmp_path / "a.zip", {"readme": b"r"})
    with pytest.raises(ValueError, match="SMSSpamCollection"):
        safe_extract_zip(archive, tmp_path / "out", members=["SMSSpamCollection"])


# -- spam data ------------------------------------------------------------------------------------
def test_read_sms_spam_plain_and_zipped(tmp_path):
    text = "ham\tOk lar... Joking wif u oni...\nspam\tFree entry in 2 a wkly comp\tto win\n\n"
    (tmp_path / "SMSSpamCollection").write_text(text, encoding="utf-8")
    rows = read_sms_spam(tmp_path / "SMSSpamCollection")
    assert rows == [("ham", "Ok lar... Joking wif u oni..."), ("spam", "Free entry in 2 a wkly comp\tto win")]
    archive = make_zip(tmp_path / "c.zip", {"SMSSpamCollection": text.encode(), "readme": b"r"})
    assert read_sms_spam(archive) == rows


def test_read_sms_spam_rejects_bad_lines(tmp_path):
    (tmp_path / "f").write_text("ham\tfine\nmaybe\tspam?\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_sms_spam(tmp_path / "f")


def test_balance_and_split_match_the_book_sizes():
    rows = [("ham", f"h{i}") for i in range(4825)] + [("spam", f"s{i}") for i in range(747)]
    balanced = create_balanced_dataset(rows, seed=123)
    labels = [label for label, _ in balanced]
    assert labels.count("spam") == labels.count("ham") == 747
    assert {r for r in balanced if r[0] == "spam"} == {r for r in rows if r[0] == "spam"}
    assert len(set(balanced)) == len(balanced)                       # ham drawn without replacement
    assert balanced == create_balanced_dataset(rows, seed=123)       # seeded
    assert balanced != create_balanced_dataset(rows, seed=1)
    train, val, test = random_split(balanced, 0.7, 0.1, seed=123)
    assert (len(train), len(val), len(test)) == (1045, 149, 300)
    assert sorted(train + val + test) == sorted(balanced)


def test_spam_csv_round_trip(tmp_path):
    rows = [("ham", 'He said "hi", then left'), ("spam", "multi\nline, with comma"), ("ham", "ünïcode ☺")]
    write_spam_csv(rows, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text(encoding="utf-8").splitlines()[0] == "Label,Text"
    texts, labels = read_spam_csv(tmp_path / "t.csv")
    assert texts == [t for _, t in rows]
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 0]
    (tmp_path / "bad.csv").write_text("Label,Text\n2,what\n", encoding="utf-8")
    with pytest.raises(ValueError, match="row 2"):
        read_spam_csv(tmp_path / "bad.csv")


def test_prepare_spam_data_from_a_local_zip(tmp_path):
    archive = make_zip(tmp_path / "sms.zip", {"SMSSpamCollection": sms_lines(300, 50).encode()})
    paths = prepare_spam_data(tmp_path / "out", source=archive, seed=123)
    sizes = {name: len(read_spam_csv(p)[0]) for name, p in paths.items()}
    assert sizes == {"train": 70, "validation": 10, "test": 20}
    all_labels = np.concatenate([read_spam_csv(p)[1] for p in paths.values()])
    assert all_labels.sum() == 50 and len(all_labels) == 100


def test_repeated_messages_are_counted_across_splits_and_dedupe_keeps_each_once(tmp_path):
    """Issue 24 item 4: the collection repeats messages; the book's split (the default) shares them
    between train and test, split_overlap counts them, and dedupe leaves none."""
    from numpy_gpt.finetune.data import dedupe_messages, split_overlap

    lines = [f"ham\tsee you at {i % 40}" for i in range(300)]
    lines += [f"spam\tWIN {i % 30} now" for i in range(100)]
    path = tmp_path / "SMSSpamCollection"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert dedupe_messages([("ham", "a"), ("spam", "b"), ("spam", "a")]) == [("ham", "a"), ("spam", "b")]
    for dedupe in (False, True):
        paths = prepare_spam_data(tmp_path / str(dedupe), source=path, seed=1, dedupe=dedupe)
        texts = {name: read_spam_csv(p)[0] for name, p in paths.items()}
        overlap = split_overlap(texts)
        recount = sum(t in set(texts["train"]) for t in texts["test"])
        assert overlap["test_in_train"] == recount
        if dedupe:
            assert overlap == {"validation_in_train": 0, "test_in_train": 0, "test_in_validation": 0}
            assert sum(len(t) for t in texts.values()) == 60             # 30 spam texts, 30 of 40 ham
        else:
            assert recount > 0 and sum(len(t) for t in texts.values()) == 200


@pytest.fixture()
def http_dir(tmp_path):
    """Serve tmp_path/'www' on 127.0.0.1; yields (directory, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_spam_data_falls_back_to_the_mirror(tmp_path, http_dir):
    root, base = http_dir
    make_zip(root / "mirror.zip", {"SMSSpamCollection": sms_lines(5, 2).encode(), "readme": b"r"})
    out = tmp_path / "data"
    with pytest.raises(ValueError, match="not the published collection's"):    # the real file's sha256
        download_spam_data(out, urls=(f"{base}/mirror.zip",))
    assert not (out / "SMSSpamCollection").exists() and not (out / "sms_spam_collection.zip").exists()
    data = sms_lines(5, 2).encode()
    path = download_spam_data(out, urls=(f"{base}/missing.zip", f"{base}/mirror.zip"),
                              sha256=hashlib.sha256(data).hexdigest())
    assert path == out / "SMSSpamCollection"
    assert [label for label, _ in read_sms_spam(path)] == ["ham"] * 5 + ["spam"] * 2
    assert not (out / "readme").exists()                            # only the data file is extracted


# -- instruction data -----------------------------------------------------------------------------
def test_load_and_split_instruction_data(tmp_path):
    data = [{"instruction": f"Do {i}", "input": "" if i % 2 else "x", "output": f"done {i}"}
            for i in range(1100)]
    (tmp_path / "d.json").write_text(json.dumps(data), encoding="utf-8")
    loaded = load_instruction_data(tmp_path / "d.json")
    assert loaded == data
    train, val, test = split_instruction_data(loaded)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert train == data[:935] and test == data[935:1045] and val == data[1045:]


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[]", "non-empty JSON list"),
    ('[{"instruction": "a", "input": "", "output": 3}]', "entry 0"),
    ('[{"instruction": "a", "output": "b"}]', "entry 0"),
])
def test_load_instruction_data_rejects_bad_files(tmp_path, content, match):
    (tmp_path / "d.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_instruction_data(tmp_path / "d.json")


# -- issue 14: broken data files are one line naming the file -------------------------------------------
def test_spam_csv_with_an_unterminated_quote_names_file_and_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('Label,Text\n0,fine\n1,"never closed\n0,swallowed\n1,also swallowed\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.csv, row \d+: not valid CSV"):
        read_spam_csv(path)


def test_spam_csv_field_over_the_csv_limit_names_the_file(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("Label,Text\n0," + "a" * 131_073 + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"train.csv, row \d+: not valid CSV \(field larger than"):
        read_spam_csv(path)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=40).filter(lambda b: not _is_utf8(b)))
def test_non_utf8_data_files_name_the_file(tmp_path_factory, junk):
    folder = tmp_path_factory.mktemp("junk")
    csv_path, sms_path = folder / "train.csv", folder / "SMSSpamCollection"
    csv_path.write_bytes(b"Label,Text\n0," + junk + b"\n")
    sms_path.write_bytes(b"ham\t" + junk + b"\n")
    with pytest.raises(ValueError, match=r"train.csv.*not UTF-8"):
        read_spam_csv(csv_path)
    with pytest.raises(ValueError, match=r"SMSSpamCollection.*not UTF-8"):
        read_sms_spam(sms_path)
    json_path = folder / "instruction-data.json"
    json_path.write_bytes(b'[{"instruction": "' + junk + b'"}]')
    with pytest.raises(ValueError, match=r"instruction-data.json"):
        load_instruction_data(json_path)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
