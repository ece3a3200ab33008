import random
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_core.errors import UserError
from simclr_core.models import build_backbone
from simclr_core.runs import checkpoints


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
    back = checkpoints.load_trunk(tmp_path / "backbone.pt")
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net.eval()(x), back.eval()(x))


# ---- issue 16: a full disk inside torch.save, and damaged fields that were still tracebacks -------------------


def test_a_full_disk_inside_torch_save_is_the_oserror_it_stands_for(tmp_path, monkeypatch):
    """PyTorch's zip writer reports a short write as RuntimeError("unexpected pos ..."), not OSError."""
    import errno
    import shutil
    from collections import namedtuple

    path = tmp_path / "x.pt"
    checkpoints.save_atomic({"v": 1}, path)

    def short_write(obj, f, *a, **k):
        f.write(b"\0" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2462464 vs 2462360")

    monkeypatch.setattr(torch, "save", short_write)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(1, 1, 0))
    with pytest.raises(OSError) as e:
        checkpoints.save_atomic({"v": 2}, path)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert checkpoints.load(path)["v"] == 1 and [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no half file

    def a_bug(obj, f, *a, **k):
        raise RuntimeError("something else entirely")

    monkeypatch.setattr(torch, "save", a_bug)
    with pytest.raises(RuntimeError, match="something else"):  # not dressed up as a disk problem
        checkpoints.save_atomic({"v": 2}, path)


def a_training_checkpoint() -> dict:
    """What training/state.py writes into last.pt, on a one-layer model."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    return {
        "format": checkpoints.FORMAT,
        "arch": {"backbone": "resnet_mini"},
        "model": {f"encoder.{k}": v for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "epoch": 1,
        "step": 2,
        "steps_per_epoch": 2,
        "view_generator": torch.Generator().get_state(),
        "view_generators": [torch.Generator().get_state()],
        "epoch_losses": torch.empty(0),
        "rng": checkpoints.rng_state(),
    }


@pytest.mark.parametrize(
    "change, resume, match",
    [
        (lambda c: c.update(epoch="two"), False, r"damaged \('epoch' is 'two', not a whole number\)"),
        (lambda c: c.update(step=-3), False, r"'step' is -3, not a whole number"),
        (lambda c: c.update(epoch=True), False, r"'epoch' is True, not a whole number"),
        (lambda c: c["model"].update({"encoder.weight": [1, 2]}), False, "hold list under 'encoder.weight'"),
        (lambda c: c.pop("optimizer"), True, r"it has no 'optimizer': what a resume continues from.*can still read"),
        (lambda c: c.pop("rng"), True, "it has no 'rng'"),
        (lambda c: c.update(optimizer=[1]), True, "'optimizer' is list, not dict"),
        (lambda c: c.update(steps_per_epoch="2"), True, "'steps_per_epoch' is str, not int"),
        (lambda c: c.update(epoch_losses=[0.5]), True, "'epoch_losses' is list, not Tensor"),
        (lambda c: c["optimizer"].pop("param_groups"), True, "'optimizer' lacks its state or param_groups"),
        (lambda c: c["rng"].update(numpy=["MT19937"]), True, "'rng' does not hold"),
        (lambda c: c.update(view_generators=["x"]), True, "view generators are not tensors"),
    ],
)
def test_every_field_a_reader_uses_is_checked_by_the_one_loader(tmp_path, change, resume, match):
    ckpt = a_training_checkpoint()
    assert checkpoints.load_training(_saved(tmp_path, ckpt), resume=True)["epoch"] == 1  # the good one loads
    change(ckpt)
    path = _saved(tmp_path, ckpt)
    with pytest.raises(UserError, match=match) as e:
        checkpoints.load_training(path, resume=resume)
    assert str(e.value).startswith(f"checkpoint {path} is damaged (") and "restore it from a copy" in str(e.value)
    if resume:  # what only a resume reads does not stop evaluate, embed or export
        assert checkpoints.load_training(path)["epoch"] == 1


def _saved(tmp_path, obj) -> Path:
    path = tmp_path / "last.pt"
    checkpoints.save_atomic(obj, path)
    return path


def test_backbone_pt_and_json_are_checked(tmp_path):
    net, _ = build_backbone("resnet_mini", cifar_stem=True)
    path = tmp_path / "backbone.pt"
    checkpoints.save_backbone(net, {"backbone": "resnet_mini", "cifar_stem": True}, path)
    meta = path.with_suffix(".json")
    good = meta.read_bytes()
    torch.save(torch.zeros(3), path)
    with pytest.raises(UserError, match=rf"^{path} holds a bare tensor, not a backbone's weights"):
        checkpoints.load_trunk(path)
    checkpoints.save_backbone(net, {"backbone": "resnet_mini", "cifar_stem": True}, path)
    for content, match in [
        (b"\xff\xfe\x00", "is damaged"),  # not UTF-8
        (b"[]", r"is damaged \(not a JSON object naming backbone and cifar_stem\)"),
        (good[:50], r"is damaged \(Unterminated string"),  # truncated
        (b'{"backbone": "resnet_mini"}', "not a JSON object naming backbone and cifar_stem"),
        (b'{"backbone": "resnet_mini", "cifar_stem": true, "image_size": "big"}', "naming backbone"),
    ]:
        meta.write_bytes(content)
        with pytest.raises(UserError, match=match) as e:
            checkpoints.load_trunk(path)
        assert str(e.value).startswith(str(meta)) and "resume its run for an epoch to write it again" in str(e.value)
    meta.write_bytes(good)
    assert checkpoints.load_trunk(path) is not None
