import csv
import io

import numpy as np
import pytest

from simclr_core.embeddings import Embeddings
from simclr_core.errors import UserError
from simclr_core.explorer.tables import class_names, subsample, take, to_csv, to_npz


@pytest.fixture
def emb() -> Embeddings:
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    return Embeddings(x, np.array([0, 1, -1, 1]), np.array([10, 11, 12, 13]), ["cat", "dog"], "test-h-abc")


def test_subsample_is_a_fixed_sorted_subset():
    rows = subsample(1000, 50, seed=3)
    assert len(rows) == 50 and len(set(rows.tolist())) == 50 and np.all(np.diff(rows) > 0) and rows.max() < 1000
    assert np.array_equal(subsample(1000, 50, seed=3), rows)
    assert not np.array_equal(subsample(1000, 50, seed=4), rows)
    assert np.array_equal(subsample(7, None), np.arange(7)) and np.array_equal(subsample(7, 100), np.arange(7))
    with pytest.raises(UserError, match="at least 1"):
        subsample(7, 0)


def test_take_keeps_rows_aligned_and_names_the_subset(emb):
    sub = take(emb, np.array([1, 3]))
    assert np.array_equal(sub.indices, [11, 13]) and np.array_equal(sub.labels, [1, 1])
    assert np.array_equal(sub.embeddings, emb.embeddings[[1, 3]])
    assert sub.key != emb.key and sub.key != take(emb, np.array([0, 2])).key
    assert take(emb, np.arange(4)).key == emb.key


def test_class_names_marks_unlabelled(emb):
    assert class_names(emb.labels, emb.classes) == ["cat", "dog", "unlabelled", "dog"]


def test_csv_has_one_row_per_point(emb):
    coords = np.array([[0, 1], [2, 3], [4, 5], [6, 7.5]], dtype=np.float32)
    rows = list(csv.reader(io.StringIO(to_csv(emb, coords).decode())))
    assert rows[0] == ["index", "label", "class", "x", "y", "e0", "e1", "e2"]
    assert rows[3][:5] == ["12", "-1", "unlabelled", "4", "5"] and rows[4][4] == "7.5"
    assert [float(v) for v in rows[2][5:]] == pytest.approx([0.3, 0.4, 0.5])
    assert len(rows) == 5
    three = list(csv.reader(io.StringIO(to_csv(emb, np.zeros((4, 3))).decode())))
    assert three[0][3:6] == ["x", "y", "z"]


def test_npz_round_trip(emb):
    coords = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    with np.load(io.BytesIO(to_npz(emb, coords))) as z:
        assert sorted(z.files) == ["classes", "coords", "embeddings", "indices", "labels"]
        assert np.array_equal(z["coords"], coords) and np.array_equal(z["embeddings"], emb.embeddings)
        assert np.array_equal(z["labels"], emb.labels) and np.array_equal(z["indices"], emb.indices)
        assert z["classes"].tolist() == ["cat", "dog"]


def test_coordinates_must_match_rows(emb):
    with pytest.raises(UserError, match="do not match 4 embeddings"):
        to_npz(emb, np.zeros((3, 2)))
    with pytest.raises(UserError, match="do not match"):
        to_csv(emb, np.zeros(4))


def test_csv_keeps_the_bytes_of_a_file_name_that_is_not_utf8(emb):
    """A folder's b'\\xff.png' is '\\udcff.png' in Python; the CSV's path column must still open the file."""
    paths = [f"cats/{i}\udcff.png" for i in range(len(emb.labels))]
    data = to_csv(emb, np.zeros((len(emb.labels), 2)), {"path": paths})
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8", "surrogateescape"))))
    assert [r["path"] for r in rows] == paths and b"cats/0\xff.png" in data
