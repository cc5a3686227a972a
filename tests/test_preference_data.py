"""Tests for numpy_gpt/finetune/preference_data.py: the preference file format and its errors, the
download of the book's data set (from a server on 127.0.0.1), and the synthetic polite/curt task."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import pytest

from numpy_gpt.download import DownloadError
from numpy_gpt.finetune.preference_data import (
    CURT_CLOSERS,
    CURT_OPENERS,
    POLITE_CLOSERS,
    POLITE_OPENERS,
    PREFERENCE_DATA_FILENAME,
    check_preference_entries,
    download_preference_data,
    is_polite,
    load_preference_data,
    split_preference_data,
    synthetic_instruction_data,
    synthetic_preference_data,
)

# Two entries in the layout of the book's instruction-data-with-preference.json (json.dump, indent 4).
BOOK_LIKE = [
    {"instruction": "Convert 45 kilometers to meters.", "input": "",
     "output": "45 kilometers is 45000 meters.",
     "chosen": "45 kilometers is equivalent to 45000 meters.", "rejected": "45 kilometers is 45000 meters."},
    {"instruction": "Edit the following sentence for grammar.", "input": "He go to the park every day.",
     "output": "He goes to the park every day.", "rejected": "He goes to the stupid park every single day.",
     "chosen": "He goes to the park every day."},
]
PAYLOAD = json.dumps(BOOK_LIKE, indent=4).encode("utf-8")


def test_load_checks_every_entry_and_names_file_and_index(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(BOOK_LIKE), encoding="utf-8")
    assert load_preference_data(good) == BOOK_LIKE
    assert check_preference_entries([{"instruction": "a", "chosen": "b", "rejected": "c"}])  # optional keys
    cases = [
        ({"x": 1}, r"bad.json: expected a non-empty JSON list"),
        ([], r"bad.json: expected a non-empty JSON list"),
        ([BOOK_LIKE[0], "text"], r"bad.json, entry 1: expected an object, got str"),
        ([BOOK_LIKE[0], {"instruction": "a", "chosen": "b"}],
         r"bad.json, entry 1: missing field\(s\) rejected"),
        ([{**BOOK_LIKE[0], "input": 3}], r"bad.json, entry 0: field\(s\) input must be strings, got int"),
        ([{**BOOK_LIKE[0], "instruction": "  "}], r"bad.json, entry 0: the instruction is empty"),
        ([{**BOOK_LIKE[0], "rejected": BOOK_LIKE[0]["chosen"]}],
         r"bad.json, entry 0: chosen and rejected are the same"),
    ]
    bad = tmp_path / "bad.json"
    for data, message in cases:
        bad.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_preference_data(bad)
    bad.write_text("[{", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        load_preference_data(bad)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path != f"/{PREFERENCE_DATA_FILENAME}":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)


@pytest.fixture
def url():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/{PREFERENCE_DATA_FILENAME}"
    httpd.shutdown()
    httpd.server_close()


def test_download_through_the_downloader_with_sha256(url, tmp_path):
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    data = download_preference_data(tmp_path / "data", [url], sha256=sha, expected_entries=2)
    assert data == BOOK_LIKE
    assert (tmp_path / "data" / PREFERENCE_DATA_FILENAME).read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match=f"has sha256 {sha}"):
        download_preference_data(tmp_path / "other", [url], sha256="0" * 64)
    assert not (tmp_path / "other").exists()
    with pytest.raises(ValueError, match=rf"{PREFERENCE_DATA_FILENAME}: 2 entries, the book's preference "
                                         rf"data has 1100"):
        download_preference_data(tmp_path / "data", [url])        # already there: read, not fetched


def test_split_is_the_books():
    data = [{"i": i} for i in range(1100)]
    train, val, test = split_preference_data(data)
    assert (len(train), len(val), len(test)) == (935, 55, 110)
    assert train[-1] == {"i": 934} and test[0] == {"i": 935} and val[0] == {"i": 1045}


def test_synthetic_task():
    data = synthetic_preference_data()
    assert len(data) == 282 and check_preference_entries(data) is data
    assert data == synthetic_preference_data() and data != synthetic_preference_data(seed=1)
    for entry in data:
        assert is_polite(entry["chosen"]) is True and is_polite(entry["rejected"]) is False
        assert entry["output"] in entry["chosen"] and entry["output"] in entry["rejected"]
        assert entry["chosen"].startswith(POLITE_OPENERS) and entry["chosen"].endswith(POLITE_CLOSERS)
        assert entry["rejected"].startswith(CURT_OPENERS) and entry["rejected"].endswith(CURT_CLOSERS)
    train, val, test = split_preference_data(data)
    asked = {(e["instruction"], e["input"]) for e in train}
    assert not asked & {(e["instruction"], e["input"]) for e in val + test}   # held-out questions
    assert is_polite("The capital of France is Paris.") is None

    sft = synthetic_instruction_data()
    assert len(sft) == 4 * 282
    polite = sum(is_polite(e["output"]) is True for e in sft)
    curt = sum(is_polite(e["output"]) is False for e in sft)
    assert polite + curt == len(sft) and abs(polite - curt) < 0.1 * len(sft)       # no preference yet
