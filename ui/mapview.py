"""The explorer's colours and legends, and the 3-D map (deck.gl), shared by the Embeddings page's two views.

2-D maps are drawn by ui.scatter (WebGL 2, binary columns, up to millions of points); the 3-D map stays on
pydeck's deck.gl, whose OrbitView the WebGL map does not have, with the same thumbnail atlas on hover.
"""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
import pandas as pd
import pydeck as pdk
import streamlit as st

# Plotly's qualitative "Plotly" then "Dark24": readable on white, 34 colours before they repeat.
PALETTE = np.array(
    [
        (99, 110, 250),
        (239, 85, 59),
        (0, 204, 150),
        (171, 99, 250),
        (255, 161, 90),
        (25, 211, 243),
        (255, 102, 146),
        (182, 232, 128),
        (255, 151, 255),
        (254, 203, 82),
        (46, 145, 229),
        (225, 95, 153),
        (28, 167, 28),
        (251, 13, 13),
        (218, 22, 255),
        (34, 42, 42),
        (182, 129, 0),
        (117, 13, 134),
        (235, 102, 59),
        (81, 28, 251),
        (0, 160, 139),
        (251, 0, 209),
        (252, 0, 128),
        (178, 130, 141),
        (108, 124, 50),
        (119, 138, 174),
        (134, 42, 22),
        (167, 119, 241),
        (98, 0, 66),
        (22, 22, 167),
        (218, 96, 202),
        (108, 69, 22),
        (13, 42, 99),
        (175, 0, 56),
    ],
    dtype=np.uint8,
)
GREY = np.array((190, 190, 190), np.uint8)
DIM = (225, 225, 225)  # points outside the highlighted classes or tags: still there, out of the way
RIGHT, WRONG = np.array((44, 160, 44), np.uint8), np.array((214, 39, 40), np.uint8)
# viridis at 9 stops: low values dark blue, high values yellow
VIRIDIS = np.array(
    [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ],
    np.float64,
)
THUMB_SIDE = 128  # tooltip image side in CSS pixels


def categorical(ids: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 colour per category id; -1 (none) is grey."""
    ids = np.asarray(ids, np.int64)
    out = PALETTE[np.clip(ids, 0, None) % len(PALETTE)].copy()
    out[ids < 0] = GREY
    return out


def continuous(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(N, 3) uint8 viridis colour of each value between lo and hi; NaN is grey."""
    v = np.asarray(values, np.float64)
    t = np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1) * (len(VIRIDIS) - 1)
    t = np.nan_to_num(t, nan=0.0)
    i = np.minimum(t.astype(int), len(VIRIDIS) - 2)
    f = (t - i)[:, None]
    out = np.round(VIRIDIS[i] * (1 - f) + VIRIDIS[i + 1] * f).astype(np.uint8)
    out[np.isnan(v)] = GREY
    return out


def correctness(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Green where the kNN prediction equals the label, red where not, grey without a label."""
    out = np.where((np.asarray(pred) == np.asarray(labels))[:, None], RIGHT, WRONG).astype(np.uint8)
    out[(np.asarray(labels) < 0) | (np.asarray(pred) < 0)] = GREY
    return out


def colours(
    mode: str,
    labels: np.ndarray,
    s: dict[str, np.ndarray],
    rows: np.ndarray,
    clusters: np.ndarray | None = None,
    tags: np.ndarray | None = None,
) -> np.ndarray:
    """(N, 3) uint8 colour of each plotted point for a colour mode of the Embeddings page.

    ``labels`` are the plotted points' labels, ``s`` the split's scores (ui.explorer_map.graph_scores,
    indexed by split row), ``rows`` the plotted split rows, ``clusters`` / ``tags`` a cluster or tag id per
    plotted point (-1: none).
    """
    if mode == "pred":
        return categorical(s["pred"][rows])
    if mode == "correct":
        return correctness(s["pred"][rows], labels)
    if mode == "confidence":
        return continuous(s["confidence"][rows], 0.0, 1.0)
    if mode == "cluster" and clusters is not None:
        return categorical(clusters)
    if mode == "tag" and tags is not None:
        return categorical(tags)
    if mode == "label_error":
        return continuous(s["label_error"][rows], -1.0, 1.0)
    if mode == "outlier":
        out = s["outlier"][rows]
        return continuous(out, *outlier_range(out))
    return categorical(labels)


def outlier_range(out: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentiles: the colour scale of the outlier score (a few far points would flatten it)."""
    return float(np.nanpercentile(out, 1)), float(np.nanpercentile(out, 99))


def legend_categorical(names: list[str], ids: list[int]) -> None:
    """A row of colour swatches with names."""
    cells = [
        f"<span style='white-space:nowrap;margin-right:14px'><span style='display:inline-block;width:11px;"
        f"height:11px;border-radius:6px;background:rgb{tuple(int(c) for c in categorical(np.array([i]))[0])};"
        f"margin-right:4px'></span>{escape(n)}</span>"
        for n, i in zip(names, ids, strict=False)
    ]
    st.markdown("<div style='line-height:1.9'>" + " ".join(cells) + "</div>", unsafe_allow_html=True)


def legend_continuous(label: str, lo: float, hi: float) -> None:
    """A viridis colour bar from lo to hi."""
    stops = ", ".join(f"rgb{tuple(int(c) for c in s)}" for s in VIRIDIS)
    st.markdown(
        f"<div style='display:flex;align-items:center;gap:8px'><span>{escape(label)}: {lo:.3g}</span>"
        f"<span style='flex:0 0 220px;height:11px;border-radius:3px;background:linear-gradient(90deg,"
        f"{stops})'></span><span>{hi:.3g}</span><span style='color:grey'>(grey: no value)</span></div>",
        unsafe_allow_html=True,
    )


def atlas_fields(atlas: dict[str, Any], rows: np.ndarray) -> dict[str, np.ndarray]:
    """Each row's tile in the thumbnail atlas, as the 3-D tooltip's fields: file ``tf`` and CSS offsets ``tx``, ``ty``
    (of the tile enlarged to THUMB_SIDE)."""
    cols = int(atlas["cols"])
    r = np.asarray(rows, np.int64)
    j = r % (cols * cols)
    return {"tf": r // (cols * cols), "tx": -(j % cols) * THUMB_SIDE, "ty": -(j // cols) * THUMB_SIDE}


def tooltip(atlas: dict[str, Any] | None, lines: list[str]) -> dict[str, Any]:
    """The deck.gl hover card: the point's thumbnail (a tile of ``atlas``, ui.cached.thumbnails; the points
    need :func:`atlas_fields`), enlarged with sharp pixels, above ``lines`` (HTML naming fields as ``{field}``)."""
    img = ""
    if atlas:
        width = atlas["cols"] * THUMB_SIDE
        img = (
            f"<div style='width:{THUMB_SIDE}px;height:{THUMB_SIDE}px;image-rendering:pixelated;margin-bottom:4px;"
            f"background:url({atlas['base']}atlas-{{tf}}.{atlas['ext']}) {{tx}}px {{ty}}px / {width}px auto no-repeat'>"
            "</div>"
        )
    return {
        "html": img + "<br>".join(lines),
        "style": {
            "backgroundColor": "white",
            "color": "#222",
            "fontSize": "12px",
            "padding": "6px",
            "boxShadow": "0 1px 4px rgba(0,0,0,.3)",
            "maxWidth": f"{THUMB_SIDE + 160}px",
        },
    }


def deck(
    points: pd.DataFrame,
    *,
    marked: pd.DataFrame | None = None,
    focus: pd.DataFrame | None = None,
    tip: dict[str, Any] | None = None,
    dims: int = 2,
    point_px: float = 3.0,
    view: tuple[float, float, float] | None = None,
    transition_ms: int = 0,
) -> pdk.Deck:
    """A deck.gl map of ``points`` (columns x, y[, z], r, g, b, row and the tooltip's fields).

    ``marked`` (neighbours) get rings, ``focus`` (the query) a bigger black ring; neither is pickable,
    so the pointer always finds the point underneath. ``view`` is (centre x, centre y, zoom);
    by default the map frames every point.
    """
    cols = ["x", "y", "z"][:dims]
    if view is None:
        view = fit_view(points[cols].to_numpy())
    layers = [
        pdk.Layer(
            "ScatterplotLayer",
            points,
            id="points",
            get_position=cols,
            get_fill_color="[r, g, b, a]" if "a" in points else "[r, g, b, 210]",
            get_radius=point_px,
            radius_units="'pixels'",
            billboard=dims == 3,  # 3-D: discs that face the camera, not flat dashes seen edge-on
            pickable=True,
            transitions={"getPosition": transition_ms} if transition_ms else None,
        )
    ]
    for df, colour, px, width, lid in (
        (marked, [255, 140, 0, 255], point_px + 4, 2, "neighbours"),
        (focus, [0, 0, 0, 255], point_px + 8, 3, "query"),
    ):
        if df is not None and len(df):
            layers.append(
                pdk.Layer(
                    "ScatterplotLayer",
                    df,
                    id=lid,
                    get_position=cols,
                    get_line_color=colour,
                    filled=False,
                    stroked=True,
                    get_radius=px,
                    radius_units="'pixels'",
                    line_width_units="'pixels'",
                    get_line_width=width,
                    billboard=dims == 3,
                    pickable=False,
                )
            )
    if dims == 3:
        view_obj = pdk.View(type="OrbitView", controller=True)
        state = pdk.ViewState(target=[view[0], view[1], 0.0], zoom=view[2], rotation_orbit=30, rotation_x=20)
    else:
        view_obj = pdk.View(type="OrthographicView", controller=True)
        state = pdk.ViewState(target=[view[0], view[1], 0.0], zoom=view[2])
    return pdk.Deck(layers=layers, views=[view_obj], initial_view_state=state, map_provider=None, tooltip=tip or False)


def fit_view(xy: np.ndarray, side_px: float = 560.0) -> tuple[float, float, float]:
    """(centre x, centre y, zoom) that fits the 0.5-99.5th percentile box of the points in ~side_px pixels."""
    if len(xy) == 0:
        return 0.0, 0.0, 0.0
    lo, hi = np.percentile(xy[:, :2], 0.5, axis=0), np.percentile(xy[:, :2], 99.5, axis=0)
    span = float(max(hi - lo)) * 1.1 or 1.0
    return float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2), float(np.log2(side_px / span))


def picked_row(event: Any) -> int | None:
    """The split row of the point clicked on the map (the ``row`` field of the selected object), if any."""
    try:
        objects = event["selection"]["objects"].get("points") or []
    except (KeyError, TypeError, AttributeError):
        return None
    return int(objects[0]["row"]) if objects and "row" in objects[0] else None
