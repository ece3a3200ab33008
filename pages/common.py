"""What every page shares: the runs folder, the sidebar's run picker, cached data access, error display.

Not a page itself (app.py's st.navigation lists the pages). No tensor math here either: the
cached functions call simclr_core and return arrays ready to plot or show.
"""

from __future__ import annotations

import os
import runpy
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from simclr_core import data, embeddings, jobs, launch, manage, precheck
from simclr_core.config import widget_spec
from simclr_core.embeddings import Embeddings, load_cached
from simclr_core.errors import UserError
from simclr_core.hardware import describe, resolve_device
from simclr_core.neighbours import NeighbourIndex
from simclr_core.preview import to_uint8_hwc
from simclr_core.runs import RunDir, default_runs_dir, list_runs

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


def runs_dir() -> Path:
    """The folder of run folders: $SIMCLR_RUNS_DIR, else ./checkpoints."""
    return default_runs_dir()


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


def shown_runs(states: dict[str, str]) -> list[str]:
    """The names the picker offers: all, or without failed runs when the sidebar's toggle hides them
    (the picked run stays, whatever its state)."""
    if not st.session_state.get("hide_failed"):
        return list(states)
    picked = st.session_state.get("run")
    return [n for n, s in states.items() if not manage.is_failed(s) or n == picked]


def remember(*keys: str) -> None:
    """Keep these widgets' values while the user is on other pages (Streamlit forgets the state of a
    widget that a run does not draw): call it before the widgets, on every run that draws them."""
    kept = st.session_state.setdefault("_kept", {})
    for key in keys:
        if key in st.session_state:
            kept[key] = st.session_state[key]
        elif key in kept:
            st.session_state[key] = kept[key]


def sidebar(pages: list[Any]) -> None:
    """The shared sidebar: the app's pages, the current run picker and the device. A ``?run=NAME``
    link picks that run.

    While a run is starting or running, the sidebar checks every two seconds whether any run's
    state changed (or a run came or went), and then draws the whole page again: the picker, the
    run list, the Train page's banner and buttons all follow the runs without a reload.
    """
    start_worker()
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
        active = any(s in ACTIVE_STATES for s in states.values())
        st.fragment(run_every=2.0 if active else None)(follow_runs)(states)


def follow_runs(states: dict[str, str]) -> None:
    """Draw the page again when a run's state changed since it was drawn (polled while a run is active)."""
    if fragment_rerun() and run_states() != states:
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


def job_result(kind: str, spec: dict[str, Any], what: str, slot: str | None = None) -> dict[str, Any]:
    """The result of a background job (:mod:`simclr_core.jobs`), submitted if needed; until it is done
    the page shows its progress and stops here, polling the job's file every second."""
    directory = jobs.jobs_dir(runs_dir())
    with user_errors():
        jid = jobs.submit(directory, kind, spec, slot=slot)
    job = jobs.status(directory, jid)
    if job["state"] == "done":
        return job["result"]
    if job["state"] == "failed":
        st.error(job.get("message") or f"{what} failed", icon=":material/error:")
        if st.button("Try again", key=f"retry-{jid}", icon=":material/refresh:"):
            jobs.submit(directory, kind, spec, slot=slot, retry=True)
            st.rerun()
        st.stop()

    @st.fragment(run_every=1.0)
    def wait() -> None:
        now = jobs.status(directory, jid)
        if now["state"] not in jobs.ACTIVE:
            st.rerun()  # done or failed: draw the whole page again
        job_progress(now, what)

    wait()
    st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def job_progress(job: dict[str, Any], what: str) -> None:
    """A background job's progress bar (stage, done/total), and why the user may leave the page."""
    done, total = int(job.get("done") or 0), int(job.get("total") or 0)
    stage = job.get("stage") or "waiting"
    text = f"{what}: {stage}" + (f" ({done:,}/{total:,})" if total > 1 else "")
    st.progress(min(done / total, 1.0) if total else 0.0, text=text)
    st.caption("This runs in a background process: you can leave the page or reload it, the work goes on.")


def embeddings_spec(run: RunDir, split: str, feature: str, random_init: bool = False) -> dict[str, Any]:
    """The job spec of one split's embeddings; the checkpoint key makes a new checkpoint a new job."""
    return {
        "run": str(run.path),
        "split": split,
        "feature": feature,
        "random_init": random_init,
        "ckpt": "random" if random_init else checkpoint_key(run),
    }


def run_embeddings_file(run: RunDir, split: str, feature: str, random_init: bool = False) -> str:
    """The file of a split's embeddings for the run's last checkpoint (or random init), computed in the
    background; the page waits (showing progress) until it exists."""
    label = f"Embedding {split} ({'random init' if random_init else 'trained'}, {feature})"
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
        return emb


@st.cache_resource(show_spinner=False, max_entries=8)
def neighbour_index(path: str) -> NeighbourIndex:
    """A search index over an embeddings file, built once per file and kept for every rerun and session."""
    return NeighbourIndex(load_embeddings(path).embeddings)


def to_hwc(images: np.ndarray) -> list[np.ndarray]:
    """(N, 3, H, W) uint8 -> list of (H, W, 3) for st.image."""
    return list(to_uint8_hwc(images))
