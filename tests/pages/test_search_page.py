"""The Search page: nearest neighbours of a dataset image or an upload, trained against random weights."""

import io
import re

import numpy as np
from PIL import Image

from tests.pages.conftest import app

CAPTION = re.compile(r"^#(\d+) · (\d|unlabelled) · cos (-?\d\.\d{3})$")


def neighbour_grids(at) -> list[list[str]]:
    """Captions of each neighbour grid on the page (the query image is not one)."""
    return [im.captions for im in at.main.image if im.captions and all(CAPTION.match(c) for c in im.captions)]


def sims(captions: list[str]) -> list[float]:
    return [float(CAPTION.match(c).group(3)) for c in captions]


def test_without_runs_says_to_train_first(runs_dir):
    at = app("search")
    assert not at.exception
    assert "No runs yet" in at.info[0].value and "Train" in at.info[0].value


def test_a_run_without_checkpoint_says_to_wait(finished_run):
    finished_run.last_ckpt.unlink()
    at = app("search")
    assert not at.exception
    assert "no checkpoint yet" in at.info[0].value


def test_dataset_query_shows_k_neighbours_with_similarities(finished_run):
    at = app("search")
    assert not at.exception
    assert at.selectbox(key="search_bank").value == "train" and at.selectbox(key="search_query_split").value == "test"
    (grid,) = neighbour_grids(at)
    assert len(grid) == at.slider(key="search_k").value == 10
    s = sims(grid)
    assert s == sorted(s, reverse=True) and all(-1 <= v <= 1 for v in s)
    assert any("neighbours share the query's label" in c.value for c in at.caption)
    at.slider(key="search_k").set_value(4).run()  # a rerun: the embeddings now come from the cache
    assert not at.exception and not at.get("progress")  # the progress bar is gone once done
    assert [len(g) for g in neighbour_grids(at)] == [4]


def test_query_from_the_searched_split_is_left_out_of_its_results(finished_run):
    at = app("search")
    at.selectbox(key="search_query_split").set_value("train").run()
    at.number_input(key="search_idx").set_value(5).run()
    (grid,) = neighbour_grids(at)
    assert len(grid) == 10 and not any(c.startswith("#5 ") for c in grid)
    assert any("its own nearest neighbour" in c.value for c in at.caption)


def test_random_button_picks_another_index(finished_run):
    at = app("search")
    picks = set()
    for _ in range(3):
        next(b for b in at.button if b.label == "Random").click().run()
        picks.add(at.number_input(key="search_idx").value)
    assert not at.exception and len(picks) > 1


def test_random_init_comparison_shows_both_encoders(finished_run):
    at = app("search")
    at.checkbox(key="search_compare").check().run()
    assert not at.exception
    trained, rand = neighbour_grids(at)
    assert len(trained) == len(rand) == 10 and trained != rand
    assert any("Random-init encoder" in m.value for m in at.markdown)


def test_uploaded_image_is_searched(finished_run):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(buf, "PNG")
    at = app("search")
    at.radio(key="search_source").set_value("Upload").run()
    assert any("Upload an image" in i.value for i in at.info)
    at.file_uploader(key="search_upload").set_value(("photo.png", buf.getvalue(), "image/png")).run()
    at.checkbox(key="search_compare").check().run()
    assert not at.exception and not at.error
    assert [len(g) for g in neighbour_grids(at)] == [10, 10]


def test_a_non_image_upload_is_an_error(finished_run):
    at = app("search")
    at.radio(key="search_source").set_value("Upload").run()
    at.file_uploader(key="search_upload").set_value(("notes.png", b"not an image at all", "image/png")).run()
    assert not at.exception
    assert "'notes.png' is not an image that can be read" in at.error[0].value
    assert neighbour_grids(at) == []


def test_the_query_stays_while_the_random_init_comparison_is_computed(finished_run, queue):
    """Random, then Compare: the page waits for the random-init embeddings, and the query must not jump back
    to #0 (issue 16)."""
    at = app("search")
    at.number_input(key="search_idx").set_value(37).run()
    at.slider(key="search_k").set_value(6).run()
    queue.hold()
    at.checkbox(key="search_compare").check().run()
    assert not at.exception
    assert any("random init" in p.proto.text for p in at.get("progress"))
    for _ in range(3):  # the bank's embeddings, then the query's (another split)
        if not at.get("progress"):
            break
        queue.work()
        at.run()
    assert not at.exception
    assert at.number_input(key="search_idx").value == 37 and at.slider(key="search_k").value == 6
    trained, random = neighbour_grids(at)
    assert len(trained) == len(random) == 6
    assert any(m.value.startswith("**Query**") for m in at.markdown)
    assert any(im.captions and im.captions[0].startswith("test #37 ·") for im in at.main.image)


def test_the_page_stays_on_its_checkpoint_until_the_user_moves(finished_run):
    """A new checkpoint (the run trained on) does not change the results under the user: a banner offers it."""
    import os

    at = app("search")
    before = neighbour_grids(at)
    assert any("Checkpoint: **epoch 2**" in c.value for c in at.caption)
    raw = finished_run.last_ckpt.read_bytes()
    finished_run.last_ckpt.write_bytes(raw)  # a newer last.pt (same weights, a new mtime: a new checkpoint)
    os.utime(finished_run.last_ckpt, ns=(1, 2_000_000_000_000_000_000))
    at.slider(key="search_k").set_value(10).run()
    assert not at.exception
    assert neighbour_grids(at) == before
    assert any("A newer checkpoint" in i.value for i in at.info)
    next(b for b in at.button if b.key == "pin_move").click().run()
    assert not at.exception and not any("A newer checkpoint" in i.value for i in at.info)
