"""Search: an image's nearest neighbours in a run's embedding space, trained weights against random ones."""

from __future__ import annotations

import random

import numpy as np
import streamlit as st

from simclr_core.data import datasets as data
from simclr_core.data.preview import upscale_nearest
from simclr_core.embeddings import extract, load_encoder, pinned_encoder
from simclr_core.explorer.neighbours import READABLE, image_from_bytes
from simclr_core.runs.rundir import RunDir
from ui.cached import load_embeddings, neighbour_index, run_images, to_hwc
from ui.jobs import run_embeddings_file
from ui.runs import checkpoint_label, newer_checkpoint, pinned_key, run_with_checkpoint
from ui.shell import routed
from ui.widgets import keep, user_errors

routed()

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
FEATURES = {"h": "h (backbone)", "z": "z (projection)"}
SHOW_SIDE = 80  # small images are enlarged to at least this side, with sharp pixels


@st.cache_resource(show_spinner=False, max_entries=4)
def encoder_of(run_path: str, ckpt_key: str, random_init: bool):
    """The encoder of the run's pinned checkpoint ``ckpt_key`` (or its random-init twin), on the CPU."""
    with user_errors():
        if random_init:
            return load_encoder(RunDir(run_path), random_init=True)[0]
        return pinned_encoder(RunDir(run_path), ckpt_key)


def label_name(label: int, classes: list[str]) -> str:
    return data.printable(classes[label]) if 0 <= label < len(classes) else "unlabelled"


def show_neighbours(
    title: str,
    bank_file: str,
    query: np.ndarray,
    k: int,
    exclude: int | None,
    images: data.ImageSet,
    query_label: int | None,
) -> list[tuple[float, int]]:
    """The top-k bank images by cosine similarity to ``query`` (leaving out bank row ``exclude``); returns them."""
    bank = load_embeddings(bank_file)
    sims, idx = neighbour_index(bank_file).search(query, k + (exclude is not None))
    hits = [(float(s), int(i)) for s, i in zip(sims[0], idx[0], strict=False) if int(i) != exclude][:k]
    st.markdown(f"**{title}**")
    if query_label is not None and query_label >= 0:
        same = sum(int(bank.labels[i]) == query_label for _, i in hits)
        st.caption(
            f"{same} of {len(hits)} neighbours share the query's label ({label_name(query_label, bank.classes)})"
        )
    pics = to_hwc(images.images[[i for _, i in hits]].numpy())
    where = (lambda i: f" · {data.printable(images.paths[i])}") if images.paths is not None else (lambda i: "")
    st.image(
        [upscale_nearest(p, SHOW_SIDE) for p in pics],
        caption=[f"#{i} · {label_name(int(bank.labels[i]), bank.classes)} · cos {s:.3f}{where(i)}" for s, i in hits],
    )
    return hits


def open_on_map(split: str, feature: str, hits: list[tuple[float, int]], query: dict) -> None:
    """Hand the query and its neighbours to the Embeddings page's map, which marks them."""
    st.session_state["emb_focus"] = {
        "split": split,
        "row": None if "split" in query or "image" in query else query["row"],
        "neighbours": [i for _, i in hits],
        "sims": [s for s, _ in hits],
        "query": query,
    }
    st.session_state["emb_feature"] = feature
    st.session_state["emb_view"] = "map"
    st.switch_page("pages/embeddings.py")


def random_index(n: int) -> None:
    st.session_state["search_idx"] = random.randrange(n)


st.title("Search")
st.caption(
    "Pick an image and see the images the encoder finds most similar (cosine similarity of their "
    "embeddings). A good SimCLR encoder puts images of the same class next to each other without "
    "ever seeing a label; compare with random weights to see what training added."
)

run = run_with_checkpoint(
    "No runs yet. Start one on the **Train** page (digits + resnet_mini trains in a few minutes on a CPU), then "
    "come back to search its embedding space.",
    "Run **{name}** has no checkpoint yet: one is saved at the end of every epoch. Wait for the first epoch "
    "(see the Train page) or pick another run in the sidebar.",
)

with user_errors():
    cfg = run.config()
    d = cfg.data
    splits = data.splits_of(d.dataset, d.data_path)
    pretrain, bank_default, query_default = data.default_splits(d.dataset, d.data_path)
newer_checkpoint(run)
ckey = pinned_key(run)
st.query_params["run"] = run.name  # a reload or a shared link opens this run

keep("search_feature", "h", lambda v: v in FEATURES, url="feature")
keep("search_k", 10, lambda v: 1 <= v <= 50, url="k")
keep("search_bank", bank_default or pretrain, lambda v: v in splits, url="bank")
keep("search_source", "Dataset image", lambda v: v in ("Dataset image", "Upload"), url="query")
keep("search_compare", False, url="compare")
c = st.columns([2, 2, 2, 2])
feature = c[0].radio(
    "Feature",
    list(FEATURES),
    format_func=FEATURES.get,
    key="search_feature",
    help="h: the backbone output, used by kNN and linear probes; z: the projection head output, "
    "where the contrastive loss is computed",
)
k = c[1].slider("Neighbours k", 1, 50, key="search_k")
# default: labelled train images as the bank and held-out test images as queries, as kNN evaluation does
bank_split = c[2].selectbox(
    "Search in split",
    splits,
    key="search_bank",
    help="the images searched (the memory bank)",
)
source = c[3].radio("Query", ["Dataset image", "Upload"], key="search_source")
compare = st.checkbox(
    "Compare with a random-init backbone",
    key="search_compare",
    help="the same architecture with untrained weights: the difference is what SimCLR learned",
)

with user_errors():
    bank_images = run_images(run, bank_split)
bank_file = run_embeddings_file(run, bank_split, feature, False)
random_file = run_embeddings_file(run, bank_split, feature, True) if compare else None

left, right = st.columns([1, 4], gap="large")
exclude, query_label = None, None
with left:
    if source == "Dataset image":
        q_default = query_default if query_default in splits else bank_split
        keep("search_query_split", q_default, lambda v: v in splits, url="query_split")
        q_split = st.selectbox("Query split", splits, key="search_query_split")
        with user_errors():
            q_images = run_images(run, q_split)
        n = len(q_images)
        keep("search_idx", 0, lambda v: isinstance(v, int) and 0 <= v < n, url="index")  # another split may be shorter
        i = int(st.number_input("Image index", 0, n - 1, key="search_idx", help=f"0 to {n - 1} in the {q_split} split"))
        st.button("Random", on_click=random_index, args=(n,), icon=":material/shuffle:")
        query_label = int(q_images.labels[i])
        query_pic = to_hwc(q_images.images[i : i + 1].numpy())[0]
        caption = f"{q_split} #{i} · {label_name(query_label, q_images.classes)}"
        if q_images.paths is not None:
            caption += f" · {data.printable(q_images.paths[i])}"
        handoff = {"split": q_split, "row": i} if q_split != bank_split else {"row": i}

        def query_of(random_init: bool) -> np.ndarray:
            if q_split == bank_split:  # already embedded: the bank row is this image
                return load_embeddings(random_file if random_init else bank_file).embeddings[i]
            return load_embeddings(run_embeddings_file(run, q_split, feature, random_init)).embeddings[i]

        if q_split == bank_split:
            exclude = i
            st.caption(
                "The query is in the searched split, so it is its own nearest neighbour (similarity "
                "1.000); it is left out of the results."
            )
    else:
        upload = st.file_uploader(f"Image ({READABLE}, any size)", type=UPLOAD_TYPES, key="search_upload")
        if upload is None:
            st.info("Upload an image to find its neighbours. It is resized and centre-cropped like the run's images.")
            st.stop()
        view_side = cfg.views.crop_size or int(bank_images.images.shape[-1])
        with user_errors():
            img = image_from_bytes(upload.getvalue(), view_side, f"'{upload.name}'")
        query_pic, caption = to_hwc(img.numpy())[0], upload.name
        handoff = {"image": query_pic, "caption": upload.name}

        def query_of(random_init: bool) -> np.ndarray:
            with st.spinner("Embedding the upload..."):
                encoder = encoder_of(str(run.path), "random" if random_init else ckey, random_init)
                return extract(encoder, img, feature=feature).numpy()[0]

    st.markdown("**Query**")
    st.image(upscale_nearest(query_pic, 2 * SHOW_SIDE), caption=caption)

with right:
    trained = f"Trained encoder ({checkpoint_label(run)}, {bank_split} split)"
    if compare:
        cols = st.columns(2, gap="large")
        with cols[0]:
            hits = show_neighbours(trained, bank_file, query_of(False), k, exclude, bank_images, query_label)
        with cols[1]:
            show_neighbours(
                f"Random-init encoder (no training, {bank_split} split)",
                str(random_file),
                query_of(True),
                k,
                exclude,
                bank_images,
                query_label,
            )
    else:
        hits = show_neighbours(trained, bank_file, query_of(False), k, exclude, bank_images, query_label)
    if st.button(
        "Open on the map",
        key="search_to_map",
        icon=":material/scatter_plot:",
        help=f"the Embeddings page's map of the {bank_split} split, with the query and these neighbours marked",
    ):
        open_on_map(bank_split, feature, hits, handoff)
