"""Train: start a SimCLR (or MoCo v2 / BYOL) run from a form, watch it live, stop or resume it.

Training runs in a process of its own (simclr_core.launch), so it outlives page reloads and closed
browsers; this page only fills a TrainConfig, starts the process and reads the run folder's files.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from pages.common import STATE_ICONS, current_run, routed, run_names, runs_dir
from simclr_core import exporters, launch
from simclr_core.config import TrainConfig, ViewConfig, sections
from simclr_core.data import DATASETS
from simclr_core.errors import UserError
from simclr_core.hardware import gpu_count
from simclr_core.methods import METHODS
from simclr_core.models import BACKBONES
from simclr_core.presets import PRESETS, RECIPES, preset, suggest_run_name
from simclr_core.runs import RunDir, summarize

routed()

VIEW_KNOBS = ("crop_scale_min", "jitter_strength", "jitter_prob", "grayscale_prob", "blur_prob")
METHOD_KNOBS = ("ema", "ema_schedule", "queue_size", "moco_symmetric", "pred_hidden_dim")
FORM_FIELDS = [("data", "dataset"), ("data", "data_path"), ("model", "backbone"), ("model", "method"),
               ("model", "cifar_stem"), ("optim", "epochs"), ("optim", "batch_size"), ("optim", "optimizer"),
               ("optim", "lr"), ("optim", "temperature"), ("model", "proj_hidden_dim"), ("model", "proj_out_dim"),
               ("run", "knn_every"), ("run", "name")] + [("views", k) for k in VIEW_KNOBS] + [
               ("method", k) for k in METHOD_KNOBS]
TEXT_FIELDS = {("data", "data_path"), ("optim", "lr"), ("run", "name")}  # text inputs: "" means None
STEMS = {None: "auto", True: "on", False: "off"}
SLIDERS = {  # view knob -> (label, low, high, step); a crop needs a positive area
    "crop_scale_min": ("Smallest crop area", 0.01, 1.0, 0.01),
    "jitter_strength": ("Colour jitter strength", 0.0, 2.0, 0.05),
    "jitter_prob": ("Colour jitter probability", 0.0, 1.0, 0.05),
    "grayscale_prob": ("Grayscale probability", 0.0, 1.0, 0.05)}
RESUME_MORE = 10  # default extra epochs when resuming a finished run
GPUS_HELP = ("more than one starts the run under torchrun, one process per GPU (DDP, negatives gathered from "
             "every GPU); the batch size is the total over all GPUs")


def k(section: str, name: str) -> str:
    """The session-state key of a form field."""
    return f"tf.{section}.{name}"


def meta(section: str, name: str) -> dict:
    """A config field's metadata: its help text (shared with the CLI's --help) and maybe its choices."""
    return next(f for f in fields(sections()[section]) if f.name == name).metadata


def h(section: str, name: str) -> str:
    return meta(section, name)["help"]


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
            raise UserError(f"learning rate {value!r} is not a number: enter one such as 0.3, "
                            "or leave it blank for the default") from None
    return value


def load_into_form(cfg: TrainConfig) -> None:
    """Write ``cfg`` into the form's widget state (only before the widgets exist: page top or callbacks)."""
    for section, name in FORM_FIELDS:
        st.session_state[k(section, name)] = to_widget(section, name, getattr(getattr(cfg, section), name))
    st.session_state[k("run", "name")] = suggest_run_name(cfg.data.dataset, cfg.model.backbone, run_names())


def init_form() -> None:
    """Fill the form from the preset on first visit, and from the Augmentations page's hand-over."""
    st.session_state.setdefault("tf_preset", next(iter(PRESETS)))
    reloaded = any(k(*f) not in st.session_state for f in FORM_FIELDS)  # first visit, or came back from a page
    if reloaded:
        load_into_form(preset(st.session_state["tf_preset"]))
    views = st.session_state.get("train_views")
    if views and (reloaded or views != st.session_state.get("tf_views_applied")):
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


def check_new_run(cfg: TrainConfig) -> None:
    """Everything that would make the launch fail at once, as a UserError naming the fix."""
    if not cfg.run.name:
        raise UserError("give the run a name (letters, digits, '.', '_' and '-')")
    if cfg.data.dataset == "folder":
        if not cfg.data.data_path:
            raise UserError("the folder dataset needs an image folder: fill in 'Image folder' "
                            "(class sub-folders give labels)")
        if not Path(cfg.data.data_path).is_dir():
            raise UserError(f"image folder {cfg.data.data_path} does not exist: check the path")
    cfg.validate()


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
        st.session_state["tf_error"] = str(e)
        return
    st.session_state["run"] = run.name  # a callback runs before the sidebar is drawn
    st.session_state["tf_started"] = run.name
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
            st.button("Stop", key="tf_stop", icon=":material/stop:", on_click=launch.stop, args=(run,),
                      help="Checkpoint and stop; you can resume it later")
        return
    if not run.last_ckpt.exists():
        st.caption("No checkpoint yet, so nothing to resume: start a new run below (the same name may be reused "
                   "when the run failed).")
        return
    status = run.status()
    done = int(status.get("epoch", 0))
    finished = status.get("state") == "finished"
    default = done + RESUME_MORE if finished else max(cfg.optim.epochs, done + 1)
    c1, c2, c3 = st.columns([1, 1, 1], vertical_alignment="bottom")
    epochs = c1.number_input("Train to epoch (new total)", min_value=done + 1, value=default, step=1,
                             key=f"tf_resume_epochs.{run.name}",
                             help=f"{done} epochs are done; the run continues exactly where it stopped")
    nproc = None
    if gpu_count() > 1:
        nproc = c2.number_input("GPUs", min_value=1, max_value=gpu_count(),
                                value=min(launch.launched_nproc(run), gpu_count()), step=1,
                                key=f"tf_resume_gpus.{run.name}", help=GPUS_HELP)
    if c3.button("Resume", key="tf_resume", icon=":material/play_arrow:"):
        try:
            launch.resume(run, int(epochs), nproc=None if nproc is None else int(nproc))
        except UserError as e:
            st.error(str(e), icon=":material/error:")
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
    ips = status.get("images_per_s")
    c1, c2 = st.columns(2)
    c1.metric("Images / s", f"{ips:,.0f}" if ips else "–")
    eta = (total - step) * cfg.optim.batch_size / ips if running and ips else None
    c2.metric("ETA", fmt_duration(eta) if eta is not None else "–",
              help="remaining steps at the current speed (the kNN monitor and checkpoints add a little)")


def line(x: list, y: list, title: str, xlabel: str, ylabel: str) -> go.Figure:
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines+markers" if len(x) < 30 else "lines"))
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=280,
                      margin=dict(l=10, r=10, t=40, b=10))
    return fig


def curves(metrics: list[dict], cfg: TrainConfig) -> None:
    """Loss and learning rate per logged step, kNN top-1 per epoch."""
    if not metrics:
        st.info(f"No metrics yet: the first point comes after {cfg.run.log_every} step(s).")
        return
    steps = [m for m in metrics if "epoch_loss" not in m] or metrics  # per-step lines; epoch lines repeat them
    knn = [m for m in metrics if "knn_top1" in m]
    c1, c2, c3 = st.columns(3)
    with c1:
        st.plotly_chart(line([m["step"] for m in steps], [m["loss"] for m in steps],
                             getattr(METHODS.get(cfg.model.method), "loss_name", "loss"), "step",
                             "loss"), key="tf_loss")
    with c2:
        st.plotly_chart(line([m["step"] for m in steps], [m["lr"] for m in steps], "Learning rate", "step",
                             "lr"), key="tf_lr")
    with c3:
        if knn:
            st.plotly_chart(line([m["epoch"] for m in knn], [m["knn_top1"] for m in knn], "kNN top-1 (%)",
                                 "epoch", "top-1 %"), key="tf_knn")
        elif cfg.run.knn_every:
            st.info(f"No kNN yet: the monitor runs every {cfg.run.knn_every} epoch(s).")
        else:
            st.info("No kNN yet: the kNN monitor is off for this run (kNN every 0 epochs).")
    health(metrics, cfg)


def health(metrics: list[dict], cfg: TrainConfig) -> None:
    """Label-free health of the probe subset per monitor epoch: RankMe, alignment, uniformity, collapse alarm."""
    rows = [m for m in metrics if isinstance(m.get("rankme_h"), (int, float))]
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
        fig = line(epochs, [m["rankme_h"] for m in rows], "RankMe: effective rank (higher is better)", "epoch",
                   "rank")
        fig.data[0].name = "h (backbone)"
        fig.add_trace(go.Scatter(x=epochs, y=[m.get("rankme_z") for m in rows], name="z (projection)",
                                 mode=fig.data[0].mode))
        fig.update_layout(legend=dict(orientation="h", y=-0.35))
        st.plotly_chart(fig, key="tf_rankme")
    with c2:
        st.plotly_chart(line(epochs, [m["alignment"] for m in rows], "Alignment of two views (lower is better)",
                             "epoch", "E ||z1 - z2||²"), key="tf_alignment")
    with c3:
        st.plotly_chart(line(epochs, [m["uniformity"] for m in rows], "Uniformity (lower is better)", "epoch",
                             "log E exp(-2||zi - zj||²)"), key="tf_uniformity")
    st.caption(f"Measured on the run's probe subset ({cfg.run.probe_size:,} images at most) at every monitor epoch, "
               "no labels needed: "
               "RankMe (Garrido et al. 2023) falls towards 1 when the embeddings collapse; alignment and uniformity "
               "(Wang & Isola 2020) on the normalised projections z.")


def tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def live_view(run: RunDir, was_active: bool) -> None:
    """State, progress, curves and log of one run; a fragment that polls while the run is active."""
    if was_active and not launch.is_active(run):
        st.rerun()  # it just ended: refresh the whole page (controls, run list) and stop polling
    cfg = run_config(run)
    if cfg is None:
        st.error(f"run '{run.name}' has no readable config.json; it cannot be shown", icon=":material/error:")
        return
    status = run.status()
    if not status and not launch.is_active(run):
        status = {"state": "died", "message": f"run '{run.name}' ended before it started"}
    state = status.get("state", "starting")
    if state in ("failed", "died"):
        st.error(status.get("message") or f"the run {state}", icon=":material/error:")
        console = launch.console_tail(run, 20)
        if console:
            st.caption("Last lines the training process printed:")
            st.code(console, language=None)
    elif status.get("message"):
        st.caption(f"{STATE_ICONS.get(state, '')} {state}: {status['message']}")
    progress(status, cfg)
    curves(run.metrics(), cfg)
    log = tail(run.log_path)
    if log:
        st.caption("train.log (last lines)")
        st.code(log, language=None)


def export_panel(run: RunDir, cfg: TrainConfig) -> None:
    """Download buttons for the backbone of the newest checkpoint, in each of simclr-export's formats."""
    if not run.backbone_path.is_file():
        return
    with st.expander("Export the backbone (safetensors, timm, ONNX, TorchScript)", icon=":material/download:"):
        st.caption("The newest checkpoint's ResNet, as `simclr-export --run NAME --format F` writes it (also into "
                   f"`{run.export_dir}`). ONNX and TorchScript take RGB in [0, 1] and normalise inside; "
                   "safetensors and timm are the plain ResNet state dict (ImageNet mean / std in the metadata).")
        cols = st.columns(len(exporters.FORMATS))
        for col, fmt in zip(cols, exporters.FORMATS):
            why = exporters.unavailable(fmt, cfg.model.backbone)
            col.download_button(fmt, lambda fmt=fmt: exporters.export_backbone(run, fmt).read_bytes(),
                                f"{run.name}{exporters.SUFFIX[fmt]}", "application/octet-stream", key=f"export-{fmt}",
                                on_click="ignore", disabled=why is not None, icon=":material/download:",
                                help=why or exporters.HOW_TO_LOAD[fmt].format(path=f"{run.name}{exporters.SUFFIX[fmt]}"),
                                width="stretch")


def show_run(run: RunDir) -> None:
    st.subheader(f"Run {run.name}")
    cfg = run_config(run)
    active = launch.is_active(run)
    if cfg is not None:
        controls(run, active, cfg)
    st.fragment(run_every=2 if active else None)(live_view)(run, active)
    if cfg is not None:
        export_panel(run, cfg)


def run_list() -> None:
    rows = []
    for name in run_names():
        s = summarize(RunDir(runs_dir() / name))
        rows.append({"run": s.name, "state": s.state, "method": s.method,
                     "epochs": f"{s.epoch}/{s.epochs}", "last loss": s.last_loss,
                     "best kNN top-1 %": s.best_knn, "message": s.message})
    st.subheader("All runs")
    st.dataframe(rows, hide_index=True, column_config={
        "last loss": st.column_config.NumberColumn(format="%.4f"),
        "best kNN top-1 %": st.column_config.NumberColumn(format="%.2f")})
    st.caption("Pick a run in the sidebar to watch, stop or resume it.")


# ---- the new-run form ---------------------------------------------------------------------------------

def new_run_form() -> None:
    st.subheader("New run")
    st.selectbox("Preset", list(PRESETS), key="tf_preset", on_change=on_preset,
                 help="fills in the form below; change any field before launching. The presets are the recipe "
                      "zoo, configs/*.yaml, which `simclr-train --config` reads too")
    chosen = RECIPES[st.session_state["tf_preset"]]
    st.caption(f"**Expected:** {chosen.expected}. **Source:** {chosen.source}. Recipe file: `configs/{chosen.path.name}`")
    if st.session_state.get("train_views"):
        c1, c2 = st.columns([3, 1], vertical_alignment="center")
        c1.info("The view settings below come from the Augmentations page.", icon=":material/photo_library:")
        c2.button("Use the preset's views", key="tf_drop_views", on_click=drop_views)
    with st.form("tf_form"):
        c1, c2, c3 = st.columns(3)
        c1.selectbox("Dataset", DATASETS, key=k("data", "dataset"), help=h("data", "dataset"))
        c1.text_input("Image folder (folder dataset only)", key=k("data", "data_path"), help=h("data", "data_path"))
        c1.selectbox("Optimiser", meta("optim", "optimizer")["choices"],
                     key=k("optim", "optimizer"), help=h("optim", "optimizer"))
        c1.text_input("Learning rate", key=k("optim", "lr"), placeholder="auto", help=h("optim", "lr"))
        c2.selectbox("Backbone", BACKBONES, key=k("model", "backbone"), help=h("model", "backbone"))
        c2.selectbox("Method", list(METHODS), key=k("model", "method"), help=h("model", "method"))
        c2.selectbox("CIFAR stem", list(STEMS.values()), key=k("model", "cifar_stem"), help=h("model", "cifar_stem"))
        c2.number_input("Temperature", min_value=0.0, step=0.05, format="%.3f", placeholder="auto",
                        key=k("optim", "temperature"), help=h("optim", "temperature"))
        c3.number_input("Epochs", min_value=1, step=1, key=k("optim", "epochs"), help=h("optim", "epochs"))
        c3.number_input("Batch size", min_value=2, step=32, key=k("optim", "batch_size"), help=h("optim", "batch_size"))
        c3.number_input("Projection hidden width", min_value=1, step=64, placeholder="auto",
                        key=k("model", "proj_hidden_dim"), help=h("model", "proj_hidden_dim"))
        c3.number_input("Projection output dim", min_value=1, step=32, key=k("model", "proj_out_dim"),
                        help=h("model", "proj_out_dim"))
        c3.number_input("kNN monitor every N epochs", min_value=0, step=1, key=k("run", "knn_every"),
                        help=h("run", "knn_every"))
        with st.expander("View strengths (augmentations)"):
            cols = st.columns(2)
            for i, (name, (label, low, high, step)) in enumerate(SLIDERS.items()):
                cols[i % 2].slider(label, low, high, step=step, key=k("views", name), help=h("views", name))
            cols[1].number_input("Blur probability", min_value=0.0, max_value=1.0, step=0.1, placeholder="auto",
                                 key=k("views", "blur_prob"), help=h("views", "blur_prob"))
            st.caption("Preview these on the Augmentations page.")
        with st.expander("MoCo v2 and BYOL settings (leave blank for each method's defaults)"):
            cols = st.columns(3)
            cols[0].number_input("EMA momentum m", min_value=0.0, max_value=1.0, step=0.001, format="%.4f",
                                 placeholder="auto", key=k("method", "ema"), help=h("method", "ema"))
            cols[0].selectbox("Momentum schedule", ["auto", *meta("method", "ema_schedule")["choices"]],
                              key=k("method", "ema_schedule"), help=h("method", "ema_schedule"))
            cols[1].number_input("MoCo queue size K", min_value=1, step=1024, key=k("method", "queue_size"),
                                 help=h("method", "queue_size"))
            cols[1].checkbox("MoCo symmetric loss", key=k("method", "moco_symmetric"),
                             help=h("method", "moco_symmetric"))
            cols[2].number_input("BYOL predictor hidden width", min_value=1, step=64, placeholder="auto",
                                 key=k("method", "pred_hidden_dim"), help=h("method", "pred_hidden_dim"))
        if gpu_count() > 1:
            st.number_input("GPUs", min_value=1, max_value=gpu_count(), value=gpu_count(), step=1, key="tf_gpus",
                            help=GPUS_HELP)
        st.text_input("Run name", key=k("run", "name"), help=h("run", "name"))
        st.form_submit_button("Launch", key="tf_launch", type="primary", icon=":material/rocket_launch:",
                              on_click=on_launch)
    error = st.session_state.pop("tf_error", None)
    if error:
        st.error(error, icon=":material/error:")


# ---- page ---------------------------------------------------------------------------------------------

st.title("Train")
st.caption("Pre-train an encoder with SimCLR, MoCo v2 or BYOL. Each run trains in a background process that "
           "keeps going when you leave this page or close the browser; its folder holds the checkpoints, metrics "
           "and log.")
init_form()
started = st.session_state.pop("tf_started", None)
if started:
    st.success(f"Started run **{started}**. Its live progress is below; the other pages can use it once it "
               "has saved its first checkpoint (end of epoch 1).", icon=":material/rocket_launch:")
current = current_run()
if current is None:
    st.info("No runs yet. Pick the **Quick CPU demo** preset below and press **Launch**: it pre-trains a small "
            "ResNet on the bundled digits in about two minutes on a CPU. Then explore it on the other pages.",
            icon=":material/lightbulb:")
else:
    show_run(current)
    run_list()
new_run_form()
