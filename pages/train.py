"""Train: start a SimCLR (or MoCo v2 / BYOL) run from a form, watch it live, stop or resume it.

Training runs in a process of its own (simclr_core.runs.launch), so it outlives page reloads and closed
browsers; this page only fills a TrainConfig, starts the process and reads the run folder's files.
The page is its layout: the new-run form is ui.run_form, the current run's view ui.run_view, and the
list of runs with their management ui.run_list.
"""

from __future__ import annotations

import streamlit as st

from simclr_core.runs import launch
from simclr_core.runs.rundir import RunDir
from ui.live import watch
from ui.run_form import init_form, new_run_form
from ui.run_list import manage_runs, run_list
from ui.run_view import show_run
from ui.runs import ACTIVE_STATES, current_run, run_states, runs_dir
from ui.shell import routed

routed()

st.title("Train")
st.caption(
    "Pre-train an encoder with SimCLR, MoCo v2 or BYOL. Each run trains in a background process that "
    "keeps going when you leave this page or close the browser; its folder holds the checkpoints, metrics "
    "and log."
)
init_form()
current = current_run()
started = st.session_state.get("tf_started")
if started and current is not None and current.name == started and launch.is_active(current):
    st.success(
        f"Started run **{started}**. Its live progress is below; the other pages can use it once it "
        "has saved its first checkpoint (end of epoch 1).",
        icon=":material/rocket_launch:",
    )
else:
    st.session_state.pop("tf_started", None)  # shown while the run it names is starting or running
if current is None:
    st.info(
        "No runs yet. Pick the **Quick CPU demo** preset below and press **Launch**: it pre-trains a small "
        "ResNet on the bundled digits, offline, on a CPU (**Estimate** measures how long on this machine). "
        "Then explore it on the other pages.",
        icon=":material/lightbulb:",
    )
else:
    show_run(current)
    st.subheader("All runs")
    states = run_states()
    run_list(states)
    # drawn again when the run's files or another active run's status change (the sidebar polls)
    others = [RunDir(runs_dir() / n).status_path for n, s in states.items() if s in ACTIVE_STATES]
    watch(current.status_path, current.metrics_path, current.log_path, *others)
manage_runs(current)
new_run_form()
