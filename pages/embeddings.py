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

import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from pages import mapview
from pages.common import (
    THUMBS_DIR,
    THUMBS_URL,
    checkpoint_key,
    job_result,
    load_embeddings,
    neighbour_index,
    routed,
    run_images,
    run_with_checkpoint,
    to_hwc,
    user_errors,
)
from simclr_core import data, probe, scores
from simclr_core.explore import GRAPH_K, load_graph, load_trajectory
from simclr_core.export import class_names, take, to_csv, to_npz
from simclr_core.launch import is_active
from simclr_core.preview import upscale_nearest
from simclr_core.projection import DEFAULTS
from simclr_core.runs import RunDir

routed()

METHOD_NAMES = {"umap": "UMAP", "tsne": "t-SNE", "pca": "PCA (instant)"}
FEATURES = {"h": "h: backbone (what kNN and probes use)", "z": "z: projection head (where the loss lives)"}
COLOURS = {
    "class": "Class",
    "pred": "kNN prediction",
    "correct": "kNN right / wrong",
    "confidence": "kNN confidence",
    "cluster": "k-means cluster",
    "label_error": "Possible label error",
    "outlier": "Outlier score",
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


def from_link(key: str, param: str, options: list | None = None, cast: Callable = str) -> None:
    """Seed a widget from a deep link (``?param=value``) on the first run of a session."""
    if key in st.session_state or param not in st.query_params:
        return
    try:
        value = cast(st.query_params[param])
    except ValueError:
        return
    if options is None or value in options:
        st.session_state[key] = value


def seed(key: str, default: Any, ok: Callable[[Any], bool] = lambda v: True) -> None:
    """Give a widget its starting value through session state (never both that and a default argument,
    which Streamlit warns about), and replace a value the widget no longer offers (another split)."""
    if key not in st.session_state or not ok(st.session_state[key]):
        st.session_state[key] = default


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
) -> None:
    """Images in rows of ``columns``, captioned "<note> · <class>" (folder datasets: "<note> · <class
    folder>/<file>", so a user can find the file); the button under each shows that image's neighbours."""
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
            # the note first: a narrow column then wraps at the dot, not inside the file name
            col.image(
                pic, caption=" · ".join(filter(None, [note, short_path(where) if where else names[r]])), width="stretch"
            )
            col.button(
                f"#{r}",
                key=f"{key}-{r}",
                on_click=set_focus,
                args=(split, r),
                width="stretch",
                help=(f"{where}: " if where else "") + "show this image's nearest neighbours (and mark "
                "them on the map)",
            )


def path_of(images: data.ImageSet, row: int) -> str:
    """The image's file (folder datasets), else ''."""
    return images.paths[row] if images.paths is not None else ""


def short_path(path: str) -> str:
    """``class/file.jpg``: enough to find the file under the split folder; the full path is in the help."""
    return "/".join(path.replace(os.sep, "/").split("/")[-2:])


# ---- the map --------------------------------------------------------------------------------------------


def map_view(run: RunDir) -> None:
    with user_errors():
        cfg = run.config()
        splits = data.splits_of(cfg.data.dataset, cfg.data.data_path)
        query = data.default_splits(cfg.data.dataset, cfg.data.data_path)[2]
    focus = st.session_state.get("emb_focus")
    if isinstance(focus, dict) and focus.get("split") in splits and st.session_state.get("emb_focus_applied") != focus:
        st.session_state["emb_split"] = focus["split"]  # a hand-off (Search page, a grid) picks the split
        st.session_state["emb_focus_applied"] = focus
    from_link("emb_split", "split", splits)
    from_link("emb_method", "projection", list(METHOD_NAMES))
    from_link("emb_max_points", "points", None, int)

    seed("emb_split", query if query in splits else splits[0], lambda v: v in splits)
    c1, c2, c3, c4, c5 = st.columns([1, 2, 1, 1, 1])
    split = c1.selectbox("Split", splits, key="emb_split")
    feature = c2.radio("Feature", list(FEATURES), format_func=FEATURES.get, key="emb_feature")
    method = c3.selectbox(
        "Projection",
        list(METHOD_NAMES),
        format_func=METHOD_NAMES.get,
        key="emb_method",
        help="UMAP and t-SNE separate clusters better; PCA is linear and instant. Computed "
        "once per checkpoint, then read from the run folder.",
    )
    dims = c4.radio("Dimensions", [2, 3], format_func=lambda d: f"{d}-D", horizontal=True, key="emb_dims")
    seed("emb_max_points", 10_000, lambda v: isinstance(v, int) and 0 <= v <= 2_000_000)
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
        params["n_neighbors"] = p1.slider(
            "n_neighbors",
            2,
            200,
            DEFAULTS["umap"]["n_neighbors"],
            key="emb_nn",
            help="larger keeps more global layout, smaller more local detail",
        )
        params["min_dist"] = p2.slider(
            "min_dist",
            0.0,
            0.99,
            DEFAULTS["umap"]["min_dist"],
            0.01,
            key="emb_min_dist",
            help="how tightly UMAP packs points together",
        )
    elif method == "tsne":
        params["perplexity"] = p1.slider(
            "perplexity",
            2.0,
            100.0,
            DEFAULTS["tsne"]["perplexity"],
            1.0,
            key="emb_perplexity",
            help="about how many neighbours each point keeps close; it must stay below the number of points",
        )
    st.query_params.update(
        {"run": run.name, "view": "map", "split": split, "projection": method, "points": str(max_points)}
    )

    spec = {
        "run": str(run.path),
        "split": split,
        "feature": feature,
        "method": method,
        "dims": dims,
        "params": params,
        "max_points": int(max_points) or None,
        "thumbs": str(THUMBS_DIR),
        "ckpt": checkpoint_key(run),
    }
    start = time.perf_counter()
    result = job_result("map", spec, "Preparing the map", slot=session_slot("map"))
    emb = load_embeddings(result["embeddings"])
    images = run_images(run, split)
    rows = np.asarray(result["rows"], np.int64)
    coords = coords_of(result["coords"])
    n = len(emb.labels)
    labelled = bool(emb.classes) and bool((emb.labels >= 0).any())
    names = class_names(emb.labels, emb.classes)

    # ---- colour, filter and k
    c1, c2, c3, c4 = st.columns([1, 1, 2, 1])
    options = [m for m in COLOURS if labelled or m not in NEEDS_LABELS]
    seed("emb_colour", options[0], lambda v: v in options)
    colour = c1.selectbox("Colour by", options, format_func=COLOURS.get, key="emb_colour")
    k_max = max(1, min(GRAPH_K, n - 1))
    seed("emb_k", min(10, k_max), lambda v: 1 <= v <= k_max)
    k = c2.slider(
        "Neighbours k",
        1,
        max(2, k_max),
        key="emb_k",
        disabled=k_max < 2,
        help="neighbours shown for a clicked image, and the k of the kNN vote and the outlier score",
    )
    seed("emb_classes", [], lambda v: set(v) <= set(emb.classes))
    chosen = c3.multiselect(
        "Classes",
        emb.classes,
        key="emb_classes",
        placeholder="all classes",
        disabled=not labelled,
        help="show only these classes (on the map and in the grids)",
    )
    kk_max = max(3, min(50, len(rows)))
    seed("emb_kmeans", min(10, kk_max), lambda v: 2 <= v <= kk_max)
    kk = c4.slider("k-means k", 2, kk_max, key="emb_kmeans", disabled=colour != "cluster")
    if not labelled:
        st.caption(
            "This split has no labels (class sub-folders give them), so colouring by class, kNN prediction, "
            "right / wrong, confidence and possible label error is off; clusters and outlier scores need none."
        )

    s = graph_scores(result["graph"], result["embeddings"], k) if n > 1 else {}
    plotted_labels = emb.labels[rows]
    cl = None
    if colour == "class" or not s:
        rgb = mapview.categorical(plotted_labels)
    elif colour == "pred":
        rgb = mapview.categorical(s["pred"][rows])
    elif colour == "correct":
        rgb = mapview.correctness(s["pred"][rows], plotted_labels)
    elif colour == "confidence":
        rgb = mapview.continuous(s["confidence"][rows], 0.0, 1.0)
    elif colour == "cluster":
        cl = clusters(result["embeddings"], tuple(rows.tolist()) if len(rows) < n else None, kk)
        rgb = mapview.categorical(cl)
    elif colour == "label_error":
        rgb = mapview.continuous(s["label_error"][rows], -1.0, 1.0)
    else:
        out = s["outlier"][rows]
        rgb = mapview.continuous(out, float(np.nanpercentile(out, 1)), float(np.nanpercentile(out, 99)))
    keep_rows = np.ones(n, bool)
    if chosen:
        keep_rows = np.isin(emb.labels, [emb.classes.index(c) for c in chosen])
    shown = keep_rows[rows]

    # ---- the points
    df = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "r": rgb[:, 0],
            "g": rgb[:, 1],
            "b": rgb[:, 2],
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
        df["path"] = [images.paths[i] for i in rows]
        lines.append("<span style='color:#666'>{path}</span>")
    df = df[shown]
    thumbs = f"{THUMBS_URL}/{result['thumbs']}/|{result['thumbs_ext']}" if result.get("thumbs") else None
    if not st.get_option("server.enableStaticServing"):
        thumbs = None
        st.caption(
            "Thumbnails are off: start the app with `--server.enableStaticServing true` (the repo's "
            ".streamlit/config.toml sets it) to see each image on hover."
        )

    focus = st.session_state.get("emb_focus")
    focus = focus if isinstance(focus, dict) and focus.get("split") == split else {}
    focus_row = focus.get("row") if isinstance(focus.get("row"), int) and 0 <= focus["row"] < n else None
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
        q = focus["query"]
        if "image" in q:
            query_pic, query_caption = np.asarray(q["image"]), f"uploaded: {q.get('caption', '')}"
        elif q.get("split") in splits:
            q_images = run_images(run, q["split"])
            if 0 <= int(q["row"]) < len(q_images):
                query_pic = to_hwc(q_images.images[int(q["row"]) : int(q["row"]) + 1].numpy())[0]
                label = class_names(q_images.labels[q["row"] : q["row"] + 1].numpy(), q_images.classes)[0]
                query_caption = f"{q['split']} #{q['row']} · {label}"

    def on_map(wanted: list[int]) -> pd.DataFrame:
        """Coordinates of those of ``wanted`` that are plotted (rows is sorted)."""
        pos = np.searchsorted(rows, np.asarray(wanted, np.int64))
        pos = pos[(pos < len(rows)) & np.isin(wanted, rows)]
        return pd.DataFrame({c: coords[pos, i] for i, c in enumerate(["x", "y", "z"][:dims])})

    marked, query_pt = on_map(nbr_rows), on_map([focus_row] if focus_row is not None else [])
    left, right = st.columns([3, 2], gap="medium")
    with left:
        area = st.toggle(
            "Select an area (lasso, Plotly)",
            key="emb_area",
            disabled=dims == 3,
            help="deck.gl shows images on hover; Plotly can select an area with a lasso or box",
        )
        if area and dims == 2:
            picked = lasso_map(df)
        else:
            picked = []
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
                key="emb_map",
                height=640,
            )
            clicked = mapview.picked_row(event)
            if clicked is not None and clicked != st.session_state.get("emb_last_click"):
                st.session_state["emb_last_click"] = clicked
                set_focus(split, clicked)
                st.rerun()  # mark its neighbours on the map
        legend(colour if s else "class", emb, s, rows, cl)
        note = f"{int(shown.sum()):,} of {n:,} images · {emb.embeddings.shape[1]}-d {feature} · {METHOD_NAMES[method]}"
        st.caption(note + f" · ready in {time.perf_counter() - start:.1f} s")
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

    worst_lists(s, keep_rows, names, images, split, labelled)
    downloads(run, split, feature, method, dims, emb, rows, coords, images, s, labelled)


def lasso_map(df: pd.DataFrame) -> list[int]:
    """The same points in a Plotly WebGL scatter, for box / lasso selection; returns the selected rows."""
    fig = go.Figure(
        go.Scattergl(
            x=df["x"],
            y=df["y"],
            mode="markers",
            customdata=df["row"],
            marker=dict(
                size=4, color=[f"rgb({r},{g},{b})" for r, g, b in zip(df["r"], df["g"], df["b"], strict=False)]
            ),
            hovertemplate="#%{customdata} · %{text}<extra></extra>",
            text=df["label"],
        )
    )
    fig.update_layout(height=640, margin=dict(l=10, r=10, t=10, b=10), dragmode="lasso")
    event = st.plotly_chart(fig, on_select="rerun", selection_mode=("box", "lasso"), key="emb_lasso")
    return selected_rows(event) or selected_rows(st.session_state.get("emb_lasso"))


def selected_rows(event: Any) -> list[int]:
    """Split rows of the points a box or lasso selected (each point's customdata), without repeats."""
    try:
        points = (event["selection"] if event else {}).get("points") or []
    except (KeyError, TypeError, AttributeError):
        return []
    out = []
    for p in points:
        cd = p.get("customdata")
        cd = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        if isinstance(cd, (int, float)):
            out.append(int(cd))
    return list(dict.fromkeys(out))


def legend(colour: str, emb, s: dict, rows: np.ndarray, cl: np.ndarray | None) -> None:
    if colour in ("class", "pred"):
        ids = sorted(set((emb.labels[rows] if colour == "class" else s["pred"][rows]).tolist()))
        mapview.legend_categorical([emb.classes[i] if 0 <= i < len(emb.classes) else "unlabelled" for i in ids], ids)
    elif colour == "correct":
        wrong = float(np.mean(s["pred"][rows] != emb.labels[rows])) if len(rows) else 0.0
        st.markdown(
            f"<span style='color:rgb(44,160,44)'>●</span> kNN right &nbsp; "
            f"<span style='color:rgb(214,39,40)'>●</span> kNN wrong ({wrong:.1%} of the points)",
            unsafe_allow_html=True,
        )
    elif colour == "cluster" and cl is not None:
        ids = sorted(set(cl.tolist()))
        mapview.legend_categorical([f"cluster {i}" for i in ids], ids)
    elif colour == "confidence":
        mapview.legend_continuous("share of the kNN vote", 0.0, 1.0)
    elif colour == "label_error":
        mapview.legend_continuous("other class's vote minus own label's", -1.0, 1.0)
    else:
        out = s["outlier"][rows]
        mapview.legend_continuous(
            "cosine distance to the k-th neighbour", float(np.nanpercentile(out, 1)), float(np.nanpercentile(out, 99))
        )


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
            "Click a point on the map, or the button under an image of a grid below, to see its nearest "
            "neighbours here and marked on the map (orange rings)."
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
    s: dict, keep_rows: np.ndarray, names: list[str], images: data.ImageSet, split: str, labelled: bool
) -> None:
    st.subheader(f"The {WORST_N} highest")
    which = [w for w in WORST if w in s and (labelled or w != "label_error")]
    if not which:
        st.caption("Scores need at least 2 images.")
        return
    seed("emb_worst", which[0], lambda v: v in which)
    pick = st.segmented_control("Score", which, format_func=lambda w: WORST[w][0], key="emb_worst") or which[0]
    st.caption(f"{WORST[pick][0]}: {WORST[pick][1]}. Within the classes chosen above.")
    top = scores.worst(s[pick], WORST_N, keep_rows).tolist()
    grid("", top, [f"{s[pick][r]:.2f}" for r in top], images, names, split, f"worst-{pick}")


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
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button(
        "Download CSV",
        lambda: to_csv(part, coords, extra),
        f"{stem}.csv",
        "text/csv",
        key="emb_csv",
        on_click="ignore",
        icon=":material/download:",
        help="index, label, class, file path, kNN prediction, scores, coordinates and embedding",
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
    method = c1.selectbox(
        "Projection",
        list(METHOD_NAMES),
        format_func=METHOD_NAMES.get,
        key="traj_method",
        help="each epoch's UMAP / t-SNE starts from the previous epoch's layout, and every "
        "frame is rotated onto the previous one (Procrustes), so points move smoothly",
    )
    labelled = bool(chosen.classes) and bool((chosen.labels >= 0).any())
    modes = ["class", "cluster"] if labelled else ["cluster"]
    seed("traj_colour", modes[0], lambda v: v in modes)
    colour = c2.selectbox("Colour by", modes, format_func=COLOURS.get, key="traj_colour")
    spec = {
        "run": str(run.path),
        "method": method,
        "dims": 2,
        "params": {},
        "thumbs": str(THUMBS_DIR),
        "frames": epochs_on_disk,
    }
    result = job_result("trajectory", spec, "Projecting the probe frames", slot=session_slot("trajectory"))
    path = result["trajectory"]
    epochs, coords = trajectory_of(path, os.stat(path).st_mtime)
    metrics = {int(m["epoch"]): m for m in run.metrics("epoch")}
    view = mapview.fit_view(coords.reshape(-1, 2))
    names = class_names(chosen.labels, chosen.classes)
    thumbs = f"{THUMBS_URL}/{result['thumbs']}/|{result['thumbs_ext']}" if result.get("thumbs") else None
    if colour == "class":
        rgb = mapview.categorical(chosen.labels)
    else:  # clusters of the newest frame: where the points end up
        rgb = mapview.categorical(probe_clusters(str(run.path), len(chosen.rows), max(epochs_on_disk)))
    epoch_list = [int(e) for e in epochs]
    if st.session_state.get("traj_epoch") not in epoch_list:
        st.session_state["traj_epoch"] = epoch_list[-1]

    def toggle() -> None:
        st.session_state["traj_playing"] = not st.session_state.get("traj_playing", False)
        if st.session_state["traj_playing"] and st.session_state["traj_epoch"] == epoch_list[-1]:
            st.session_state["traj_epoch"] = epoch_list[0]  # play from the start

    playing = bool(st.session_state.get("traj_playing")) and len(epoch_list) > 1

    @st.fragment(run_every=0.8 if playing else (3.0 if active else None))
    def frame() -> None:
        if active and probe.frame_epochs(run.path) != epochs_on_disk:
            st.rerun()  # new frames: project them (the worker adds only the new ones)
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
from_link("emb_view", "view", ["map", "over training"])
seed("emb_view", "map", lambda v: v in ("map", "over training"))
view = st.segmented_control("View", ["map", "over training"], format_func=str.capitalize, key="emb_view") or "map"
if view == "over training":
    st.query_params.update({"run": run.name, "view": "over training"})
    over_training(run)
else:
    map_view(run)
