"""Checks before a run is launched: everything that would make it fail at once, found without starting it.

The app calls :func:`check_new_run` while the user fills the form, so a mistake shows beside
Launch instead of as a failed run folder: an image folder given with another dataset, a missing,
empty or unreadable folder, a file where a folder is meant, a folder outside the app's roots
(:mod:`simclr_core.data.roots`), a batch larger than the dataset, CIFAR-10 or STL-10 neither
downloaded nor downloadable, a run name already taken. :func:`describe_folder` says what a folder
holds (splits, images, classes) before anything is decoded.

Messages name settings by their command-line flags (``--batch-size``), as the CLI's do;
:func:`for_form` rewrites them with a form's own labels.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from simclr_core.config import TrainConfig
from simclr_core.data import datasets as data
from simclr_core.data import roots
from simclr_core.errors import UserError
from simclr_core.resolve import resolve, warnings

# Split sizes of the datasets torchvision downloads (fixed by the datasets themselves).
KNOWN_SIZES = {
    "cifar10": {"train": 50_000, "test": 10_000},
    "stl10": {"train": 5_000, "test": 8_000, "unlabeled": 100_000, "train+unlabeled": 105_000},
}
# Where torchvision keeps each dataset under --data-dir, its download host, and the download's size.
DOWNLOADS = {
    "cifar10": ("CIFAR-10", "cifar-10-batches-py", "www.cs.toronto.edu", "170 MB"),
    "stl10": ("STL-10", "stl10_binary", "ai.stanford.edu", "2.6 GB"),
}
MAX_ENTRIES = 200_000  # a folder scan stops after this many entries (someone may type their home folder)


@dataclass
class SplitSummary:
    """What one split folder holds."""

    images: int = 0
    classes: dict[str, int] = field(default_factory=dict)  # class sub-folder -> images in it
    unlabelled: int = 0  # images directly in the split folder
    unreadable: int = 0  # sub-folders that could not be listed


@dataclass
class FolderSummary:
    """What an image folder holds, from a scan of names only (nothing is decoded)."""

    root: Path
    splits: dict[str, SplitSummary]
    truncated: bool = False  # the scan stopped at MAX_ENTRIES: counts are lower bounds

    @property
    def pretrain(self) -> str:
        """The split a run pre-trains on (as :func:`simclr_core.data.datasets.default_splits` picks it)."""
        return "train" if "train" in self.splits else next(iter(self.splits))

    def describe(self) -> str:
        """One line per split: ``train: 1,200 images in 10 classes``."""
        more = "at least " if self.truncated else ""
        lines = []
        for name, s in self.splits.items():
            what = f"{more}{s.images:,} images"
            if s.classes:
                what += f" in {len(s.classes)} class{'es' if len(s.classes) != 1 else ''}"
                if s.unlabelled:
                    what += f" (+{s.unlabelled:,} unlabelled)"
            else:
                what += ", unlabelled (no class sub-folders)"
            if s.unreadable:
                what += f"; {s.unreadable} unreadable sub-folder(s) skipped"
            lines.append(f"{'whole folder' if name == 'all' else name}: {what}")
        return "\n".join(lines)


def folder_path(path: str | None, label: str = "--data-path") -> Path:
    """The folder a user typed, resolved, if it is allowed (:mod:`simclr_core.data.roots`), exists and is a folder."""
    if not path or not path.strip():
        raise UserError(
            f"the folder dataset needs an image folder: fill in {label} (a folder of images, or of class sub-folders)"
        )
    resolved = roots.allowed_folder(path, label)
    if not resolved.exists():
        raise UserError(f"{label} {path.strip()} does not exist: check the path")
    if not resolved.is_dir():
        raise UserError(
            f"{label} {path.strip()} is a file, not a folder: give the folder that holds the images "
            "(extract an archive first)"
        )
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise UserError(f"{label} {path.strip()} cannot be read (permission denied): check its permissions")
    return resolved


def _is_image(name: str) -> bool:
    return name.lower().endswith(data.IMAGE_EXTENSIONS) and not name.startswith(".")


def _count(folder: str, budget: list[int]) -> tuple[int, int]:
    """(image files, unreadable sub-folders) anywhere below ``folder``; hidden entries and folder symlinks skipped."""
    images = unreadable = 0
    stack = [folder]
    while stack and budget[0] > 0:
        try:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    budget[0] -= 1
                    if e.name.startswith("."):
                        continue
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif _is_image(e.name) and e.is_file():
                            images += 1
                    except OSError:
                        unreadable += 1
        except OSError:
            unreadable += 1
    return images, unreadable


def _summarize_split(folder: Path, budget: list[int]) -> SplitSummary:
    s = SplitSummary()
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError:
        s.unreadable += 1
        return s
    for e in entries:
        budget[0] -= 1
        try:
            is_dir, is_file = e.is_dir(), e.is_file()
        except OSError:
            s.unreadable += 1
            continue
        if is_file and _is_image(e.name):
            s.unlabelled += 1
        elif is_dir:
            n, bad = _count(e.path, budget)
            s.unreadable += bad
            if n:  # a folder without images is no class
                s.classes[e.name] = n
    s.images = s.unlabelled + sum(s.classes.values())
    return s


def describe_folder(path: str | None, label: str = "--data-path", max_entries: int = MAX_ENTRIES) -> FolderSummary:
    """What an image folder holds: its splits (train/ val/ test/ sub-folders, else the whole folder as
    ``all``), and each split's images and class sub-folders. A UserError when the folder is not
    allowed, missing, a file, unreadable, or holds no images."""
    root = folder_path(path, label)
    names = [s for s in data.FOLDER_SPLITS if (root / s).is_dir()] or ["all"]
    budget = [max_entries]
    splits = {name: _summarize_split(root if name == "all" else root / name, budget) for name in names}
    summary = FolderSummary(root, splits, truncated=budget[0] <= 0)
    if not any(s.images for s in splits.values()):
        raise UserError(
            f"{label} {root} holds no images (looked for {', '.join(data.IMAGE_EXTENSIONS)}, "
            "in it and in its sub-folders): point it at a folder of images or of class sub-folders"
        )
    pre = splits[summary.pretrain]
    if not pre.images:
        raise UserError(
            f"the {summary.pretrain}/ folder of {label} {root} holds no images; a run "
            "pre-trains on it: put images there, or point at a folder without train/ val/ test/"
        )
    return summary


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host`` opens within ``timeout`` seconds (name lookup included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)  # a lookup can hang past any socket timeout
    t.start()
    t.join(timeout)
    return bool(ok)


def downloaded(dataset: str, data_dir: str | Path) -> bool:
    """True when CIFAR-10 / STL-10 is in ``data_dir`` (torchvision's folder, or the app's decode cache)."""
    _, folder, _, _ = DOWNLOADS[dataset]
    d = Path(data_dir)
    return (d / folder).is_dir() or any((d / "cache").glob(f"{dataset}_*.json"))


@dataclass
class Plan:
    """What a launch will train on, as found by :func:`check_new_run`."""

    images: int  # images of the pre-training split (after --subset)
    source: str  # e.g. "digits/train", "folder /home/me/pics (train)"
    folder: FolderSummary | None = None
    notes: list[str] = field(default_factory=list)  # things to know that are not errors (a download to come)


def run_name_taken(runs_dir: str | Path, name: str) -> bool:
    """True when a run of this name exists and holds work (as :func:`simclr_core.runs.rundir.new_run` refuses it)."""
    from simclr_core.runs.rundir import RunDir

    run = RunDir(Path(runs_dir) / name)
    return run.config_path.exists() and (run.last_ckpt.exists() or run.status().get("state") != "failed")


def check_new_run(
    cfg: TrainConfig, folder: FolderSummary | None = None, online: Callable[[str], bool] | None = None
) -> Plan:
    """Everything that would make a launch of ``cfg`` fail at once, as a UserError naming the setting and the fix.

    Args:
        cfg: the run's settings (``cfg.run.name`` and ``cfg.run.runs_dir`` included).
        folder: :func:`describe_folder` of ``cfg.data.data_path`` when the caller has it already (cached).
        online: tells whether a download host can be reached (default: :func:`reachable`).
    """
    d = cfg.data
    if not cfg.run.name:
        raise UserError("give the run a name in --name (letters, digits, '.', '_' and '-')")
    if d.dataset != "folder" and d.data_path:
        raise UserError(
            f"--data-path is read only with --dataset folder, and this run uses {d.dataset}: clear "
            "it, or choose the folder dataset"
        )
    if d.dataset == "folder" and not (d.data_path or "").strip():
        raise UserError(
            "the folder dataset needs an image folder: fill in --data-path "
            "(a folder of images, or of class sub-folders)"
        )
    cfg.validate()
    resolve(cfg, cfg.data.image_size or 32)  # an unknown method or head, said now (the side decides nothing here)
    if run_name_taken(cfg.run.runs_dir, cfg.run.name):
        raise UserError(
            f"run '{cfg.run.name}' already exists: resume it (pick it in the run list), "
            "or give this run another name (--name)"
        )
    notes: list[str] = []
    summary = None
    if d.dataset == "folder":
        summary = folder if folder is not None else describe_folder(d.data_path)
        split = d.train_split or summary.pretrain
        if split not in summary.splits:
            raise UserError(
                f"--train-split {split} is not a split of {summary.root} (it has: {', '.join(summary.splits)})"
            )
        n, source = summary.splits[split].images, f"folder {summary.root} ({split})"
        if not summary.truncated and data.leaves_out_fifth(d, split):
            n -= len(data.holdout(n)[1])  # the kNN and probe queries are not pre-trained on
            source += ", less the fifth held out for evaluation"
    elif d.dataset == "digits":
        split = d.train_split or "train"
        n, source = len(data.load_split("digits", split, image_size=8)), f"digits/{split}"
    else:
        split = d.train_split or data.default_splits(d.dataset)[0]
        if split not in KNOWN_SIZES[d.dataset]:
            raise UserError(
                f"--train-split {split} is not a split of {d.dataset} (it has: {', '.join(KNOWN_SIZES[d.dataset])})"
            )
        n, source = KNOWN_SIZES[d.dataset][split], f"{d.dataset}/{split}"
        title, _, host, size = DOWNLOADS[d.dataset]
        if not downloaded(d.dataset, d.data_dir):
            if not d.download:
                raise UserError(
                    f"{title} is not in {d.data_dir}/ and downloading is off: allow --download once, "
                    "or choose --dataset digits (bundled) or folder"
                )
            if not (online or reachable)(host):
                raise UserError(
                    f"{title} is not in {d.data_dir}/ and its server ({host}) cannot be reached "
                    "(offline?): connect once to download it, or choose --dataset digits (bundled, "
                    "offline) or folder (your images, e.g. CIFAR-10 as JPEGs)"
                )
            notes.append(f"{title} ({size}) is downloaded into {d.data_dir}/ when the run starts")
    if d.subset is not None:
        n = min(n, d.subset)
    truncated = summary is not None and summary.truncated
    batch = cfg.optim.batch_size  # None: "auto", at most the training images
    if batch is not None and batch > n and not truncated:
        raise UserError(
            f"--batch-size {batch} is larger than the {n:,} training images of {source}; lower it to {n} or less"
        )
    notes += [f"warning: {w}" for w in warnings(cfg, n)]  # the method's own, e.g. a MoCo queue longer than the data
    return Plan(images=n, source=source, folder=summary, notes=notes)


_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?: \((\w+)\.(\w+)\))?")
_CONFIG_KEY = re.compile(r" ?\(config key \w+\.\w+\)")


def for_form(message: str, labels: dict[str, str]) -> str:
    """``message`` with each ``--flag`` (and a following ``(section.field)``) that a form shows replaced by the
    form's label in bold: ``--batch-size 0 ...`` -> ``**Batch size** 0 ...``; a ``(config key section.field)``
    (for config files) is left out.

    ``labels`` maps config field names (``batch_size``) to labels; other flags stay as they are.
    """

    def sub(m: re.Match) -> str:
        label = labels.get(m.group(1).replace("-", "_"))
        return f"**{label}**" if label else m.group(0)

    return _FLAG.sub(sub, _CONFIG_KEY.sub("", message))
