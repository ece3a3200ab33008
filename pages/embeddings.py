"""Embeddings: explore how a run's encoder arranges a split, and watch that arrangement form over training.

**Map**: every image of a split as a point of a UMAP / t-SNE / PCA projection (WebGL 2, ui.scatter). Hovering
shows the image; clicking lists its nearest neighbours beside the map; colours show class, the leave-one-out kNN
prediction, its correctness and confidence, k-means clusters, and two scores per image (possible label
error, outlier), with the 100 highest of each as a grid. **Over training**: the run's probe frames,
one per monitor epoch, aligned so points move smoothly, with a slider and a play button.

The embeddings, the split's k-NN graph, the projections and the thumbnails are computed by the
background worker (simclr_core.explorer.jobs); this page only reads their files. It holds the layout
only: the map's settings, colouring and chart are ui.explorer_map (the colouring itself, pure, is
ui.map_points), the picked image ui.explorer_focus, the panels around the map ui.explorer_panels, and the
over-training view ui.over_training.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from simclr_core.runs.rundir import RunDir
from ui.explorer_focus import focus_from_link, picked, picked_row
from ui.explorer_map import (
    ColourSpec,
    MapControls,
    area_selection,
    colour_controls,
    draw_map,
    load_map,
    map_caption,
    map_colouring,
    map_controls,
    map_neighbours,
    show_legend,
    split_scores,
    take_click,
)
from ui.explorer_panels import (
    downloads,
    linked_table,
    neighbours_panel,
    selected_images,
    selections,
    tags_panel,
    worst_lists,
)
from ui.map_points import Colouring, MapData, highlighted, highlighted_rows
from ui.over_training import over_training
from ui.runs import newer_checkpoint, run_with_checkpoint
from ui.shell import routed
from ui.widgets import keep

routed()


@st.fragment
def map_and_neighbours(
    run: RunDir, spec: MapControls, m: MapData, look: ColourSpec, s: dict, keep_rows: np.ndarray, colouring: Colouring
) -> None:
    """The map beside the picked image's neighbours: a fragment, so a click on the map (or the Find box) reruns
    only this part, not the grids and tables below. In 2-D with thumbnails the map lists the neighbours itself,
    in the browser, at once; elsewhere a panel of this page does. A new area selection, or a first pick, which
    the panels below list as tags to save, reruns the whole page."""
    had_focus = picked_row(spec.split) is not None
    take_click(spec)
    p = picked(run, spec.splits, spec.split, m, look.k, spec.dims)
    listed = map_neighbours(spec, m, look)
    left, right = (st.container(), None) if listed else st.columns([3, 2], gap="medium")
    with left:
        lasso = draw_map(spec, m, look, s, colouring, p, listed)
        show_legend(colouring.legend)
        map_caption(run, spec, m, keep_rows)
    if right is not None:
        with right:
            neighbours_panel(spec.split, m, p)
    if st.session_state.get("emb_lasso_drawn") != lasso or (p.row is not None and not had_focus):
        st.rerun(scope="app")


def map_view(run: RunDir) -> None:
    """One split's map: its settings, the map beside the picked image's neighbours, then the lasso's images,
    the selection as a table, the grids of the highest scores, the tags and the downloads."""
    spec = map_controls(run)
    focus_from_link(spec.split)
    m = load_map(run, spec)
    look = colour_controls(m)
    s = split_scores(m, look.k)
    keep_rows = highlighted(m.emb.labels, m.emb.classes, look.classes, m.tag_rows, look.tags)
    colouring = map_colouring(m, look, s, keep_rows)
    lasso = area_selection(spec)
    st.session_state["emb_lasso_drawn"] = lasso  # what the panels below show (the fragment compares)
    map_and_neighbours(run, spec, m, look, s, keep_rows, colouring)
    p = picked(run, spec.splits, spec.split, m, look.k, spec.dims)
    selected_images(spec.split, m, lasso)
    linked_table(spec.split, lasso or highlighted_rows(keep_rows), m, s)
    top = worst_lists(spec.split, m, s, keep_rows)
    tags_panel(run, spec.split, m, selections(lasso, p, top, keep_rows, [*look.classes, *look.tags]))
    downloads(spec.stem(run), m, s)


st.title("Embeddings")
st.caption(
    "How the encoder arranges images: each point is one image, placed by a projection of its embedding. "
    "Hover a point to see it, click it to find its nearest neighbours. A good encoder puts images of a class "
    "together without ever seeing a label."
)
run = run_with_checkpoint(
    "No runs yet. Start one on the **Train** page; once it has finished an epoch, its embeddings appear here.",
    "Run **{name}** has no checkpoint yet: it writes one at the end of every epoch. Come back then, or pick "
    "another run in the sidebar.",
)
st.query_params["run"] = run.name  # a reload or a shared link opens this run
keep("emb_view", "map", lambda v: v in ("map", "over training"), url="view")
view = st.segmented_control("View", ["map", "over training"], format_func=str.capitalize, key="emb_view") or "map"
if view == "over training":
    over_training(run)
else:
    newer_checkpoint(run)
    map_view(run)
