import random

import numpy as np
import pytest
import torch

from simclr_core import checkpoints
from simclr_core.errors import UserError
from simclr_core.models import build_backbone


def test_atomic_save_leaves_no_temp_and_loads_weights_only(tmp_path):
    path = tmp_path / "x.pt"
    checkpoints.save_atomic({"w": torch.arange(3), "epoch": 2, "name": "a"}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]
    got = checkpoints.load(path)
    assert torch.equal(got["w"], torch.arange(3)) and got["epoch"] == 2


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    checkpoints.save_atomic({"v": 1}, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoints.save_atomic({"v": 2}, path)
    monkeypatch.undo()
    assert checkpoints.load(path)["v"] == 1


def test_truncated_checkpoint_is_a_user_error(tmp_path):
    path = tmp_path / "x.pt"
    checkpoints.save_atomic({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(UserError, match="truncated or corrupt"):
        checkpoints.load(path)
    with pytest.raises(UserError, match="does not exist"):
        checkpoints.load(tmp_path / "none.pt")


def test_architecture_mismatch_names_fields():
    with pytest.raises(UserError, match="backbone: checkpoint 'resnet18' vs config 'resnet50'"):
        checkpoints.check_architecture(
            {"backbone": "resnet18", "cifar_stem": True}, {"backbone": "resnet50", "cifar_stem": True}, "x.pt"
        )


def test_load_state_shape_mismatch_is_user_error():
    a, _ = build_backbone("resnet_mini", cifar_stem=True)
    b, _ = build_backbone("resnet_mini", cifar_stem=False)
    with pytest.raises(UserError, match="does not fit this model"):
        checkpoints.load_state(b, a.state_dict(), "x.pt")


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    checkpoints.save_atomic(checkpoints.rng_state(), tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoints.set_rng_state(checkpoints.load(tmp_path / "r.pt"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_backbone_export_round_trip(tmp_path):
    net, _ = build_backbone("resnet_mini", cifar_stem=True)
    checkpoints.save_backbone(net, {"backbone": "resnet_mini", "cifar_stem": True}, tmp_path / "backbone.pt")
    back = checkpoints.load_backbone(tmp_path / "backbone.pt")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net.eval()(x), back.eval()(x))
