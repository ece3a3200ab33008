"""simclr_core.training.precheck: what would make a launch fail at once, found before a process starts."""

import os

import pytest
from PIL import Image

from simclr_core.config import TrainConfig
from simclr_core.data.roots import ENV
from simclr_core.errors import UserError
from simclr_core.training.precheck import check_new_run, describe_folder, downloaded, for_form, reachable

from tests.conftest import tiny_config


@pytest.fixture
def root(tmp_path, monkeypatch):
    """The app may read below tmp_path/allowed only."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv(ENV, str(allowed))
    return allowed


def images(folder, n, ext=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8)).save(folder / f"{i}{ext}")
    return folder


def folder_config(tmp_path, path, batch=4) -> TrainConfig:
    cfg = tiny_config(tmp_path)
    cfg.data.dataset, cfg.data.data_path, cfg.data.subset, cfg.optim.batch_size = "folder", str(path), None, batch
    return cfg


def test_describe_folder_counts_splits_classes_and_loose_images(root):
    images(root / "p" / "train" / "cat", 3)
    images(root / "p" / "train" / "dog" / "deep", 2)  # nested below a class: still that class
    images(root / "p" / "train", 1)  # loose: unlabelled
    images(root / "p" / "train" / "empty", 0)  # no images: no class
    images(root / "p" / "test" / "cat", 2)
    (root / "p" / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "p" / "train" / ".hidden").mkdir()
    images(root / "p" / "train" / ".hidden", 5)
    s = describe_folder(str(root / "p"))
    assert list(s.splits) == ["train", "test"] and s.pretrain == "train"
    train = s.splits["train"]
    assert (train.images, train.classes, train.unlabelled) == (6, {"cat": 3, "dog": 2}, 1)
    assert s.splits["test"].images == 2
    assert s.describe().splitlines() == ["train: 6 images in 2 classes (+1 unlabelled)", "test: 2 images in 1 class"]


def test_a_folder_without_splits_is_all_and_may_be_unlabelled(root):
    images(root / "flat", 4, ".JPG")
    s = describe_folder(str(root / "flat"))
    assert list(s.splits) == ["all"] and s.splits["all"].images == 4 and not s.splits["all"].classes
    assert "unlabelled" in s.describe()


def test_folder_mistakes_are_errors_naming_the_fix(root, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        describe_folder(str(root / "nowhere"))
    (root / "a.zip").write_bytes(b"PK")
    with pytest.raises(UserError, match="is a file, not a folder"):
        describe_folder(str(root / "a.zip"))
    (root / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no images"):
        describe_folder(str(root / "empty"))
    images(root / "split" / "test" / "a", 2)
    (root / "split" / "train").mkdir()
    with pytest.raises(UserError, match="train/ folder .* holds no images"):
        describe_folder(str(root / "split"))
    with pytest.raises(UserError, match="outside the folders"):
        describe_folder(str(tmp_path))
    with pytest.raises(UserError, match="needs an image folder"):
        describe_folder("")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_class_folders_are_counted_not_fatal(root):
    images(root / "p" / "a", 2)
    images(root / "p" / "b", 2)
    (root / "p" / "b").chmod(0)
    try:
        s = describe_folder(str(root / "p"))
    finally:
        (root / "p" / "b").chmod(0o755)
    assert s.splits["all"].images == 2 and s.splits["all"].unreadable == 1


def test_a_single_split_folder_pretrains_without_its_held_out_fifth(root, tmp_path):
    images(root / "q" / "a", 5)
    images(root / "q" / "b", 5)
    with pytest.raises(UserError, match=r"larger than the 8 training images .* less the fifth held out"):
        check_new_run(folder_config(tmp_path, root / "q", batch=9))
    assert check_new_run(folder_config(tmp_path, root / "q", batch=8)).images == 8
    cfg = folder_config(tmp_path, root / "q", batch=9)
    cfg.data.transductive = True  # the fifth is pre-trained on too
    assert check_new_run(cfg).images == 10


def test_a_huge_folder_is_scanned_up_to_a_bound(root):
    images(root / "p" / "a", 30)
    s = describe_folder(str(root / "p"), max_entries=10)
    assert s.truncated and s.describe().startswith("whole folder: at least")


def test_batch_larger_than_the_training_images_is_an_error(root, tmp_path):
    images(root / "p" / "train" / "a", 3)
    images(root / "p" / "test" / "a", 10)
    with pytest.raises(UserError, match=r"--batch-size 4 is larger than the 3 training images .*lower it to 3"):
        check_new_run(folder_config(tmp_path, root / "p", batch=4))
    plan = check_new_run(folder_config(tmp_path, root / "p", batch=3))
    assert plan.images == 3 and plan.folder.pretrain == "train"
    cfg = tiny_config(tmp_path)
    cfg.optim.batch_size = 2000
    with pytest.raises(UserError, match="larger than the 64 training images of digits/train"):  # subset=64
        check_new_run(cfg)
    cfg.data.subset, cfg.optim.batch_size = None, 256
    assert check_new_run(cfg).images == 1437  # the digits' train split


def test_a_folder_path_with_another_dataset_is_an_error(root, tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.data.data_path = str(root)
    with pytest.raises(UserError, match="--data-path is read only with --dataset folder, and this run uses digits"):
        check_new_run(cfg)


def test_cifar_and_stl_need_their_files_or_a_reachable_server(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.data.dataset, cfg.data.subset, cfg.optim.batch_size = "cifar10", None, 256
    hosts = []
    with pytest.raises(UserError, match=r"CIFAR-10 is not in .* cannot be reached \(offline\?\)"):
        check_new_run(cfg, online=lambda host: hosts.append(host) or False)
    assert hosts == ["www.cs.toronto.edu"]
    plan = check_new_run(cfg, online=lambda host: True)
    assert plan.images == 50_000 and "downloaded" in plan.notes[0]
    cfg.data.download = False
    with pytest.raises(UserError, match="downloading is off"):
        check_new_run(cfg, online=lambda host: True)
    (tmp_path / "data" / "cifar-10-batches-py").mkdir(parents=True)  # there already: no network needed
    assert downloaded("cifar10", cfg.data.data_dir)
    assert check_new_run(cfg, online=lambda host: pytest.fail("asked the network")).notes == []
    cfg.data.dataset = "stl10"
    with pytest.raises(UserError, match="STL-10 is not in"):
        check_new_run(cfg, online=lambda host: False)


def test_run_names_and_config_values_are_checked(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.run.name = None
    with pytest.raises(UserError, match="give the run a name"):
        check_new_run(cfg)
    cfg.run.name = "x"
    cfg.optim.batch_size = 0
    with pytest.raises(UserError, match="--batch-size .* at least 2"):
        check_new_run(cfg)
    cfg.optim.batch_size = 8
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    cfg.save(run / "config.json")
    with pytest.raises(UserError, match="'x' already exists"):
        check_new_run(cfg)


def test_for_form_names_the_forms_fields_instead_of_flags():
    labels = {"batch_size": "Batch size", "lr": "Learning rate", "temperature": "Temperature"}
    assert (
        for_form("--batch-size 256 is larger than the 32 training images", labels)
        == "**Batch size** 256 is larger than the 32 training images"
    )
    assert (
        for_form("--batch-size (optim.batch_size) must be at least 2, got 0", labels)
        == "**Batch size** must be at least 2, got 0"
    )
    assert (
        for_form("--batch-size must be at least 2, got 0 (config key optim.batch_size)", labels)
        == "**Batch size** must be at least 2, got 0"
    )
    assert (
        for_form("lower --lr or raise --temperature, then resume", labels)
        == "lower **Learning rate** or raise **Temperature**, then resume"
    )
    assert for_form("--knn-k must be positive; see --help", labels) == "--knn-k must be positive; see --help"


def test_reachable_is_false_for_a_closed_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused at once
        assert not reachable("127.0.0.1", port, timeout=2)
