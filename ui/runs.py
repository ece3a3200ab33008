"""The runs as the pages see them: the runs folder, their states, the picked run, and the checkpoint
the explorer is pinned to."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from simclr_core import embeddings
from simclr_core.hardware import describe, resolve_device
from simclr_core.runs import launch, manage
from simclr_core.runs.rundir import RunDir, default_runs_dir, list_runs


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
