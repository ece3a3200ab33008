import json
import os
import subprocess
import sys

import pytest

from simclr_core.files import pid_alive, remove_stale_temps, tail, temp_path, write_json_atomic


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_json_atomic_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "status.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"b": 2})
    assert json.loads(path.read_text()) == {"b": 2} and os.listdir(tmp_path) == ["status.json"]
    with pytest.raises(TypeError):
        write_json_atomic(path, {"c": object()})  # fails while writing: the old file stays, no temp is left
    assert json.loads(path.read_text()) == {"b": 2} and os.listdir(tmp_path) == ["status.json"]


def test_pid_alive_refuses_what_is_not_a_pid():
    assert pid_alive(os.getpid())
    assert not any(pid_alive(p) for p in (None, 0, -1, True, "123", 1.0, dead_pid()))


def test_remove_stale_temps_only_of_dead_writers(tmp_path):
    dead = dead_pid()
    stale = [tmp_path / f".last.pt.{dead}.tmp", tmp_path / f".epoch-0001.{dead}.tmp.npy"]
    kept = [
        temp_path(tmp_path / "last.pt"),
        tmp_path / ".last.pt.1.tmp",  # ours; pid 1 lives
        tmp_path / "last.pt",
        tmp_path / f"notes.{dead}.tmp",
    ]  # not temp names
    for p in stale + kept:
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 2
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_tail_reads_the_end_and_folds_progress_bars(tmp_path):
    log = tmp_path / "console.log"
    log.write_bytes(b"x" * 50_000 + b"\nfirst\n\n 10%|#\r 50%|###\r100%|#####\nerror: done\n")
    assert tail(log, 2) == "100%|#####\nerror: done"
    assert tail(log, 10, max_bytes=100).splitlines()[-3:] == ["first", "100%|#####", "error: done"]
    assert tail(tmp_path / "missing.log") == ""


def test_write_error_names_the_oserror_behind_a_librarys_failed_write(tmp_path, monkeypatch):
    """torch.save, NumPy and safetensors report a write that did not fit each in their own words (issue 16)."""
    import errno
    import shutil
    from collections import namedtuple

    from simclr_core.files import write_error

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 100, 0))  # a full disk
    torch_short = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2462464 vs 2462360")
    numpy_short = OSError("92160 requested and 1984 written")
    for e in (torch_short, numpy_short):
        err = write_error(e, tmp_path / "x")
        assert err is not None and err.errno == errno.ENOSPC and err.strerror == "No space left on device"
        assert err.filename == str(tmp_path / "x")
    rust = Exception('Error while serializing: I/O error: No such file or directory (os error 2) at path "/proc/.t"')
    assert write_error(rust, "/proc/x").errno == errno.ENOENT  # the OS's own number, where the library gives it
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(100, 0, 100 * 2**20))  # room left: not a full disk
    err = write_error(torch_short, tmp_path / "x")
    assert err.errno == errno.EIO and "unexpected pos" in err.strerror
    real = OSError(errno.EROFS, "Read-only file system")
    assert write_error(real, tmp_path / "x") is real
    assert write_error(RuntimeError("size mismatch for conv1.weight"), tmp_path / "x") is None  # a bug stays one
