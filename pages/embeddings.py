"""Embeddings: explore how a run's encoder arranges a split, and watch that arrangement form over training.

**Map**: every image of a split as a point of a UMAP / t-SNE / PCA projection (deck.gl, WebGL). Hovering
shows the image; clicking finds its nearest neighbours; colours show class, the leave-one-out kNN
prediction, its correctness and confidence, k-means clusters, and two scores per image (possible label
error, outlier), with the 100 highest of each as a grid. **Over training**: the run's probe frames,
one per monitor epoch, aligned so points move smoothly, with a slider and a play button.

The embeddings, the split's k-NN graph, the projections and the thumbnails are computed by the
background worker (simclr_core.jobs); this page only reads their files.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import Counter
from html import escape
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import mapview
from pages.common import (
    THUMBS_DIR,
    checkpoint_label,
    job_result,
    keep,
    load_embeddings,
    neighbour_index,
    newer_checkpoint,
    pinned_key,
    routed,
    run_images,
    run_with_checkpoint,
    thumbnails,
    to_hwc,
    user_errors,
    waited,
)
from simclr_core import data, probe, scores
from simclr_core.errors import UserError
from simclr_core.explore import GRAPH_K, load_graph, load_trajectory
from simclr_core.export import class_names, take, to_csv, to_npz
from simclr_core.launch import is_active
from simclr_core.preview import upscale_nearest
from simclr_core.projection import DEFAULTS
from simclr_core.runs import RunDir
from simclr_core.tags import MAX_NAME, Tag, delete_tag, load_tags, save_tag
from simclr_core.tags import to_csv as tags_csv

routed()

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
WORST = {
    "label_error": ("Possible label errors", "its neighbours agree on another class: the label may be wrong"),
    "outlier": ("Outliers", "farthest from its k-th nearest neighbour: unusual, broken or out-of-domain"),
    "duplicate": ("Near-duplicates", "most similar to another image of the split"),
}
WORST_N = 100
GRID_SIDE = 64  # grid images are enlarged to this side, with sharp pixels
GRID_COLS = 10


# ---- cached reads (files written by the worker; a path names its content) -------------------------------


@st.cache_data(show_spinner=False, max_entries=8)
def graph_scores(graph_path: str, emb_path: str, k: int) -> dict[str, np.ndarray]:
    """Leave-one-out kNN prediction and confidence, and the three per-image scores, over the whole split."""
    g = load_graph(graph_path)
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


@st.cache_data(show_spinner=False, max_entries=16)
def coords_of(path: str) -> np.ndarray:
    return np.load(path)


@st.cache_data(show_spinner=False, max_entries=4)
def trajectory_of(path: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    del stamp  # the file grows while a run trains: its mtime is part of the key
    epochs, coords, _ = load_trajectory(path)
    return epochs, coords


# ---- small pieces ---------------------------------------------------------------------------------------


def session_slot(name: str) -> str:
    """A job slot for this browser session's view ``name`` (a new request there cancels its waiting ones)."""
    sid = st.session_state.setdefault("emb_session", uuid.uuid4().hex[:12])
    return f"{name}:{sid}"


def set_focus(split: str, row: int) -> None:
    st.session_state["emb_focus"] = {"split": split, "row": int(row)}


def grid(
    title: str,
    rows: list[int],
    notes: list[str] | None,
    images: data.ImageSet,
    names: list[str],
    split: str,
    key: str,
    columns: int = GRID_COLS,
    own_names: bool = False,
) -> None:
    """Images in rows of ``columns``, captioned "<note> · <class>" (folder datasets: "<note> · <class
    folder>/<file>", so a user can find the file; ``own_names``: the notes name the class already); the
    button under each picks that image on the map, as a click there would."""
    st.markdown(f"**{title}**")
    if not rows:
        st.caption("None to show.")
        return
    pics = upscale_nearest(np.stack(to_hwc(images.images[rows].numpy())), GRID_SIDE)
    for start in range(0, len(rows), columns):
        cols = st.columns(columns)
        chunk = zip(cols, rows[start : start + columns], pics[start : start + columns], strict=False)
        for i, (col, r, pic) in enumerate(chunk):
            where = path_of(images, r)
            note = notes[start + i] if notes else ""
            name = short_path(where) if where else ("" if own_names else names[r])
            # the note first: a narrow column then wraps at the dot, not inside the file name
            col.image(pic, caption=" · ".join(filter(None, [note, name])), width="stretch")
            col.button(
                f"#{r}",
                key=f"{key}-{r}",
                on_click=set_focus,
                args=(split, r),
                icon=":material/my_location:",
                width="stretch",
                help=(f"{where}: " if where else "") + "show it on the map (black ring), with its nearest "
                "neighbours (orange rings) beside the map",
            )


def path_of(images: data.ImageSet, row: int) -> str:
    """The image's file (folder datasets), else ''."""
    return data.printable(images.paths[row]) if images.paths is not None else ""


def short_path(path: str) -> str:
    """``class/file.jpg``: enough to find the file under the split folder; the full path is in the help."""
    return "/".join(path.replace(os.sep, "/").split("/")[-2:])


# ---- the map --------------------------------------------------------------------------------------------


def map_controls(run: RunDir, splits: list[str], query: str) -> tuple[str, str, str, int, int, dict[str, Any]]:
    """The map's first row of settings (each kept through waits, visits and reloads): split, feature,
    projection, dimensions, points, and the projection's own parameters."""
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
    return split, feature, method, dims, int(max_points), params


def focus_from_link(split: str) -> None:
    """A reload or a link with ``?focus=ROW`` opens with that image picked (its neighbours on the map)."""
    if "emb_focus" not in st.session_state and "focus" in st.query_params:
        with contextlib.suppress(ValueError):
            set_focus(split, int(st.query_params["focus"]))


def find_image(split: str, images: data.ImageSet) -> None:
    """The "Find" box: an index or part of a file name picks that image, as a click on it would."""
    text = str(st.session_state.get("emb_find") or "").strip()
    if not text:
        return
    if text.lstrip("#").isdigit() and int(text.lstrip("#")) < len(images):
        set_focus(split, int(text.lstrip("#")))
        return
    hits = [i for i, p in enumerate(images.paths or []) if text.lower() in data.printable(p).lower()]
    if hits:
        set_focus(split, hits[0])
        st.session_state["emb_find_note"] = f"{len(hits):,} file names hold '{text}': showing the first, #{hits[0]}."
    else:
        what = f"0 to {len(images) - 1}" + (" or part of a file name" if images.paths is not None else "")
        st.session_state["emb_find_note"] = f"No image '{text}' in the {split} split: type an index ({what})."


def map_view(run: RunDir) -> None:
    with user_errors():
        cfg = run.config()
        splits = data.splits_of(cfg.data.dataset, cfg.data.data_path)
        query = data.default_splits(cfg.data.dataset, cfg.data.data_path)[2]
    focus = st.session_state.get("emb_focus")
    if isinstance(focus, dict) and focus.get("split") in splits and st.session_state.get("emb_focus_applied") != focus:
        st.session_state["emb_split"] = focus["split"]  # a hand-off (Search page, a grid) picks the split
        st.session_state["emb_focus_applied"] = focus
    split, feature, method, dims, max_points, params = map_controls(run, splits, query)
    focus_from_link(split)
    spec = {
        "run": str(run.path),
        "split": split,
        "feature": feature,
        "method": method,
        "dims": dims,
        "params": params,
        "max_points": max_points or None,
        "thumbs": str(THUMBS_DIR),
        "ckpt": pinned_key(run),
    }
    what = f"Preparing the {METHOD_NAMES[method]} map of the {split} split of run {run.name}"
    result = job_result("map", spec, what, slot=session_slot("map"))
    wait = waited()
    emb = load_embeddings(result["embeddings"])
    images = run_images(run, split)
    rows = np.asarray(result["rows"], np.int64)
    coords = coords_of(result["coords"])
    n = len(emb.labels)
    labelled = bool(emb.classes) and bool((emb.labels >= 0).any())
    classes = emb.classes if labelled else []
    names = class_names(emb.labels, emb.classes)
    tags = load_tags(run, split)

    # ---- colour, highlight and k
    c1, c2, c3, c4, c5 = st.columns([1, 1, 2, 2, 1])
    options = [m for m in COLOURS if (labelled or m not in NEEDS_LABELS) and (tags or m != "tag")]
    keep("emb_colour", options[0], lambda v: v in options, url="colour")
    colour = c1.selectbox("Colour by", options, format_func=COLOURS.get, key="emb_colour")
    k_max = max(1, min(GRAPH_K, n - 1))
    keep("emb_k", min(10, k_max), lambda v: 1 <= v <= k_max, url="k")
    k = c2.slider(
        "Neighbours k",
        1,
        max(2, k_max),
        key="emb_k",
        disabled=k_max < 2,
        help="neighbours shown for a clicked image, and the k of the kNN vote and the outlier score",
    )
    keep("emb_classes", [], lambda v: set(v) <= set(emb.classes), url="classes")
    chosen = c3.multiselect(
        "Highlight classes",
        emb.classes,
        key="emb_classes",
        placeholder="all classes",
        disabled=not labelled,
        help="the other points are dimmed on the map and left out of the grids",
    )
    keep("emb_tags", [], lambda v: set(v) <= set(tags), url="tags")
    chosen_tags = c4.multiselect(
        "Highlight tags",
        list(tags),
        key="emb_tags",
        placeholder="no tags yet" if not tags else "all images",
        disabled=not tags,
        help="images of these tags stay bright; save a tag below the map",
    )
    kk_max = max(3, min(50, len(rows)))
    keep("emb_kmeans", min(10, kk_max), lambda v: 2 <= v <= kk_max, url="kmeans")
    kk = c5.slider("k-means k", 2, kk_max, key="emb_kmeans", disabled=colour != "cluster")
    if not labelled:
        st.caption(
            "This split has no labels (class sub-folders give them), so colouring by class, kNN prediction, "
            "right / wrong, confidence and possible label error is off; clusters and outlier scores need none."
        )

    s = graph_scores(result["graph"], result["embeddings"], k) if n > 1 else {}
    cl = (
        clusters(result["embeddings"], tuple(rows.tolist()) if len(rows) < n else None, kk)
        if colour == "cluster"
        else None
    )
    rgb = mapview.colours(colour if s else "class", emb.labels[rows], s, rows, cl, tag_ids(tags, rows))
    keep_rows = np.ones(n, bool)
    if chosen:
        keep_rows &= np.isin(emb.labels, [emb.classes.index(c) for c in chosen])
    if chosen_tags:
        keep_rows &= np.isin(np.arange(n), [r for t in chosen_tags for r in tags[t].rows])
    shown = keep_rows[rows]

    # ---- the points
    df = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "r": rgb[:, 0],
            "g": rgb[:, 1],
            "b": rgb[:, 2],
            "a": np.where(shown, 220, 40).astype(np.uint8),  # others dimmed, not hidden: they give the context
            "row": rows,
            "label": [names[i] for i in rows],
        }
    )
    if dims == 3:
        df["z"] = coords[:, 2]
    lines = ["<b>#{row}</b> · {label}"]
    if labelled and s:
        df["pred"] = class_names(s["pred"][rows], emb.classes)
        df["conf"] = [f"{c:.0%}" for c in s["confidence"][rows]]
        lines.append("kNN: {pred} ({conf})")
    if colour in ("label_error", "outlier"):
        df["score"] = [f"{v:.3f}" for v in s[colour][rows]]
        lines.append(f"{COLOURS[colour].lower()}: {{score}}")
    if images.paths is not None:
        df["path"] = [path_of(images, i) for i in rows]
        lines.append("<span style='color:#666'>{path}</span>")
    df.loc[~shown, ["r", "g", "b"]] = mapview.DIM
    thumbs = thumbnails(result)
    if not st.get_option("server.enableStaticServing"):
        thumbs = None
        st.caption(
            "Thumbnails are off: start the app with `--server.enableStaticServing true` (the repo's "
            ".streamlit/config.toml sets it) to see each image on hover."
        )

    focus = st.session_state.get("emb_focus")
    focus = focus if isinstance(focus, dict) and focus.get("split") == split else {}
    focus_row = focus.get("row") if isinstance(focus.get("row"), int) and 0 <= focus["row"] < n else None
    if focus_row is None:
        st.query_params.pop("focus", None)
    else:
        st.query_params["focus"] = str(focus_row)
    nbr_rows: list[int] = []
    nbr_sims: list[float] = []
    if focus.get("neighbours") is not None:  # handed over by the Search page: its query and results
        found = zip(focus.get("sims", []), focus["neighbours"], strict=False)
        pairs = [(float(c), int(r)) for c, r in found if 0 <= int(r) < n]
        nbr_sims, nbr_rows = [c for c, _ in pairs], [r for _, r in pairs]
    elif focus_row is not None and n > 1:
        sims, idx = neighbour_index(result["embeddings"]).search(emb.embeddings[focus_row], k + 1)
        hits = [(float(a), int(b)) for a, b in zip(sims[0], idx[0], strict=False) if int(b) != focus_row][:k]
        nbr_sims, nbr_rows = [a for a, _ in hits], [b for _, b in hits]
    query_pic, query_caption = None, ""
    if focus_row is not None:
        query_pic = to_hwc(images.images[focus_row : focus_row + 1].numpy())[0]
        query_caption = f"#{focus_row} · {names[focus_row]}"
    elif isinstance(focus.get("query"), dict):
        query_pic, query_caption = handed_query(run, splits, focus["query"])

    def on_map(wanted: list[int]) -> pd.DataFrame:
        """Coordinates of those of ``wanted`` that are plotted (rows is sorted)."""
        pos = np.searchsorted(rows, np.asarray(wanted, np.int64))
        pos = pos[(pos < len(rows)) & np.isin(wanted, rows)]
        return pd.DataFrame({c: coords[pos, i] for i, c in enumerate(["x", "y", "z"][:dims])})

    marked, query_pt = on_map(nbr_rows), on_map([focus_row] if focus_row is not None else [])
    left, right = st.columns([3, 2], gap="medium")
    with left:
        keep("emb_area", False, url="lasso")
        a1, a2 = st.columns([1, 1], vertical_alignment="bottom")
        area = a1.toggle(
            "Select an area (lasso, Plotly)",
            key="emb_area",
            disabled=dims == 3,
            help="deck.gl shows images on hover; Plotly can select an area with a lasso or box",
        )
        a2.text_input(
            "Find an image",
            key="emb_find",
            on_change=find_image,
            args=(split, images),
            placeholder="index" + (" or file name" if images.paths is not None else ""),
            help="picks it as a click would: its neighbours beside the map, rings on it",
        )
        note = st.session_state.pop("emb_find_note", None)
        if note:
            st.caption(note)
        picked: list[int] = []
        if area and dims == 2:
            picked = mapview.lasso_map(df, key=f"emb_lasso.{split}")
        else:
            chart = f"emb_map.{split}.{feature}.{method}.{dims}d.{max_points}"  # a new chart per point set
            event = st.pydeck_chart(
                mapview.deck(
                    df,
                    marked=marked,
                    focus=query_pt,
                    tip=mapview.tooltip(thumbs, lines),
                    dims=dims,
                    point_px=3.0 if len(df) < 20_000 else 2.0,
                ),
                on_select="rerun",
                selection_mode="single-object",
                key=chart,
                height=640,
            )
            clicked = mapview.picked_row(event)
            seen = st.session_state.setdefault("emb_clicks", {})
            if clicked != seen.get(chart):  # a new click on this chart (a rerun repeats the last one)
                seen[chart] = clicked
                if clicked is not None:
                    set_focus(split, clicked)
                    st.rerun()  # mark its neighbours on the map
        mapview.legend(colour if s else "class", emb.classes, emb.labels[rows], s, rows, cl, list(tags))
        caption = f"{int(shown.sum()):,} of {n:,} images highlighted" if not shown.all() else f"{n:,} images"
        caption += f" · {len(rows):,} plotted · {emb.embeddings.shape[1]}-d {feature} · {METHOD_NAMES[method]}"
        caption += f" · {checkpoint_label(run)}"
        st.caption(caption + (f" · ready after {wait:.0f} s" if wait else " · from the run folder's cache"))
    with right:
        neighbours_panel(
            split, images, emb, names, focus_row, query_pic, query_caption, nbr_rows, nbr_sims, len(marked)
        )

    if picked:
        st.subheader("Selected images")
        counts = Counter(names[i] for i in picked).most_common()
        st.write(f"**{len(picked)}** points selected: " + ", ".join(f"{c}× {name}" for name, c in counts))
        if len(picked) > WORST_N:
            st.caption(f"Showing the first {WORST_N} of {len(picked)}.")
        grid("", picked[:WORST_N], None, images, names, split, "sel")
    highlighted = [] if keep_rows.all() else np.flatnonzero(keep_rows).tolist()
    linked_table(split, picked or highlighted, names, classes, images, s)

    top = worst_lists(s, keep_rows, names, images, split, labelled, emb.classes)
    selections = {
        "lasso": (f"the lasso's {len(picked)} images", picked, "lasso"),
        "neighbours": (
            f"#{focus_row} and its {len(nbr_rows)} neighbours",
            ([focus_row] if focus_row is not None else []) + nbr_rows,
            f"neighbours of #{focus_row} (k={len(nbr_rows)})",
        ),
        "worst": (f"the grid of {top[0].lower()}", top[1], top[0].lower()),
        "highlight": (
            f"the {int(keep_rows.sum()):,} highlighted images",
            np.flatnonzero(keep_rows).tolist() if not keep_rows.all() else [],
            "highlight: " + ", ".join([*chosen, *chosen_tags]),
        ),
    }
    tags_panel(run, split, tags, {k: v for k, v in selections.items() if v[1]}, images, emb)
    downloads(run, split, feature, method, dims, emb, rows, coords, images, s, labelled)


TABLE_MAX = 5_000  # rows of the linked table: a lasso over a whole split would send every row


def linked_table(
    split: str, rows: list[int], names: list[str], classes: list[str], images: data.ImageSet, s: dict
) -> None:
    """The selection (a lasso, else the highlighted classes and tags) as a sortable table, linked to the map:
    picking a row picks that image there, as a click would (its neighbours beside the map, rings on it)."""
    if not rows:
        return
    shown = rows[:TABLE_MAX]
    table = pd.DataFrame({"#": shown, "class": [names[r] for r in shown]})
    if "pred" in s and classes:
        table["kNN says"] = class_names(s["pred"][shown], classes)
        table["kNN confidence"] = s["confidence"][shown]
        table["possible label error"] = s["label_error"][shown]
    if "outlier" in s:
        table["outlier"] = s["outlier"][shown]
    if images.paths is not None:
        table["file"] = [path_of(images, r) for r in shown]
    scores_format = st.column_config.NumberColumn(format="%.3f")
    with st.expander(f"The {len(rows):,} selected images as a table", icon=":material/table:"):
        if len(rows) > TABLE_MAX:
            st.caption(f"The first {TABLE_MAX:,} of {len(rows):,}.")
        event = st.dataframe(
            table,
            hide_index=True,
            on_select="rerun",
            selection_mode="single-row",
            key=f"emb_table.{split}.{len(rows)}",
            column_config={c: scores_format for c in ("kNN confidence", "possible label error", "outlier")},
        )
        chosen = event.selection.rows if event else []
        if chosen and st.session_state.get("emb_table_seen") != (split, shown[chosen[0]]):
            st.session_state["emb_table_seen"] = (split, shown[chosen[0]])
            set_focus(split, shown[chosen[0]])
            st.rerun()


def tag_ids(tags: dict[str, Tag], rows: np.ndarray) -> np.ndarray:
    """Each plotted row's tag, as an index into ``tags`` (the newest tag holding it); -1 for none."""
    ids = np.full(len(rows), -1, np.int64)
    for i, tag in enumerate(tags.values()):
        ids[np.isin(rows, tag.rows)] = i
    return ids


def handed_query(run: RunDir, splits: list[str], q: dict[str, Any]) -> tuple[np.ndarray | None, str]:
    """The Search page's query (an upload, or an image of another split) as a picture and a caption."""
    if "image" in q:
        return np.asarray(q["image"]), f"uploaded: {q.get('caption', '')}"
    if q.get("split") in splits:
        q_images = run_images(run, q["split"])
        if 0 <= int(q["row"]) < len(q_images):
            shown = [data.printable(c) for c in q_images.classes]
            label = class_names(q_images.labels[q["row"] : q["row"] + 1].numpy(), shown)[0]
            return to_hwc(q_images.images[int(q["row"]) : int(q["row"]) + 1].numpy())[0], (
                f"{q['split']} #{q['row']} · {label}"
            )
    return None, ""


def neighbours_panel(
    split: str,
    images: data.ImageSet,
    emb,
    names: list[str],
    focus_row: int | None,
    query_pic: np.ndarray | None,
    query_caption: str,
    nbr_rows: list[int],
    nbr_sims: list[float],
    on_map: int,
) -> None:
    if query_pic is None:
        st.markdown("**Nearest neighbours**")
        st.caption(
            "Click a point on the map, the button under an image of a grid below, or find an image by its "
            "index, to see its nearest neighbours here and marked on the map (orange rings)."
        )
        return
    st.markdown(f"**{query_caption}**")
    st.image(
        upscale_nearest(query_pic, 160), caption=(path_of(images, focus_row) if focus_row is not None else None) or None
    )
    if not nbr_rows:
        st.caption("The split holds no other image.")
        return
    own = int(emb.labels[focus_row]) if focus_row is not None else -1
    note = f"{len(nbr_rows)} nearest neighbours in the {split} split, with their cosine similarity"
    if own >= 0:
        note += f"; {sum(int(emb.labels[r]) == own for r in nbr_rows)} share its label"
    if on_map < len(nbr_rows):
        note += f"; {on_map} of them are among the plotted points (raise Points to see all)"
    st.caption(note)
    grid("", nbr_rows, [f"{c:.3f}" for c in nbr_sims], images, names, split, "nbr", columns=4)
    if st.button("Clear", key="emb_clear", icon=":material/close:"):
        st.session_state.pop("emb_focus", None)
        st.rerun()


def worst_lists(
    s: dict,
    keep_rows: np.ndarray,
    names: list[str],
    images: data.ImageSet,
    split: str,
    labelled: bool,
    classes: list[str],
) -> tuple[str, list[int]]:
    """The 100 highest of a score as a grid; returns (its title, its rows) for saving as a tag."""
    st.subheader(f"The {WORST_N} highest")
    which = [w for w in WORST if w in s and (labelled or w != "label_error")]
    if not which:
        st.caption("Scores need at least 2 images.")
        return "", []
    keep("emb_worst", which[0], lambda v: v in which, url="worst")
    pick = st.segmented_control("Score", which, format_func=lambda w: WORST[w][0], key="emb_worst") or which[0]
    st.caption(f"{WORST[pick][0]}: {WORST[pick][1]}. Within the highlighted classes and tags.")
    # ties (many at the top on an early checkpoint) go to the most confident kNN vote first
    top = scores.worst(s[pick], WORST_N, keep_rows, tiebreak=s.get("confidence")).tolist()
    notes = [f"{s[pick][r]:.2f}" for r in top]
    if pick == "label_error":  # the given class, and the one the neighbours vote for
        voted = class_names(s["pred"][top], classes)
        notes = [
            f"{v} · {names[r]}" + (f" → {p}" if p != names[r] else "")
            for v, r, p in zip(notes, top, voted, strict=True)
        ]
    grid("", top, notes, images, names, split, f"worst-{pick}", own_names=pick == "label_error")
    return WORST[pick][0], top


def tags_panel(
    run: RunDir,
    split: str,
    tags: dict[str, Tag],
    selections: dict[str, tuple[str, list[int], str]],
    images: data.ImageSet,
    emb,
) -> None:
    """Save what is selected as a named tag of the run (``tags.json``); list, export and delete the split's tags."""
    st.subheader("Tags")
    st.caption(
        "A tag is a named set of this split's images, kept in the run folder: highlight or colour the map by "
        "it, or download its rows and file paths."
    )
    if selections:
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        keep("emb_tag_what", next(iter(selections)), lambda v: v in selections)
        what = c1.selectbox(
            "Save as a tag", list(selections), format_func=lambda w: selections[w][0], key="emb_tag_what"
        )
        c2.text_input("Tag name", key="emb_tag_name", max_chars=MAX_NAME, placeholder="e.g. mislabelled cats")
        if c3.button("Save tag", key="emb_tag_save", icon=":material/sell:"):
            label, rows, source = selections[what]
            try:
                tag = save_tag(run, st.session_state.get("emb_tag_name") or "", split, rows, source)
            except UserError as e:
                st.error(str(e), icon=":material/error:")
            else:
                st.session_state["emb_tag_saved"] = f"Saved tag **{tag.name}**: {len(tag.rows):,} images ({label})."
                st.rerun()
    else:
        st.caption("Select images first: a lasso, a click (the image and its neighbours), a grid, or a highlight.")
    saved = st.session_state.pop("emb_tag_saved", None)
    if saved:
        st.success(saved, icon=":material/sell:")
    for tag in reversed(tags.values()):
        t1, t2, t3 = st.columns([4, 1, 1], vertical_alignment="center")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(tag.created)) if tag.created else "?"
        t1.markdown(f"**{escape(tag.name)}** · {len(tag.rows):,} images · {escape(tag.source)} · {when}")
        t2.download_button(
            "CSV",
            lambda tag=tag: tags_csv(tag, emb.labels, emb.classes, images.paths),
            f"{run.name}-{split}-{tag.name}.csv".replace("/", "_").replace(" ", "_"),
            "text/csv",
            key=f"emb_tag_csv.{tag.name}",
            on_click="ignore",
            icon=":material/download:",
            help="index, label, class and file path of each image of the tag",
        )
        if t3.button("Delete", key=f"emb_tag_del.{tag.name}", icon=":material/delete:"):
            delete_tag(run, tag.name)
            st.rerun()


def downloads(
    run: RunDir,
    split: str,
    feature: str,
    method: str,
    dims: int,
    emb,
    rows: np.ndarray,
    coords: np.ndarray,
    images: data.ImageSet,
    s: dict,
    labelled: bool,
) -> None:
    part = take(emb, rows)
    extra: dict[str, list] = {}
    if images.paths is not None:
        extra["path"] = [images.paths[i] for i in rows]
    if labelled and s:
        extra["knn_pred"] = class_names(s["pred"][rows], emb.classes)
        extra["knn_confidence"] = [f"{v:.4f}" for v in s["confidence"][rows]]
        extra["label_error"] = [f"{v:.4f}" for v in s["label_error"][rows]]
    if "outlier" in s:
        extra["outlier"] = [f"{v:.4f}" for v in s["outlier"][rows]]
    stem = f"{run.name}-{split}-{feature}-{method}{dims}d"
    st.subheader("Download the map")
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button(
        "Download CSV",
        lambda: to_csv(part, coords, extra),
        f"{stem}.csv",
        "text/csv",
        key="emb_csv",
        on_click="ignore",
        icon=":material/download:",
        help="index, label, class, file path, kNN prediction, scores, coordinates and embedding of the plotted points",
    )
    d2.download_button(
        "Download NPZ",
        lambda: to_npz(part, coords),
        f"{stem}.npz",
        "application/octet-stream",
        key="emb_npz",
        on_click="ignore",
        icon=":material/download:",
        help="numpy arrays embeddings, labels, indices, coords, classes",
    )


# ---- over training --------------------------------------------------------------------------------------


def over_training(run: RunDir) -> None:
    chosen = probe.read_subset(run.path)
    epochs_on_disk = probe.frame_epochs(run.path)
    active = is_active(run)
    if chosen is None or not epochs_on_disk:
        why = (
            "it was trained with the probe off (--no-probe) or without a monitor (--knn-every 0)"
            if chosen is None and not active
            else "it has not finished its first monitor epoch yet"
        )
        st.info(
            f"Run **{run.name}** has no probe frames: {why}. Every run with the monitor on records "
            f"{run.config().run.probe_size:,} images at each monitor epoch.",
            icon=":material/hourglass:",
        )
        if active:
            st.fragment(run_every=3)(lambda: st.rerun() if probe.frame_epochs(run.path) else None)()
        return
    c1, c2, _ = st.columns([1, 1, 2])
    keep("traj_method", "umap", lambda v: v in METHOD_NAMES, url="traj_projection")
    method = c1.selectbox(
        "Projection",
        list(METHOD_NAMES),
        format_func=METHOD_NAMES.get,
        key="traj_method",
        help="each epoch's UMAP / t-SNE starts from the previous epoch's layout, and every "
        "frame is rotated onto the previous one (Procrustes), so points move smoothly",
    )
    labelled = bool(chosen.classes) and bool((chosen.labels >= 0).any())
    classes = [data.printable(c) for c in chosen.classes]
    modes = ["class", "cluster"] if labelled else ["cluster"]
    keep("traj_colour", modes[0], lambda v: v in modes, url="traj_colour")
    colour = c2.selectbox("Colour by", modes, format_func=COLOURS.get, key="traj_colour")
    spec = {
        "run": str(run.path),
        "method": method,
        "dims": 2,
        "params": {},
        "thumbs": str(THUMBS_DIR),
        "frames": epochs_on_disk,
    }
    what = f"Projecting the probe frames of run {run.name} ({METHOD_NAMES[method]})"
    result = job_result("trajectory", spec, what, slot=session_slot("trajectory"))
    path = result["trajectory"]
    epochs, coords = trajectory_of(path, os.stat(path).st_mtime)
    metrics = {int(m["epoch"]): m for m in run.metrics("epoch")}
    view = mapview.fit_view(coords.reshape(-1, 2))
    names = class_names(chosen.labels, classes)
    thumbs = thumbnails(result)
    # clusters of the newest frame: where the points end up
    cl = None if colour == "class" else probe_clusters(str(run.path), len(chosen.rows), max(epochs_on_disk))
    rgb = mapview.colours(colour, chosen.labels, {}, np.arange(len(chosen.rows)), cl)
    epoch_list = [int(e) for e in epochs]
    keep("traj_epoch", epoch_list[-1], lambda v: v in epoch_list, url="epoch")

    def toggle() -> None:
        st.session_state["traj_playing"] = not st.session_state.get("traj_playing", False)
        if st.session_state["traj_playing"] and st.session_state["traj_epoch"] == epoch_list[-1]:
            st.session_state["traj_epoch"] = epoch_list[0]  # play from the start

    playing = bool(st.session_state.get("traj_playing")) and len(epoch_list) > 1

    @st.fragment(run_every=3.0 if active else None)
    def new_frames() -> None:
        """While the run trains: a look at the probe folder (no redraw), and the whole view once a frame is added."""
        if probe.frame_epochs(run.path) != epochs_on_disk:
            st.rerun()  # project the new frames (the worker adds only those)

    new_frames()

    @st.fragment(run_every=0.8 if playing else None)
    def frame() -> None:
        if st.session_state.get("traj_playing"):
            i = epoch_list.index(st.session_state["traj_epoch"])
            if i + 1 < len(epoch_list):
                st.session_state["traj_epoch"] = epoch_list[i + 1]
            else:
                st.session_state["traj_playing"] = False
        b1, b2 = st.columns([1, 8], vertical_alignment="bottom")
        b1.button(
            "Pause" if st.session_state.get("traj_playing") else "Play",
            key="traj_play",
            on_click=toggle,
            icon=":material/pause:" if st.session_state.get("traj_playing") else ":material/play_arrow:",
            disabled=len(epoch_list) < 2,
        )
        if len(epoch_list) > 1:
            b2.select_slider("Epoch", options=epoch_list, key="traj_epoch")
        epoch = st.session_state["traj_epoch"]
        xy = coords[epoch_list.index(epoch)]
        df = pd.DataFrame(
            {
                "x": xy[:, 0],
                "y": xy[:, 1],
                "r": rgb[:, 0],
                "g": rgb[:, 1],
                "b": rgb[:, 2],
                "row": chosen.rows,
                "label": names,
            }
        )
        left, right = st.columns([3, 1])
        with left:
            st.pydeck_chart(
                mapview.deck(
                    df, tip=mapview.tooltip(thumbs, ["<b>#{row}</b> · {label}"]), view=view, transition_ms=600
                ),
                key="traj_map",
                height=600,
            )
            mapview.legend(colour, classes, chosen.labels, {}, np.arange(len(chosen.rows)), cl)
        with right:
            m = metrics.get(epoch, {})
            st.metric("Epoch", f"{epoch} / {run.config().optim.epochs}")
            st.metric(
                "kNN top-1",
                f"{m['knn_top1']:.2f}%" if "knn_top1" in m else "–",
                help="the online kNN monitor's accuracy after this epoch",
            )
            st.metric(
                "RankMe (h)",
                f"{m['rankme_h']:.1f}" if "rankme_h" in m else "–",
                help="effective rank of the probe's backbone embeddings (Garrido et al. 2023)",
            )
            knn = [(e, metrics[e]["knn_top1"]) for e in epoch_list if "knn_top1" in metrics.get(e, {})]
            if knn:
                fig = go.Figure(go.Scatter(x=[e for e, _ in knn], y=[v for _, v in knn], mode="lines"))
                if "knn_top1" in m:
                    fig.add_trace(go.Scatter(x=[epoch], y=[m["knn_top1"]], mode="markers", marker=dict(size=10)))
                fig.update_layout(
                    height=220,
                    showlegend=False,
                    margin=dict(l=10, r=10, t=30, b=10),
                    title="kNN top-1 (%)",
                    xaxis_title="epoch",
                )
                st.plotly_chart(fig, key="traj_knn")
        st.caption(
            f"{len(chosen.rows):,} probe images of the {chosen.split} split · {len(epoch_list)} frames"
            + (" · the run is training: new frames appear as it goes" if active else "")
        )

    frame()


@st.cache_data(show_spinner=False, max_entries=4)
def probe_clusters(run_path: str, rows: int, last_epoch: int) -> np.ndarray:
    """k-means (k = 10) of the newest complete probe frame; ``last_epoch`` keys the cache."""
    del last_epoch
    frames = probe.read_frames(run_path, rows)
    return scores.kmeans_clusters(frames[-1][1], min(10, rows)) if frames else np.zeros(rows, np.int64)


# ---- page -----------------------------------------------------------------------------------------------

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
