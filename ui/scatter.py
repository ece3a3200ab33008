"""The explorer's map component: a WebGL 2 scatter (ui/scatter.js) fed binary columns, for up to millions of points.

The page writes each column (positions, colours, rows, tooltip fields) once to the app's static folder
(:class:`simclr_core.explorer.columns.ColumnStore`) and hands the component their URLs in a few hundred
bytes of JSON. Hover, pan, zoom, the thumbnail tooltip and the rings stay in the browser; a click comes
back as ``MapEvent.click`` (one rerun) and a lasso or box as ``MapEvent.selected`` (kept across reruns
until the next selection). Given the split's k-NN graph as columns (``neighbours``), the map lists a picked
point's neighbours beside the points itself, reading that one row of the graph by an HTTP range request:
a click shows them at once, at any size, and Python learns of it in the background. Measured against the
pydeck chart it replaces in BENCHMARKS.md (issue 19).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from simclr_core.explorer.columns import ColumnStore
from ui.shell import MAPS_DIR, MAPS_URL

CLEARED = -1  # MapEvent.click when the pick was cleared (the neighbours' Clear button)

_scatter = st.components.v2.component("simclr_studio.scatter", js=Path(__file__).with_name("scatter.js").read_text())


@dataclass(frozen=True)
class MapEvent:
    """What the user did on the map in this run: a click (a split row) and the current area selection."""

    click: int | None  # the picked split row, CLEARED, or None
    selected: list[int]  # split rows inside the last lasso or box ([] when none)
    how: str | None  # "lasso" or "box"


def column(values: np.ndarray | str, kind: str, store: Path = MAPS_DIR) -> str:
    """The URL of ``values`` as a column file (written once; see ColumnStore); ``store``: another app's folder."""
    return f"{MAPS_URL}/{ColumnStore(store).put(values, kind)}"


def rgba(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """(N, 4) uint8 from (N, 3) colours and (N,) alpha (opaque-ish 220 when None)."""
    a = np.full(len(rgb), 220, np.uint8) if alpha is None else np.asarray(alpha, np.uint8)
    return np.column_stack([np.asarray(rgb, np.uint8), a])


def scatter_map(
    key: str,
    xy: str,
    colours: str,
    *,
    rows: str | None = None,
    columns: dict[str, dict[str, Any]] | None = None,
    paths: str | None = None,
    thumbs: dict[str, Any] | None = None,
    focus: Sequence[float] | None = None,
    marked: Sequence[float] = (),
    point_px: float = 3.0,
    view_key: str = "",
    transition_ms: int = 0,
    note: str = "",
    height: int = 640,
    preview: bool = False,
    bounds: Sequence[float] | None = None,
    neighbours: dict[str, Any] | None = None,
    focus_row: int | None = None,
) -> MapEvent:
    """Draw the map and return what the user did.

    Args:
        xy, colours, rows: URLs of the float32 (x, y) pairs, uint8 RGBA and (when not every split row is
            plotted) int32 split rows of the points (:func:`column`).
        columns: tooltip fields, each ``{"url", "dtype": "int16"|"uint8"|"float32", ...}``: ``label`` and
            ``pred`` (with ``names``), ``conf`` (percent), ``score`` (with ``name``).
        paths: URL of the plotted points' file paths, one per line (fetched on the first hover).
        thumbs: the thumbnail atlas (``base`` URL ending in "/", ``tile``, ``cols``, ``ext``), or None.
        focus, marked: data coordinates of the picked point and (flattened x, y pairs) of its neighbours.
        view_key: the view is fitted to the points again when this changes (a new map, not a recolouring).
        transition_ms: with the same number of points and view_key, new positions morph from the old.
        preview: a stand-in drawn while the real map is computed (marked ``data-preview`` on the map).
        bounds: the box (x0, y0, x1, y1) the view frames, e.g. every frame of an animation (default: the
            0.5-99.5th percentiles of these points).
        neighbours: the split's k-NN graph, for the map to list a pick's neighbours beside the points:
            ``rows`` and ``sims`` (URLs of int32 split rows and float32 similarities, (N, k) row-major), ``k``,
            ``labels`` (URL of int16 class ids of every split row, or None), ``names``, ``split``. The rings
            then follow ``focus_row`` (the picked split row, None for none) and ``focus``/``marked`` are unused.
    """
    data = {
        "xy": xy,
        "rgba": colours,
        "rows": rows,
        "columns": columns or {},
        "paths": paths,
        "thumbs": thumbs,
        "focus": [float(v) for v in focus] if focus is not None else None,
        "marked": [float(v) for v in marked],
        "point_px": point_px,
        "view_key": view_key,
        "transition_ms": transition_ms,
        "note": note,
        "preview": preview,
        "bounds": [float(v) for v in bounds] if bounds is not None else None,
        "neighbours": neighbours,
        "focus_row": focus_row,
    }
    result = _scatter(key=key, data=data, height=height, on_click_change=lambda: None, on_selection_change=lambda: None)
    return MapEvent(clicked(result), *selection(result))


def clicked(state: Any) -> int | None:
    """The split row a click on the map picked in this run, from its result or its ``st.session_state[key]``
    (a page reads it there before drawing, so one rerun shows the pick), or CLEARED; None without a click."""
    click = state.get("click") if hasattr(state, "get") else None
    return int(click["row"]) if isinstance(click, dict) and isinstance(click.get("row"), int) else None


def selection(state: Any) -> tuple[list[int], str | None]:
    """The split rows (without repeats) and the tool ("lasso" or "box") of a map's area selection, from its
    result or its ``st.session_state[key]``; ([], None) when there is none."""
    sel = state.get("selection") if hasattr(state, "get") else None
    if isinstance(sel, dict) and isinstance(sel.get("rows"), list):
        return list(dict.fromkeys(int(r) for r in sel["rows"])), str(sel.get("how"))
    return [], None
