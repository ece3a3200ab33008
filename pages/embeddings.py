"""Embeddings: a run's representations of a split projected to 2-D / 3-D, coloured by class.

Select points with the box or lasso to see their images; download the embeddings and coordinates.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from pages.common import checkpoint_key, run_embeddings, run_images, run_with_checkpoint, to_hwc, user_errors
from simclr_core import data
from simclr_core.export import class_names, subsample, take, to_csv, to_npz
from simclr_core.projection import DEFAULTS, cache_path, cached_project

MAX_GRID = 60  # images shown for a selection; more would make the page slow to scroll
METHOD_NAMES = {"pca": "PCA (instant)", "umap": "UMAP", "tsne": "t-SNE"}
FEATURES = {"h": "h: backbone (what kNN and probes use)", "z": "z: projection head (where the loss lives)"}
SEED = 0  # one seed for subsets and projections, so a rerun shows the same picture


@st.cache_data(show_spinner=False, max_entries=32)
def projection_of(_x: np.ndarray, cache_dir: str, key: str, method: str, dims: int,
                  params: tuple[tuple[str, Any], ...]) -> tuple[np.ndarray, float, bool]:
    """(coordinates, seconds taken, read from disk) of :func:`cached_project`; ``key`` names ``_x``'s rows."""
    from_disk = cache_path(cache_dir, key, method, dims, SEED, **dict(params)).is_file()
    start = time.perf_counter()
    coords = cached_project(_x, cache_dir, key, method, dims, SEED, **dict(params))
    return coords, time.perf_counter() - start, from_disk


def figure(coords: np.ndarray, indices: np.ndarray, names: list[str],
           classes: list[str]) -> tuple[go.Figure, list[np.ndarray]]:
    """One WebGL trace per class (the legend toggles a class); customdata carries each point's split index.

    Returns the figure and, per trace, the split indices of its points in trace order.
    """
    dims = coords.shape[1]
    order = [c for c in classes if c in set(names)] + sorted({n for n in names if n not in classes})
    palette = qualitative.Plotly if len(order) <= 10 else qualitative.Alphabet
    fig, trace_indices = go.Figure(), []
    names_arr = np.array(names)
    for i, cls in enumerate(order):
        rows = np.flatnonzero(names_arr == cls)
        trace_indices.append(indices[rows])
        hover = f"#%{{customdata[0]}} · {cls}<extra></extra>"
        common = dict(name=cls, mode="markers", customdata=indices[rows, None], hovertemplate=hover)
        colour = palette[i % len(palette)]
        if dims == 3:
            fig.add_trace(go.Scatter3d(x=coords[rows, 0], y=coords[rows, 1], z=coords[rows, 2],
                                       marker=dict(size=2, color=colour), **common))
        else:
            fig.add_trace(go.Scattergl(x=coords[rows, 0], y=coords[rows, 1],
                                       marker=dict(size=5, color=colour, opacity=0.8), **common))
    fig.update_layout(height=640, legend_title_text="class", margin=dict(l=10, r=10, t=30, b=10),
                      dragmode="lasso" if dims == 2 else "orbit")
    return fig, trace_indices


def selected_indices(event: Any, trace_indices: list[np.ndarray]) -> list[int]:
    """Split indices of the selected points, in selection order, without repeats.

    Reads each point's customdata (the split index); a point without it is found through its
    trace (curve_number) and position in that trace (point_index).
    """
    try:
        selection = event["selection"] if event else {}
    except (KeyError, TypeError):
        return []
    out: list[int] = []
    for p in (selection or {}).get("points") or []:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)) and cd:
            cd = cd[0]
        if isinstance(cd, (int, float)):
            out.append(int(cd))
            continue
        curve, pos = p.get("curve_number", 0 if len(trace_indices) == 1 else None), p.get("point_index")
        if curve is not None and pos is not None and curve < len(trace_indices) and pos < len(trace_indices[curve]):
            out.append(int(trace_indices[curve][pos]))
    if not out and len(trace_indices) == 1:  # only point_indices: unambiguous with a single trace
        out = [int(trace_indices[0][i]) for i in (selection or {}).get("point_indices") or []
               if i < len(trace_indices[0])]
    return list(dict.fromkeys(out))


st.title("Embeddings")
st.caption("How the encoder arranges images: each dot is one image, placed by a 2-D / 3-D projection of its "
           "embedding and coloured by its class. A good encoder puts images of a class together, without "
           "ever having seen the labels.")

run = run_with_checkpoint(
    "No runs yet. Start one on the **Train** page; once it has finished an epoch, its embeddings appear here.",
    "Run **{name}** has no checkpoint yet: it writes one at the end of every epoch. Come back then, or pick "
    "another run in the sidebar.")

with user_errors():
    cfg = run.config()
    splits = data.splits_of(cfg.data.dataset, cfg.data.data_path)
    query = data.default_splits(cfg.data.dataset, cfg.data.data_path)[2]

c1, c2, c3, c4 = st.columns([1, 2, 1, 1])
split = c1.selectbox("Split", splits, index=splits.index(query) if query in splits else 0, key="emb_split")
feature = c2.radio("Feature", list(FEATURES), format_func=FEATURES.get, key="emb_feature")
method = c3.selectbox("Projection", list(METHOD_NAMES), format_func=METHOD_NAMES.get, key="emb_method",
                      help="PCA is linear and instant; UMAP and t-SNE separate clusters better but take "
                           "seconds to minutes on a CPU (computed once, then cached).")
dims = c4.radio("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", horizontal=True, key="emb_dims",
                help="Selecting points with the box or lasso works in 2-D.")

c1, c2, c3 = st.columns(3)
params: dict[str, Any] = {}
if method == "umap":
    params["n_neighbors"] = c1.slider("n_neighbors", 2, 200, DEFAULTS["umap"]["n_neighbors"], key="emb_nn",
                                      help="Larger values keep more of the global layout, smaller more local detail.")
    params["min_dist"] = c2.slider("min_dist", 0.0, 0.99, DEFAULTS["umap"]["min_dist"], 0.01, key="emb_min_dist",
                                   help="How tightly UMAP packs points together.")
elif method == "tsne":
    params["perplexity"] = c1.slider("perplexity", 2.0, 100.0, DEFAULTS["tsne"]["perplexity"], 1.0,
                                     key="emb_perplexity", help="Roughly the number of neighbours each point "
                                     "keeps close; it must stay below the number of points.")
max_points = c3.number_input("Max points (0: all)", 0, 1_000_000, 5000, 1000, key="emb_max_points",
                             help="Plot a fixed random subset: projections of large splits take long on a CPU.")

ckey = checkpoint_key(run)
timings = st.session_state.setdefault("emb_timings", {})
tkey = f"{run.path}|{split}|{feature}|{ckey}"
start = time.perf_counter()
with user_errors():
    emb_all = run_embeddings(run, split, feature)  # a progress bar while it computes, then the cache
if time.perf_counter() - start > 0.2:  # computed now (not read from a cache): remember how long it took
    timings[tkey] = time.perf_counter() - start

with user_errors():
    emb = take(emb_all, subsample(len(emb_all.labels), max_points or None, SEED))
    with st.spinner(f"Projecting {len(emb.labels)} points with {METHOD_NAMES[method]}…"):
        coords, seconds, from_disk = projection_of(emb.embeddings, str(run.embeddings_dir), emb.key, method,
                                                   dims, tuple(sorted(params.items())))

names = class_names(emb.labels, emb.classes)
note = f"{len(emb.labels)} of {len(emb_all.labels)} images · {emb.embeddings.shape[1]}-d {feature} embeddings"
if tkey in timings:
    note += f" · embedded in {timings[tkey]:.1f} s"
note += " · projection read from the cache" if from_disk else f" · projected in {seconds:.1f} s"
st.caption(note)

fig, trace_indices = figure(coords, emb.indices, names, emb.classes)
if dims == 2:
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso"), key="emb_plot")
    # the chart's return value and session state hold the same selection; a test can only set the latter
    picked = (selected_indices(event, trace_indices)
              or selected_indices(st.session_state.get("emb_plot"), trace_indices))
else:
    st.plotly_chart(fig, key="emb_plot_3d")
    picked = []

d1, d2, _ = st.columns([1, 1, 3])
stem = f"{run.name}-{split}-{feature}-{method}{dims}d"
# built only when clicked: a CSV of 10k wide embeddings takes a while and most reruns need none
d1.download_button("Download CSV", lambda: to_csv(emb, coords),
                   f"{stem}.csv", "text/csv", key="emb_csv", on_click="ignore", icon=":material/download:",
                   help="index, label, class, coordinates and the embedding of every plotted point")
d2.download_button("Download NPZ", lambda: to_npz(emb, coords),
                   f"{stem}.npz", "application/octet-stream", key="emb_npz", on_click="ignore",
                   icon=":material/download:", help="numpy arrays embeddings, labels, indices, coords, classes")

st.subheader("Selected images")
if dims == 3:
    st.caption("Switch to 2-D to select points.")
elif not picked:
    st.caption("Drag a box or a lasso around points in the plot to see their images here.")
else:
    images = run_images(run, split)
    label_of = dict(zip(emb.indices.tolist(), names))
    counts = Counter(label_of.get(i, "?") for i in picked).most_common()
    st.write(f"**{len(picked)}** points selected: " + ", ".join(f"{n}× {c}" for c, n in counts))
    if len(picked) > MAX_GRID:
        st.caption(f"Showing the first {MAX_GRID} of {len(picked)}; select fewer points to see them all.")
    shown = picked[:MAX_GRID]
    st.image(to_hwc(images.images[shown].numpy()), caption=[f"#{i} · {label_of.get(i, '?')}" for i in shown],
             width=72)
