"""The map harness of bench/explorer.py: N points on the Embeddings page's map (ui/scatter.py), with thumbnails.

    streamlit run bench/explorer_app.py  ->  http://localhost:PORT/?n=50000&atlas=<set>

Not part of the app: ``bench/explorer.py --points`` copies it into a scratch folder next to a static/ folder
of thumbnail atlases and column files, and drives it in headless Chromium. The points are 10 Gaussian
blobs (bench.explorer.blobs); a click lists the clicked point's 10 nearest points beside the map and rings them,
from the graph's columns, as on the Embeddings page; a radio swaps the colours (a new colour column).
"""

import json
from pathlib import Path

import numpy as np
import streamlit as st

from bench.explorer import blobs  # the checkout is on PYTHONPATH (simclr_core.cli.studio.start_server)
from ui.scatter import clicked, column, rgba, scatter_map

st.set_page_config(layout="wide")
n = int(st.query_params.get("n", 10_000))
xy, label = st.cache_data(max_entries=2)(blobs)(n)
palette = np.array(
    [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ]
)
home = Path(__file__).resolve().parent
maps = home / "static" / "maps"
saved = home / f"points-{n}.npz"  # written by bench/explorer.py --points: each point's 10 nearest on the map


@st.cache_data(max_entries=2)
def neighbour_columns(path: str) -> dict | None:
    """The graph's columns for the map (ui.scatter's ``neighbours``), written once."""
    if not Path(path).is_file():
        return None
    g = np.load(path)
    names = [str(i) for i in range(10)]
    rows, sims, classes = column(g["graph"], "i32", maps), column(g["sims"], "f32", maps), column(label, "i16", maps)
    return {"rows": rows, "sims": sims, "k": 10, "labels": classes, "names": names, "split": "bench"}


mode = st.radio("Colour", ["class", "shifted"], horizontal=True, key="colour")
colours = palette[label] if mode == "class" else palette[(label + 3) % 10]
if (row := clicked(st.session_state.get("map"))) is not None:  # read before drawing, as the Embeddings page does
    st.session_state["focus"] = row
focus = st.session_state.get("focus")
atlas = st.query_params.get("atlas")  # a set folder under static/thumbs/ (simclr_core.explorer.thumbnails)
manifest = None
if atlas:
    manifest = json.loads((home / "static" / "thumbs" / atlas / "atlas.json").read_text())
    manifest["base"] = f"app/static/thumbs/{atlas}/"
st.session_state["runs"] = st.session_state.get("runs", 0) + 1
event = scatter_map(
    "map",
    column(xy, "f32", maps),
    column(rgba(colours, None), "u8", maps),
    columns={"label": {"url": column(label, "i16", maps), "dtype": "int16", "names": [str(i) for i in range(10)]}},
    thumbs=manifest,
    neighbours=neighbour_columns(str(saved)),
    focus_row=focus,
    point_px=3.0 if n < 20_000 else 2.0 if n < 300_000 else 1.5,
    view_key=str(n),
    height=700,
)
st.markdown(f"runs: {st.session_state['runs']} · selected: {len(event.selected)} · focus: {focus}")
