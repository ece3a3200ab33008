"""The Embeddings page's map of one split, in three parts: the settings that decide what the background
worker computes and what the points show (:func:`map_controls` gives a :class:`MapControls`,
:func:`colour_controls` a :class:`ColourSpec`); the colouring, a pure function (ui.map_points.colour_points)
that :func:`map_colouring` feeds with the split's scores and clusters; and the chart (:func:`draw_map`: the
WebGL map of ui.scatter in 2-D, deck.gl in 3-D; :func:`show_legend`, :func:`map_caption`). It also holds the
cached reads of the worker's files and the names of the projections and colour modes, which the
over-training view shares.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from simclr_core.data import datasets as data
from simclr_core.explorer import scores, specs
from simclr_core.explorer.compute import GRAPH_K, first_coords_path, load_first_map
from simclr_core.explorer.projection import DEFAULTS, FIRST_SAMPLE
from simclr_core.explorer.tables import class_names
from simclr_core.explorer.tags import load_tags
from simclr_core.runs.rundir import RunDir
from ui import mapview
from ui.cached import has_thumbnails, load_embeddings, neighbour_graph, run_images, thumbnails
from ui.explorer_focus import Picked, find_image, follow_handoff, set_focus
from ui.explorer_panels import path_of
from ui.jobs import job_result, waited
from ui.map_points import Colouring, Legend, MapData, colour_points, points_frame
from ui.runs import checkpoint_label, pinned_key
from ui.scatter import CLEARED, clicked, column, rgba, scatter_map, selection
from ui.shell import THUMBS_DIR, static_serving_note
from ui.widgets import keep, user_errors

METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA"}
FEATURES = {"h": "h: backbone (what kNN and probes use)", "z": "z: projection head (where the loss lives)"}
COLOURS = {
    "class": "Class",
    "pred": "kNN prediction",
    "correct": "kNN right / wrong",
    "confidence": "kNN confidence",
    "cluster": "k-means cluster",
    "label_error": "Possible label error",
    "outlier": "Outlier score",
    "tag": "Tag",
}
NEEDS_LABELS = ("class", "pred", "correct", "confidence", "label_error")
# A cached column's URL is written (touched) again this often, so the column store, which keeps files used in
# the last IN_USE_S = 600 s, never evicts one an open map still reads (the graph's, at every click).
COLUMN_TTL_S = 300


# ---- cached reads (files written by the worker; a path names its content) -------------------------------


@st.cache_data(show_spinner=False, max_entries=8)
def graph_scores(graph_path: str, emb_path: str, k: int) -> dict[str, np.ndarray]:
    """Leave-one-out kNN prediction and confidence, and the three per-image scores, over the whole split."""
    g = neighbour_graph(graph_path)
    emb = load_embeddings(emb_path)
    n_cls = max(len(emb.classes), int(emb.labels.max()) + 1 if len(emb.labels) else 0)
    pred, conf = scores.knn_vote(g.sims, g.rows, emb.labels, n_cls, k)
    out = {
        "pred": pred,
        "confidence": conf,
        "label_error": scores.label_error_score(g.sims, g.rows, emb.labels, n_cls, k),
    }
    if g.sims.shape[1]:
        out["outlier"] = scores.outlier_score(g.sims, k)
        out["duplicate"] = scores.duplicate_score(g.sims)
    return out


@st.cache_data(show_spinner=False, max_entries=8)
def clusters(emb_path: str, rows: tuple[int, ...] | None, k: int) -> np.ndarray:
    """k-means cluster of each plotted row (normalised embeddings)."""
    x = load_embeddings(emb_path).embeddings
    return scores.kmeans_clusters(x if rows is None else x[list(rows)], k)


@st.cache_resource(show_spinner=False, max_entries=4)
def split_names(emb_path: str) -> list[str]:
    """The class name of each row of a split (a Python list: built once, not at every rerun)."""
    emb = load_embeddings(emb_path)
    return class_names(emb.labels, emb.classes)


@st.cache_data(show_spinner=False, max_entries=8, ttl=COLUMN_TTL_S)
def graph_columns(graph_path: str, k: int) -> dict[str, Any]:
    """The URLs of every split row's ``k`` nearest neighbours (int32 rows, float32 similarities, row-major), for
    the map to read one row of each when a point is picked; ``k`` is the graph's width where it is narrower."""
    g = neighbour_graph(graph_path)
    k = min(k, g.rows.shape[1])
    return {"rows": column(g.rows[:, :k], "i32"), "sims": column(g.sims[:, :k], "f32"), "k": k}


@st.cache_data(show_spinner=False, max_entries=8, ttl=COLUMN_TTL_S)
def labels_column(emb_path: str) -> str:
    """The URL of every split row's class id (int16; -1: none)."""
    return column(load_embeddings(emb_path).labels, "i16")


@st.cache_data(show_spinner=False, max_entries=16)
def coords_of(path: str) -> np.ndarray:
    return np.load(path)


def session_slot(name: str) -> str:
    """A job slot for this browser session's view ``name`` (a new request there cancels its waiting ones)."""
    sid = st.session_state.setdefault("emb_session", uuid.uuid4().hex[:12])
    return f"{name}:{sid}"


# ---- 1. the settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapControls:
    """The map's first row of settings: what the map job computes."""

    splits: list[str]  # the splits the run's dataset has
    split: str
    feature: str  # "h" or "z"
    method: str  # a key of METHOD_NAMES
    dims: int  # 2 or 3
    max_points: int  # 0: all
    params: dict[str, Any]  # the projection's own parameters

    def job(self, run: RunDir) -> specs.MapSpec:
        """The map job's spec (simclr_core.explorer.jobs); the same settings find the same files."""
        return specs.MapSpec(
            run=str(run.path),
            split=self.split,
            feature=self.feature,
            method=self.method,
            dims=self.dims,
            params=self.params,
            max_points=self.max_points or None,
            thumbs=str(THUMBS_DIR),
            ckpt=pinned_key(run),
        )

    @property
    def chart(self) -> str:
        """The deck.gl chart's key: a new chart per point set, so a click on an old one is not replayed."""
        return f"emb_map.{self.split}.{self.feature}.{self.method}.{self.dims}d.{self.max_points}"

    def stem(self, run: RunDir) -> str:
        """The downloads' file name, without extension."""
        return f"{run.name}-{self.split}-{self.feature}-{self.method}{self.dims}d"


def map_controls(run: RunDir) -> MapControls:
    """The map's first row of settings (each kept through waits, visits and reloads): split, feature,
    projection, dimensions, points, and the projection's own parameters."""
    with user_errors():
        cfg = run.config()
        splits = data.splits_of(cfg.data.dataset, cfg.data.data_path)
        query = data.default_splits(cfg.data.dataset, cfg.data.data_path)[2]
    follow_handoff(splits)
    keep("emb_split", query if query in splits else splits[0], lambda v: v in splits, url="split")
    keep("emb_feature", "h", lambda v: v in FEATURES, url="feature")
    keep("emb_method", "umap", lambda v: v in METHOD_NAMES, url="projection")
    keep("emb_dims", 2, lambda v: v in (2, 3), url="dims")
    keep("emb_max_points", 10_000, lambda v: isinstance(v, int) and 0 <= v <= 2_000_000, url="points")
    c1, c2, c3, c4, c5 = st.columns([1, 2, 1, 1, 1])
    split = c1.selectbox("Split", splits, key="emb_split")
    feature = c2.radio("Feature", list(FEATURES), format_func=FEATURES.get, key="emb_feature")
    method = c3.selectbox(
        "Projection",
        list(METHOD_NAMES),
        format_func=METHOD_NAMES.get,
        key="emb_method",
        help="UMAP and t-SNE separate clusters better; PCA is linear and the quickest. Computed once per "
        "checkpoint, then read from the run folder.",
    )
    dims = c4.radio("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", horizontal=True, key="emb_dims")
    max_points = c5.number_input(
        "Points (0: all)",
        0,
        2_000_000,
        step=1000,
        key="emb_max_points",
        help="plot a fixed random subset; scores and neighbours always use the whole split",
    )
    params: dict[str, Any] = {}
    p1, p2, _ = st.columns(3)
    if method == "umap":
        keep("emb_nn", DEFAULTS["umap"]["n_neighbors"], lambda v: 2 <= v <= 200, url="n_neighbors")
        keep("emb_min_dist", DEFAULTS["umap"]["min_dist"], lambda v: 0.0 <= v <= 0.99, url="min_dist")
        params["n_neighbors"] = p1.slider(
            "n_neighbors", 2, 200, key="emb_nn", help="larger keeps more global layout, smaller more local detail"
        )
        params["min_dist"] = p2.slider(
            "min_dist", 0.0, 0.99, step=0.01, key="emb_min_dist", help="how tightly UMAP packs points together"
        )
    elif method == "tsne":
        keep("emb_perplexity", float(DEFAULTS["tsne"]["perplexity"]), lambda v: 2.0 <= v <= 100.0, url="perplexity")
        params["perplexity"] = p1.slider(
            "perplexity",
            2.0,
            100.0,
            step=1.0,
            key="emb_perplexity",
            help="about how many neighbours each point keeps close; it must stay below the number of points",
        )
    return MapControls(splits, split, feature, method, dims, int(max_points), params)


def load_map(run: RunDir, spec: MapControls) -> MapData:
    """The map job's result for ``spec``, read (the page waits here while the worker computes it)."""
    what = f"Preparing the {METHOD_NAMES[spec.method]} map of the {spec.split} split of run {run.name}"
    result = job_result(spec.job(run), what, slot=session_slot("map"), preview=lambda: first_map(run, spec))
    wait = waited()
    emb = load_embeddings(result["embeddings"])
    images = run_images(run, spec.split)
    rows = np.asarray(result["rows"], np.int64)
    coords = coords_of(result["coords"])
    names = split_names(result["embeddings"])
    return MapData(result, wait, emb, images, rows, coords, names, load_tags(run, spec.split))


def first_map(run: RunDir, spec: MapControls) -> None:
    """While the worker projects: its quick first map (simclr_core.explorer.projection.first_map), in class
    colours, with hover; replaced by the chosen projection when the job ends."""
    path = first_coords_path(spec.job(run).to_dict())
    if spec.dims != 2 or spec.method == "pca" or not path.is_file():
        return
    try:
        rows, coords = load_first_map(path)
    except (OSError, ValueError, KeyError):
        return  # being written: the next poll reads it
    labels = run_images(run, spec.split).labels.numpy()[rows]
    how = (
        "PCA"
        if len(rows) <= FIRST_SAMPLE
        else f"UMAP of {FIRST_SAMPLE:,} of them, the others placed by their neighbours"
    )
    st.caption(f"A first map ({how}) of the {len(rows):,} points while {METHOD_NAMES[spec.method]} runs.")
    scatter_map(
        f"{spec.chart}.first",
        column(coords[:, :2], "f32"),
        column(rgba(mapview.categorical(labels), None), "u8"),
        rows=column(rows, "i32"),
        point_px=2.0,
        view_key=str(path),
        height=480,
        preview=True,
    )


@dataclass(frozen=True)
class ColourSpec:
    """The map's second row of settings: the colour mode, the highlight, and the k of the scores and k-means."""

    colour: str  # a key of COLOURS
    k: int  # neighbours of a picked image, and the k of the kNN vote and the outlier score
    classes: list[str]  # highlighted classes ([]: all)
    tags: list[str]  # highlighted tags ([]: all images)
    kmeans: int  # k-means k, for the "cluster" colour


def colour_controls(m: MapData) -> ColourSpec:
    """Colour by, k, the highlighted classes and tags, and k-means k (each kept); says why an unlabelled
    split offers fewer colours."""
    c1, c2, c3, c4, c5 = st.columns([1, 1, 2, 2, 1])
    options = [c for c in COLOURS if (m.labelled or c not in NEEDS_LABELS) and (m.tags or c != "tag")]
    keep("emb_colour", options[0], lambda v: v in options, url="colour")
    colour = c1.selectbox("Colour by", options, format_func=COLOURS.get, key="emb_colour")
    k_max = max(1, min(GRAPH_K, m.n - 1))
    keep("emb_k", min(10, k_max), lambda v: 1 <= v <= k_max, url="k")
    k = c2.slider(
        "Neighbours k",
        1,
        max(2, k_max),
        key="emb_k",
        disabled=k_max < 2,
        help="neighbours shown for a clicked image, and the k of the kNN vote and the outlier score",
    )
    keep("emb_classes", [], lambda v: set(v) <= set(m.emb.classes), url="classes")
    chosen = c3.multiselect(
        "Highlight classes",
        m.emb.classes,
        key="emb_classes",
        placeholder="all classes",
        disabled=not m.labelled,
        help="the other points are dimmed on the map and left out of the grids",
    )
    keep("emb_tags", [], lambda v: set(v) <= set(m.tags), url="tags")
    chosen_tags = c4.multiselect(
        "Highlight tags",
        list(m.tags),
        key="emb_tags",
        placeholder="no tags yet" if not m.tags else "all images",
        disabled=not m.tags,
        help="images of these tags stay bright; save a tag below the map",
    )
    kk_max = max(3, min(50, len(m.rows)))
    keep("emb_kmeans", min(10, kk_max), lambda v: 2 <= v <= kk_max, url="kmeans")
    kk = c5.slider("k-means k", 2, kk_max, key="emb_kmeans", disabled=colour != "cluster")
    if not m.labelled:
        st.caption(
            "This split has no labels (class sub-folders give them), so colouring by class, kNN prediction, "
            "right / wrong, confidence and possible label error is off; clusters and outlier scores need none."
        )
    return ColourSpec(colour, k, chosen, chosen_tags, kk)


# ---- 2. the colouring (the pure part is ui.map_points.colour_points) ------------------------------------------


def split_scores(m: MapData, k: int) -> dict[str, np.ndarray]:
    """The split's kNN vote and per-image scores for this k; none for a split of one image."""
    return graph_scores(m.result["graph"], m.result["embeddings"], k) if m.n > 1 else {}


def map_colouring(m: MapData, look: ColourSpec, s: dict[str, np.ndarray], keep_rows: np.ndarray) -> Colouring:
    """The plotted points' colours for ``look`` (k-means clusters computed here when asked), the rows outside
    the highlight ``keep_rows`` dimmed; without scores (one image) the colours are the classes'."""
    cl = None
    if look.colour == "cluster":
        cl = clusters(m.result["embeddings"], tuple(m.rows.tolist()) if len(m.rows) < m.n else None, look.kmeans)
    mode = look.colour if s else "class"
    return colour_points(mode, m.emb.labels[m.rows], m.emb.classes, s, m.rows, cl, m.tag_rows, keep_rows[m.rows])


def hover_points(
    spec: MapControls, m: MapData, look: ColourSpec, s: dict[str, np.ndarray], colouring: Colouring
) -> tuple[pd.DataFrame, list[str]]:
    """The 3-D map's points (deck.gl), with the fields their hover card shows, and the card's lines naming them."""
    df = points_frame(m.coords, colouring.rgb, m.rows, [m.names[i] for i in m.rows], colouring.alpha, spec.dims)
    lines = ["<b>#{row}</b> · {label}"]
    if m.labelled and s:
        df["pred"] = class_names(s["pred"][m.rows], m.emb.classes)
        df["conf"] = [f"{c:.0%}" for c in s["confidence"][m.rows]]
        lines.append("kNN: {pred} ({conf})")
    if look.colour in ("label_error", "outlier"):
        df["score"] = [f"{v:.3f}" for v in s[look.colour][m.rows]]
        lines.append(f"{COLOURS[look.colour].lower()}: {{score}}")
    if m.images.paths is not None:
        df["path"] = [path_of(m.images, i) for i in m.rows]
        lines.append("<span style='color:#666'>{path}</span>")
    atlas = thumb_atlas(m.result)
    if atlas:
        df = df.assign(**mapview.atlas_fields(atlas, df["row"].to_numpy()))
    return df, lines


@st.cache_data(show_spinner=False, max_entries=4, ttl=COLUMN_TTL_S)
def paths_column(emb_path: str, split: str, rows_digest: str, _images: data.ImageSet, _rows: np.ndarray) -> str | None:
    """The URL of the plotted images' file paths, one per line (folder datasets), else None."""
    del emb_path, split, rows_digest  # the cache key
    if _images.paths is None:
        return None
    return column("\n".join(path_of(_images, int(i)) for i in _rows), "txt")


@st.cache_data(show_spinner=False, max_entries=8, ttl=COLUMN_TTL_S)
def xy_column(coords_path: str) -> str:
    """The URL of a projection's (x, y) pairs as float32."""
    return column(coords_of(coords_path)[:, :2], "f32")


def tooltip_columns(m: MapData, look: ColourSpec, s: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The 2-D map's tooltip fields as binary columns: class, kNN prediction and confidence, the coloured score."""
    cols: dict[str, dict[str, Any]] = {}
    names = m.emb.classes  # printable already (ui.cached.load_embeddings)
    if m.labelled:
        cols["label"] = {"url": column(m.emb.labels[m.rows], "i16"), "dtype": "int16", "names": names}
        if s:
            cols["pred"] = {"url": column(s["pred"][m.rows], "i16"), "dtype": "int16", "names": names}
            conf = np.rint(100 * np.nan_to_num(s["confidence"][m.rows])).astype(np.uint8)
            cols["conf"] = {"url": column(conf, "u8"), "dtype": "uint8"}
    if look.colour in ("label_error", "outlier") and look.colour in s:
        score = s[look.colour][m.rows]
        cols["score"] = {"url": column(score, "f32"), "dtype": "float32", "name": COLOURS[look.colour].lower()}
    return cols


def thumb_atlas(result: dict[str, Any]) -> dict[str, Any] | None:
    """The map's thumbnail atlas with its URL, or None (no thumbnails, or static serving off: then a note why)."""
    atlas = thumbnails(result)
    if atlas and not st.get_option("server.enableStaticServing"):
        st.caption(static_serving_note())
        return None
    return atlas


# ---- 3. the chart -----------------------------------------------------------------------------------------


def take_click(spec: MapControls) -> None:
    """A click on the map picks its image before anything is drawn, so one rerun draws its neighbours."""
    row = clicked(st.session_state.get(spec.chart))
    if row == CLEARED:
        st.session_state.pop("emb_focus", None)
    elif row is not None:
        set_focus(spec.split, row)


def area_selection(spec: MapControls) -> list[int]:
    """The split rows of the map's last Lasso or Box selection (the component's state; [] when none)."""
    return selection(st.session_state.get(spec.chart))[0]


def map_neighbours(spec: MapControls, m: MapData, look: ColourSpec) -> dict[str, Any] | None:
    """What the 2-D map needs to list a picked image's neighbours itself, beside the points (ui.scatter): the
    split's k-NN graph as columns and each row's class. None where the panel beside the map lists them: in
    3-D, without thumbnails or a graph, and for the Search page's own query and results."""
    focus = st.session_state.get("emb_focus")
    handed = isinstance(focus, dict) and focus.get("split") == spec.split and focus.get("neighbours") is not None
    served = st.get_option("server.enableStaticServing")
    if spec.dims != 2 or m.n < 2 or not m.result.get("graph") or handed or not served or not has_thumbnails(m.result):
        return None
    return {
        **graph_columns(m.result["graph"], look.k),
        "labels": labels_column(m.result["embeddings"]) if m.labelled else None,
        "names": m.emb.classes,  # printable already (ui.cached.load_embeddings)
        "split": spec.split,
    }


def find_box(spec: MapControls, m: MapData) -> None:
    """The "Find an image" box above the map."""
    st.text_input(
        "Find an image",
        key="emb_find",
        on_change=find_image,
        args=(spec.split, m.images),
        placeholder="index" + (" or file name" if m.images.paths is not None else ""),
        help="picks it as a click would: its neighbours beside the map, rings on it",
    )
    note = st.session_state.pop("emb_find_note", None)
    if note:
        st.caption(note)


def draw_map(
    spec: MapControls,
    m: MapData,
    look: ColourSpec,
    s: dict[str, np.ndarray],
    c: Colouring,
    p: Picked,
    neighbours: dict[str, Any] | None = None,
) -> list[int]:
    """The Find box, then the map: the WebGL map in 2-D (hover shows the image, a click picks it, Lasso and Box
    select an area; with ``neighbours`` (:func:`map_neighbours`) it lists the pick's neighbours beside the
    points), deck.gl in 3-D. Returns the split rows a lasso or box selected."""
    find_box(spec, m)
    if spec.dims == 3:
        points, lines = hover_points(spec, m, look, s, c)
        st.pydeck_chart(
            mapview.deck(
                points, marked=p.marked, focus=p.query, tip=mapview.tooltip(thumb_atlas(m.result), lines), dims=3
            ),
            on_select="rerun",
            selection_mode="single-object",
            key=spec.chart,
            height=640,
        )
        picked_3d = mapview.picked_row(st.session_state.get(spec.chart))
        if picked_3d is not None and picked_3d != st.session_state.get("emb_click_3d"):
            st.session_state["emb_click_3d"] = picked_3d
            set_focus(spec.split, picked_3d)
            st.rerun()
        return []
    subset = len(m.rows) < m.n
    event = scatter_map(
        spec.chart,
        xy_column(m.result["coords"]),
        column(rgba(c.rgb, c.alpha), "u8"),
        rows=column(m.rows, "i32") if subset else None,
        columns=tooltip_columns(m, look, s),
        paths=paths_column(m.result["embeddings"], spec.split, str(len(m.rows)), m.images, m.rows),
        thumbs=thumb_atlas(m.result),
        focus=p.query[["x", "y"]].to_numpy()[0].tolist() if len(p.query) and not neighbours else None,
        marked=p.marked[["x", "y"]].to_numpy().ravel().tolist() if not neighbours else (),
        point_px=3.0 if len(m.rows) < 20_000 else 2.0 if len(m.rows) < 300_000 else 1.5,
        view_key=f"{spec.chart}|{m.result['coords']}",
        neighbours=neighbours,
        focus_row=p.row,
    )
    return event.selected


def show_legend(legend: Legend) -> None:
    """Draw the key that ui.map_points.legend_of worked out."""
    if legend.wrong is not None:
        st.markdown(
            f"<span style='color:rgb{tuple(int(c) for c in mapview.RIGHT)}'>●</span> kNN right &nbsp; "
            f"<span style='color:rgb{tuple(int(c) for c in mapview.WRONG)}'>●</span> kNN wrong "
            f"({legend.wrong:.1%} of the points)",
            unsafe_allow_html=True,
        )
    elif legend.bar is not None:
        mapview.legend_continuous(*legend.bar)
    elif legend.names is not None and legend.ids is not None:
        mapview.legend_categorical(list(legend.names), list(legend.ids))


def map_caption(run: RunDir, spec: MapControls, m: MapData, keep_rows: np.ndarray) -> None:
    """Under the map: how many images are highlighted and plotted, of what, and how fresh the map is."""
    shown = keep_rows[m.rows]
    caption = f"{int(shown.sum()):,} of {m.n:,} images highlighted" if not shown.all() else f"{m.n:,} images"
    caption += f" · {len(m.rows):,} plotted · {m.emb.embeddings.shape[1]}-d {spec.feature}"
    if len(m.rows) < m.n:
        caption += f" (a random sample: set Points to 0 to plot all {m.n:,})"
    caption += f" · {METHOD_NAMES[spec.method]} · {checkpoint_label(run)}"
    st.caption(caption + (f" · ready after {m.wait:.0f} s" if m.wait else " · from the run folder's cache"))
