
import numpy as np
import streamlit as st

from simclr_core import data, projection

from tests.pages.conftest import app, plotly_specs


charts = plotly_specs


def test_no_runs_shows_guidance(runs_dir):
    at = app("embeddings")
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_run_without_checkpoint_shows_guidance(finished_run):
    finished_run.last_ckpt.unlink()
    at = app("embeddings")
    assert not at.exception
    assert any("no checkpoint yet" in i.value for i in at.info)


def test_pca_2d_plots_every_test_image_by_class(finished_run):
    at = app("embeddings", emb_method="pca", emb_dims=2)
    assert not at.exception
    [(key, spec)] = charts(at)
    assert key == "emb_plot"
    traces = spec["data"]
    assert {t["type"] for t in traces} == {"scattergl"}
    assert [t["name"] for t in traces] == [str(c) for c in range(10)]  # one trace per digit, legend = classes
    ids = sorted(i for t in traces for [i] in t["customdata"])
    assert ids == list(range(360))  # the whole test split, each point carrying its index
    assert "customdata[0]" in traces[0]["hovertemplate"]
    assert any("360 of 360 images" in c.value for c in at.caption)
    assert [b.label for b in at.get("download_button")] == ["Download CSV", "Download NPZ"]
    assert not at.image  # nothing selected yet
    # the projection went to the run's disk cache
    assert list(finished_run.embeddings_dir.glob("proj-pca-2d-*.npy"))


def test_max_points_and_3d(finished_run):
    at = app("embeddings", emb_method="pca", emb_dims=3, emb_max_points=100, emb_feature="z")
    assert not at.exception
    [(key, spec)] = charts(at)
    assert {t["type"] for t in spec["data"]} == {"scatter3d"}
    assert sum(len(t["x"]) for t in spec["data"]) == 100
    assert any("100 of 360 images" in c.value and "32-d z" in c.value for c in at.caption)
    assert any("Switch to 2-D" in c.value for c in at.caption)


def _labels(run):
    d = run.config().data
    return data.load_split(d.dataset, "test", data_dir=d.data_dir, image_size=d.image_size).labels.numpy()


def test_selection_shows_the_selected_images_with_labels(finished_run):
    picked = [3, 17, 200, 17]  # a repeat is shown once
    selection = {"selection": {"points": [{"customdata": [i]} for i in picked], "point_indices": picked,
                               "box": [{"x": [0, 1], "y": [0, 1]}], "lasso": []}}
    at = app("embeddings", emb_method="pca", emb_plot=selection)
    assert not at.exception
    [grid] = at.image
    labels = _labels(finished_run)
    assert grid.captions == [f"#{i} · {labels[i]}" for i in (3, 17, 200)]
    assert any("**3** points selected" in m.value for m in at.markdown)


def test_selection_without_customdata_uses_trace_and_position(finished_run):
    labels = _labels(finished_run)
    sevens = np.flatnonzero(labels == 7)
    points = [{"curve_number": 7, "point_index": 0}, {"curve_number": 7, "point_index": 2}]
    at = app("embeddings", emb_method="pca", emb_plot={"selection": {"points": points}})
    assert not at.exception
    assert at.image[0].captions == [f"#{sevens[0]} · 7", f"#{sevens[2]} · 7"]


def test_large_selection_is_capped(finished_run):
    picked = list(range(70))
    at = app("embeddings", emb_method="pca",
             emb_plot={"selection": {"points": [{"customdata": [i]} for i in picked], "point_indices": picked}})
    assert not at.exception
    assert len(at.image[0].captions) == 60
    assert any("first 60 of 70" in c.value for c in at.caption)


def test_projection_is_not_recomputed(finished_run, monkeypatch):
    at = app("embeddings", emb_method="pca", emb_max_points=90)
    assert any("projected in" in c.value for c in at.caption)

    def boom(*a, **k):
        raise AssertionError("projection recomputed")

    monkeypatch.setattr(projection, "project", boom)
    at.run()  # a rerun: Streamlit's cache
    assert not at.exception and len(charts(at)) == 1
    st.cache_data.clear()  # a fresh server: the run's disk cache
    again = app("embeddings", emb_method="pca", emb_max_points=90)
    assert not again.exception
    assert any("90 of 360 images" in c.value and "projection read from the cache" in c.value for c in again.caption)
