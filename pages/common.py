"""What every page shares: the runs folder, the sidebar's run picker, cached data access, error display.

Not a page itself (app.py's st.navigation lists the pages). No tensor math here either: the
cached functions call simclr_core and return arrays ready to plot or show.
"""

from __future__ import annotations

import json
import os
import runpy
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image, ImageDraw

from simclr_core import data, embeddings, jobs, launch, manage, precheck
from simclr_core.config import widget_spec
from simclr_core.embeddings import Embeddings, load_cached
from simclr_core.errors import UserError
from simclr_core.hardware import describe, resolve_device
from simclr_core.neighbours import NeighbourIndex
from simclr_core.preview import to_uint8_hwc
from simclr_core.runs import RunDir, default_runs_dir, list_runs
from simclr_core.thumbnails import ThumbnailStore

APP_DIR = Path(__file__).resolve().parents[1]
# Streamlit serves <app dir>/static/ at app/static/ (server.enableStaticServing, .streamlit/config.toml);
# the explorer's thumbnails live there, so a browser fetches each image once and keeps it in its cache.
THUMBS_DIR = APP_DIR / "static" / "thumbs"
THUMBS_URL = "app/static/thumbs"


def routed() -> None:
    """Make a deep link work on a freshly started server: call it first on every page.

    Until some session has run app.py's st.navigation, Streamlit treats the pages/ folder as an
    old-style multipage app and runs a linked page (``/embeddings``) on its own: no router, no
    shared sidebar, and every file of pages/ listed as a page. Run the router instead; it then
    runs this page, and from then on the server knows the app's own navigation.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        runpy.run_path(str(APP_DIR / "app.py"), run_name="__main__")
        st.stop()


def thumbnails(result: dict[str, Any]) -> str | None:
    """The hover card's image URLs of a map job's result ("prefix|ext", pages.mapview.tooltip), or None without
    them; marks the set as in use, so the store's cap evicts other sets first (simclr_core.thumbnails)."""
    if not result.get("thumbs"):
        return None
    ThumbnailStore(THUMBS_DIR).touch(result["thumbs"])
    return f"{THUMBS_URL}/{result['thumbs']}/|{result['thumbs_ext']}"


def runs_dir() -> Path:
    """The folder of run folders: $SIMCLR_RUNS_DIR, else ./checkpoints."""
    return default_runs_dir()


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


# Material icons (rendered by Streamlit's markdown, no emoji font needed), for captions and headers.
STATE_ICONS = {
    "running": ":material/play_circle:",
    "starting": ":material/hourglass_top:",
    "finished": ":material/check_circle:",
    "stopped": ":material/pause_circle:",
    "failed": ":material/error:",
    "died": ":material/warning:",
}


@st.cache_resource
def device_name() -> str:
    """The device training would use by default: the GPU's name, or the CPU."""
    return describe(resolve_device("auto"))


def run_names() -> list[str]:
    """Run folder names, newest first."""
    return [r.name for r in list_runs(runs_dir())]


ACTIVE_STATES = ("starting", "running")


def run_states() -> dict[str, str]:
    """Each run's state (newest first), as the picker and the run list show it; the check reaps a
    training process of this server that has ended, so it does not linger as "starting"."""
    states = {}
    for run in list_runs(runs_dir()):
        state = run.status().get("state", "unknown")
        if state in ACTIVE_STATES and not launch.is_active(run):
            state = run.status().get("state", "unknown")
        states[run.name] = state
    return states


def live_runs(states: dict[str, str]) -> frozenset[str]:
    """The runs whose training process is alive: also a run that has just said "stopped" or "finished" and is
    still closing its files (its page still shows Stop until then)."""
    return frozenset(n for n, s in states.items() if s in ACTIVE_STATES or launch.is_active(RunDir(runs_dir() / n)))


def shown_runs(states: dict[str, str]) -> list[str]:
    """The names the picker offers: all, or without failed runs when the sidebar's toggle hides them
    (the picked run stays, whatever its state)."""
    if not st.session_state.get("hide_failed"):
        return list(states)
    picked = st.session_state.get("run")
    return [n for n, s in states.items() if not manage.is_failed(s) or n == picked]


# ---- widgets that keep their values -------------------------------------------------------------------
#
# Streamlit forgets a widget's value at the end of any run that does not draw it: a page that stops to
# wait for a background job, a visit to another page. A kept widget's value is copied here on every run,
# put back when Streamlit dropped it, and (with a ``url`` name) written to the page's address, so a
# reload or a shared link opens the page as it was.

KEPT = "_kept"  # session key: {widget key: last value}
DRAWN = "_drawn"  # session key: the kept widgets drawn by the last run


def keep_widgets() -> None:
    """Call first on every run (app.py): record each kept widget's value, and give it back to any that the last
    run did not draw. Both the server and the browser forget such a widget (a page that stopped to wait for a
    job, a visit to another page); the browser would draw it again at its default (a slider at its minimum)
    and send that back, unless the value is set anew, which tells the browser to show it."""
    kept = st.session_state.setdefault(KEPT, {})
    drawn = st.session_state.get(DRAWN, set())
    st.session_state[DRAWN] = set()
    for key, value in kept.items():
        if key in st.session_state and key in drawn:
            kept[key] = st.session_state[key]
        else:
            st.session_state[key] = st.session_state.get(key, value)


def _from_url(text: str, default: Any) -> Any:
    """A query parameter as a value of ``default``'s type (JSON but for text); ``default`` when it is not one."""
    if isinstance(default, str):
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return default
    if isinstance(default, tuple) and isinstance(value, list):  # a range slider's (low, high)
        value = tuple(value)
    if default is None or isinstance(value, type(default)) and isinstance(value, bool) == isinstance(default, bool):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return default


def keep(key: str, default: Any, ok: Callable[[Any], bool] = lambda v: True, url: str | None = None) -> Any:
    """Make the widget ``key`` keep its value (through job waits, page visits and, with ``url``, reloads).

    Call it just before the widget, which then takes no default argument of its own (``value=``,
    ``index=``): its first value is ``default``, or the address's ``?<url>=...`` on a new session. A
    value the widget no longer offers (``ok`` false: a class of another split) falls back to
    ``default``. While the value differs from ``default``, the address carries it. Returns the value.
    """
    state = st.session_state
    kept = state.setdefault(KEPT, {})
    if key not in state:
        if key in kept:
            state[key] = kept[key]
        elif url and url in st.query_params:
            state[key] = _from_url(st.query_params[url], default)
    try:
        fine = key in state and ok(state[key])
    except (TypeError, ValueError):
        fine = False
    if not fine:
        state[key] = default
    kept[key] = value = state[key]
    state.setdefault(DRAWN, set()).add(key)
    if url:
        text = value if isinstance(value, str) else json.dumps(value)
        if value == default:
            st.query_params.pop(url, None)
        elif st.query_params.get(url) != text:
            st.query_params[url] = text
    return value


POLL_S = 2.0  # how often a page checks its runs' files while a training process is alive
IDLE_POLL_S = 15.0  # and while none is: a run started from the command line shows up by itself
REDRAW_S = 5.0  # a page redraws for new metrics at most this often (a state change: at the next poll)
WATCH = "_watch"  # session key: (paths, their stamps when the page drew them)


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


def watch(*paths: Path) -> None:
    """Draw the page again when one of these files changes, while a run's process is alive (the sidebar's
    poll), at most every :data:`REDRAW_S`: the Train page watches its run's status, metrics and log."""
    st.session_state[WATCH] = (paths, _stamps(paths), time.monotonic())


def _stamps(paths: tuple[Path, ...]) -> tuple[tuple[int, int] | None, ...]:
    out = []
    for path in paths:
        try:
            stat = path.stat()
            out.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def follow_runs(states: dict[str, str], alive: frozenset[str]) -> None:
    """The poll: a stat of each watched file, a read of each run's status and a look at its process; the whole
    page is drawn again only when one of them changed since the page was drawn."""
    if not fragment_rerun():
        return
    watched = st.session_state.get(WATCH)
    now = run_states()
    if now != states or live_runs(now) != alive:
        st.rerun()
    # new metrics: a full redraw costs ~0.1 s of the server's CPU, so not for every log step of a fast run
    if watched and time.monotonic() - watched[2] >= REDRAW_S and _stamps(watched[0]) != watched[1]:
        st.rerun()


def fragment_rerun() -> bool:
    """True when this is a fragment's own rerun (not the full run that drew the page a moment ago)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return bool(ctx and ctx.fragment_ids_this_run)


def current_run() -> RunDir | None:
    """The run picked in the sidebar, or None when there are none."""
    name = st.session_state.get("run")
    names = run_names()
    if name not in names:
        name = names[0] if names else None
    return RunDir(runs_dir() / name) if name else None


def run_with_checkpoint(no_runs: str, no_checkpoint: str) -> RunDir:
    """The sidebar's run once it has a checkpoint; otherwise say why and stop the page.

    Args:
        no_runs: shown (with a link to Train) when there is no run at all.
        no_checkpoint: shown when the run has not finished an epoch; ``{name}`` is the run's name.
    """
    run = current_run()
    if run is None:
        st.info(no_runs, icon=":material/info:")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
        st.stop()
    if not run.last_ckpt.is_file():
        st.info(no_checkpoint.format(name=run.name), icon=":material/hourglass:")
        st.stop()
    return run


@contextmanager
def user_errors(labels: dict[str, str] | None = None):
    """Show a UserError as an error box (never a traceback) and stop the page there.

    ``labels`` maps config fields to the page's labels: the message names those fields as the page
    does (``--data-path`` -> **Image folder**), not by their command-line flags.
    """
    try:
        yield
    except UserError as e:
        st.error(precheck.for_form(str(e), labels) if labels else str(e), icon=":material/error:")
        st.stop()


# ---- widgets of config fields: label, help, range and step from the field table (simclr_core.config) ----


def setting_slider(where: Any, section: str, names: tuple[str, ...], key: str, label: str | None = None) -> None:
    """A slider for one config field, or a range slider for a (low, high) pair of fields, with the
    field's label, help, ends and step, so every page slides a setting over the same grid."""
    specs = [widget_spec(section, n) for n in names]
    s = specs[0]
    where.slider(label or s.label, s.min, s.max, step=s.step, key=key, help=" / ".join(x.help for x in specs))


def setting_input(where: Any, section: str, name: str, key: str) -> None:
    """A number input for one config field, blank ("auto") allowed where the field may be None.

    No min / max: a wrong value is kept, and the page explains it with the library's own check
    (a bounded input would clamp it silently, or say why only in a tooltip).
    """
    s = widget_spec(section, name)
    where.number_input(
        s.label, step=s.step, format=s.format, placeholder="auto" if s.optional else None, key=key, help=s.help
    )


def checkpoint_key(run: RunDir) -> str:
    """Changes whenever the run writes a new last.pt: part of every cache key derived from weights."""
    return embeddings.checkpoint_key(run.last_ckpt)


# ---- the explorer's pinned checkpoint --------------------------------------------------------------------

PINS = "pins"  # session key: {run name: key of the checkpoint the explorer pages show}


def pinned_key(run: RunDir) -> str:
    """The checkpoint the explorer pages (Embeddings, Search) show for ``run``: the one they opened with, until
    the user moves on (:func:`newer_checkpoint`). A training run writes a checkpoint every epoch; following
    each would recompute the map between a click and its neighbours."""
    return st.session_state.setdefault(PINS, {}).setdefault(run.name, checkpoint_key(run))


@st.cache_data(show_spinner=False, max_entries=64)
def _label(run_path: str, key: str) -> str:
    info = embeddings.checkpoint_info(RunDir(run_path), key)
    return info.label() if info else "an earlier checkpoint"


def checkpoint_label(run: RunDir, key: str | None = None) -> str:
    """ "epoch 5" (or "epoch 3, step 12 of 50" for a stop inside an epoch) of the pinned checkpoint, or ``key``'s."""
    return _label(str(run.path), key or pinned_key(run))


def newer_checkpoint(run: RunDir) -> None:
    """Say which checkpoint the page shows; when the run has written a newer one, a banner and a button to move
    to it. A small fragment checks for one every 3 s while the run trains: the page itself is not redrawn."""

    def move(key: str) -> None:
        st.session_state.setdefault(PINS, {})[run.name] = key

    @st.fragment(run_every=3.0 if launch.is_active(run) else None)
    def banner() -> None:
        pinned, newest = pinned_key(run), checkpoint_key(run)
        if newest in ("none", pinned):
            st.caption(f"Checkpoint: **{checkpoint_label(run)}** (the run's newest).")
            return
        c1, c2 = st.columns([5, 1], vertical_alignment="center")
        c1.info(
            f"A newer checkpoint (**{checkpoint_label(run, newest)}**) is ready. This page stays on "
            f"**{checkpoint_label(run)}** until you move, so nothing changes under you.",
            icon=":material/update:",
        )
        if c2.button("Move to it", key="pin_move", on_click=move, args=(newest,), icon=":material/arrow_forward:"):
            st.rerun()  # the whole page, at the new checkpoint

    banner()


@st.cache_data(ttl=10, show_spinner=False, max_entries=32)
def folder_summary(path: str) -> precheck.FolderSummary:
    """What an image folder holds (splits, images, classes), from a scan of its names; a UserError when the
    folder is outside the allowed roots ($SIMCLR_STUDIO_ROOTS), missing, a file, or empty. Kept ten
    seconds, so typing in other fields does not rescan it."""
    return precheck.describe_folder(path, label="--data-path")


@st.cache_data(ttl=60, show_spinner=False)
def host_reachable(host: str) -> bool:
    """Whether a dataset's download server answers (checked at most once a minute)."""
    return precheck.reachable(host)


def allowed_folder(path: str) -> str:
    """A folder typed into a page's "Image folder" field, resolved, if it lies under the roots the server
    allows ($SIMCLR_STUDIO_ROOTS), exists and holds images; else the page shows why and stops there,
    before anything is read, shown or cached."""
    with user_errors({"data_path": widget_spec("data", "data_path").label}):
        return str(folder_summary(path).root)


@st.cache_resource(show_spinner=False, max_entries=8)
def images_of(dataset: str, split: str, data_path: str | None, data_dir: str, image_size: int | None) -> data.ImageSet:
    """A dataset split as uint8 images (memory-mapped from the decode cache)."""
    return data.load_split(dataset, split, path=data_path, data_dir=data_dir, image_size=image_size)


def run_images(run: RunDir, split: str) -> data.ImageSet:
    """A split of the run's own dataset."""
    d = run.config().data
    return images_of(d.dataset, split, d.data_path, d.data_dir, d.image_size)


@st.cache_resource(show_spinner=False)
def start_worker() -> int:
    """Start the background worker with the server (it compiles UMAP at once, so the first map is quick)."""
    if os.environ.get("SIMCLR_JOBS") == "inline":
        return 0
    return jobs.ensure_worker(jobs.jobs_dir(runs_dir()))


WAITS = "_job_waits"  # session key: {job id: [first asked, first shown]} (time.time())


def job_result(kind: str, spec: dict[str, Any], what: str, slot: str | None = None) -> dict[str, Any]:
    """The result of a background job (:mod:`simclr_core.jobs`), submitted if needed; until it is done the
    page shows its progress (:func:`background`) and stops here. :func:`waited` then says how long the user
    waited for it."""
    result = background(kind, spec, what, slot)
    if result is None:
        st.stop()
    return result


def background(
    kind: str, spec: dict[str, Any], what: str, slot: str | None = None, submit: bool = True
) -> dict[str, Any] | None:
    """A background job's result when it is done; else None, after drawing its progress (and the jobs ahead of
    it) in a fragment that polls the job's file every second and draws the whole page again when it ends. A
    failed job shows its message and a *Try again* button. ``submit`` False only looks for the job (None,
    drawing nothing, when nobody asked for it yet)."""
    directory = jobs.jobs_dir(runs_dir())
    if submit:
        with user_errors():
            jid = jobs.submit(directory, kind, spec, slot=slot, title=what)
    else:
        jid = jobs.job_id(kind, spec)
    waits = st.session_state.setdefault(WAITS, {})
    job = jobs.status(directory, jid)
    if job["state"] == "missing":
        return None
    asked = waits.setdefault(jid, [time.time(), None])
    if job["state"] == "done":
        asked[1] = asked[1] or time.time()
        st.session_state["_last_job"] = jid
        return job["result"]
    if job["state"] != "failed":

        @st.fragment(run_every=1.0)
        def wait() -> None:
            now = jobs.status(directory, jid)
            if now["state"] not in jobs.ACTIVE:
                st.rerun()  # done or failed: draw the whole page again
            job_progress(now, what, jobs.ahead(directory, jid), since=asked[0])

        wait()
        return None
    waits.pop(jid, None)
    st.error(job.get("message") or f"{what} failed", icon=":material/error:")
    if st.button("Try again", key=f"retry-{jid}", icon=":material/refresh:"):
        jobs.submit(directory, kind, spec, slot=slot, retry=True, title=what)
        st.rerun()
    return None


def waited() -> float | None:
    """Seconds the user waited for the last job :func:`job_result` returned, from the first time the page asked
    for it to the first time it was ready (None: it was ready at once, computed earlier)."""
    span = st.session_state.get(WAITS, {}).get(st.session_state.get("_last_job"))
    if not span or span[1] is None or span[1] - span[0] < 0.5:
        return None
    return span[1] - span[0]


def job_progress(job: dict[str, Any], what: str, ahead: list[dict[str, Any]] | None = None, since: float = 0) -> None:
    """A background job's progress bar (stage, done/total), what the worker does first, how long the user has
    waited so far, and why the user may leave the page."""
    done, total = int(job.get("done") or 0), int(job.get("total") or 0)
    if ahead:
        first = ahead[0]
        d, t = int(first.get("done") or 0), int(first.get("total") or 0)
        now = f"{first.get('title') or first.get('kind')}: {first.get('stage') or 'starting'}"
        now += f" ({d:,}/{t:,})" if t > 1 else ""
        queued = f"; {len(ahead) - 1} more before yours" if len(ahead) > 1 else ""
        st.progress(
            min(d / t, 1.0) if t else 0.0, text=f"{what}: waiting for the worker, which is busy with {now}{queued}"
        )
    else:
        stage = job.get("stage") or "waiting"
        counted = total > 1 and f"{done}/{total}" not in stage  # "linear probe epoch 37/100" counts itself
        text = f"{what}: {stage}" + (f" ({done:,}/{total:,})" if counted else "")
        st.progress(min(done / total, 1.0) if total else 0.0, text=text)
    waiting = f"Waiting {time.time() - since:.0f} s so far. " if since else ""
    st.caption(waiting + "This runs in a background process: you can leave the page or reload it, the work goes on.")


def embeddings_spec(run: RunDir, split: str, feature: str, random_init: bool = False) -> dict[str, Any]:
    """The job spec of one split's embeddings, at the pinned checkpoint (:func:`pinned_key`)."""
    return {
        "run": str(run.path),
        "split": split,
        "feature": feature,
        "random_init": random_init,
        "ckpt": "random" if random_init else pinned_key(run),
    }


def run_embeddings_file(run: RunDir, split: str, feature: str, random_init: bool = False) -> str:
    """The file of a split's embeddings for the pinned checkpoint (or random init), computed in the
    background; the page waits (showing progress) until it exists."""
    label = f"Embedding the {split} split of run {run.name} ({'random init' if random_init else 'trained'}, {feature})"
    return job_result("embed", embeddings_spec(run, split, feature, random_init), label)["embeddings"]


@st.cache_data(show_spinner=False, max_entries=16)
def load_embeddings(path: str) -> Embeddings:
    """An embeddings file a job wrote (named by its checkpoint, so a path never changes content)."""
    with user_errors():
        emb = load_cached(path)  # a damaged file is deleted, so the embedding job runs again
        if emb is None:
            raise UserError(
                f"the embeddings file {Path(path).name} was damaged and has been removed; reload the "
                "page to compute it again"
            )
        emb.classes = [data.printable(c) for c in emb.classes]  # a folder name that is not UTF-8, shown as \xff
        return emb


@st.cache_resource(show_spinner=False, max_entries=8)
def neighbour_index(path: str) -> NeighbourIndex:
    """A search index over an embeddings file, built once per file and kept for every rerun and session."""
    return NeighbourIndex(load_embeddings(path).embeddings)


def to_hwc(images: np.ndarray) -> list[np.ndarray]:
    """(N, 3, H, W) uint8 -> list of (H, W, 3) for st.image."""
    return list(to_uint8_hwc(images))
