"""The Train page's new-run form: preset and its expected results, every field, the pre-launch check, Launch.

The form is a fragment, drawn alone when a field changes; its fields live in session state under
``tf.<section>.<name>`` and in the address (each field's CLI option), so a reload or a link keeps them.
Labels, help, choices and steps come from the config's field table (:func:`simclr_core.config.widget_spec`);
the check before Launch is :mod:`simclr_core.training.precheck`, the time estimate a background job
(:mod:`simclr_core.training.estimate`), and Launch starts the run's own process (:mod:`simclr_core.runs.launch`).
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from pathlib import Path

import streamlit as st

# hardware as a module: a test patches simclr_core.hardware.gpu_count, which a name imported once would miss
from simclr_core import hardware
from simclr_core.config import TrainConfig, ViewConfig, widget_spec
from simclr_core.data.datasets import DATASETS, printable
from simclr_core.errors import UserError
from simclr_core.methods import METHODS
from simclr_core.models import BACKBONES
from simclr_core.presets import PRESETS, RECIPES, preset, suggest_run_name
from simclr_core.runs import launch
from simclr_core.training import precheck
from simclr_core.training.estimate import job_spec as estimate_spec
from ui.cached import folder_summary, host_reachable
from ui.jobs import background
from ui.runs import run_names, runs_dir
from ui.widgets import keep, setting_help, setting_input, setting_slider

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
        ("run", "keep_best"),
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
NONE_CHOICE = {"ema_schedule": "auto", "keep_best": "none"}  # what a select box shows for the field's None
SLIDERS = ("crop_scale_min", "jitter_prob", "grayscale_prob")  # the view knobs shown as sliders
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
    return setting_help(section, name)


def number(where, section: str, name: str) -> None:
    """The form's number input for a config field (label, step and help from the field table)."""
    setting_input(where, section, name, k(section, name))


# ---- form state <-> TrainConfig --------------------------------------------------------------------


def to_widget(section: str, name: str, value):
    """A config value as its widget holds it: text for the text inputs, "auto" for None where a select box shows it."""
    if (section, name) in TEXT_FIELDS:
        return "" if value is None else str(value)
    if name in ("ema_schedule", "keep_best"):
        return value or NONE_CHOICE[name]
    return STEMS[value] if name == "cifar_stem" else value


def from_widget(section: str, name: str, value):
    """A widget's value back as the config field's (the inverse of :func:`to_widget`); a UserError for a bad number."""
    if name == "cifar_stem":
        return next(b for b, label in STEMS.items() if label == value)
    if name in ("ema_schedule", "keep_best"):
        return None if value == NONE_CHOICE[name] else value
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
    keep("tf_gpus", hardware.gpu_count())
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
    """Everything that would make the launch fail at once (simclr_core.training.precheck), as a UserError."""
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
    """A new preset: every field from it, and the preset's own views."""
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
    """Launch: check the form's config afresh, start its process and pick the new run in the sidebar."""
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


# ---- the new-run form ---------------------------------------------------------------------------------


def folder_caption(summary: precheck.FolderSummary) -> str:
    """Each split of an image folder on a line: its counts and first class names."""
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
    c3.selectbox(
        LABELS["keep_best"],
        ["none", *widget_spec("run", "keep_best").choices],
        key=k("run", "keep_best"),
        help=h("run", "keep_best") + " · which signal to trust: the Evaluate page's ranking and BENCHMARKS.md",
    )
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
    if hardware.gpu_count() > 1:
        st.number_input("GPUs", min_value=1, max_value=hardware.gpu_count(), step=1, key="tf_gpus", help=GPUS_HELP)
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
    about 15 s that builds what training builds and times a few steps; simclr_core.training.estimate), not a
    constant."""
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
        result = background(estimate_spec(cfg, requested=asked[1]), "Measuring these settings")
    if result is not None:
        c2.caption(f":material/timer: {result['describe']}")
