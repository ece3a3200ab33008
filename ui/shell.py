"""The app's shell: the router's helpers on every page (deep links, CSS, icon, the shared sidebar)."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import streamlit as st
from PIL import Image, ImageDraw

from simclr_core.errors import UserError
from simclr_core.explorer.columns import ColumnStore
from simclr_core.explorer.thumbnails import ThumbnailStore
from ui.jobs import start_worker
from ui.live import IDLE_POLL_S, POLL_S, WATCH, follow_runs
from ui.runs import STATE_ICONS, device_name, live_runs, run_states, runs_dir, shown_runs

APP_DIR = Path(__file__).resolve().parents[1]
# Streamlit serves <app dir>/static/ at app/static/ (server.enableStaticServing, .streamlit/config.toml);
# the explorer's thumbnails live there, so a browser fetches each image once and keeps it in its cache.
THUMBS_DIR = APP_DIR / "static" / "thumbs"
THUMBS_URL = "app/static/thumbs"
MAPS_DIR = APP_DIR / "static" / "maps"  # the map's binary columns (simclr_core.explorer.columns)
MAPS_URL = "app/static/maps"
# Past this, Streamlit turns static serving off as the app starts (streamlit.web.bootstrap); the two stores'
# default caps (640 + 320 MB) stay under it, but a set in use may outgrow them.
STATIC_LIMIT = 2**30


def trim_static(static: Path, maps: Path, thumbs: Path, limit: int = STATIC_LIMIT) -> tuple[int, int] | None:
    """When ``static`` holds more than ``limit`` bytes (as Streamlit counts them), evict the map's columns
    and thumbnails down to their caps, in use or not; (bytes before, bytes after), else None."""

    def size() -> int:
        return sum(p.stat().st_size for p in static.rglob("*") if p.is_file())

    before = size() if static.is_dir() else 0
    if before <= limit:
        return None
    ColumnStore(maps, in_use_s=0).evict()
    ThumbnailStore(thumbs, in_use_s=0).evict()
    return before, size()


@st.cache_resource(show_spinner=False)
def static_trimmed() -> tuple[int, int] | None:
    """Once per server: if Streamlit started with static serving off because static/ was too big, trim it for
    the next start (:func:`trim_static`); None when serving is on, or off by choice."""
    if st.get_option("server.enableStaticServing"):
        return None
    try:
        return trim_static(APP_DIR / "static", MAPS_DIR, THUMBS_DIR)
    except UserError:  # a mistyped cap: the note on the map names it
        return None


def static_serving_note() -> str:
    """Why the map shows no thumbnails (static serving is off), and what brings them back."""
    trimmed = static_trimmed()
    if trimmed is None:
        return (
            "Thumbnails are off: start the app with `--server.enableStaticServing true` (the repo's "
            ".streamlit/config.toml sets it) to see each image on hover."
        )
    before, after = trimmed
    note = (
        f"Thumbnails are off: when the app started, its static/ folder held {before / 2**30:.1f} GB, over the "
        f"1 GB past which Streamlit serves none of it. The map files used least recently were removed "
        f"({after / 2**30:.1f} GB left): restart the app to see each image on hover."
    )
    if after > STATIC_LIMIT:
        note += " It still holds more: lower SIMCLR_THUMBS_MAX_MB and SIMCLR_MAPS_MAX_MB (together under 1024)."
    return note


def routed() -> None:
    """Make a deep link work on a freshly started server: call it first on every page.

    Until some session has run app.py's st.navigation, Streamlit treats the pages/ folder as an
    old-style multipage app and runs a linked page (``/embeddings``) on its own: no router, no
    shared sidebar, and every file of pages/ listed as a page. Run the router instead; it then
    runs this page, and from then on the server knows the app's own navigation.

    Moving the helpers out of pages/ (to ui/) did not let this go: Streamlit looks for a folder named
    ``pages`` beside the main script, whatever it holds, and the project's layout names that folder.
    Renaming it would drop the workaround, at the price of the layout users know.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        runpy.run_path(str(APP_DIR / "app.py"), run_name="__main__")
        st.stop()


# The app's own chrome: Streamlit's toolbar shows a "Stop" for the script run of each two-second refresh,
# beside the app's Stop of a training run (a user stopped the wrong one); the app has no use for it.
# And the map's hover card may reach past the map's right edge (over the neighbours beside it), not be cut there.
STYLE = """<style>
[data-testid="stStatusWidget"] button { display: none; }
[data-testid="stDeckGlJsonChart"] div { overflow: visible !important; }
</style>"""


def style() -> None:
    """The app's CSS, on every page (app.py)."""
    st.html(STYLE)


@st.cache_resource
def page_icon() -> Image.Image:
    """The tab's icon, drawn here: a Material icon name makes Streamlit fetch it from a font CDN, which
    fails offline. Three coloured clusters of dots on a round tile: a map of embeddings."""
    side = 64
    img = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((0, 0, side - 1, side - 1), fill=(255, 255, 255, 255), outline=(60, 60, 60, 255), width=3)
    for (cx, cy), colour in zip(
        ((22, 24), (42, 22), (32, 42)), ((99, 110, 250), (239, 85, 59), (0, 204, 150)), strict=True
    ):
        for dx, dy in ((0, 0), (-6, 3), (5, 4), (1, -6)):
            x, y = cx + dx, cy + dy
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(*colour, 255))
    return img


def sidebar(pages: list[Any]) -> None:
    """The shared sidebar: the app's pages, the current run picker and the device. A ``?run=NAME``
    link picks that run.

    While any run's process is alive, a small fragment checks every two seconds whether a run's
    state changed (or a run came or went), or a file the page :func:`watch` es grew, and only then
    draws the whole page again: the picker, the run list, the Train page's curves and buttons all
    follow the runs without a reload, and a page that shows nothing new costs next to nothing.
    With no process alive it looks every 15 s, so a run started from the command line shows up.
    """
    start_worker()
    st.session_state[WATCH] = None  # the page says what it shows (watch), after this
    states = run_states()
    linked = st.query_params.get("run")
    if linked and "run" not in st.session_state and linked in states:
        st.session_state["run"] = linked
    with st.sidebar:
        for page in pages:
            st.page_link(page)
        st.divider()
        names = shown_runs(states)
        if names:
            # Set on every run, even to the same name: the browser keeps showing the label it was last
            # sent ("demo (starting)") until the value is set again, however the labels change.
            st.session_state["run"] = st.session_state.get("run") if st.session_state.get("run") in names else names[0]
            st.selectbox("Run", names, key="run", format_func=lambda n: f"{n} ({states.get(n, 'unknown')})")
            picked = st.session_state["run"]
            # the picker's box cuts a long name short: the state in full below it
            st.caption(f"{STATE_ICONS.get(states[picked], '')} **{picked}**: {states[picked]}")
        elif states:
            st.caption("Every run failed, and failed runs are hidden.")
        else:
            st.caption("No runs yet: start one on the Train page.")
        if states:
            st.toggle(
                "Hide failed runs",
                key="hide_failed",
                help="leave out runs that failed, died or never started, in this list and in the run list",
            )
        st.caption(f"Device: **{device_name()}**")
        st.caption(f"Runs folder: `{runs_dir()}`")
        alive = live_runs(states)
        st.fragment(run_every=POLL_S if alive else IDLE_POLL_S)(follow_runs)(states, alive)
