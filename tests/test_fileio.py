"""atomic_write / write_text_atomic: the new file replaces the old only when it is complete."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import numpy_gpt.fileio as fileio
from numpy_gpt.fileio import (
    STALE_TEMP_SECONDS,
    atomic_write,
    remove_stale_temp_files,
    write_json_atomic,
    write_text_atomic,
)

try:
    import fcntl
except ImportError:
    fcntl = None
posix_only = pytest.mark.skipif(fcntl is None, reason="kill -9 and flock are POSIX")


def test_atomic_write_replaces_existing_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as f:
        f.write(b"new ")
        f.write(b"contents")
        assert path.read_bytes() == b"old"                    # nothing visible before the end
    assert path.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]


def test_atomic_write_creates_missing_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "vocab.txt"
    with atomic_write(str(path), "w") as f:
        f.write("hello")
    assert path.read_text(encoding="utf-8") == "hello"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_error_inside_block_keeps_old_file_and_removes_temp(tmp_path, error):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"good checkpoint")
    with pytest.raises(type(error)):
        with atomic_write(path) as f:
            f.write(b"half a checkpoint")
            f.flush()
            raise error
    assert path.read_bytes() == b"good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]


def test_error_inside_block_creates_no_file(tmp_path):
    with pytest.raises(ValueError, match="bad row"):
        with atomic_write(tmp_path / "train.csv", "w") as f:
            f.write("Label,Text\n")
            raise ValueError("bad row")
    assert list(tmp_path.iterdir()) == []


def test_failed_rename_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text("old corpus", encoding="utf-8")

    def no_rename(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(fileio.os, "replace", no_rename)
    with pytest.raises(PermissionError):
        write_text_atomic(path, "new corpus")
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "old corpus"
    assert [p.name for p in tmp_path.iterdir()] == ["corpus.txt"]


def test_fsync_flushes_the_temp_file_before_the_rename(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    synced = []

    def fsync(fd):
        synced.append(os.fstat(fd).st_size)                   # the data reached the file by now
        assert not path.exists()                              # ... and it is not yet renamed

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    with atomic_write(path, fsync=True) as f:
        f.write(b"12345")
    assert synced == [5]
    with atomic_write(path) as f:
        f.write(b"no fsync")
    assert synced == [5]


def test_write_text_atomic_keeps_line_ends_and_writes_utf8(tmp_path):
    text = "caf\u00e9 \u2014 na\u00efve\nwindows line\r\nlast\n"
    path = write_text_atomic(tmp_path / "t.txt", text)
    assert path == tmp_path / "t.txt"
    assert path.read_bytes() == text.encode("utf-8")          # "\n" and "\r\n" left exactly as given
    crlf = write_text_atomic(tmp_path / "crlf.txt", "a\nb\n", newline="\r\n")
    assert crlf.read_bytes() == b"a\r\nb\r\n"


def test_write_text_atomic_newline_none_matches_plain_open(tmp_path):
    text = "one\ntwo\n"
    reference = tmp_path / "reference.txt"
    with open(reference, "w", encoding="utf-8") as f:        # platform line ends (os.linesep)
        f.write(text)
    path = write_text_atomic(tmp_path / "t.txt", text, newline=None)
    assert path.read_bytes() == reference.read_bytes() == text.replace("\n", os.linesep).encode()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_permissions_match_a_plain_open(tmp_path):
    reference = tmp_path / "reference.bin"
    reference.write_bytes(b"x")
    with atomic_write(tmp_path / "atomic.bin") as f:
        f.write(b"x")
    assert (tmp_path / "atomic.bin").stat().st_mode == reference.stat().st_mode


@pytest.mark.parametrize("mode", ["a", "ab", "r+", "xb", "w+b"])
def test_rejects_modes_that_do_not_write_a_whole_new_file(tmp_path, mode):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_write(tmp_path / "f", mode):
            pass
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_round_trips_and_keeps_non_ascii(tmp_path):
    path = write_json_atomic(tmp_path / "sub" / "r.json", {"loss": 3.5, "text": "café"}, indent=1)
    assert json.loads(path.read_text(encoding="utf-8")) == {"loss": 3.5, "text": "café"}
    assert "café" in path.read_text(encoding="utf-8") and path.read_text(encoding="utf-8").endswith("}\n")
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]       # no temporary file left


# -- stale temporary files of killed writers (issue 14) --------------------------------------------------
def _age(path, seconds):
    old = time.time() - seconds
    os.utime(path, (old, old))


@posix_only
def test_a_writer_killed_mid_save_leaves_a_temp_file_that_the_next_save_removes(tmp_path):
    """kill -9 during a write (a real child process), then the next save into the folder sweeps it."""
    target = tmp_path / "model.npz"
    script = ("import sys, time\nfrom numpy_gpt.fileio import atomic_write\n"
              "with atomic_write(sys.argv[1]) as f:\n    f.write(b'x' * 1000); f.flush()\n"
              "    print('writing', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"writing\n"
    (orphan,) = tmp_path.glob(".model.npz.*.tmp")
    write_text_atomic(tmp_path / "other.txt", "a save while the writer still lives")
    assert orphan.exists()                                 # in use (locked), and fresh: kept
    child.send_signal(signal.SIGKILL)
    child.wait()
    write_text_atomic(tmp_path / "other.txt", "young: kept")
    assert orphan.exists()
    _age(orphan, STALE_TEMP_SECONDS + 1)
    write_text_atomic(tmp_path / "model.npz", "the next save")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "other.txt"]


@posix_only
def test_the_sweep_removes_only_our_stale_unlocked_temp_files(tmp_path):
    ours = tmp_path / ".ckpt.npz.0123456789abcdef.tmp"
    theirs = [tmp_path / name for name in (".ckpt.npz.tmp", "notes.tmp", ".ckpt.npz.0123456789ABCDEF.tmp",
                                           ".ckpt.npz.0123.tmp", "ckpt.npz")]
    for path in [ours, *theirs]:
        path.write_bytes(b"x")
        _age(path, 10 * STALE_TEMP_SECONDS)
    held = tmp_path / ".live.npz.fedcba9876543210.tmp"
    held.write_bytes(b"x")
    _age(held, 10 * STALE_TEMP_SECONDS)
    with open(held, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)             # a writer that is still alive
        assert remove_stale_temp_files(tmp_path) == [ours]
    assert all(p.exists() for p in [*theirs, held]) and not ours.exists()
