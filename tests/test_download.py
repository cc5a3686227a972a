"""download_file against a local HTTP server on 127.0.0.1 (no test touches the internet)."""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
import time

import pytest

from numpy_gpt.download import DownloadError, download_file, gather_downloads

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/ok serves PAYLOAD (with Range support); /cut sends half of it and hangs up; /flaky cuts the
    first request only; /status/N answers N; /slow answers after a second."""

    requests_seen: list[tuple[str, str | None]] = []
    if_ranges: list[str | None] = []
    flaky_calls = 0
    current = PAYLOAD                      # what /etag serves; a test replaces it to "change" the file

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        type(self).requests_seen.append((self.path, self.headers.get("Range")))
        if self.path.startswith("/status/"):
            self.send_error(int(self.path.rsplit("/", 1)[1]))
        elif self.path == "/slow":
            time.sleep(1.0)
            self._send(PAYLOAD)
        elif self.path == "/cut":
            self._send(PAYLOAD, cut=True)
        elif self.path == "/flaky":
            type(self).flaky_calls += 1
            self._send(PAYLOAD, cut=type(self).flaky_calls == 1)
        elif self.path == "/ok":
            self._send(PAYLOAD)
        elif self.path in ("/etag", "/etag-cut"):
            type(self).if_ranges.append(self.headers.get("If-Range"))
            self._send(type(self).current, cut=self.path == "/etag-cut",
                       etag=f'"{hashlib.sha256(type(self).current).hexdigest()[:16]}"')
        elif self.path == "/norange":                  # a server that ignores Range: always 200
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)
        elif self.path == "/nolength-cut":             # no Content-Length, closes halfway
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PAYLOAD[:len(PAYLOAD) // 2])
            self.close_connection = True
        else:
            self.send_error(404)

    def _send(self, body: bytes, cut: bool = False, etag: str | None = None) -> None:
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        if match and if_range is not None and if_range != etag:
            match = None                               # the file changed: send all of it (RFC 9110)
        if match:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        if etag is not None:
            self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        data = body[start:]
        self.wfile.write(data[:len(data) // 2] if cut else data)
        self.wfile.flush()


@pytest.fixture
def server():
    _Handler.requests_seen = []
    _Handler.if_ranges = []
    _Handler.flaky_calls = 0
    _Handler.current = PAYLOAD
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _fast(**kwargs):
    return {"retries": 0, "timeout": 5.0, "progress": False, "backoff": 0.0, **kwargs}


def test_success(server, tmp_path):
    dest = download_file(f"{server}/ok", tmp_path / "data" / "f.bin", sha256=SHA, size=len(PAYLOAD),
                         **_fast())
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["f.bin"]


def test_existing_good_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "f.bin"
    dest.write_bytes(PAYLOAD)
    download_file(f"{server}/ok", dest, sha256=SHA, **_fast())
    assert _Handler.requests_seen == []


def test_existing_bad_file_is_replaced(server, tmp_path, capsys):
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    download_file(f"{server}/ok", dest, size=len(PAYLOAD), **_fast())
    assert dest.read_bytes() == PAYLOAD
    assert "downloading it again" in capsys.readouterr().err


def test_checksum_mismatch(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        download_file(f"{server}/ok", tmp_path / "f.bin", sha256="0" * 64, **_fast())
    message = str(err.value)
    assert "f.bin" in message and f"{server}/ok" in message and f"has sha256 {SHA}" in message
    assert "0" * 64 in message
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_leaves_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="stopped after|broke") as err:
        download_file(f"{server}/cut", tmp_path / "f.bin", sha256=SHA, **_fast())
    assert "place the file by hand" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_transfer_is_resumed(server, tmp_path):
    dest = download_file(f"{server}/flaky", tmp_path / "f.bin", sha256=SHA, **_fast(retries=1))
    assert dest.read_bytes() == PAYLOAD
    (_, first), (_, second) = _Handler.requests_seen
    assert first is None
    assert 0 < int(re.fullmatch(r"bytes=(\d+)-", second).group(1)) <= len(PAYLOAD) // 2


def test_keep_partial_resumes_on_the_next_call(server, tmp_path):
    with pytest.raises(DownloadError, match="resume"):
        download_file(f"{server}/cut", tmp_path / "f.bin", sha256=SHA, **_fast(keep_partial=True))
    kept = (tmp_path / "f.bin.part").stat().st_size
    assert 0 < kept <= len(PAYLOAD) // 2
    download_file(f"{server}/ok", tmp_path / "f.bin", sha256=SHA, **_fast())
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert _Handler.requests_seen[-1] == ("/ok", f"bytes={kept}-")
    assert not (tmp_path / "f.bin.part").exists()


def test_oversized_partial_file_starts_over(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"x" * (len(PAYLOAD) + 10))
    download_file(f"{server}/ok", tmp_path / "f.bin", sha256=SHA, **_fast())
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert [r for _, r in _Handler.requests_seen] == [f"bytes={len(PAYLOAD) + 10}-", None]


def test_not_found_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(f"{server}/status/404", tmp_path / "f.bin", **_fast(retries=3))
    assert len(_Handler.requests_seen) == 1
    assert list(tmp_path.iterdir()) == []


def test_server_error_is_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 500") as err:
        download_file(f"{server}/status/500", tmp_path / "f.bin", **_fast(retries=2))
    assert len(_Handler.requests_seen) == 3
    assert str(err.value).count("HTTP 500") == 3


def test_mirror_fallback(server, tmp_path):
    dest = download_file([f"{server}/status/404", f"{server}/ok"], tmp_path / "f.bin", sha256=SHA, **_fast())
    assert dest.read_bytes() == PAYLOAD


def test_timeout(server, tmp_path):
    with pytest.raises(DownloadError, match="no answer within 0.3 s"):
        download_file(f"{server}/slow", tmp_path / "f.bin", **_fast(timeout=0.3))


def test_offline(tmp_path):
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/the-verdict.txt"
    dest = tmp_path / "data" / "the-verdict.txt"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, sha256=SHA, **_fast(retries=1))
    message = str(err.value)
    assert "offline" in message and url in message and str(dest) in message
    assert "place the file by hand" in message.lower() and SHA in message
    assert err.value.offline
    assert not dest.exists() and not dest.parent.exists()          # the folder it made is gone too


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="at least one URL"):
        download_file([], tmp_path / "f")


def test_changed_remote_file_with_a_stale_part_is_not_spliced(server, tmp_path):
    """A .part from the old file plus a new remote file: If-Range makes the server send the new file whole."""
    old, new = PAYLOAD, bytes(reversed(PAYLOAD))
    _Handler.current = old
    with pytest.raises(DownloadError):
        download_file(f"{server}/etag-cut", tmp_path / "f.bin", **_fast(keep_partial=True))
    assert (tmp_path / "f.bin.part").stat().st_size > 0
    _Handler.current = new
    dest = download_file(f"{server}/etag", tmp_path / "f.bin", **_fast())
    assert dest.read_bytes() == new
    assert _Handler.if_ranges[-1] == f'"{hashlib.sha256(old).hexdigest()[:16]}"'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_unchanged_remote_file_resumes_under_if_range(server, tmp_path):
    with pytest.raises(DownloadError):
        download_file(f"{server}/etag-cut", tmp_path / "f.bin", **_fast(keep_partial=True))
    kept = (tmp_path / "f.bin.part").stat().st_size
    download_file(f"{server}/etag", tmp_path / "f.bin", **_fast())
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert _Handler.requests_seen[-1] == ("/etag", f"bytes={kept}-")


def test_a_part_without_validator_or_hash_is_not_resumed(server, tmp_path):
    (tmp_path / "f.bin.part").write_bytes(b"stale bytes of some other file")
    download_file(f"{server}/ok", tmp_path / "f.bin", **_fast())
    assert (tmp_path / "f.bin").read_bytes() == PAYLOAD
    assert _Handler.requests_seen == [("/ok", None)]


def test_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    with pytest.raises(DownloadError):
        download_file(f"{server}/cut", tmp_path / "f.bin", sha256=SHA, **_fast(keep_partial=True))
    assert (tmp_path / "f.bin.part").exists()
    dest = download_file(f"{server}/norange", tmp_path / "f.bin", sha256=SHA, **_fast())
    assert dest.read_bytes() == PAYLOAD
    assert _Handler.requests_seen[-1][1] is not None          # it asked for a range, got the whole file


def test_truncated_response_without_length_is_refused_when_the_hash_is_known(server, tmp_path):
    with pytest.raises(DownloadError, match="has sha256"):
        download_file(f"{server}/nolength-cut", tmp_path / "f.bin", sha256=SHA, **_fast())
    assert list(tmp_path.iterdir()) == []


def test_no_network_lists_every_missing_file_after_one_attempt_each(tmp_path, monkeypatch):
    """Name resolution fails: no retries, no mirrors, and one error names all three files."""
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    files = [(f"http://127.0.0.1:9/{name}", tmp_path / "data" / sub / name, f"{i}" * 64)
             for i, (sub, name) in enumerate([("a", "one.zip"), ("b", "two.json"), ("b", "three.bin")])]
    jobs = [lambda url=url, dest=dest, sha=sha: download_file([url, "http://127.0.0.1:9/mirror"], dest,
                                                              sha256=sha, progress=False)
            for url, dest, sha in files]
    with pytest.raises(DownloadError) as err:
        gather_downloads(jobs)
    assert err.value.offline and len(err.value.missing) == 3
    message = str(err.value)
    for url, dest, sha in files:
        assert url in message and str(dest) in message and sha in message
    assert len(lookups) == 3                                   # one attempt per file: no retry, no mirror
    assert not (tmp_path / "data").exists()                    # the folders the calls made are gone
