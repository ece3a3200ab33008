"""The map's binary columns: content-addressed files the browser reads as typed arrays, under a cap."""

import os
import time

import numpy as np
import pytest

from simclr_core.errors import UserError
from simclr_core.explorer.columns import MAX_MB_ENV, ColumnStore


def test_a_column_reads_back_as_the_browser_reads_it(tmp_path):
    store = ColumnStore(tmp_path)
    xy = np.random.default_rng(0).normal(size=(1000, 2))
    name = store.put(xy, "f32")
    assert name.endswith(".f32")
    back = np.frombuffer((tmp_path / name).read_bytes(), "<f4").reshape(-1, 2)
    np.testing.assert_array_equal(back, xy.astype(np.float32))
    assert np.array_equal(np.frombuffer((tmp_path / store.put([-1, 300], "i16")).read_bytes(), "<i2"), [-1, 300])
    assert (tmp_path / store.put("a/b.png\nc.png", "txt")).read_text().split("\n") == ["a/b.png", "c.png"]


def test_the_same_values_are_written_once_and_new_ones_get_a_new_name(tmp_path):
    store = ColumnStore(tmp_path)
    a = store.put(np.arange(10), "i32")
    assert store.put(np.arange(10), "i32") == a
    assert store.put(np.arange(11), "i32") != a
    assert len(store.files()) == 2 and not list(tmp_path.glob(".*"))  # no temp files left


def test_the_cap_deletes_the_least_recently_used_files_but_not_those_in_use(tmp_path):
    store = ColumnStore(tmp_path, max_bytes=10_000)
    names = [store.put(np.full(1000, i, np.float32), "f32") for i in range(3)]  # 4 KB each, all in use
    assert len(store.files()) == 3  # over the cap, but every file was just used
    for age, n in ((7200, names[0]), (3600, names[1])):
        os.utime(tmp_path / n, (time.time() - age, time.time() - age))
    store.put(np.full(10, 9, np.float32), "f32")
    left = {p.name for p in store.files()}
    assert names[0] not in left and names[1] in left and names[2] in left  # oldest first, until it fits


def test_a_mistyped_cap_names_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_MB_ENV, "lots")
    with pytest.raises(UserError, match=MAX_MB_ENV):
        ColumnStore(tmp_path).put(np.zeros(3), "f32")


def test_an_unwritable_folder_is_a_message(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="could not write"):
        ColumnStore(tmp_path / "file").put(np.zeros(3), "f32")
