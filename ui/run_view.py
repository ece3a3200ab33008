"""The Train page's view of one run: Stop / Resume, live progress and ETA, curves, label-free health, export.

It reads only the run folder's files (:class:`simclr_core.runs.rundir.RunDir`: status, metrics, log,
checkpoints), which the run's own process writes, so it shows the same whether the run was started
here, from the CLI or before a reload; the page draws it again when those files change. Stop and
Resume go through :mod:`simclr_core.runs.launch`; export files are written by the background worker.
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

# hardware as a module: a test patches simclr_core.hardware.gpu_count, which a name imported once would miss
from simclr_core import exporters, files, hardware
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.evaluation import label_free
from simclr_core.explorer import jobs
from simclr_core.explorer.specs import ExportSpec
from simclr_core.exporters import HOW_TO_LOAD
from simclr_core.methods import METHODS
from simclr_core.runs import launch, manage
from simclr_core.runs.progress import curves, eta
from simclr_core.runs.rundir import RunDir
from ui.jobs import background
from ui.run_form import GPUS_HELP, for_form
from ui.runs import STATE_ICONS, checkpoint_key, runs_dir

RESUME_MORE = 10  # default extra epochs when resuming a finished run


def run_config(run: RunDir) -> TrainConfig | None:
    """The run's config.json, or None when it cannot be read (the view then says so)."""
    try:
        return run.config()
    except UserError:
        return None


def controls(run: RunDir, active: bool, cfg: TrainConfig) -> None:
    """Stop while it runs; Resume (to a new total of epochs) once it is not running."""
    if active:
        if run.stop_requested():
            st.info("Stopping: the run saves a checkpoint and ends within one step.", icon=":material/pause:")
        else:
            st.button(
                f"Stop training {run.name}",
                key="tf_stop",
                type="primary",
                icon=":material/stop_circle:",
                on_click=launch.stop,
                args=(run,),
                help="Checkpoint and stop the training process; you can resume it later",
            )
        return
    if not run.last_ckpt.exists():
        st.caption(
            "No checkpoint yet, so nothing to resume: start a new run below (the same name may be reused "
            "when the run failed)."
        )
        return
    status = run.status()
    done = int(status.get("epoch", 0))
    finished = status.get("state") == "finished"
    default = done + RESUME_MORE if finished else max(cfg.optim.epochs, done + 1)
    c1, c2, c3 = st.columns([1, 1, 1], vertical_alignment="bottom")
    epochs = c1.number_input(
        "Train to epoch (new total)",
        min_value=done + 1,
        value=default,
        step=1,
        key=f"tf_resume_epochs.{run.name}",
        help=f"{done} epochs are done; the run continues exactly where it stopped",
    )
    nproc = None
    if hardware.gpu_count() > 1:
        nproc = c2.number_input(
            "GPUs",
            min_value=1,
            max_value=hardware.gpu_count(),
            value=min(launch.launched_nproc(run), hardware.gpu_count()),
            step=1,
            key=f"tf_resume_gpus.{run.name}",
            help=GPUS_HELP,
        )
    if c3.button("Resume", key="tf_resume", icon=":material/play_arrow:"):
        try:
            launch.resume(run, int(epochs), nproc=None if nproc is None else int(nproc))
        except UserError as e:
            st.error(for_form(str(e)), icon=":material/error:")
            return
        st.rerun()


def fmt_duration(seconds: float) -> str:
    """Seconds as "1 h 05 min", "3 min 20 s" or "42 s"."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def progress(status: dict, cfg: TrainConfig) -> None:
    """Progress bar with epoch/step, then images/s and ETA (remaining steps at the current speed)."""
    step, total = int(status.get("step", 0)), int(status.get("total_steps") or 0)
    if not total:
        st.progress(0.0, text="Starting: loading the data and building the model…")
        return
    running = status.get("state") == "running"
    done, epochs = int(status.get("epoch", 0)), cfg.optim.epochs
    epoch_text = f"epoch {min(done + 1, epochs)}/{epochs}" if running else f"{done}/{epochs} epochs done"
    st.progress(min(step / total, 1.0), text=f"{epoch_text} · step {step}/{total}")
    if not running:  # a speed and an ETA are about a process that trains now
        return
    ips = status.get("images_per_s")
    c1, c2 = st.columns(2)
    c1.metric("Images / s", f"{ips:,.0f}" if ips else "–")
    left = eta(status, cfg.optim.batch_size)
    c2.metric(
        "ETA",
        fmt_duration(left) if left is not None else "–",
        help="remaining steps at the current speed (the kNN monitor and checkpoints add a little)",
    )


def line(x: list, y: list, title: str, xlabel: str, ylabel: str) -> go.Figure:
    """A small line chart of one curve (with markers while it has few points)."""
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines"))
    fig.update_layout(
        title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=280, margin=dict(l=10, r=10, t=40, b=10)
    )
    return fig


def plot_curves(metrics: list[dict], cfg: TrainConfig) -> None:
    """Loss and learning rate per logged step, kNN top-1 per epoch."""
    if not metrics:
        st.info(f"No metrics yet: the first point comes after {cfg.run.log_every} step(s).")
        return
    series = curves(metrics)
    steps, knn = series.steps, series.knn
    c1, c2, c3 = st.columns(3)
    with c1:
        st.plotly_chart(
            line(
                [m["step"] for m in steps],
                [m["loss"] for m in steps],
                getattr(METHODS.get(cfg.method.name), "loss_name", "loss"),
                "step",
                "loss",
            ),
            key="tf_loss",
        )
    with c2:
        st.plotly_chart(
            line([m["step"] for m in steps], [m["lr"] for m in steps], "Learning rate", "step", "lr"), key="tf_lr"
        )
    with c3:
        if knn:
            st.plotly_chart(
                line([m["epoch"] for m in knn], [m["knn_top1"] for m in knn], "kNN top-1 (%)", "epoch", "top-1 %"),
                key="tf_knn",
            )
        elif series.health:  # the monitor ran and measured no kNN: the images have no labels
            st.info(
                "No kNN: this run's images have no labels (no class sub-folders). The health charts below need "
                "none, and the Evaluate page ranks runs by them.",
                icon=":material/label_off:",
            )
        elif cfg.run.knn_every:
            st.info(f"No kNN yet: the monitor runs every {cfg.run.knn_every} epoch(s).")
        else:
            st.info("No kNN yet: the kNN monitor is off for this run (kNN every 0 epochs).")
    health(series.health, cfg)


def health(rows: list[dict], cfg: TrainConfig) -> None:
    """Label-free health of the probe subset per monitor epoch: RankMe, alignment, uniformity, LiDAR, α-ReQ,
    pseudo-label kNN, the collapse alarm, and the epoch the study's best epoch signal prefers (a dotted rule)."""
    if not rows:
        if cfg.run.probe and cfg.run.knn_every:
            st.caption("Health without labels (RankMe, alignment, uniformity) appears after the first monitor epoch.")
        return
    alarm = rows[-1].get("collapse")
    if alarm:
        st.error(f"Collapse at epoch {rows[-1]['epoch']}: {alarm}", icon=":material/warning:")
    study = label_free.load_study()
    signal, _ = label_free.chosen_signal(study, "epochs")
    pick = label_free.preferred_epoch(rows, signal)
    best = pick[0] if pick else None
    if pick:
        value = f"{pick[1]:.3g}"
        st.markdown(
            f"**Epoch {best} is the best by {label_free.signal_name(signal)}** ({value}; the dotted line below). "
            f"{label_free.trust(study, signal, 'epochs')}"
        )
    epochs = [m["epoch"] for m in rows]
    c1, c2, c3 = st.columns(3)
    with c1:
        h_and_z(rows, "rankme", "RankMe: effective rank (higher is better)", "rank", best)
    with c2:
        align = [m["alignment"] for m in rows]
        fig = line(epochs, align, "Alignment of two views (lower is better)", "epoch", "E ||z1 - z2||²")
        st.plotly_chart(mark_epoch(fig, best), key="tf_alignment")
    with c3:
        unif = [m["uniformity"] for m in rows]
        fig = line(epochs, unif, "Uniformity (lower is better)", "epoch", "log E exp(-2||zi - zj||²)")
        st.plotly_chart(mark_epoch(fig, best), key="tf_uniformity")
    if any("lidar_h" in m or "areq_h" in m or "pseudo_knn_h" in m for m in rows):  # runs of before issue 20 lack them
        c1, c2, c3 = st.columns(3)
        with c1:
            h_and_z(rows, "lidar", "LiDAR: rank of the views' discriminant (higher is better)", "rank", best)
        with c2:
            h_and_z(rows, "areq", "α-ReQ: eigenvalue decay α", "α", best)
        with c3:
            h_and_z(rows, "pseudo_knn", "kNN on k-means pseudo-labels (higher is better)", "accuracy", best)
    st.caption(
        f"Measured on the run's probe subset ({cfg.run.probe_size:,} images at most) at every monitor epoch, "
        "no labels needed: "
        "RankMe (Garrido et al. 2023) falls towards 1 when the embeddings collapse; alignment and uniformity "
        "(Wang & Isola 2020) on the normalised projections z; LiDAR (Thilak et al. 2024) over several views of "
        "each image; α-ReQ (Agrawal et al. 2022), the power-law decay of the spectrum; and the kNN accuracy of "
        "k-means pseudo-labels. The Evaluate page ranks runs by them."
    )


def mark_epoch(fig: go.Figure, epoch: int | None) -> go.Figure:
    """A dotted vertical rule at the preferred epoch (none when there is none)."""
    if epoch is not None:
        fig.add_vline(x=epoch, line_dash="dot", line_color="#2e7d32", line_width=2)
    return fig


def h_and_z(rows: list[dict], key: str, title: str, unit: str, best: int | None = None) -> None:
    """One health signal per monitor epoch, for the backbone (h) and the projection (z); ``best``: the epoch
    to mark."""
    shown = [m for m in rows if f"{key}_h" in m]
    epochs = [m["epoch"] for m in shown]
    fig = line(epochs, [m[f"{key}_h"] for m in shown], title, "epoch", unit)
    fig.data[0].name = "h (backbone)"
    z = [m.get(f"{key}_z") for m in shown]
    fig.add_trace(go.Scatter(x=epochs, y=z, name="z (projection)", mode=fig.data[0].mode))
    fig.update_layout(legend=dict(orientation="h", y=-0.35))
    st.plotly_chart(mark_epoch(fig, best), key=f"tf_{key}")


def live_view(run: RunDir) -> None:
    """State, progress, curves and log of one run, drawn again when its files change (:func:`watch`)."""
    cfg = run_config(run)
    if cfg is None:
        st.error(f"run '{run.name}' has no readable config.json; it cannot be shown", icon=":material/error:")
        return
    status = run.status()
    if not status and not launch.is_active(run):
        status = {"state": "died", "message": f"run '{run.name}' ended before it started"}
    state = status.get("state", "starting")
    if state in ("failed", "died"):
        st.error(for_form(status.get("message") or f"the run {state}"), icon=":material/error:")
        console = launch.console_tail(run, 20)
        if console:
            st.caption("Last lines the training process printed:")
            st.code(console, language=None)
    elif status.get("message"):
        st.caption(f"{STATE_ICONS.get(state, '')} {state}: {for_form(status['message'])}")
    progress(status, cfg)
    plot_curves(run.metrics(), cfg)
    log = files.tail(run.log_path, 12)
    if log:
        st.caption("train.log (last lines)")
        st.code(log, language=None)


def export_panel(run: RunDir, cfg: TrainConfig) -> None:
    """The backbone of the newest checkpoint in each of simclr-export's formats: written by the background
    worker when asked (ONNX and TorchScript take half a minute for a ResNet-18), then downloaded."""
    if not run.backbone_path.is_file():
        return
    with st.expander("Export the backbone (safetensors, timm, ONNX, TorchScript)", icon=":material/download:"):
        st.caption(
            "The newest checkpoint's ResNet, as `simclr-export --run NAME --format F` writes it (into "
            f"`{run.export_dir}`). ONNX and TorchScript take RGB in [0, 1] and normalise inside; "
            "safetensors and timm are the plain ResNet state dict (ImageNet mean / std in the metadata)."
        )
        asked = st.session_state.setdefault("tf_exports", set())
        cols = st.columns(len(exporters.FORMATS))
        for col, fmt in zip(cols, exporters.FORMATS, strict=False):
            with col:
                export_button(run, cfg, fmt, asked)


def export_button(run: RunDir, cfg: TrainConfig, fmt: str, asked: set[tuple[str, str]]) -> None:
    """*Prepare* a format (a background job, with its progress), then *Download* the file it wrote."""
    name = f"{run.name}{exporters.SUFFIX[fmt]}"
    why = exporters.unavailable(fmt, cfg.model.backbone)
    spec = ExportSpec(run=str(run.path), format=fmt, ckpt=checkpoint_key(run))
    result = None
    if why is None:
        mine = (spec.run, fmt) in asked
        result = background(spec, f"Writing {name}", submit=mine)
        if result is None and (
            mine or jobs.status(jobs.jobs_dir(runs_dir()), jobs.job_id(spec.kind, spec.to_dict()))["state"] != "missing"
        ):
            return  # its progress (or why it failed) is shown
    if result is None:
        st.button(
            f"Prepare {fmt}",
            key=f"export-{fmt}",
            on_click=asked.add,
            args=((spec.run, fmt),),
            disabled=why is not None,
            icon=":material/build:",
            help=why or f"write {name} in the background; then download it here",
            width="stretch",
        )
        return
    path = Path(result["file"])
    st.download_button(
        f"Download {fmt}",
        lambda: path.read_bytes(),
        name,
        "application/octet-stream",
        key=f"export-{fmt}",
        on_click="ignore",
        icon=":material/download:",
        help=HOW_TO_LOAD[fmt].format(path=name),
        width="stretch",
    )
    st.caption(f"{path.stat().st_size / 1e6:,.1f} MB")


def show_run(run: RunDir) -> None:
    """The current run: its notes, Stop / Resume, the live view and the export panel."""
    st.subheader(f"Run {run.name}")
    notes = manage.read_notes(run)
    if notes.strip():
        st.info(notes, icon=":material/sticky_note_2:")
    cfg = run_config(run)
    active = launch.is_active(run)
    if cfg is not None:
        controls(run, active, cfg)
    live_view(run)
    if cfg is not None:
        export_panel(run, cfg)
