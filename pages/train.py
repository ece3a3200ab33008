"""Train: start a SimCLR (or MoCo v2 / BYOL) run from a form, watch it live, stop or resume it.

Training runs in a process of its own (simclr_core.launch), so it outlives page reloads and closed
browsers; this page only fills a TrainConfig, starts the process and reads the run folder's files.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from pages.common import (
    ACTIVE_STATES,
    STATE_ICONS,
    background,
    checkpoint_key,
    current_run,
    folder_summary,
    host_reachable,
    keep,
    routed,
    run_names,
    run_states,
    runs_dir,
    setting_input,
    setting_slider,
    watch,
)
from simclr_core import exporters, files, jobs, launch, manage, precheck
from simclr_core.config import TrainConfig, ViewConfig, widget_spec
from simclr_core.data import DATASETS, printable
from simclr_core.errors import UserError
from simclr_core.estimate import job_spec as estimate_spec
from simclr_core.hardware import gpu_count
from simclr_core.methods import METHODS
from simclr_core.models import BACKBONES
from simclr_core.presets import PRESETS, RECIPES, preset, suggest_run_name
from simclr_core.runs import RunDir, curves, eta, summarize

routed()

VIEW_KNOBS = ("crop_scale_min", "jitter_strength", "jitter_prob", "grayscale_prob", "blur_prob")
METHOD_KNOBS = ("ema", "ema_schedule", "queue_size", "moco_symmetric", "pred_hidden_dim")
FORM_FIELDS = (
    [
        ("data", "dataset"),
        ("data", "data_path"),
        ("model", "backbone"),
        ("method", "name"),
        ("model", "cifar_stem"),
        ("optim", "epochs"),
        ("optim", "batch_size"),
        ("optim", "optimizer"),
        ("optim", "lr"),
        ("method", "temperature"),
        ("model", "proj_hidden_dim"),
        ("model", "proj_out_dim"),
        ("run", "knn_every"),
        ("run", "name"),
    ]
    + [("views", k) for k in VIEW_KNOBS]
    + [("method", k) for k in METHOD_KNOBS]
)
# the settings a recipe's expected results depend on: change one, and the page stops quoting them
EXPECTATION_FIELDS = [("data", "dataset"), ("data", "data_path"), ("model", "backbone"), ("method", "name")]
EXPECTATION_FIELDS += [("optim", "epochs"), ("optim", "batch_size")]
TEXT_FIELDS = {("data", "data_path"), ("optim", "lr"), ("run", "name")}  # text inputs: "" means None
# Each form field's label (from the config's field table): the widgets show it, and an error about the
# field names it (never its CLI flag).
LABELS = {spec.option: spec.label for spec in (widget_spec(section, name) for section, name in FORM_FIELDS)}
STEMS = {None: "auto", True: "on", False: "off"}
SLIDERS = ("crop_scale_min", "jitter_prob", "grayscale_prob")  # the view knobs shown as sliders
RESUME_MORE = 10  # default extra epochs when resuming a finished run
GPUS_HELP = (
    "more than one starts the run under torchrun, one process per GPU (DDP, negatives gathered from "
    "every GPU); the batch size is the total over all GPUs"
)


def k(section: str, name: str) -> str:
    """The session-state key of a form field."""
    return f"tf.{section}.{name}"


def for_form(message: str) -> str:
    """A library message with the form's labels for the flags it names: "**Batch size** 256 is larger..."."""
    return precheck.for_form(message, LABELS)


def h(section: str, name: str) -> str:
    """A config field's help text, shared with the CLI's --help."""
    return widget_spec(section, name).help


def number(where, section: str, name: str) -> None:
    """The form's number input for a config field (label, step and help from the field table)."""
    setting_input(where, section, name, k(section, name))


# ---- form state <-> TrainConfig --------------------------------------------------------------------


def to_widget(section: str, name: str, value):
    if (section, name) in TEXT_FIELDS:
        return "" if value is None else str(value)
    if name == "ema_schedule":
        return value or "auto"
    return STEMS[value] if name == "cifar_stem" else value


def from_widget(section: str, name: str, value):
    if name == "cifar_stem":
        return next(b for b, label in STEMS.items() if label == value)
    if name == "ema_schedule":
        return None if value == "auto" else value
    if (section, name) not in TEXT_FIELDS:
        return value
    value = value.strip()
    if not value:
        return None
    if name == "lr":
        try:
            return float(value)
        except ValueError:
            raise UserError(
                f"learning rate {value!r} is not a number: enter one such as 0.3, or leave it blank for the default"
            ) from None
    return value


def load_into_form(cfg: TrainConfig) -> None:
    """Write ``cfg`` into the form's widget state (only before the widgets exist: page top or callbacks)."""
    for section, name in FORM_FIELDS:
        st.session_state[k(section, name)] = to_widget(section, name, getattr(getattr(cfg, section), name))
    st.session_state[k("run", "name")] = suggest_run_name(cfg.data.dataset, cfg.model.backbone, run_names())


def init_form() -> None:
    """Fill the form: each field keeps what the user entered (through page visits, and reloads by the address),
    starting from the preset; then what the Augmentations page hands over (its dataset, folder and views)."""
    base = preset(keep("tf_preset", next(iter(PRESETS)), lambda v: v in PRESETS, url="preset"))
    for section, name in FORM_FIELDS:
        if (section, name) != ("run", "name"):  # a reload suggests a fresh name: the old one may be taken by now
            default = to_widget(section, name, getattr(getattr(base, section), name))
            keep(k(section, name), default, url=widget_spec(section, name).option)
    keep(k("run", "name"), suggest_run_name(base.data.dataset, base.model.backbone, run_names()))
    keep("tf_gpus", gpu_count())
    handed = st.session_state.pop("train_data", None)
    if handed:
        st.session_state[k("data", "dataset")] = handed["dataset"]
        st.session_state[k("data", "data_path")] = handed.get("data_path") or ""
    views = st.session_state.get("train_views")
    if views and views != st.session_state.get("tf_views_applied"):
        for name in VIEW_KNOBS:
            if name in views:
                st.session_state[k("views", name)] = views[name]
        st.session_state["tf_views_applied"] = dict(views)


def config_from_form() -> TrainConfig:
    """The preset's config, the Augmentations page's views, then every form field on top."""
    cfg = preset(st.session_state["tf_preset"])
    views = st.session_state.get("train_views")
    if views:  # knobs the form does not show (flip, solarize, blur sigma...) still reach the run
        known = {f.name for f in fields(ViewConfig)}
        cfg.views = ViewConfig(**{n: v for n, v in views.items() if n in known})
    for section, name in FORM_FIELDS:
        setattr(getattr(cfg, section), name, from_widget(section, name, st.session_state[k(section, name)]))
    if cfg.data.data_path:  # the training process does not expand "~"
        cfg.data.data_path = str(Path(cfg.data.data_path).expanduser())
    cfg.run.runs_dir = str(runs_dir())
    return cfg


def check_new_run(cfg: TrainConfig, folder: precheck.FolderSummary | None = None) -> precheck.Plan:
    """Everything that would make the launch fail at once (simclr_core.precheck), as a UserError."""
    return precheck.check_new_run(cfg, folder=folder, online=host_reachable)


@st.cache_data(ttl=10, show_spinner=False, max_entries=32)
def form_check(
    cfg_json: str, _cfg: TrainConfig, _folder: precheck.FolderSummary | None
) -> tuple[precheck.Plan | None, str]:
    """:func:`check_new_run` of the form's config (``cfg_json`` keys it): (plan, "") or (None, what is wrong).
    Kept ten seconds, so a redraw for new metrics does not decode the dataset again; Launch checks afresh."""
    try:
        return check_new_run(_cfg, _folder), ""
    except UserError as e:
        return None, for_form(str(e))


# ---- callbacks (they run before the script, so they may set widget state such as the sidebar's "run") ----


def on_preset() -> None:
    load_into_form(preset(st.session_state["tf_preset"]))
    drop_views()


def drop_views() -> None:
    """Forget the Augmentations page's views: back to the preset's."""
    views = preset(st.session_state["tf_preset"]).views
    for name in VIEW_KNOBS:
        st.session_state[k("views", name)] = getattr(views, name)
    st.session_state.pop("train_views", None)
    st.session_state.pop("tf_views_applied", None)


def on_launch() -> None:
    try:
        cfg = config_from_form()
        check_new_run(cfg)
        run = launch.launch(cfg, nproc=int(st.session_state.get("tf_gpus") or 1))
    except UserError as e:
        st.session_state["tf_error"] = for_form(str(e))
        return
    st.session_state["run"] = run.name  # a callback runs before the sidebar is drawn
    st.session_state["tf_started"] = run.name
    st.session_state["tf_launched"] = True  # the form (a fragment) then draws the whole page again
    st.session_state[k("run", "name")] = suggest_run_name(cfg.data.dataset, cfg.model.backbone, run_names())


# ---- the current run ----------------------------------------------------------------------------------


def run_config(run: RunDir) -> TrainConfig | None:
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
    if gpu_count() > 1:
        nproc = c2.number_input(
            "GPUs",
            min_value=1,
            max_value=gpu_count(),
            value=min(launch.launched_nproc(run), gpu_count()),
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
        elif cfg.run.knn_every:
            st.info(f"No kNN yet: the monitor runs every {cfg.run.knn_every} epoch(s).")
        else:
            st.info("No kNN yet: the kNN monitor is off for this run (kNN every 0 epochs).")
    health(series.health, cfg)


def health(rows: list[dict], cfg: TrainConfig) -> None:
    """Label-free health of the probe subset per monitor epoch: RankMe, alignment, uniformity, collapse alarm."""
    if not rows:
        if cfg.run.probe and cfg.run.knn_every:
            st.caption("Health without labels (RankMe, alignment, uniformity) appears after the first monitor epoch.")
        return
    alarm = rows[-1].get("collapse")
    if alarm:
        st.error(f"Collapse at epoch {rows[-1]['epoch']}: {alarm}", icon=":material/warning:")
    epochs = [m["epoch"] for m in rows]
    c1, c2, c3 = st.columns(3)
    with c1:
        fig = line(epochs, [m["rankme_h"] for m in rows], "RankMe: effective rank (higher is better)", "epoch", "rank")
        fig.data[0].name = "h (backbone)"
        fig.add_trace(
            go.Scatter(x=epochs, y=[m.get("rankme_z") for m in rows], name="z (projection)", mode=fig.data[0].mode)
        )
        fig.update_layout(legend=dict(orientation="h", y=-0.35))
        st.plotly_chart(fig, key="tf_rankme")
    with c2:
        st.plotly_chart(
            line(
                epochs,
                [m["alignment"] for m in rows],
                "Alignment of two views (lower is better)",
                "epoch",
                "E ||z1 - z2||²",
            ),
            key="tf_alignment",
        )
    with c3:
        st.plotly_chart(
            line(
                epochs,
                [m["uniformity"] for m in rows],
                "Uniformity (lower is better)",
                "epoch",
                "log E exp(-2||zi - zj||²)",
            ),
            key="tf_uniformity",
        )
    st.caption(
        f"Measured on the run's probe subset ({cfg.run.probe_size:,} images at most) at every monitor epoch, "
        "no labels needed: "
        "RankMe (Garrido et al. 2023) falls towards 1 when the embeddings collapse; alignment and uniformity "
        "(Wang & Isola 2020) on the normalised projections z."
    )


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
    spec = {"run": str(run.path), "format": fmt, "ckpt": checkpoint_key(run)}
    result = None
    if why is None:
        mine = (spec["run"], fmt) in asked
        result = background("export", spec, f"Writing {name}", submit=mine)
        if result is None and (
            mine or jobs.status(jobs.jobs_dir(runs_dir()), jobs.job_id("export", spec))["state"] != "missing"
        ):
            return  # its progress (or why it failed) is shown
    if result is None:
        st.button(
            f"Prepare {fmt}",
            key=f"export-{fmt}",
            on_click=asked.add,
            args=((spec["run"], fmt),),
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
        help=exporters.HOW_TO_LOAD[fmt].format(path=name),
        width="stretch",
    )
    st.caption(f"{path.stat().st_size / 1e6:,.1f} MB")


def show_run(run: RunDir) -> None:
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


def run_list(states: dict[str, str]) -> None:
    """Every run's state, progress and best numbers."""
    hidden = [n for n, s in states.items() if manage.is_failed(s)] if st.session_state.get("hide_failed") else []
    rows = []
    for name in states:
        if name in hidden:
            continue
        run = RunDir(runs_dir() / name)
        s = summarize(run)
        rows.append(
            {
                "run": s.name,
                "state": s.state,
                "method": s.method,
                "epochs": f"{s.epoch}/{s.epochs}",
                "last loss": "–" if s.last_loss is None else f"{s.last_loss:.4f}",
                "best kNN top-1 %": "–" if s.best_knn is None else f"{s.best_knn:.2f}",  # text: no "None" cells
                "message": for_form(s.message),
                "notes": manage.read_notes(run).strip().split("\n")[0][:80],
            }
        )
    st.dataframe(rows, hide_index=True)
    more = f" {len(hidden)} failed run(s) hidden (sidebar: *Hide failed runs*)." if hidden else ""
    st.caption("Pick a run in the sidebar to watch, stop or resume it." + more)


# ---- run management: rename, notes, archive (simclr_core.manage) ----------------------------------------


def manage_message(kind: str, text: str) -> None:
    st.session_state["tf_manage_msg"] = (kind, text)


def on_rename(old: str) -> None:
    new = st.session_state.get(f"tf_rename.{old}", "").strip()
    try:
        run = manage.rename(runs_dir(), old, new)
    except UserError as e:
        manage_message("error", str(e))
        return
    st.session_state["run"] = run.name
    manage_message("success", f"Renamed run '{old}' to '{run.name}'.")


def on_notes(name: str) -> None:
    try:
        manage.write_notes(RunDir(runs_dir() / name), st.session_state.get(f"tf_notes.{name}", ""))
    except UserError as e:
        manage_message("error", str(e))
        return
    manage_message("success", f"Saved the notes of run '{name}'.")


def on_archive(names: list[str]) -> None:
    done, failed = [], []
    for name in names:
        try:
            manage.archive(runs_dir(), name)
            done.append(name)
        except UserError as e:
            failed.append(str(e))
    if st.session_state.get("run") in done:
        st.session_state.pop("run")
    if failed:
        manage_message("error", " ".join(failed))
    else:
        manage_message(
            "success",
            f"Archived {', '.join(repr(n) for n in done)} into "
            f"`{manage.archive_dir(runs_dir())}`: restore below, whenever you like.",
        )


def on_restore(folder: str) -> None:
    try:
        run = manage.restore(runs_dir(), folder)
    except UserError as e:
        manage_message("error", str(e))
        return
    st.session_state["run"] = run.name
    manage_message("success", f"Restored run '{run.name}'.")


def manage_runs(run: RunDir | None) -> None:
    """Rename the current run, write its notes, archive it or every failed run, restore archived runs."""
    message = st.session_state.pop("tf_manage_msg", None)
    archived = manage.list_archived(runs_dir())
    if run is None and not archived and not message:
        return
    with st.expander(
        "Manage runs: rename, notes, archive", icon=":material/folder_managed:", expanded=message is not None
    ):
        if message:
            (st.success if message[0] == "success" else st.error)(message[1])
        if run is not None:
            st.caption(f"For the run picked in the sidebar, **{run.name}**:")
            c1, c2 = st.columns(2)
            c1.text_input(
                "New name",
                key=f"tf_rename.{run.name}",
                placeholder=run.name,
                help="letters, digits, '.', '_' and '-'; not while the run is running",
            )
            c1.button("Rename", key="tf_rename", icon=":material/edit:", on_click=on_rename, args=(run.name,))
            st.session_state.setdefault(f"tf_notes.{run.name}", manage.read_notes(run))
            c2.text_area(
                "Notes",
                key=f"tf_notes.{run.name}",
                height=100,
                help=f"what you tried and why; kept in the run folder ({manage.NOTES})",
            )
            c2.button("Save notes", key="tf_save_notes", icon=":material/save:", on_click=on_notes, args=(run.name,))
            failed = [n for n, s in run_states().items() if manage.is_failed(s)]
            c3, c4 = st.columns(2)
            c3.button(
                f"Archive run {run.name}",
                key="tf_archive",
                icon=":material/archive:",
                on_click=on_archive,
                args=([run.name],),
                help="moves its folder into the runs folder's .archive/; restore it below",
            )
            c4.button(
                f"Archive the {len(failed)} failed run(s)",
                key="tf_archive_failed",
                icon=":material/delete_sweep:",
                on_click=on_archive,
                args=(failed,),
                disabled=not failed,
                help="runs that failed, died or never started: " + (", ".join(failed) or "none"),
            )
        if archived:
            st.caption(f"Archived runs (in `{manage.archive_dir(runs_dir())}`):")
            for a in archived[:20]:
                r1, r2 = st.columns([3, 1], vertical_alignment="center")
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(a.archived)) if a.archived else "?"
                r1.markdown(f"`{a.name}` · archived {when}")
                r2.button(
                    "Restore",
                    key=f"tf_restore.{a.folder}",
                    icon=":material/unarchive:",
                    on_click=on_restore,
                    args=(a.folder,),
                )


# ---- the new-run form ---------------------------------------------------------------------------------


def folder_caption(summary: precheck.FolderSummary) -> str:
    lines = []
    for line, split in zip(summary.describe().splitlines(), summary.splits.values(), strict=False):
        names = list(split.classes)
        if names:
            line += f": {', '.join(names[:6])}{', …' if len(names) > 6 else ''}"
        lines.append(line)
    return printable("  \n".join(lines))  # a folder or file name that is not UTF-8, shown as \xff


@st.fragment
def new_run_form() -> None:
    """The form, drawn alone when a field changes. Launch is the only way to start a run (Enter in a field
    starts nothing), and is greyed out, with the reason beside it, while a setting is wrong."""
    init_form()  # the fragment's own runs, too: the address follows each field
    st.subheader("New run")
    st.selectbox(
        "Preset",
        list(PRESETS),
        key="tf_preset",
        on_change=on_preset,
        help="fills in the form below; change any field before launching. The presets are the recipe "
        "zoo, configs/*.yaml, which `simclr-train --config` reads too",
    )
    chosen = RECIPES[st.session_state["tf_preset"]]
    base = preset(st.session_state["tf_preset"])
    changed = [
        LABELS[widget_spec(section, name).option]
        for section, name in EXPECTATION_FIELDS
        if st.session_state[k(section, name)] != to_widget(section, name, getattr(getattr(base, section), name))
    ]
    if changed:  # the recipe's numbers were measured with its own settings
        st.caption(
            f"The preset's expected results hold for its own settings; you changed {', '.join(changed)}. "
            f"Recipe file: `configs/{chosen.path.name}`"
        )
    else:
        st.caption(
            f"**Expected:** {chosen.expected}. **Source:** {chosen.source}. Recipe file: `configs/{chosen.path.name}`"
        )
    if st.session_state.get("train_views"):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.info("The view settings below come from the Augmentations page.", icon=":material/photo_library:")
        c2.button("Use the preset's views", key="tf_drop_views", on_click=drop_views)
    c1, c2, c3 = st.columns(3)
    c1.selectbox(LABELS["dataset"], DATASETS, key=k("data", "dataset"), help=h("data", "dataset"))
    c1.text_input(
        LABELS["data_path"] + " (folder dataset only)", key=k("data", "data_path"), help=h("data", "data_path")
    )
    summary = None
    if st.session_state[k("data", "dataset")] == "folder" and st.session_state[k("data", "data_path")].strip():
        try:
            summary = folder_summary(st.session_state[k("data", "data_path")].strip())
            c1.caption(folder_caption(summary))
        except UserError:
            pass  # said beside Launch
    c1.selectbox(
        LABELS["optimizer"],
        widget_spec("optim", "optimizer").choices,
        key=k("optim", "optimizer"),
        help=h("optim", "optimizer"),
    )
    c1.text_input(LABELS["lr"], key=k("optim", "lr"), placeholder="auto", help=h("optim", "lr"))
    c2.selectbox(LABELS["backbone"], BACKBONES, key=k("model", "backbone"), help=h("model", "backbone"))
    c2.selectbox(LABELS["method"], list(METHODS), key=k("method", "name"), help=h("method", "name"))
    c2.selectbox(
        LABELS["cifar_stem"], list(STEMS.values()), key=k("model", "cifar_stem"), help=h("model", "cifar_stem")
    )
    number(c2, "method", "temperature")
    for section, name in (
        ("optim", "epochs"),
        ("optim", "batch_size"),
        ("model", "proj_hidden_dim"),
        ("model", "proj_out_dim"),
        ("run", "knn_every"),
    ):
        number(c3, section, name)
    with st.expander("View strengths (augmentations)"):
        cols = st.columns(2)
        for i, name in enumerate(SLIDERS):
            setting_slider(cols[i % 2], "views", (name,), k("views", name))
        number(cols[1], "views", "jitter_strength")
        number(cols[0], "views", "blur_prob")
        st.caption("Preview these on the Augmentations page.")
    with st.expander("MoCo v2 and BYOL settings (leave blank for each method's defaults)"):
        cols = st.columns(3)
        number(cols[0], "method", "ema")
        cols[0].selectbox(
            LABELS["ema_schedule"],
            ["auto", *widget_spec("method", "ema_schedule").choices],
            key=k("method", "ema_schedule"),
            help=h("method", "ema_schedule"),
        )
        number(cols[1], "method", "queue_size")
        cols[1].checkbox(
            LABELS["moco_symmetric"], key=k("method", "moco_symmetric"), help=h("method", "moco_symmetric")
        )
        number(cols[2], "method", "pred_hidden_dim")
    if gpu_count() > 1:
        st.number_input("GPUs", min_value=1, max_value=gpu_count(), step=1, key="tf_gpus", help=GPUS_HELP)
    st.text_input(LABELS["name"], key=k("run", "name"), help=h("run", "name"))
    cfg_json = ""
    try:
        cfg = config_from_form()
        cfg_json = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
        plan, problem = form_check(cfg_json, cfg, summary)
    except UserError as e:
        plan, problem = None, for_form(str(e))
    c1, c2 = st.columns([1, 5], vertical_alignment="center")
    c1.button(
        "Launch",
        key="tf_launch",
        type="primary",
        icon=":material/rocket_launch:",
        on_click=on_launch,
        disabled=bool(problem),
        width="stretch",
    )
    if problem:
        c2.error(problem, icon=":material/error:")
    elif plan:
        c2.caption(f"Pre-trains on {plan.images:,} images of {plan.source}." + "".join(f" {n}." for n in plan.notes))
    if not problem:
        time_estimate(cfg, cfg_json)
    error = st.session_state.pop("tf_error", None)
    if error:
        st.error(error, icon=":material/error:")
    if st.session_state.pop("tf_launched", False):
        st.rerun()  # the whole page: the new run, live, in the run picker and the run list


def time_estimate(cfg: TrainConfig, cfg_json: str) -> None:
    """*Estimate the time*: a short measurement of these settings on this machine, now (a background job of
    about 15 s that builds what training builds and times a few steps; simclr_core.estimate), not a constant."""
    asked = st.session_state.get("tf_estimate")  # (the settings it was asked for, when)
    c1, c2 = st.columns([1, 5], vertical_alignment="center")
    c1.button(
        "Estimate the time",
        key="tf_estimate_button",
        icon=":material/timer:",
        on_click=lambda: st.session_state.update(tf_estimate=(cfg_json, time.time())),
        help="measure a few training steps of these settings on this machine, as it is now",
        width="stretch",
    )
    if not asked:
        c2.caption("How long this run takes depends on this machine and what else it runs: **Estimate** measures it.")
        return
    if asked[0] != cfg_json:
        c2.caption("The last estimate was for other settings: press **Estimate the time** again.")
        return
    with c2:
        result = background("estimate", estimate_spec(cfg, requested=asked[1]), "Measuring these settings")
    if result is not None:
        c2.caption(f":material/timer: {result['describe']}")


# ---- page ---------------------------------------------------------------------------------------------

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
