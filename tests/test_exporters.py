"""simclr-export: each format written atomically and read back to the same features; bad input is one line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_core import exporters
from simclr_core.cli import export as export_cli
from simclr_core.config import DataConfig, ModelConfig, TrainConfig
from simclr_core.errors import UserError
from simclr_core.models import Backbone, build_backbone
from simclr_core.runs import checkpoints
from simclr_core.runs.rundir import RunDir


def fake_run(tmp_path, backbone="resnet18", cifar_stem=True, name="exp") -> tuple[RunDir, torch.nn.Module]:
    """A run folder as training leaves it (config.json, backbone.pt + .json), with random trunk weights."""
    run = RunDir(tmp_path / "runs" / name)
    run.path.mkdir(parents=True)
    TrainConfig(data=DataConfig(dataset="digits"), model=ModelConfig(backbone=backbone, cifar_stem=cifar_stem)).save(
        run.config_path
    )
    torch.manual_seed(0)
    trunk, _ = build_backbone(backbone, cifar_stem)
    for m in trunk.modules():  # non-trivial BN statistics, so a lost buffer shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    checkpoints.save_backbone(trunk, {"backbone": backbone, "cifar_stem": cifar_stem}, run.backbone_path, 32)
    return run, trunk.eval()


def images(n=3, side=32):
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(7))


def reference(trunk, x):
    with torch.no_grad():
        return Backbone(trunk, 0).eval()(x)


def test_safetensors_round_trip_with_metadata(tmp_path):
    run, trunk = fake_run(tmp_path)
    path = exporters.export_backbone(run, "safetensors")
    assert path == run.export_dir / "exp.safetensors"
    back = checkpoints.load_backbone(path)
    x = images()
    assert torch.equal(back(x), reference(trunk, x))
    assert back.meta["backbone"] == "resnet18" and back.meta["cifar_stem"] is True and back.meta["image_size"] == 32
    assert back.meta["config"]["model"]["backbone"] == "resnet18" and back.feature_dim == 512
    assert back.meta["mean"] == [0.485, 0.456, 0.406]
    assert not list(run.export_dir.glob(".*tmp"))


@pytest.mark.parametrize("cifar_stem", [False, True], ids=["imagenet-stem", "cifar-stem"])
def test_timm_loads_the_state_dict_strictly(tmp_path, cifar_stem):
    import timm

    run, trunk = fake_run(tmp_path, cifar_stem=cifar_stem)
    path = exporters.export_backbone(run, "timm")
    x = images(side=64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    normalised = (x - mean) / std
    if not cifar_stem:  # exactly the README's line
        model = timm.create_model("resnet18", num_classes=0)
        model.load_state_dict(torch.load(path, weights_only=True), strict=True)
        model.eval()
    else:
        model = exporters.timm_model(path)
        assert isinstance(model.maxpool, torch.nn.Identity) and model.conv1.kernel_size == (3, 3)
    with torch.no_grad():
        assert torch.allclose(model(normalised), trunk(normalised), atol=1e-5)
    assert type(exporters.timm_model(path)).__module__.startswith("timm")


def test_onnx_matches_pytorch_at_another_batch_size_and_image_side(tmp_path):
    import onnx
    import onnxruntime as ort

    run, trunk = fake_run(tmp_path)
    path = exporters.export_backbone(run, "onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n, side in ((1, 32), (7, 48)):  # the batch, height and width axes are dynamic
        x = images(n, side)
        got = session.run(None, {"images": x.numpy()})[0]
        assert got.shape == (n, 512) and np.abs(got - reference(trunk, x).numpy()).max() < 1e-4
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["backbone"] == "resnet18" and "normalisation is inside" in props["input"]


def test_torchscript_round_trip(tmp_path):
    run, trunk = fake_run(tmp_path, backbone="resnet_mini", cifar_stem=False)
    path = exporters.export_backbone(run, "torchscript", tmp_path / "mini.pt")
    extra = {"simclr_studio.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    x = images(4, 40)
    assert torch.allclose(loaded(x), reference(trunk, x), atol=1e-6)
    assert json.loads(extra["simclr_studio.json"])["backbone"] == "resnet_mini"


def test_load_backbone_from_a_run_its_name_or_backbone_pt(tmp_path, monkeypatch):
    run, trunk = fake_run(tmp_path)
    x = images()
    monkeypatch.setenv("SIMCLR_RUNS_DIR", str(tmp_path / "runs"))
    for source in (run, run.path, "exp", run.backbone_path):
        assert torch.equal(checkpoints.load_backbone(source)(x), reference(trunk, x))


# ---- bad input: one line, exit 2, no file left --------------------------------------------------------------


def cli(capsys, tmp_path, *args):
    rc = export_cli.main(["--runs-dir", str(tmp_path / "runs"), *args])
    out, err = capsys.readouterr()
    return rc, err


def test_a_run_without_a_checkpoint(tmp_path, capsys):
    run, _ = fake_run(tmp_path)
    run.backbone_path.unlink()
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "onnx")
    assert rc == 2 and err.strip() == "error: run 'exp' has no checkpoint yet: train it for an epoch first"


def test_an_unknown_format(tmp_path, capsys):
    fake_run(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli(capsys, tmp_path, "--run", "exp", "--format", "tflite")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "invalid choice: 'tflite'" in err


@pytest.mark.parametrize("fmt, package", [("timm", "timm"), ("onnx", "onnx")])
def test_a_missing_extra_names_it(tmp_path, capsys, monkeypatch, fmt, package):
    fake_run(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, package, None)  # as if not installed
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", fmt)
    assert rc == 2 and err.count("\n") == 1
    assert f"needs the package '{package}'" in err and "simclr-studio[export]" in err
    assert exporters.unavailable(fmt, "resnet18") is None or package in exporters.unavailable(fmt, "resnet18")


def test_an_output_folder_that_does_not_exist(tmp_path, capsys):
    fake_run(tmp_path)
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "safetensors", "--out", str(tmp_path / "no" / "x.st"))
    assert rc == 2 and f"the folder {tmp_path / 'no'} does not exist" in err
    assert not (tmp_path / "no").exists()


def test_an_unwritable_output_leaves_no_file(tmp_path, capsys, monkeypatch):
    fake_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", denied)
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "torchscript", "--out", str(out / "b.pt"))
    assert rc == 2 and err.strip() == f"error: cannot write {out / 'b.pt'}: permission denied; choose another --out"
    assert list(out.iterdir()) == []  # the temp file is gone too


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "timm"])
def test_a_read_only_folder_is_one_line_for_every_format(tmp_path, capsys, monkeypatch, fmt):
    fake_run(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    real = os.access
    # as root, chmod does not close a folder; os.access is what a user without write permission sees
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == out else real(p, mode))
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", fmt, "--out", str(out / "b.bin"))
    assert (
        rc == 2
        and err.strip() == f"error: cannot write {out / 'b.bin'}: the folder {out} is read-only; choose another --out"
    )
    assert list(out.iterdir()) == []


def test_an_output_that_is_a_folder(tmp_path, capsys):
    fake_run(tmp_path)
    (tmp_path / "taken").mkdir()
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "safetensors", "--out", str(tmp_path / "taken"))
    assert rc == 2 and err.startswith(f"error: cannot write {tmp_path / 'taken'}")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_timm_of_the_small_resnet_says_which_formats_fit(tmp_path):
    run, _ = fake_run(tmp_path, backbone="resnet_mini", cifar_stem=False)
    with pytest.raises(UserError, match="timm has no resnet_mini; export it as safetensors, onnx or torchscript"):
        exporters.export_backbone(run, "timm")
    assert exporters.unavailable("timm", "resnet_mini") == "timm has no resnet_mini"


# ---- issue 16: damaged run files, a full disk, a closed run folder, an output nowhere -----------------------


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda run: torch.save(torch.zeros(3), run.backbone_path), "backbone.pt holds a bare tensor"),
        (lambda run: run.backbone_path.with_suffix(".json").write_bytes(b"\xff\xfe\x00"), "backbone.json is damaged"),
        (lambda run: run.backbone_path.with_suffix(".json").write_bytes(b"[]"), "backbone.json is damaged"),
        (
            lambda run: run.backbone_path.with_suffix(".json").write_bytes(b'{"backbone": "resnet18", "cifar'),
            r"backbone.json is damaged \(Unterminated string",
        ),
    ],
    ids=["bare-tensor", "json-not-utf8", "json-list", "json-truncated"],
)
def test_a_damaged_backbone_is_one_line(tmp_path, capsys, damage, match):
    run, _ = fake_run(tmp_path)
    damage(run)
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "safetensors")
    assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {run.path}/") and re.search(match, err), err
    assert "restore it from a copy, or resume its run for an epoch to write it again" in err
    assert not run.export_dir.exists() or list(run.export_dir.iterdir()) == []


def test_an_export_file_in_place_of_the_export_folder(tmp_path, capsys):
    run, _ = fake_run(tmp_path)
    run.export_dir.write_text("mine")
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "safetensors")
    assert rc == 2 and err == (
        f"error: {run.export_dir} is a file, where simclr-export keeps its files; move it away, or pass --out FILE\n"
    )
    assert run.export_dir.read_text() == "mine"


def test_a_read_only_run_folder_with_the_default_out(tmp_path, capsys, monkeypatch):
    import errno

    run, _ = fake_run(tmp_path)
    real = Path.mkdir

    def read_only(self, *a, **k):  # as root, chmod does not close a folder: the mount's answer, faked
        if self == run.export_dir:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "safetensors")
    assert rc == 2 and err == (
        f"error: cannot create {run.export_dir} (Read-only file system); pass --out FILE in a writable folder\n"
    )


def test_a_full_disk_reported_by_safetensors_is_one_line(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    fake_run(tmp_path)

    def full(*a, **k):  # safetensors' own error type, with the OS's number in its text
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "out"
    out.mkdir()
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", "safetensors", "--out", str(out / "b.st"))
    assert rc == 2 and err == (
        f"error: cannot write {out / 'b.st'}: No space left on device; free some space or choose another --out\n"
    )
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
@pytest.mark.parametrize("fmt", ["safetensors", "torchscript"])
def test_an_output_inside_proc(tmp_path, capsys, fmt):
    fake_run(tmp_path)
    rc, err = cli(capsys, tmp_path, "--run", "exp", "--format", fmt, "--out", "/proc/x.bin")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: cannot write /proc/x.bin: "), err
    assert err.strip().endswith("choose another --out")


@pytest.mark.slow
def test_a_real_full_disk_and_a_read_only_mount(tmp_path, tmpfs):
    """The real CLI: safetensors raised SafetensorError, and TorchScript's C++ writer aborted the process
    (SIGABRT, a half file left) on a full disk; a read-only run folder was a traceback (issue 16)."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    runs = tmpfs("8m")
    run, _ = fake_run(tmp_path, backbone="resnet_mini", cifar_stem=False)  # backbone.pt: 5 MB
    shutil.copytree(run.path, runs / "exp")
    free = shutil.disk_usage(runs).free
    (runs / "filler").write_bytes(b"\0" * (free - 2 * 2**20))  # 2 MB left: less than one export
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}

    def export(fmt):
        proc = subprocess.run(
            [sys.executable, "-m", "simclr_core.cli.export", "--run", "exp", "--runs-dir", str(runs), "--format", fmt],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        return proc.returncode, proc.stderr

    for fmt, suffix in (("safetensors", ".safetensors"), ("torchscript", ".torchscript.pt")):
        rc, err = export(fmt)
        target = runs / "exp" / "export" / f"exp{suffix}"
        assert rc == 2 and err.strip().splitlines()[-1] == (
            f"error: cannot write {target}: No space left on device; free some space or choose another --out"
        ), err
        assert list((runs / "exp" / "export").iterdir()) == []  # no half file keeps the disk full
    shutil.rmtree(runs / "exp" / "export")
    subprocess.run(["mount", "-o", "remount,ro", str(runs)], check=True)
    rc, err = export("safetensors")
    assert rc == 2 and err.strip().splitlines()[-1] == (
        f"error: cannot create {runs / 'exp' / 'export'} (Read-only file system); pass --out FILE in a writable folder"
    ), err
