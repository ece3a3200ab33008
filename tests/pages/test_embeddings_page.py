"""The Embeddings page: the map (hover images, neighbours, colours, scores, grids) and the over-training view."""

import json

import numpy as np
import pytest

from simclr_core.data import datasets as data
from simclr_core.explorer import probe
from simclr_core.explorer.compute import GRAPH_K

from tests.pages.conftest import app, deck_specs, layer, map_data, read_column

PCA = dict(emb_method="pca")


def labels_of(run):
    d = run.config().data
    return data.load_split(d.dataset, "test", data_dir=d.data_dir, image_size=d.image_size).labels.numpy()


def the_map(at) -> dict:
    [spec] = [spec for key, spec in deck_specs(at) if key.startswith("emb_map")]
    return spec


def grid(at, prefix: str) -> list[tuple[int, str]]:
    """(row, caption) of each image of the grid whose buttons' keys start with ``prefix``, in order."""
    out = []

    def walk(node):
        for c in getattr(node, "children", {}).values():
            kids = list(getattr(c, "children", {}).values())
            if (
                getattr(c, "type", None) == "column"
                and len(kids) == 2
                and kids[1].type == "button"
                and (kids[1].key or "").startswith(prefix)
            ):
                out.append((int(kids[1].key.rsplit("-", 1)[1]), kids[0].captions[0]))
            walk(c)

    walk(at.main)
    return out


def test_no_runs_shows_guidance(runs_dir):
    at = app("embeddings")
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.get("deck_gl_json_chart")


def test_run_without_checkpoint_shows_guidance(finished_run):
    finished_run.last_ckpt.unlink()
    at = app("embeddings")
    assert not at.exception
    assert any("no checkpoint yet" in i.value for i in at.info)


def test_map_has_every_test_image_with_its_thumbnail(finished_run):
    at = app("embeddings", **PCA)
    assert not at.exception and not at.error
    spec = the_map(at)
    points = layer(spec, "points")
    assert sorted(p["row"] for p in points) == list(range(360))  # the whole test split, each with its row
    labels = labels_of(finished_run)
    assert all(p["label"] == str(labels[p["row"]]) for p in points)
    cols = spec["map"]["columns"]
    pred, conf = read_column(cols["pred"]["url"], "<i2"), read_column(cols["conf"]["url"], "u1")
    assert set(pred.tolist()) <= set(range(10)) and len(pred) == 360 and conf.max() <= 100
    # the hover card's thumbnail: a tile of the split's sprite atlas, the very pixels of that image
    thumbs = spec["map"]["thumbs"]
    assert thumbs["base"].startswith("app/static/thumbs/") and thumbs["count"] == 360
    from PIL import Image

    from ui.shell import THUMBS_DIR

    folder = THUMBS_DIR / thumbs["base"].split("/")[-2]
    row = 123
    per, t, c = thumbs["cols"] ** 2, thumbs["tile"], thumbs["cols"]
    sheet = np.asarray(Image.open(folder / f"atlas-{row // per}.{thumbs['ext']}").convert("RGB"))
    j = row % per
    tile = sheet[(j // c) * t : (j // c + 1) * t, (j % c) * t : (j % c + 1) * t]
    d = finished_run.config().data
    image = data.load_split(d.dataset, "test", data_dir=d.data_dir, image_size=d.image_size).images[row]
    if thumbs["ext"] == "png" and t == image.shape[-1]:
        assert np.array_equal(tile, image.numpy().transpose(1, 2, 0))
    assert any("360 images · 360 plotted" in c.value for c in at.caption)
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download NPZ"]


def test_without_static_serving_the_page_says_how_to_get_thumbnails(finished_run):
    at = app("embeddings", static_serving=False, **PCA)
    assert not at.exception
    assert the_map(at)["map"]["thumbs"] is None
    assert any("enableStaticServing" in c.value for c in at.caption)


@pytest.mark.parametrize("mode", ["class", "pred", "correct", "confidence", "cluster", "label_error", "outlier"])
def test_every_colour_mode(finished_run, mode):
    at = app("embeddings", **PCA, emb_colour=mode, emb_kmeans=4)
    assert not at.exception and not at.error
    points = layer(the_map(at), "points")
    colours = {(p["r"], p["g"], p["b"]) for p in points}
    if mode == "correct":
        assert colours <= {(44, 160, 44), (214, 39, 40)} and len(colours) == 2
    elif mode == "cluster":
        assert len(colours) == 4
    elif mode in ("class", "pred"):
        assert len(colours) == 10
    else:  # continuous scores: many shades
        assert len(colours) > 20
    if mode in ("label_error", "outlier"):
        assert all("score" in p for p in points)
    assert at.markdown  # a legend


def test_the_100_highest_of_each_score_as_a_grid(finished_run):
    at = app("embeddings", **PCA)
    for score in ("label_error", "outlier", "duplicate"):
        if score != "label_error":
            at.button_group(key="emb_worst").set_value(score).run()
        assert not at.exception
        cells = grid(at, f"worst-{score}-")
        values = [float(c.split(" · ")[0]) for _, c in cells]
        assert len(cells) == 100 and values == sorted(values, reverse=True), score


def test_class_highlight_dims_the_other_classes(finished_run):
    at = app("embeddings", **PCA, emb_classes=["3"])
    assert not at.exception
    points = layer(the_map(at), "points")
    assert len(points) == 360  # the others stay on the map, dimmed, as the context
    assert {p["label"] for p in points if p["a"] == 220} == {"3"}
    assert {p["label"] for p in points if p["a"] == 40} == {str(c) for c in range(10)} - {"3"}
    assert all((p["r"], p["g"], p["b"]) == (225, 225, 225) for p in points if p["label"] != "3")
    assert any(f"{sum(p['label'] == '3' for p in points)} of 360 images highlighted" in c.value for c in at.caption)
    cells = grid(at, "worst-")
    # the grids follow the highlight; a label error names the class its neighbours vote for
    assert cells and {c.split(" · ")[1].split(" → ")[0] for _, c in cells} == {"3"}
    assert any(" → " in c and not c.endswith("→ 3") for _, c in cells)


def test_the_map_lists_a_picked_points_neighbours_from_the_graph(finished_run):
    """Issue 19: with thumbnails, the 2-D map gets the split's k-NN graph as columns and lists the pick's
    neighbours itself (one row of each column, read in the browser); no panel of the page repeats them."""
    from simclr_core.explorer.compute import load_graph

    at = app("embeddings", **PCA, emb_k=7, emb_focus={"split": "test", "row": 5})
    assert not at.exception
    [(_, d)] = [(k, d) for k, d in map_data(at) if k.startswith("emb_map")]
    nb = d["neighbours"]
    assert d["focus_row"] == 5 and nb["k"] == 7 and nb["split"] == "test" and nb["names"] == [str(c) for c in range(10)]
    [graph] = [p for p in finished_run.embeddings_dir.glob("graph-*.npz") if "test" in p.name]
    g = load_graph(graph)
    rows = read_column(nb["rows"], "<i4").reshape(-1, 7)
    sims = read_column(nb["sims"], "<f4").reshape(-1, 7)
    assert rows.shape[0] == len(g.rows) == 360  # every split row, plotted or not
    np.testing.assert_array_equal(rows, g.rows[:, :7])
    np.testing.assert_allclose(sims, g.sims[:, :7], rtol=1e-6)
    assert list(read_column(nb["labels"], "<i2")) == labels_of(finished_run).tolist()
    spec = the_map(at)
    assert len(layer(spec, "neighbours")) == 7 and len(layer(spec, "query")) == 1
    assert not grid(at, "nbr-") and not any("nearest neighbours in" in c.value for c in at.caption)
    # a click on a neighbour (the map's trigger) picks it; the Clear button (row -1) clears the pick
    at = app("embeddings", **PCA, emb_k=7, emb_focus={"split": "test", "row": 5})
    at.session_state["emb_map.test.h.pca.2d.10000"] = {"click": {"row": int(rows[5, 2])}}
    at.run()
    assert at.session_state["emb_focus"] == {"split": "test", "row": int(rows[5, 2])}
    at.session_state["emb_map.test.h.pca.2d.10000"] = {"click": {"row": -1}}
    at.run()
    assert "emb_focus" not in at.session_state and at.query_params.get("focus") is None


def test_without_thumbnails_the_panel_beside_the_map_lists_the_neighbours(finished_run):
    at = app("embeddings", static_serving=False, **PCA, emb_k=7, emb_focus={"split": "test", "row": 5})
    assert not at.exception
    [(_, d)] = [(k, d) for k, d in map_data(at) if k.startswith("emb_map")]
    assert d["neighbours"] is None
    nbrs = grid(at, "nbr-")
    sims = [float(c.split(" · ")[0]) for _, c in nbrs]
    assert len(nbrs) == 7 and sims == sorted(sims, reverse=True) and 5 not in [r for r, _ in nbrs]
    spec = the_map(at)
    assert len(layer(spec, "neighbours")) == 7 and len(layer(spec, "query")) == 1
    assert any("7 nearest neighbours in the test split" in c.value for c in at.caption)
    # the button under a grid image searches from that image instead
    row = nbrs[2][0]
    next(b for b in at.button if b.key == f"nbr-{row}").click().run()
    assert at.session_state["emb_focus"] == {"split": "test", "row": row}
    assert any(m.value.startswith(f"**#{row} ·") for m in at.markdown)


def test_3d_map(finished_run):
    at = app("embeddings", **PCA, emb_dims=3, emb_focus={"split": "test", "row": 0})
    assert not at.exception
    spec = the_map(at)
    assert spec["views"][0]["@@type"] == "OrbitView"
    assert all(isinstance(p["z"], float) for p in layer(spec, "points")) and layer(spec, "neighbours")


def test_k_larger_than_the_split_is_clamped(finished_run):
    at = app("embeddings", **PCA)
    assert at.slider(key="emb_k").max == GRAPH_K


def test_lasso_selection_shows_the_selected_images(finished_run):
    picked = [3, 17, 200, 17]
    selection = {"selection": {"rows": picked, "how": "lasso"}}  # what the map's Lasso sends (ui/scatter.js)
    at = app("embeddings", **PCA, **{"emb_map.test.h.pca.2d.10000": selection})
    assert not at.exception
    labels = labels_of(finished_run)
    assert grid(at, "sel-") == [(i, f"{labels[i]}") for i in (3, 17, 200)]
    assert any("**3** points selected" in m.value for m in at.markdown)


def test_unlabelled_split_turns_off_the_label_modes_and_says_why(finished_run, tmp_path):
    from PIL import Image

    folder = tmp_path / "plain"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    cfg = json.loads(finished_run.config_path.read_text())
    cfg["data"].update(dataset="folder", data_path=str(folder), subset=None)
    finished_run.config_path.write_text(json.dumps(cfg))
    at = app("embeddings", **PCA)
    assert not at.exception and not at.error
    assert at.selectbox(key="emb_colour").options == ["k-means cluster", "Outlier score"]
    assert any("no labels" in c.value and "class sub-folders" in c.value for c in at.caption)
    points = layer(the_map(at), "points")
    assert len(points) == 30 and all(p["path"].startswith(str(folder)) for p in points)


def test_file_and_class_names_that_are_not_utf8_are_shown_escaped(finished_run, tmp_path):
    """Such names are read and trained on (simclr_core.data.datasets); the page shows them as \\xff, not a traceback."""
    import os

    from PIL import Image

    root = os.fsencode(tmp_path / "odd")
    rng = np.random.default_rng(0)
    for cls in (b"caf\xe9", b"plain"):
        os.makedirs(os.path.join(root, cls))
        for i in range(12):
            name = os.path.join(root, cls, b"\xff%02d.png" % i)
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(os.fsdecode(name))
    cfg = json.loads(finished_run.config_path.read_text())
    cfg["data"].update(dataset="folder", data_path=os.fsdecode(root), subset=None, train_split=None)
    finished_run.config_path.write_text(json.dumps(cfg))
    at = app("embeddings", **PCA)
    assert not at.exception and not at.error
    points = layer(the_map(at), "points")
    assert points and all("\\xff" in p["path"] for p in points)
    assert {p["label"] for p in points} <= {"caf\\xe9", "plain"}
    at.text_input(key="emb_find").input("\\xff03").run()  # found by the name as shown
    assert not at.exception and at.session_state["emb_focus"]["row"] >= 0


@pytest.mark.parametrize("images", [1, 2, 3])
def test_a_split_too_small_to_project_is_a_message(finished_run, tmp_path, images):
    from PIL import Image

    folder = tmp_path / "few" / "a"
    folder.mkdir(parents=True)
    for i in range(images):
        Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(folder / f"{i}.png")
    cfg = json.loads(finished_run.config_path.read_text())
    cfg["data"].update(dataset="folder", data_path=str(tmp_path / "few"), subset=None)
    finished_run.config_path.write_text(json.dumps(cfg))
    at = app("embeddings", **PCA)
    assert not at.exception
    assert "at least 4 points" in at.error[0].value
    assert any(b.label == "Try again" for b in at.button)


def test_an_empty_split_is_a_message(finished_run, tmp_path):
    from PIL import Image

    (tmp_path / "data" / "train" / "a").mkdir(parents=True)
    (tmp_path / "data" / "test").mkdir()  # a split folder with no images in it
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 0, 0)).save(tmp_path / "data" / "train" / "a" / f"{i}.png")
    cfg = json.loads(finished_run.config_path.read_text())
    cfg["data"].update(dataset="folder", data_path=str(tmp_path / "data"), subset=None)
    finished_run.config_path.write_text(json.dumps(cfg))
    at = app("embeddings", **PCA, emb_split="test")
    assert not at.exception
    assert "no images found" in at.error[0].value
    at.selectbox(key="emb_split").set_value("train").run()  # the other split still works
    assert not at.exception and len(layer(the_map(at), "points")) == 8
    [cell] = grid(at, "worst-label_error-")[:1]
    button = next(b for b in at.button if b.key == f"worst-label_error-{cell[0]}")
    file = button.help.split(": ")[0]  # the file's whole path, for a user to find it
    assert file.startswith(str(tmp_path / "data" / "train" / "a")) and file.endswith(".png")
    assert cell[1].endswith(" · a/" + file.rsplit("/", 1)[1])  # its class folder and name in the caption


def test_deep_links_pick_the_run_view_and_settings(finished_run):
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from tests.pages.conftest import REPO

    config.set_option("server.enableStaticServing", True)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params.update({"run": "tiny", "view": "map", "split": "train", "projection": "pca", "points": "100"})
    at.switch_page("pages/embeddings.py")
    at.run()
    assert not at.exception
    assert at.selectbox(key="emb_split").value == "train" and at.selectbox(key="emb_method").value == "pca"
    assert len(layer(the_map(at), "points")) == 100
    # the page writes its place back into the address, so a reload lands here again
    assert at.query_params["split"] in ("train", ["train"]) and at.query_params["points"] in ("100", ["100"])


def test_search_results_open_on_the_map(finished_run):
    at = app("search")
    at.selectbox(key="search_query_split").set_value("train").run()
    at.number_input(key="search_idx").set_value(5).run()
    at.session_state["emb_method"] = "pca"
    next(b for b in at.button if b.key == "search_to_map").click().run()
    assert not at.exception
    assert at.session_state["emb_focus"]["row"] == 5 and at.session_state["emb_split"] == "train"
    spec = the_map(at)
    assert len(layer(spec, "neighbours")) == 10 and len(layer(spec, "query")) == 1


# ---- over training


def test_over_training_slider_changes_the_frame(finished_run):
    at = app("embeddings", emb_view="over training", traj_method="pca")
    assert not at.exception and not at.error
    slider = at.select_slider(key="traj_epoch")
    assert slider.options == ["1", "2"] and slider.value == 2
    [(_, last)] = deck_specs(at)  # the only map of this view
    slider.set_value(1).run()
    assert not at.exception
    [(_, first)] = deck_specs(at)
    a, b = layer(first, "points"), layer(last, "points")
    assert [p["row"] for p in a] == [p["row"] for p in b] and len(a) == 360
    assert [(p["x"], p["y"]) for p in a] != [(p["x"], p["y"]) for p in b]
    knn = {m["epoch"]: m["knn_top1"] for m in finished_run.metrics() if "knn_top1" in m}
    assert any(m.value == f"{knn[1]:.2f}%" for m in at.metric)  # the frame's kNN accuracy beside it
    # play from the start: each tick of the fragment advances one epoch
    next(b for b in at.button if b.key == "traj_play").click().run()
    assert at.session_state["traj_playing"]


def test_over_training_without_frames_says_why(finished_run):
    import shutil

    shutil.rmtree(finished_run.path / "probe")
    at = app("embeddings", emb_view="over training")
    assert not at.exception
    assert any("no probe frames" in i.value for i in at.info)


def test_over_training_ignores_a_half_written_frame(finished_run):
    raw = probe.frame_path(finished_run.path, 2).read_bytes()
    probe.frame_path(finished_run.path, 3).write_bytes(raw[:100])
    at = app("embeddings", emb_view="over training", traj_method="pca")
    assert not at.exception and not at.error
    assert at.select_slider(key="traj_epoch").options == ["1", "2"]


# ---- widgets keep their values, and the numbers made from them (issue 16)


def test_every_setting_keeps_its_value_through_a_wait_for_the_worker(finished_run, queue):
    from simclr_core.explorer import jobs, scores
    from simclr_core.explorer.compute import load_graph

    at = app("embeddings", **PCA, emb_focus={"split": "test", "row": 5})
    at.slider(key="emb_k").set_value(7).run()
    at.selectbox(key="emb_colour").set_value("confidence").run()
    at.multiselect(key="emb_classes").set_value(["3", "5"]).run()
    at.segmented_control(key="emb_worst").set_value("outlier").run()
    queue.hold()
    at.selectbox(key="emb_method").set_value("tsne").run()  # a projection not made yet: the page waits
    assert not at.exception
    assert any("Preparing the t-SNE map" in p.proto.text for p in at.get("progress"))
    assert not at.get("deck_gl_json_chart")  # the widgets below the wait are not drawn meanwhile
    queue.work()
    at.run()
    assert not at.exception
    assert at.slider(key="emb_k").value == 7
    assert at.selectbox(key="emb_colour").value == "confidence"
    assert at.multiselect(key="emb_classes").value == ["3", "5"]
    assert at.segmented_control(key="emb_worst").value == "outlier"
    assert next(d for k, d in map_data(at) if k.startswith("emb_map"))["neighbours"]["k"] == 7
    # and the numbers made from k: each point's kNN confidence is the vote of its 7 neighbours
    [job] = [j for j in jobs.find(jobs.jobs_dir(finished_run.path.parent), "map") if j["spec"]["method"] == "tsne"]
    g = load_graph(job["result"]["graph"])
    labels = labels_of(finished_run)
    _, conf = scores.knn_vote(g.sims, g.rows, labels, 10, 7)
    points = layer(the_map(at), "points")
    assert [p["conf"] for p in points] == [int(np.rint(100 * conf[p["row"]])) for p in points]  # percent


def test_settings_come_back_after_a_visit_to_another_page_and_from_the_address(finished_run):
    at = app("embeddings", **PCA)
    at.slider(key="emb_k").set_value(4).run()
    at.radio(key="emb_feature").set_value("z").run()
    assert at.query_params["k"] in ("4", ["4"]) and at.query_params["feature"] in ("z", ["z"])
    at.switch_page("pages/search.py").run()
    at.switch_page("pages/embeddings.py").run()
    assert at.slider(key="emb_k").value == 4 and at.radio(key="emb_feature").value == "z"
    # a reload is a new session with the same address
    from streamlit.testing.v1 import AppTest

    from tests.pages.conftest import REPO

    again = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    again.query_params.update({"run": "tiny", "projection": "pca", "k": "4", "feature": "z", "classes": '["2"]'})
    again.switch_page("pages/embeddings.py")
    again.run()
    assert not again.exception
    assert again.slider(key="emb_k").value == 4 and again.radio(key="emb_feature").value == "z"
    assert again.multiselect(key="emb_classes").value == ["2"]
    # an address with a value the page does not offer falls back to the default
    bad = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    bad.query_params.update({"run": "tiny", "projection": "pca", "k": "banana", "classes": '["nope"]'})
    bad.switch_page("pages/embeddings.py")
    bad.run()
    assert not bad.exception and bad.slider(key="emb_k").value == 10 and bad.multiselect(key="emb_classes").value == []


# ---- tags: a selection kept in the run folder (issue 16)


def test_save_a_selection_as_a_tag_then_highlight_colour_export_and_delete_it(finished_run):
    from simclr_core.explorer.tags import load_tags

    at = app("embeddings", **PCA, emb_k=5, emb_focus={"split": "test", "row": 12})
    what = at.selectbox(key="emb_tag_what")
    assert what.value == "neighbours" and "the picked image and its 5 neighbours" in what.format_func(what.value)
    at.text_input(key="emb_tag_name").input("near twelve")
    at.button(key="emb_tag_save").click().run()
    assert not at.exception and not at.error
    assert any("Saved tag **near twelve**: 6 images" in s.value for s in at.success)
    [tag] = load_tags(finished_run, "test").values()
    assert tag.name == "near twelve" and len(tag.rows) == 6 and 12 in tag.rows and "neighbours of #12" in tag.source
    # highlight it: its images bright, the others dimmed; colour by tag
    at.multiselect(key="emb_tags").set_value(["near twelve"]).run()
    at.selectbox(key="emb_colour").set_value("tag").run()
    points = layer(the_map(at), "points")
    assert sorted(p["row"] for p in points if p["a"] == 220) == tag.rows
    # a new session (a reload, a restarted server) finds it in the run folder
    again = app("embeddings", **PCA)
    assert "near twelve" in again.multiselect(key="emb_tags").options
    assert [b.proto.label for b in again.get("download_button")][:1] == ["CSV"]  # its rows and paths (test_tags.py)
    next(b for b in again.button if b.key == "emb_tag_del.near twelve").click().run()
    assert not again.exception and load_tags(finished_run) == {}
    assert again.multiselect(key="emb_tags").disabled


def test_a_bad_tag_name_is_a_message_and_saves_nothing(finished_run):
    at = app("embeddings", **PCA, emb_focus={"split": "test", "row": 3})
    at.text_input(key="emb_tag_name").input("")
    at.button(key="emb_tag_save").click().run()
    assert not at.exception and any("give the tag a name" in e.value for e in at.error)
    assert not finished_run.tags_path.exists()


def test_find_an_image_by_its_index(finished_run):
    at = app("embeddings", **PCA)
    at.text_input(key="emb_find").input("42").run()
    assert not at.exception and at.session_state["emb_focus"] == {"split": "test", "row": 42}
    assert len(layer(the_map(at), "query")) == 1
    at.text_input(key="emb_find").input("9999").run()
    assert any("No image '9999' in the test split" in c.value for c in at.caption)


def test_the_selection_as_a_table_linked_to_the_map(finished_run):
    at = app("embeddings", **PCA, emb_classes=["3"])
    labels = labels_of(finished_run)
    threes = [int(r) for r in np.flatnonzero(labels == 3)]
    [table] = [d for d in at.dataframe if (d.key or "").startswith("emb_table.")]
    assert table.value["#"].tolist() == threes and set(table.value["class"]) == {"3"}
    assert {"kNN says", "kNN confidence", "possible label error", "outlier"} <= set(table.value.columns)
    # picking a row picks that image on the map: its neighbours beside it, rings on it
    at.session_state[table.key] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert not at.exception and at.session_state["emb_focus"] == {"split": "test", "row": threes[2]}
    assert len(layer(the_map(at), "query")) == 1


def test_a_click_on_the_map_picks_the_image_and_rings_its_graph_neighbours_in_one_run(finished_run):
    """What the map sends on a click (ui/scatter.js: trigger ``click``) is read before anything is drawn."""
    at = app("embeddings", **PCA, **{"emb_map.test.h.pca.2d.10000": {"click": {"row": 42}}})
    assert not at.exception
    assert at.session_state["emb_focus"] == {"split": "test", "row": 42}
    spec = the_map(at)
    assert len(layer(spec, "query")) == 1 and len(layer(spec, "neighbours")) == 10
    # the rings sit on the neighbours the worker's graph lists for row 42, nearest first
    from simclr_core.explorer.compute import load_graph

    [graph] = [p for p in finished_run.embeddings_dir.glob("graph-*.npz") if "test" in p.name]
    g = load_graph(graph)
    points = {p["row"]: (p["x"], p["y"]) for p in layer(spec, "points")}
    assert [(q["x"], q["y"]) for q in layer(spec, "neighbours")] == [points[int(r)] for r in g.rows[42, :10]]


def test_while_the_worker_projects_the_page_shows_its_first_map(finished_run, queue):
    """Issue 19: the worker writes a quick PCA map before UMAP / t-SNE; the waiting page draws it."""
    from simclr_core.explorer.compute import first_coords_path, load_first_map

    at = app("embeddings", **PCA)  # the split's embeddings and graph, made once
    queue.hold()
    at.selectbox(key="emb_method").set_value("tsne").run()
    assert any("Preparing the t-SNE map" in p.proto.text for p in at.get("progress"))
    from simclr_core.explorer import jobs

    [job] = [j for j in jobs.find(jobs.jobs_dir(finished_run.path.parent), "map") if j["spec"]["method"] == "tsne"]
    path = first_coords_path(job["spec"])
    assert not path.exists()  # the PCA map job wrote none: a PCA map is its own first map
    at.run()
    assert not [k for k, _ in deck_specs(at) if k and k.endswith(".first")]  # nothing to show yet
    rows = np.arange(0, 360, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, rows=rows, coords=np.random.default_rng(0).normal(size=(len(rows), 2)).astype(np.float32))
    assert len(load_first_map(path)[0]) == 180
    at.run()
    assert not at.exception
    [first] = [layer(spec, "points") for key, spec in deck_specs(at) if key and key.endswith(".first")]
    assert sorted(p["row"] for p in first) == rows.tolist()
    assert any("A first map (PCA) of the 180 points while t-SNE runs" in c.value for c in at.caption)
    import ui.explorer_map

    with pytest.MonkeyPatch.context() as mp:  # a split past FIRST_SAMPLE: the worker's first map is a placed UMAP
        mp.setattr(ui.explorer_map, "FIRST_SAMPLE", 100)
        at.run()
    how = "UMAP of 100 of them, the others placed by their neighbours"
    assert any(f"A first map ({how}) of the 180 points while t-SNE runs" in c.value for c in at.caption)
    queue.work()
    at.run()
    assert not at.exception and not [k for k, _ in deck_specs(at) if k and k.endswith(".first")]
