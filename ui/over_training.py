"""The Embeddings page's "Over training" view: the run's probe frames (the same few hundred images
embedded at every monitor epoch, simclr_core.explorer.probe), projected by the background worker and
aligned and morphed from frame to frame on the WebGL map (ui.scatter), with an epoch slider and a play
button, beside that epoch's kNN accuracy and RankMe. Colours: class, the probe's own kNN right / wrong at
each epoch, or k-means clusters; a class highlight dims the others; hover shows the image and its file.
While the run trains, new frames appear as they are written.
"""

from __future__ import annotations

import os

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from simclr_core.data import datasets as data
from simclr_core.explorer import probe, scores
from simclr_core.explorer.compute import load_trajectory
from simclr_core.explorer.specs import TrajectorySpec
from simclr_core.runs.launch import is_active
from simclr_core.runs.rundir import RunDir
from ui.cached import run_images, thumbnails
from ui.explorer_map import COLOURS, METHOD_NAMES, session_slot, show_legend
from ui.jobs import job_result
from ui.map_points import colour_points, highlighted
from ui.scatter import column, rgba, scatter_map
from ui.shell import THUMBS_DIR
from ui.widgets import keep


@st.cache_data(show_spinner=False, max_entries=4)
def trajectory_of(path: str, stamp: float) -> tuple[np.ndarray, np.ndarray]:
    del stamp  # the file grows while a run trains: its mtime is part of the key
    epochs, coords, _ = load_trajectory(path)
    return epochs, coords


@st.cache_data(show_spinner=False, max_entries=4)
def probe_predictions(run_path: str, rows: int, epochs: tuple[int, ...], labels: tuple[int, ...]) -> np.ndarray:
    """(E, N) kNN class of each probe image at each frame (``epochs`` keys the cache)."""
    del epochs
    return probe.frame_predictions(probe.read_frames(run_path, rows), np.asarray(labels, np.int64))


@st.cache_data(show_spinner=False, max_entries=4)
def probe_clusters(run_path: str, rows: int, last_epoch: int) -> np.ndarray:
    """k-means (k = 10) of the newest complete probe frame; ``last_epoch`` keys the cache."""
    del last_epoch
    frames = probe.read_frames(run_path, rows)
    return scores.kmeans_clusters(frames[-1][1], min(10, rows)) if frames else np.zeros(rows, np.int64)


def over_training(run: RunDir) -> None:
    """The probe frames of ``run`` as an animated map, or why it has none (yet)."""
    chosen = probe.read_subset(run.path)
    epochs_on_disk = probe.frame_epochs(run.path)
    active = is_active(run)
    if chosen is None or not epochs_on_disk:
        why = (
            "it was trained with the probe off (--no-probe) or without a monitor (--knn-every 0)"
            if chosen is None and not active
            else "it has not finished its first monitor epoch yet"
        )
        st.info(
            f"Run **{run.name}** has no probe frames: {why}. Every run with the monitor on records "
            f"{run.config().run.probe_size:,} images at each monitor epoch.",
            icon=":material/hourglass:",
        )
        if active:
            st.fragment(run_every=3)(lambda: st.rerun() if probe.frame_epochs(run.path) else None)()
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    keep("traj_method", "umap", lambda v: v in METHOD_NAMES, url="traj_projection")
    method = c1.selectbox(
        "Projection",
        list(METHOD_NAMES),
        format_func=METHOD_NAMES.get,
        key="traj_method",
        help="each epoch's UMAP / t-SNE starts from the previous epoch's layout, and every "
        "frame is rotated onto the previous one (Procrustes), so points move smoothly",
    )
    labelled = bool(chosen.classes) and bool((chosen.labels >= 0).any())
    classes = [data.printable(c) for c in chosen.classes]
    modes = ["class", "correct", "cluster"] if labelled else ["cluster"]
    keep("traj_colour", modes[0], lambda v: v in modes, url="traj_colour")
    colour = c2.selectbox(
        "Colour by",
        modes,
        format_func=COLOURS.get,
        key="traj_colour",
        help="kNN right / wrong: each probe image's kNN vote among the other probe images, at that epoch",
    )
    keep("traj_classes", [], lambda v: set(v) <= set(classes), url="traj_classes")
    chosen_classes = c3.multiselect(
        "Highlight classes",
        classes,
        key="traj_classes",
        placeholder="all classes",
        disabled=not labelled,
        help="the other points are dimmed",
    )
    spec = TrajectorySpec(
        run=str(run.path), method=method, dims=2, params={}, thumbs=str(THUMBS_DIR), frames=epochs_on_disk
    )
    what = f"Projecting the probe frames of run {run.name} ({METHOD_NAMES[method]})"
    result = job_result(spec, what, slot=session_slot("trajectory"))
    path = result["trajectory"]
    epochs, coords = trajectory_of(path, os.stat(path).st_mtime)
    metrics = {int(m["epoch"]): m for m in run.metrics("epoch")}
    thumbs = thumbnails(result)
    every = coords.reshape(-1, coords.shape[-1])[:, :2]
    frames_box = [*np.percentile(every, 0.5, axis=0), *np.percentile(every, 99.5, axis=0)]  # all frames in view
    epoch_list = [int(e) for e in epochs]
    shown = highlighted(chosen.labels, classes, chosen_classes, {}, [])
    images = run_images(run, chosen.split)
    paths = "\n".join(data.printable(images.paths[int(r)]) for r in chosen.rows) if images.paths is not None else None
    # clusters of the newest frame: where the points end up
    cl = probe_clusters(str(run.path), len(chosen.rows), max(epochs_on_disk)) if colour == "cluster" else None
    preds = None
    if colour == "correct":
        preds = probe_predictions(str(run.path), len(chosen.rows), tuple(epoch_list), tuple(chosen.labels.tolist()))
    keep("traj_epoch", epoch_list[-1], lambda v: v in epoch_list, url="epoch")

    def toggle() -> None:
        st.session_state["traj_playing"] = not st.session_state.get("traj_playing", False)
        if st.session_state["traj_playing"] and st.session_state["traj_epoch"] == epoch_list[-1]:
            st.session_state["traj_epoch"] = epoch_list[0]  # play from the start

    playing = bool(st.session_state.get("traj_playing")) and len(epoch_list) > 1

    @st.fragment(run_every=3.0 if active else None)
    def new_frames() -> None:
        """While the run trains: a look at the probe folder (no redraw), and the whole view once a frame is added."""
        if probe.frame_epochs(run.path) != epochs_on_disk:
            st.rerun()  # project the new frames (the worker adds only those)

    new_frames()

    @st.fragment(run_every=0.8 if playing else None)
    def frame() -> None:
        if st.session_state.get("traj_playing"):
            i = epoch_list.index(st.session_state["traj_epoch"])
            if i + 1 < len(epoch_list):
                st.session_state["traj_epoch"] = epoch_list[i + 1]
            else:
                st.session_state["traj_playing"] = False
        b1, b2 = st.columns([1, 8], vertical_alignment="bottom")
        b1.button(
            "Pause" if st.session_state.get("traj_playing") else "Play",
            key="traj_play",
            on_click=toggle,
            icon=":material/pause:" if st.session_state.get("traj_playing") else ":material/play_arrow:",
            disabled=len(epoch_list) < 2,
        )
        if len(epoch_list) > 1:
            b2.select_slider("Epoch", options=epoch_list, key="traj_epoch")
        epoch = st.session_state["traj_epoch"]
        at = epoch_list.index(epoch)
        s = {"pred": preds[at]} if preds is not None else {}
        colouring = colour_points(colour, chosen.labels, classes, s, np.arange(len(chosen.rows)), cl, None, shown)
        left, right = st.columns([3, 1])
        with left:
            label = {"url": column(chosen.labels, "i16"), "dtype": "int16", "names": classes}
            cols = {"label": label} if labelled else {}
            scatter_map(
                "traj_map",
                column(coords[at][:, :2], "f32"),
                column(rgba(colouring.rgb, colouring.alpha), "u8"),
                rows=column(chosen.rows, "i32"),
                columns=cols,
                paths=column(paths, "txt") if paths is not None else None,
                thumbs=thumbs,
                point_px=5.0,
                view_key=f"traj|{path}",  # one view for every frame: points move, the camera stays
                bounds=frames_box,
                transition_ms=600,
                height=600,
            )
            show_legend(colouring.legend)
        with right:
            epoch_metrics(run, epoch, epoch_list, metrics)
        st.caption(
            f"{len(chosen.rows):,} probe images of the {chosen.split} split · {len(epoch_list)} frames"
            + (" · the run is training: new frames appear as it goes" if active else "")
        )

    frame()


def epoch_metrics(run: RunDir, epoch: int, epoch_list: list[int], metrics: dict[int, dict]) -> None:
    """Beside the frame: its epoch, kNN top-1 and RankMe, and the kNN curve with this epoch marked."""
    m = metrics.get(epoch, {})
    st.metric("Epoch", f"{epoch} / {run.config().optim.epochs}")
    st.metric(
        "kNN top-1",
        f"{m['knn_top1']:.2f}%" if "knn_top1" in m else "–",
        help="the online kNN monitor's accuracy after this epoch",
    )
    st.metric(
        "RankMe (h)",
        f"{m['rankme_h']:.1f}" if "rankme_h" in m else "–",
        help="effective rank of the probe's backbone embeddings (Garrido et al. 2023)",
    )
    knn = [(e, metrics[e]["knn_top1"]) for e in epoch_list if "knn_top1" in metrics.get(e, {})]
    if knn:
        fig = go.Figure(go.Scatter(x=[e for e, _ in knn], y=[v for _, v in knn], mode="lines"))
        if "knn_top1" in m:
            fig.add_trace(go.Scatter(x=[epoch], y=[m["knn_top1"]], mode="markers", marker=dict(size=10)))
        fig.update_layout(
            height=220,
            showlegend=False,
            margin=dict(l=10, r=10, t=30, b=10),
            title="kNN top-1 (%)",
            xaxis_title="epoch",
        )
        st.plotly_chart(fig, key="traj_knn")
