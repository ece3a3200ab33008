"""What every page shares: the runs folder, the sidebar's run picker, cached data access, error display.

Not a page itself (app.py's st.navigation lists the pages). No tensor math here either: the
cached functions call simclr_core and return arrays ready to plot or show.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import streamlit as st

from simclr_core import data
from simclr_core.embeddings import Embeddings, embed_split
from simclr_core.errors import UserError
from simclr_core.hardware import describe, resolve_device
from simclr_core.runs import RunDir, list_runs



def runs_dir() -> Path:
    """The folder of run folders: $SIMCLR_RUNS_DIR, else ./checkpoints."""
    return Path(os.environ.get("SIMCLR_RUNS_DIR", "checkpoints"))

# Material icons (rendered by Streamlit's markdown, no emoji font needed), for captions and headers.
STATE_ICONS = {"running": ":material/play_circle:", "starting": ":material/hourglass_top:",
               "finished": ":material/check_circle:", "stopped": ":material/pause_circle:",
               "failed": ":material/error:", "died": ":material/warning:"}


@st.cache_resource
def device_name() -> str:
    """The device training would use by default: the GPU's name, or the CPU."""
    return describe(resolve_device("auto"))


def run_names() -> list[str]:
    """Run folder names, newest first."""
    return [r.name for r in list_runs(runs_dir())]


def sidebar() -> None:
    """The shared sidebar: current run picker and the device."""
    with st.sidebar:
        names = run_names()
        if names:
            current = st.session_state.get("run")
            st.selectbox("Run", names, index=names.index(current) if current in names else 0, key="run",
                         format_func=lambda n: f"{n} ({RunDir(runs_dir() / n).status().get('state', 'unknown')})")
        else:
            st.caption("No runs yet: start one on the Train page.")
        st.caption(f"Device: **{device_name()}**")
        st.caption(f"Runs folder: `{runs_dir()}`")


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
def user_errors():
    """Show a UserError as an error box (never a traceback) and stop the page there."""
    try:
        yield
    except UserError as e:
        st.error(str(e), icon=":material/error:")
        st.stop()


def checkpoint_key(run: RunDir) -> str:
    """Changes whenever the run writes a new last.pt: part of every cache key derived from weights."""
    try:
        st_ = run.last_ckpt.stat()
        return f"{st_.st_size}:{st_.st_mtime_ns}"
    except OSError:
        return "none"


@st.cache_resource(show_spinner=False, max_entries=8)
def images_of(dataset: str, split: str, data_path: str | None, data_dir: str, image_size: int | None) -> data.ImageSet:
    """A dataset split as uint8 images (memory-mapped from the decode cache)."""
    return data.load_split(dataset, split, path=data_path, data_dir=data_dir, image_size=image_size)


def run_images(run: RunDir, split: str) -> data.ImageSet:
    """A split of the run's own dataset."""
    d = run.config().data
    return images_of(d.dataset, split, d.data_path, d.data_dir, d.image_size)


@st.cache_data(show_spinner=False, max_entries=16)
def embeddings_of(run_path: str, split: str, feature: str, ckpt_key: str, random_init: bool = False,
                  _progress=None) -> Embeddings:
    """Embeddings of a split for the run's last checkpoint (disk-cached by simclr_core too).

    ``ckpt_key`` (from :func:`checkpoint_key`) only keys the cache; ``_progress(done, total)``
    is called while embedding and is not part of the key.
    """
    del ckpt_key
    return embed_split(RunDir(run_path), split, feature, random_init=random_init, progress=_progress)


def run_embeddings(run: RunDir, split: str, feature: str, random_init: bool = False) -> Embeddings:
    """:func:`embeddings_of` for the run's last checkpoint, with a progress bar while it computes.

    The bar is drawn by ``st.progress`` calls made inside the cached function, into a slot made
    here: on a cache hit Streamlit replays them into the same slot, which is then cleared.
    """
    label = f"Embedding {split} ({'random init' if random_init else 'trained'}, {feature})"
    slot = st.empty()
    with slot:
        emb = embeddings_of(str(run.path), split, feature, checkpoint_key(run), random_init,
                            _progress=lambda done, total: st.progress(done / max(total, 1),
                                                                      text=f"{label}: {done}/{total}"))
    slot.empty()
    return emb


def to_hwc(images: np.ndarray) -> list[np.ndarray]:
    """(N, 3, H, W) uint8 -> list of (H, W, 3) for st.image."""
    return [np.ascontiguousarray(im.transpose(1, 2, 0)) for im in images]
