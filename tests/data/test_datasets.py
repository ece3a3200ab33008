"""Tests for simclr_core.data.datasets: dataset names and splits, digits, torchvision sources, holdouts."""

from __future__ import annotations

import tarfile
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from simclr_core.data import datasets as data
from simclr_core.data.datasets import DATASETS, ImageSet, default_splits, holdout, load_split, splits_of
from simclr_core.errors import UserError

from tests.data.common import write_image

CIFAR_TAR = Path(__file__).resolve().parents[2].parent / "shared/data/cifar10-jpg.tar.gz"


# ---------------------------------------------------------------- names and splits


def test_unknown_dataset_lists_the_known_ones() -> None:
    for call in (lambda: splits_of("mnist"), lambda: default_splits("mnist"), lambda: load_split("mnist", "train")):
        with pytest.raises(UserError, match="digits, cifar10, stl10, folder"):
            call()


def test_fixed_dataset_splits() -> None:
    assert DATASETS == ("digits", "cifar10", "stl10", "folder")
    assert splits_of("digits") == ["train", "test", "all"]
    assert splits_of("cifar10") == ["train", "test"]
    assert set(splits_of("stl10")) == {"train", "test", "unlabeled", "train+unlabeled"}
    assert default_splits("digits") == ("train", "train", "test")
    assert default_splits("cifar10") == ("train", "train", "test")
    assert default_splits("stl10") == ("train+unlabeled", "train", "test")


def test_unknown_split_lists_offered_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="train, test, all"):
        load_split("digits", "val")
    write_image(tmp_path / "train" / "a" / "1.png")
    write_image(tmp_path / "test" / "a" / "1.png")
    with pytest.raises(UserError, match="choose one of: train, test$"):
        load_split("folder", "all", path=str(tmp_path), data_dir=str(tmp_path / "d"))


@pytest.mark.parametrize(
    ("subdirs", "expected"),
    [
        (["train", "test"], ("train", "train", "test")),
        (["train", "val"], ("train", "train", "val")),
        (["train", "val", "test"], ("train", "train", "test")),
        (["train"], ("train", "train", None)),
        ([], ("all", "all", None)),
    ],
)
def test_folder_default_splits(tmp_path: Path, subdirs: list[str], expected: tuple) -> None:
    for sub in subdirs:
        write_image(tmp_path / sub / "cat" / "1.png")
    if not subdirs:
        write_image(tmp_path / "cat" / "1.png")
    assert splits_of("folder", str(tmp_path)) == [s for s in ("train", "val", "test") if s in subdirs] or ["all"]
    assert default_splits("folder", str(tmp_path)) == expected


def test_unlabelled_folder_has_no_knn_splits(tmp_path: Path) -> None:
    write_image(tmp_path / "1.png")
    assert default_splits("folder", str(tmp_path)) == ("all", None, None)


def test_folder_path_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs --data-path"):
        splits_of("folder")
    with pytest.raises(UserError, match="does not exist"):
        load_split("folder", "all", path=str(tmp_path / "nope"))
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(b"x")
    with pytest.raises(UserError, match="not a folder"):
        default_splits("folder", str(archive))


# ---------------------------------------------------------------- digits


def test_digits_train_test_split() -> None:
    train, test, full = (load_split("digits", s) for s in ("train", "test", "all"))
    assert (len(train), len(test), len(full)) == (1437, 360, 1797)
    for s in (train, test):
        assert s.images.shape[1:] == (3, 32, 32) and s.images.dtype == torch.uint8 and s.images.is_contiguous()
        assert s.labels.dtype == torch.int64 and s.labels.min() == 0 and s.labels.max() == 9
        assert s.classes == [str(c) for c in range(10)] and s.labelled
    assert train.name == "digits/train"
    assert torch.bincount(test.labels, minlength=10).min() >= 30  # stratified: every class ~20 %
    assert torch.equal(train.images[:, 0], train.images[:, 2])  # grey repeated into RGB
    assert full.images.max() == 255 and full.images.min() == 0
    assert torch.equal(load_split("digits", "test").images, test.images)


def test_digits_image_size_override() -> None:
    assert load_split("digits", "test", image_size=16).images.shape == (360, 3, 16, 16)
    with pytest.raises(UserError, match="image size"):
        load_split("digits", "test", image_size=0)


# ---------------------------------------------------------------- subsets and holdout


def test_subset_is_a_sorted_deterministic_sample(tmp_path: Path) -> None:
    for i in range(40):
        write_image(tmp_path / "f" / f"{i:02d}.png", size=(4, 4), color=(i, 0, 0))
    kw = {"path": str(tmp_path / "f"), "data_dir": str(tmp_path / "d")}

    def reds(seed: int) -> list[int]:
        return load_split("folder", "all", subset=10, seed=seed, **kw).images[:, 0, 0, 0].tolist()

    assert len(reds(0)) == 10 and reds(0) == sorted(set(reds(0)))  # distinct rows, in folder order
    assert reds(0) == reds(0) and reds(1) != reds(0)
    assert len(load_split("folder", "all", subset=100, **kw)) == 40
    with pytest.raises(UserError, match="subset"):
        load_split("folder", "all", subset=0, **kw)


def test_holdout_partitions_range() -> None:
    bank, query = holdout(100, 0.2, seed=3)
    assert (len(bank), len(query)) == (80, 20)
    assert bank.dtype == query.dtype == torch.int64
    assert torch.equal(torch.cat([bank, query]).sort().values, torch.arange(100))
    assert torch.equal(bank, bank.sort().values) and torch.equal(query, query.sort().values)
    assert torch.equal(holdout(100, 0.2, seed=3)[1], query)
    assert not torch.equal(holdout(100, 0.2, seed=4)[1], query)
    assert [len(t) for t in holdout(2, 0.01)] == [1, 1]


@pytest.mark.parametrize(
    ("n", "fraction", "match"), [(10, 0.0, "fraction"), (10, 1.0, "fraction"), (1, 0.2, "at least 2")]
)
def test_holdout_errors(n: int, fraction: float, match: str) -> None:
    with pytest.raises(UserError, match=match):
        holdout(n, fraction)


def test_labelled_property() -> None:
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    assert ImageSet(images, torch.tensor([0, 1, 0]), ["a", "b"], "x").labelled
    assert not ImageSet(images, torch.tensor([0, -1, 0]), ["a", "b"], "x").labelled
    assert not ImageSet(images, torch.tensor([0, 0, 0]), [], "x").labelled
    assert len(ImageSet(images, torch.tensor([0, 0, 0]), [], "x")) == 3


# ---------------------------------------------------------------- torchvision datasets (faked: no network)


class FakeCIFAR10:
    def __init__(self, root: str, train: bool, download: bool) -> None:
        rng = np.random.default_rng(int(train))
        self.data = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)  # NHWC, as torchvision keeps it
        self.targets = [0, 1, 2, 3, 4, 5]
        self.classes = [f"c{i}" for i in range(10)]


class FakeSTL10:
    def __init__(self, root: str, split: str, download: bool) -> None:
        n_lab, n_unl = (4 if "train" in split else 0), (3 if "unlabeled" in split else 0)
        self.data = np.zeros((n_lab + n_unl, 3, 96, 96), dtype=np.uint8)
        self.labels = np.array([1] * n_lab + [-1] * n_unl)
        self.classes = ["airplane", "bird"]


class OfflineDataset:
    def __init__(self, *args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")


def test_cifar10_converted_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    s = load_split("cifar10", "test", data_dir=str(tmp_path))
    assert s.images.shape == (6, 3, 32, 32) and s.images.dtype == torch.uint8 and s.images.is_contiguous()
    assert torch.equal(s.images[2], torch.from_numpy(FakeCIFAR10("", False, False).data[2]).permute(2, 0, 1))
    assert s.labels.tolist() == [0, 1, 2, 3, 4, 5] and s.classes[0] == "c0" and s.name == "cifar10/test"
    monkeypatch.setattr("torchvision.datasets.CIFAR10", OfflineDataset)
    assert torch.equal(load_split("cifar10", "test", data_dir=str(tmp_path)).images, s.images)
    assert load_split("cifar10", "test", data_dir=str(tmp_path), subset=3).images.shape == (3, 3, 32, 32)
    with pytest.raises(UserError, match="offline"):  # another size is not cached yet
        load_split("cifar10", "test", data_dir=str(tmp_path), image_size=16)


def test_cifar10_resized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)
    assert load_split("cifar10", "train", data_dir=str(tmp_path), image_size=16).images.shape == (6, 3, 16, 16)


def test_stl10_unlabelled_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torchvision.datasets.STL10", FakeSTL10)
    unl = load_split("stl10", "unlabeled", data_dir=str(tmp_path))
    assert unl.images.shape == (3, 3, 96, 96) and unl.labels.tolist() == [-1] * 3 and unl.classes == []
    both = load_split("stl10", "train+unlabeled", data_dir=str(tmp_path))
    assert both.labels.tolist() == [1] * 4 + [-1] * 3 and both.classes == ["airplane", "bird"] and not both.labelled
    assert load_split("stl10", "train", data_dir=str(tmp_path)).labelled


@pytest.mark.parametrize("dataset", ["cifar10", "stl10"])
def test_offline_download_names_the_alternatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str) -> None:
    monkeypatch.setattr("torchvision.datasets.CIFAR10", OfflineDataset)
    monkeypatch.setattr("torchvision.datasets.STL10", OfflineDataset)
    with pytest.raises(UserError, match=r"could not be downloaded \(offline\?\).*--dataset folder.*--dataset digits"):
        load_split(dataset, "test", data_dir=str(tmp_path))


def test_missing_dataset_without_download(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="CIFAR-10 is not in .*downloading is off.*--dataset digits"):
        load_split("cifar10", "train", data_dir=str(tmp_path), download=False)


# ---------------------------------------------------------------- the real CIFAR-10 JPEG folder, when present


@pytest.mark.shared_data
@pytest.mark.skipif(not CIFAR_TAR.exists(), reason=f"{CIFAR_TAR} not present")
def test_real_cifar10_jpeg_test_split(tmp_path: Path) -> None:
    with tarfile.open(CIFAR_TAR) as tar:
        members = [m for m in tar if m.name.lstrip("./").startswith("test/")]
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp_path / "cifar", members=members, **extra)
    s = load_split("folder", "test", path=str(tmp_path / "cifar"), data_dir=str(tmp_path / "d"))
    assert s.images.shape == (10_000, 3, 32, 32) and s.skipped == 0
    assert len(s.classes) == 10 and "airplane" in s.classes
    assert torch.bincount(s.labels).tolist() == [1000] * 10


# ---- issue 16: a resize that does not fit in memory ----------------------------------------------------------


def test_a_resize_that_does_not_fit_in_memory_names_an_image_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_available_memory", lambda: 2 * 10**9)  # 2 GB free
    with pytest.raises(UserError) as e:
        load_split("digits", "train", image_size=1024)  # 1,437 images x 3 MB: 4.3 GB
    assert str(e.value) == (
        "--image-size 1024 makes the 1437 images take 4,311 MB of memory, and 1,908 MB are free; "
        "use --image-size 480 or less"
    )
    assert load_split("digits", "train", image_size=480).images.shape[-1] == 480  # the advice fits
