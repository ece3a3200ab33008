"""Augmentations: the positive pairs SimCLR learns from, drawn by the training code, with every view knob."""

from __future__ import annotations

import random
from dataclasses import asdict

import streamlit as st

from simclr_core.config import DataConfig, ViewConfig, widget_spec
from simclr_core.data import datasets as data
from simclr_core.data.preview import parse_indices, positive_pairs, sample_indices, upscale_nearest
from simclr_core.presets import VIEW_PRESETS
from ui.cached import allowed_folder, images_of
from ui.runs import current_run
from ui.shell import routed
from ui.widgets import keep, setting_slider, user_errors

routed()

SHOW_SIDE = 112  # small images are enlarged to at least this many pixels, with crisp nearest-neighbour pixels
MAX_PAIRS = 16
# slider key -> the ViewConfig fields it sets (two: a range slider, with its own label); ends and steps come from
# the field table (simclr_core.config), so they keep every value one a run accepts, and match the Train page's
KNOBS = {
    "aug_crop_scale": (("crop_scale_min", "crop_scale_max"), "Crop area (fraction of the image)"),
    "aug_flip_prob": (("flip_prob",), None),
    "aug_jitter_strength": (("jitter_strength",), None),
    "aug_jitter_prob": (("jitter_prob",), None),
    "aug_grayscale_prob": (("grayscale_prob",), None),
    "aug_blur_prob": (("blur_prob",), None),
    "aug_blur_sigma": (("blur_sigma_min", "blur_sigma_max"), "Blur sigma (pixels)"),
    "aug_solarize_prob": (("solarize_prob",), None),
}


def set_knobs(values: dict) -> None:
    """Put ViewConfig field values into the sliders (a button callback: runs before the widgets exist)."""
    for key, (names, *_) in KNOBS.items():
        got = tuple(values[n] for n in names)
        st.session_state[key] = got if len(got) == 2 else got[0]


def resample() -> None:
    st.session_state["aug_seed"] = random.randrange(2**31)


def crop_size_range(side: int) -> tuple[int, int]:
    return 8, max(64, 2 * side)


st.title("Augmentations")
st.caption(
    "SimCLR learns by pulling together two random *views* of the same image (a positive pair) and "
    "pushing apart views of different images. Below, each row is an image and the two views training "
    "would draw from it, made by the exact code training runs. Tune the knobs, then train with them."
)

# ---------------------------------------------------------------- which images
run = current_run()
with user_errors():
    run_cfg = run.config() if run else None
top = st.columns([2, 2, 3])
sources = (["run"] if run_cfg else []) + list(data.DATASETS)
keep("aug_source", sources[0], lambda v: v in sources, url="images")
source = top[0].selectbox(
    "Images from",
    sources,
    key="aug_source",
    format_func=lambda s: f"run '{run.name}' ({run_cfg.data.dataset})" if s == "run" else s,
    help="the picked run's dataset, or any dataset (digits is bundled and works offline)",
)
if source == "run":
    d, base_views = run_cfg.data, run_cfg.views
else:
    d, base_views = DataConfig(dataset=source), ViewConfig()
    if source == "folder":
        path = widget_spec("data", "data_path")
        keep("aug_folder", "", url="folder")
        d.data_path = (
            top[0].text_input(path.label, key="aug_folder", placeholder="/path/to/images", help=path.help) or None
        )
        if not d.data_path:
            st.info("Type the path of a folder of images (class sub-folders give labels).")
            st.stop()
        d.data_path = allowed_folder(d.data_path)  # only below the folders the server allows
with user_errors():
    splits = data.splits_of(d.dataset, d.data_path)
    pretrain = d.train_split if d.train_split in splits else data.default_splits(d.dataset, d.data_path)[0]
keep(f"aug_split_{d.dataset}", pretrain if pretrain in splits else splits[0], lambda v: v in splits, url="split")
split = top[1].selectbox(
    "Split", splits, key=f"aug_split_{d.dataset}", help="the split a run pre-trains on is picked first"
)
with user_errors(), st.spinner(f"Loading {d.dataset}/{split} (decoded once, then cached)..."):
    ims = images_of(d.dataset, split, d.data_path, d.data_dir, d.image_size)
side = int(ims.images.shape[-1])
top[2].caption(
    f"**{ims.name}**: {len(ims)} images of {side}×{side} px"
    + (f", {len(ims.classes)} classes" if ims.classes else ", unlabelled")
)

# ---------------------------------------------------------------- the knobs
keep("aug_seed", 0, url="seed")  # not a widget (Resample sets it), but a link shows the same views
resolved = base_views.resolved(side).kwargs()  # "auto" values (blur, jitter strength) for this image size
base_values = {**vars(base_views), "blur_prob": resolved["blur_prob"], "jitter_strength": resolved["jitter_strength"]}
lo, hi = crop_size_range(side)
# a dataset of another size falls back to its own side; the knobs start from the run's (or the default) views
keep("aug_crop_size", base_views.crop_size or side, lambda v: lo <= v <= hi, url="crop_size")
for key, (names, *_) in KNOBS.items():
    got = tuple(base_values[n] for n in names)
    keep(key, got if len(got) == 2 else got[0], url=key.removeprefix("aug_"))
keep("aug_pick", "Random", url="pick")
keep("aug_n", 6, url="pairs")
keep("aug_indices", "0, 1, 2, 3", url="indices")

left, right = st.columns([1, 2], gap="large")
with left:
    st.subheader("View knobs")
    presets = {name: asdict(views()) for name, views in VIEW_PRESETS.items()}
    if source == "run":
        presets[f"Run '{run.name}' settings"] = base_values
    for name, values in presets.items():  # stacked: the labels are too long for columns
        st.button(name, on_click=set_knobs, args=(values,), width="stretch")
    size = widget_spec("views", "crop_size")
    st.slider(size.label, lo, hi, key="aug_crop_size", help=size.help)
    for key, (names, label) in KNOBS.items():
        setting_slider(st, "views", names, key, label)

# settings with no knob here (progressive resolution) stay as the run's, or the defaults, had them
views_values = {**vars(base_views), "crop_size": None}
if st.session_state["aug_crop_size"] != side:
    views_values["crop_size"] = st.session_state["aug_crop_size"]
for key, (names, *_) in KNOBS.items():
    v = st.session_state[key]
    views_values.update(zip(names, v if len(names) == 2 else (v,), strict=False))

with right:
    pick = st.columns([2, 2, 1])
    mode = pick[0].radio("Pick images", ["Random", "By index"], horizontal=True, key="aug_pick")
    if mode == "Random":
        n = pick[1].slider("Pairs", 1, MAX_PAIRS, key="aug_n")
    else:
        text = pick[1].text_input(
            "Indices", key="aug_indices", help=f"comma-separated, 0 to {len(ims) - 1}, at most {MAX_PAIRS}"
        )
    pick[2].button("Resample", on_click=resample, help="new random images (in Random mode) and new views")
    if st.button(
        "Train with these settings",
        type="primary",
        icon=":material/model_training:",
        help="open the Train page with these images (dataset and folder) and view settings filled in",
    ):
        st.session_state["train_views"] = views_values
        st.session_state["train_data"] = {"dataset": d.dataset, "data_path": d.data_path}
        st.switch_page("pages/train.py")

    seed = st.session_state["aug_seed"]
    with user_errors():
        idx = sample_indices(len(ims), n, seed) if mode == "Random" else parse_indices(text, len(ims), MAX_PAIRS)
    kw = ViewConfig(**views_values).resolved(side).kwargs()
    orig, v1, v2 = positive_pairs(ims.images[idx], kw, seed)
    st.caption(
        f"Seed {seed} · views of {kw['size']}×{kw['size']} px"
        + (" (shown enlarged, pixels kept sharp)" if kw["size"] < SHOW_SIDE else "")
    )
    head = st.columns(3)
    for col, title in zip(head, ("Original", "View 1", "View 2"), strict=False):
        col.markdown(f"**{title}**")
    for row, i in enumerate(idx):
        label = int(ims.labels[i])
        name = ims.classes[label] if 0 <= label < len(ims.classes) else "unlabelled"
        cols = st.columns(3)
        for col, arr, what in zip(cols, (orig, v1, v2), ("original", "view 1", "view 2"), strict=False):
            col.image(upscale_nearest(arr[row], SHOW_SIDE), caption=f"#{i} · {name} · {what}")
