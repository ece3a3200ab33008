"""Cached data access for the pages: images, embeddings, neighbour indexes, thumbnails and folders, ready to show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from simclr_core.config import widget_spec
from simclr_core.data import datasets as data
from simclr_core.data.preview import to_uint8_hwc
from simclr_core.embeddings import Embeddings, load_cached
from simclr_core.errors import UserError
from simclr_core.explorer.compute import Graph, load_graph
from simclr_core.explorer.neighbours import NeighbourIndex
from simclr_core.explorer.thumbnails import ThumbnailStore
from simclr_core.runs.rundir import RunDir
from simclr_core.training import precheck
from ui.shell import THUMBS_DIR, THUMBS_URL
from ui.widgets import user_errors


def has_thumbnails(result: dict[str, Any]) -> bool:
    """Whether a map job wrote a thumbnail atlas (read from its result: no file is touched)."""
    return bool(result.get("thumbs")) and isinstance(result.get("atlas"), dict)


def thumbnails(result: dict[str, Any]) -> dict[str, Any] | None:
    """The map job's thumbnail atlas (simclr_core.explorer.thumbnails: ``tile``, ``cols``, ``count``, ``ext``) with
    ``base``, the URL of its folder, or None without one; marks the set as in use, so the store's cap evicts
    other sets first."""
    if not has_thumbnails(result):
        return None
    ThumbnailStore(THUMBS_DIR).touch(result["thumbs"])
    return {**result["atlas"], "base": f"{THUMBS_URL}/{result['thumbs']}/"}


@st.cache_data(ttl=10, show_spinner=False, max_entries=32)
def folder_summary(path: str) -> precheck.FolderSummary:
    """What an image folder holds (splits, images, classes), from a scan of its names; a UserError when the
    folder is outside the allowed roots ($SIMCLR_STUDIO_ROOTS), missing, a file, or empty. Kept ten
    seconds, so typing in other fields does not rescan it."""
    return precheck.describe_folder(path, label="--data-path")


@st.cache_data(ttl=60, show_spinner=False)
def host_reachable(host: str) -> bool:
    """Whether a dataset's download server answers (checked at most once a minute)."""
    return precheck.reachable(host)


def allowed_folder(path: str) -> str:
    """A folder typed into a page's "Image folder" field, resolved, if it lies under the roots the server
    allows ($SIMCLR_STUDIO_ROOTS), exists and holds images; else the page shows why and stops there,
    before anything is read, shown or cached."""
    with user_errors({"data_path": widget_spec("data", "data_path").label}):
        return str(folder_summary(path).root)


@st.cache_resource(show_spinner=False, max_entries=8)
def images_of(dataset: str, split: str, data_path: str | None, data_dir: str, image_size: int | None) -> data.ImageSet:
    """A dataset split as uint8 images (memory-mapped from the decode cache)."""
    return data.load_split(dataset, split, path=data_path, data_dir=data_dir, image_size=image_size)


def run_images(run: RunDir, split: str) -> data.ImageSet:
    """A split of the run's own dataset."""
    d = run.config().data
    return images_of(d.dataset, split, d.data_path, d.data_dir, d.image_size)


@st.cache_resource(show_spinner=False, max_entries=4)
def load_embeddings(path: str) -> Embeddings:
    """An embeddings file a job wrote (named by its checkpoint, so a path never changes content); one copy
    shared by every rerun and session, not a copy per rerun (2 GB at a million 512-d rows): read only."""
    with user_errors():
        emb = load_cached(path)  # a damaged file is deleted, so the embedding job runs again
        if emb is None:
            raise UserError(
                f"the embeddings file {Path(path).name} was damaged and has been removed; reload the "
                "page to compute it again"
            )
        emb.classes = [data.printable(c) for c in emb.classes]  # a folder name that is not UTF-8, shown as \xff
        return emb


@st.cache_resource(show_spinner=False, max_entries=8)
def neighbour_graph(path: str) -> Graph:
    """A split's k-NN graph file (simclr_core.explorer.compute), read once and kept."""
    return load_graph(path)


@st.cache_resource(show_spinner=False, max_entries=4)
def neighbour_index(path: str) -> NeighbourIndex:
    """A search index over an embeddings file, built once per file and kept for every rerun and session."""
    return NeighbourIndex(load_embeddings(path).embeddings)


def to_hwc(images: np.ndarray) -> list[np.ndarray]:
    """(N, 3, H, W) uint8 -> list of (H, W, 3) for st.image."""
    return list(to_uint8_hwc(images))
