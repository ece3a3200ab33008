"""The panels around the Embeddings page's map: the picked image's nearest neighbours beside it, and
below it the images a lasso selected, the selection as a table linked to the map, the 100 highest of
each per-image score as a grid, the tags (a selection saved in the run folder) and the map's downloads.
Every grid's button, and every table row, picks its image on the map as a click there would
(ui.explorer_focus.set_focus).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from html import escape

import numpy as np
import pandas as pd
import streamlit as st

from simclr_core.data import datasets as data
from simclr_core.data.preview import upscale_nearest
from simclr_core.errors import UserError
from simclr_core.explorer import scores
from simclr_core.explorer.tables import class_names, take, to_csv, to_npz
from simclr_core.explorer.tags import MAX_NAME, delete_tag, save_tag
from simclr_core.explorer.tags import to_csv as tags_csv
from simclr_core.runs.rundir import RunDir
from ui.cached import to_hwc
from ui.explorer_focus import Picked, set_focus
from ui.map_points import MapData, highlighted_rows
from ui.widgets import keep

WORST = {
    "label_error": ("Possible label errors", "its neighbours agree on another class: the label may be wrong"),
    "outlier": ("Outliers", "farthest from its k-th nearest neighbour: unusual, broken or out-of-domain"),
    "duplicate": ("Near-duplicates", "most similar to another image of the split"),
}
WORST_N = 100
GRID_SIDE = 64  # grid images are enlarged to this side, with sharp pixels
GRID_COLS = 10
TABLE_MAX = 5_000  # rows of the linked table: a lasso over a whole split would send every row

Selections = dict[str, tuple[str, list[int], str]]  # what -> (label, rows, source), for saving as a tag


def path_of(images: data.ImageSet, row: int) -> str:
    """The image's file (folder datasets), else ''."""
    return data.printable(images.paths[row]) if images.paths is not None else ""


def short_path(path: str) -> str:
    """``class/file.jpg``: enough to find the file under the split folder; the full path is in the help."""
    return "/".join(path.replace(os.sep, "/").split("/")[-2:])


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


def neighbours_panel(split: str, m: MapData, p: Picked) -> None:
    """Beside the map: the picked image (or the Search page's query) and its nearest neighbours, as a grid."""
    if p.pic is None:
        st.markdown("**Nearest neighbours**")
        st.caption(
            "Click a point on the map, the button under an image of a grid below, or find an image by its "
            "index, to see its nearest neighbours here and marked on the map (orange rings)."
        )
        return
    st.markdown(f"**{p.caption}**")
    st.image(upscale_nearest(p.pic, 160), caption=(path_of(m.images, p.row) if p.row is not None else None) or None)
    if not p.nbr_rows:
        st.caption("The split holds no other image.")
        return
    own = int(m.emb.labels[p.row]) if p.row is not None else -1
    note = f"{len(p.nbr_rows)} nearest neighbours in the {split} split, with their cosine similarity"
    if own >= 0:
        note += f"; {sum(int(m.emb.labels[r]) == own for r in p.nbr_rows)} share its label"
    if len(p.marked) < len(p.nbr_rows):
        note += f"; {len(p.marked)} of them are among the plotted points (raise Points to see all)"
    st.caption(note)
    grid("", p.nbr_rows, [f"{c:.3f}" for c in p.nbr_sims], m.images, m.names, split, "nbr", columns=4)
    if st.button("Clear", key="emb_clear", icon=":material/close:"):
        st.session_state.pop("emb_focus", None)
        st.rerun()


def selected_images(split: str, m: MapData, picked: list[int]) -> None:
    """The images a lasso or box selected: how many of each class, and (the first 100 of) them as a grid."""
    if not picked:
        return
    st.subheader("Selected images")
    counts = Counter(m.names[i] for i in picked).most_common()
    st.write(f"**{len(picked)}** points selected: " + ", ".join(f"{c}× {name}" for name, c in counts))
    if len(picked) > WORST_N:
        st.caption(f"Showing the first {WORST_N} of {len(picked)}.")
    grid("", picked[:WORST_N], None, m.images, m.names, split, "sel")


def linked_table(split: str, rows: list[int], m: MapData, s: dict) -> None:
    """The selection (a lasso, else the highlighted classes and tags) as a sortable table, linked to the map:
    picking a row picks that image there, as a click would (its neighbours beside the map, rings on it)."""
    if not rows:
        return
    classes = m.emb.classes if m.labelled else []
    shown = rows[:TABLE_MAX]
    table = pd.DataFrame({"#": shown, "class": [m.names[r] for r in shown]})
    if "pred" in s and classes:
        table["kNN says"] = class_names(s["pred"][shown], classes)
        table["kNN confidence"] = s["confidence"][shown]
        table["possible label error"] = s["label_error"][shown]
    if "outlier" in s:
        table["outlier"] = s["outlier"][shown]
    if m.images.paths is not None:
        table["file"] = [path_of(m.images, r) for r in shown]
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


def worst_lists(split: str, m: MapData, s: dict, keep_rows: np.ndarray) -> tuple[str, list[int]]:
    """The 100 highest of a score as a grid; returns (its title, its rows) for saving as a tag."""
    st.subheader(f"The {WORST_N} highest")
    which = [w for w in WORST if w in s and (m.labelled or w != "label_error")]
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
        voted = class_names(s["pred"][top], m.emb.classes)
        notes = [
            f"{v} · {m.names[r]}" + (f" → {p}" if p != m.names[r] else "")
            for v, r, p in zip(notes, top, voted, strict=True)
        ]
    grid("", top, notes, m.images, m.names, split, f"worst-{pick}", own_names=pick == "label_error")
    return WORST[pick][0], top


def selections(
    lasso: list[int], p: Picked, top: tuple[str, list[int]], keep_rows: np.ndarray, highlight: list[str]
) -> Selections:
    """What can be saved as a tag, each with its label, rows and source; those with no rows are left out."""
    bright = highlighted_rows(keep_rows)
    around = ([p.row] if p.row is not None else []) + p.nbr_rows
    found = {
        "lasso": (f"the lasso's {len(lasso)} images", lasso, "lasso"),
        "neighbours": (
            f"the picked image and its {len(p.nbr_rows)} neighbours",  # not its number: a click redraws only the map
            around,
            f"neighbours of #{p.row} (k={len(p.nbr_rows)})",
        ),
        "worst": (f"the grid of {top[0].lower()}", top[1], top[0].lower()),
        "highlight": (
            f"the {int(keep_rows.sum()):,} highlighted images",
            bright,
            "highlight: " + ", ".join(highlight),
        ),
    }
    return {k: v for k, v in found.items() if v[1]}


def tags_panel(run: RunDir, split: str, m: MapData, selected: Selections) -> None:
    """Save what is selected as a named tag of the run (``tags.json``); list, export and delete the split's tags."""
    st.subheader("Tags")
    st.caption(
        "A tag is a named set of this split's images, kept in the run folder: highlight or colour the map by "
        "it, or download its rows and file paths."
    )
    if selected:
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        keep("emb_tag_what", next(iter(selected)), lambda v: v in selected)
        what = c1.selectbox("Save as a tag", list(selected), format_func=lambda w: selected[w][0], key="emb_tag_what")
        c2.text_input("Tag name", key="emb_tag_name", max_chars=MAX_NAME, placeholder="e.g. mislabelled cats")
        if c3.button("Save tag", key="emb_tag_save", icon=":material/sell:"):
            label, rows, source = selected[what]
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
    for tag in reversed(m.tags.values()):
        t1, t2, t3 = st.columns([4, 1, 1], vertical_alignment="center")
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(tag.created)) if tag.created else "?"
        t1.markdown(f"**{escape(tag.name)}** · {len(tag.rows):,} images · {escape(tag.source)} · {when}")
        t2.download_button(
            "CSV",
            lambda tag=tag: tags_csv(tag, m.emb.labels, m.emb.classes, m.images.paths),
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


def downloads(stem: str, m: MapData, s: dict) -> None:
    """The plotted points (coordinates, embedding, labels, scores) as CSV and NPZ files named ``stem``."""

    def extra() -> dict[str, list]:  # built only when a download is asked for: seconds at a million rows
        out: dict[str, list] = {}
        if m.images.paths is not None:
            out["path"] = [m.images.paths[i] for i in m.rows]
        if m.labelled and s:
            out["knn_pred"] = class_names(s["pred"][m.rows], m.emb.classes)
            out["knn_confidence"] = [f"{v:.4f}" for v in s["confidence"][m.rows]]
            out["label_error"] = [f"{v:.4f}" for v in s["label_error"][m.rows]]
        if "outlier" in s:
            out["outlier"] = [f"{v:.4f}" for v in s["outlier"][m.rows]]
        return out

    st.subheader("Download the map")
    d1, d2, _ = st.columns([1, 1, 3])
    d1.download_button(
        "Download CSV",
        lambda: to_csv(take(m.emb, m.rows), m.coords, extra()),
        f"{stem}.csv",
        "text/csv",
        key="emb_csv",
        on_click="ignore",
        icon=":material/download:",
        help="index, label, class, file path, kNN prediction, scores, coordinates and embedding of the plotted points",
    )
    d2.download_button(
        "Download NPZ",
        lambda: to_npz(take(m.emb, m.rows), m.coords),
        f"{stem}.npz",
        "application/octet-stream",
        key="emb_npz",
        on_click="ignore",
        icon=":material/download:",
        help="numpy arrays embeddings, labels, indices, coords, classes",
    )
