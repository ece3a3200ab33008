"""simclr_core.explorer.tags: named sets of a split's images, kept in the run folder."""

import csv
import io
import json
import threading

import numpy as np
import pytest

from simclr_core.errors import UserError
from simclr_core.explorer import tags
from simclr_core.runs.rundir import RunDir


@pytest.fixture
def run(tmp_path) -> RunDir:
    r = RunDir(tmp_path / "r")
    r.path.mkdir()
    return r


def test_save_load_replace_and_delete(run):
    tags.save_tag(run, "cats (maybe)", "test", [5, 3, 3, 9], "lasso")
    tags.save_tag(run, "odd ones", "train", np.array([7, 1]), "the 100 highest outliers")
    saved = tags.load_tags(run)
    assert list(saved) == ["cats (maybe)", "odd ones"]
    assert (
        saved["cats (maybe)"].rows == [3, 5, 9]
        and saved["cats (maybe)"].split == "test"
        and saved["cats (maybe)"].source == "lasso"
    )
    assert list(tags.load_tags(run, "train")) == ["odd ones"] and tags.load_tags(run, "train")["odd ones"].rows == [
        1,
        7,
    ]
    tags.save_tag(run, "cats (maybe)", "test", [1], "neighbours of #1")  # the same name replaces
    assert tags.load_tags(run)["cats (maybe)"].rows == [1] and len(tags.load_tags(run)) == 2
    tags.delete_tag(run, "cats (maybe)")
    assert list(tags.load_tags(run)) == ["odd ones"]
    tags.delete_tag(run, "no such tag")  # nothing to do, no error
    assert json.loads(run.tags_path.read_text())[0]["name"] == "odd ones"


@pytest.mark.parametrize("name", ["", "   ", "x" * 61, "bad\nname", "-leading dash", "tab\there"])
def test_names_that_are_refused_say_what_a_name_may_hold(run, name):
    with pytest.raises(UserError, match="tag|name"):
        tags.save_tag(run, name, "test", [1])
    assert not run.tags_path.exists()


def test_an_empty_or_negative_selection_is_refused(run):
    with pytest.raises(UserError, match="empty"):
        tags.save_tag(run, "none", "test", [])
    with pytest.raises(UserError, match="row -1"):
        tags.save_tag(run, "neg", "test", [-1, 2])


def test_a_damaged_file_or_record_is_left_out_not_fatal(run):
    run.tags_path.write_text("{not json")
    assert tags.load_tags(run) == {}
    good = {"name": "ok", "split": "test", "rows": [1, 2], "source": "", "created": 1.0}
    bad = [{"name": "x", "split": "test", "rows": ["a"]}, {"name": 3}, 42, {"name": "y", "split": "t", "rows": [True]}]
    run.tags_path.write_text(json.dumps([good, *bad]))
    assert list(tags.load_tags(run)) == ["ok"]
    tags.save_tag(run, "new", "test", [4])  # saving keeps what it cannot read untouched
    assert len(json.loads(run.tags_path.read_text())) == 6


def test_two_writers_at_once_both_keep_their_tag(run):
    threads = [threading.Thread(target=tags.save_tag, args=(run, f"t{i}", "test", [i])) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(tags.load_tags(run)) == [f"t{i}" for i in range(8)]


def test_csv_has_rows_labels_classes_and_paths(run):
    tag = tags.save_tag(run, "two", "test", [2, 0, 5])  # row 5 is past the split's end: left out
    labels = np.array([0, 1, -1, 1, 0])
    out = list(
        csv.reader(io.StringIO(tags.to_csv(tag, labels, ["cat", "dog"], [f"/d/{i}.png" for i in range(5)]).decode()))
    )
    assert out == [
        ["index", "label", "class", "path"],
        ["0", "0", "cat", "/d/0.png"],
        ["2", "-1", "unlabelled", "/d/2.png"],
    ]
    plain = list(csv.reader(io.StringIO(tags.to_csv(tag, labels, ["cat", "dog"]).decode())))
    assert plain[0] == ["index", "label", "class"]
