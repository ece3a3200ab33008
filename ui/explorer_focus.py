"""The image picked on the Embeddings page's map, and its nearest neighbours. An image is picked by a
click on the map, the button under a grid image, a row of the linked table, the "Find an image" box, a
link with ``?focus=ROW``, or the Search page's hand-off (which brings its own query and results); the
pick lives in ``st.session_state["emb_focus"]`` as ``{"split", "row"}`` (plus ``neighbours``, ``sims``
and ``query`` from Search). :func:`picked` turns it into what the page draws: the query picture and
caption, the neighbours with their similarities, and the rings that mark them on the map.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from simclr_core.data import datasets as data
from simclr_core.explorer.compute import GRAPH_K
from simclr_core.explorer.tables import class_names
from simclr_core.runs.rundir import RunDir
from ui.cached import neighbour_graph, neighbour_index, run_images, to_hwc
from ui.map_points import MapData, on_map


@dataclass(frozen=True)
class Picked:
    """The picked image (or the Search page's query) and its neighbours, ready to draw."""

    row: int | None  # the picked split row; None for none, or for a query from outside the split
    nbr_rows: list[int]
    nbr_sims: list[float]
    pic: np.ndarray | None  # the query's picture (HWC uint8), None when nothing is picked
    caption: str
    marked: pd.DataFrame  # the neighbours' coordinates among the plotted points: orange rings
    query: pd.DataFrame  # the picked image's coordinates, when plotted: a black ring


def picked_row(split: str) -> int | None:
    """The split row picked in ``split``, if any (not the Search page's outside query)."""
    focus = st.session_state.get("emb_focus")
    row = focus.get("row") if isinstance(focus, dict) and focus.get("split") == split else None
    return row if isinstance(row, int) else None


def set_focus(split: str, row: int) -> None:
    st.session_state["emb_focus"] = {"split": split, "row": int(row)}


def follow_handoff(splits: list[str]) -> None:
    """A hand-off (the Search page, a grid) picks its split, once, before the split box is drawn."""
    focus = st.session_state.get("emb_focus")
    if isinstance(focus, dict) and focus.get("split") in splits and st.session_state.get("emb_focus_applied") != focus:
        st.session_state["emb_split"] = focus["split"]
        st.session_state["emb_focus_applied"] = focus


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


def picked(run: RunDir, splits: list[str], split: str, m: MapData, k: int, dims: int) -> Picked:
    """The pick of ``split`` and its ``k`` nearest neighbours (the whole split's, plotted or not); keeps the
    address's ``?focus=`` in step, so a reload shows the same pick."""
    focus = st.session_state.get("emb_focus")
    focus = focus if isinstance(focus, dict) and focus.get("split") == split else {}
    row = focus.get("row") if isinstance(focus.get("row"), int) and 0 <= focus["row"] < m.n else None
    if row is None:
        st.query_params.pop("focus", None)
    else:
        st.query_params["focus"] = str(row)
    nbr_rows: list[int] = []
    nbr_sims: list[float] = []
    if focus.get("neighbours") is not None:  # handed over by the Search page: its query and results
        found = zip(focus.get("sims", []), focus["neighbours"], strict=False)
        pairs = [(float(c), int(r)) for c, r in found if 0 <= int(r) < m.n]
        nbr_sims, nbr_rows = [c for c, _ in pairs], [r for _, r in pairs]
    elif row is not None and m.n > 1 and k <= GRAPH_K and m.result.get("graph"):
        g = neighbour_graph(m.result["graph"])  # the worker's k-NN graph: a click reads one row of it
        nbr_sims, nbr_rows = g.sims[row, :k].tolist(), g.rows[row, :k].tolist()
    elif row is not None and m.n > 1:
        sims, idx = neighbour_index(m.result["embeddings"]).search(m.emb.embeddings[row], k + 1)
        hits = [(float(a), int(b)) for a, b in zip(sims[0], idx[0], strict=False) if int(b) != row][:k]
        nbr_sims, nbr_rows = [a for a, _ in hits], [b for _, b in hits]
    pic, caption = None, ""
    if row is not None:
        pic = to_hwc(m.images.images[row : row + 1].numpy())[0]
        caption = f"#{row} · {m.names[row]}"
    elif isinstance(focus.get("query"), dict):
        pic, caption = handed_query(run, splits, focus["query"])
    marked = on_map(m.rows, m.coords, nbr_rows, dims)
    query = on_map(m.rows, m.coords, [row] if row is not None else [], dims)
    return Picked(row, nbr_rows, nbr_sims, pic, caption, marked, query)
