"""bench/gpu_suite.py --smoke: every GPU check's code runs on the CPU at tiny sizes, with only the packages
the GPU machine has (torch, torchvision, scikit-learn, pillow, tqdm, pyyaml): the others are blocked."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO

# What this machine has and the GPU machine does not (bench/gpu_suite.py's docstring): any site-packages entry
# starting with one of these names is hidden.
NOT_ON_THE_GPU_MACHINE = (
    "streamlit",
    "umap",
    "pynndescent",
    "numba",
    "llvmlite",
    "faiss",
    "pandas",
    "plotly",
    "pydeck",
    "altair",
    "safetensors",
    "tensorboard",
    "timm",
    "onnx",
    "kornia",
    "playwright",
)


def gpu_machine_site(tmp_path):
    """A PYTHONPATH folder whose sitecustomize swaps site-packages for a copy without those packages, as if
    they were never installed (torch then finds no onnx, as on the GPU machine)."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    shadow = tmp_path / "site-packages"
    shadow.mkdir()
    for entry in purelib.iterdir():
        if not entry.name.lower().startswith(NOT_ON_THE_GPU_MACHINE):
            (shadow / entry.name).symlink_to(entry)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.path[:] = [{str(shadow)!r} if p == {str(purelib)!r} else p for p in sys.path]\n"
    )
    return site


@pytest.mark.slow
def test_smoke_suite_runs_every_check_without_the_app_packages(tmp_path):
    site = gpu_machine_site(tmp_path)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    hidden = subprocess.run(
        [sys.executable, "-c", "import torch, sklearn, yaml, PIL, tqdm; import pandas"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert "No module named 'pandas'" in hidden.stderr  # the GPU machine's packages only
    proc = subprocess.run(
        [sys.executable, "bench/gpu_suite.py", "--smoke", "--data", str(tmp_path / "none"), "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    rows = {r["name"]: r for r in report["checks"]}
    assert list(rows) == [
        "train_bf16",
        "train_compile",
        "augment",
        "nccl_torchrun",
        "time_to_accuracy",
        "methods",
        "export",
    ]
    assert all(r["ok"] for r in rows.values())
    assert rows["train_bf16"]["images_per_s"] > 0 and rows["train_bf16"]["epochs"] == 2
    assert rows["train_compile"]["compile_failed"] is False
    assert rows["augment"]["views_per_s"]["ours"] > 0
    assert rows["nccl_torchrun"]["epochs"] == 1
    assert rows["time_to_accuracy"]["minutes_epoch_knn"]
    assert set(rows["methods"]) >= {"simclr", "moco_v2", "byol"}
    # the GPU machine lacks safetensors and onnx: those exports say so; TorchScript reloads exactly
    assert rows["export"]["torchscript"].startswith("max diff 0.0e+00")
    assert "skipped" in rows["export"]["safetensors"] and "safetensors" in rows["export"]["safetensors"]
    assert "skipped" in rows["export"]["onnx"]
    table = (out / "gpu_suite.md").read_text()
    assert table.count("| yes |") == 7


def test_a_failing_check_is_reported_and_the_suite_goes_on(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_suite

    bad = gpu_suite.Check("bad", "fails", [sys.executable, "-c", "raise SystemExit('boom: no device')"], 30)
    good = gpu_suite.Check(
        "good", "prints", [sys.executable, "-c", "print('{\"x\": 1}')"], 30, gpu_suite.parse_json_line
    )
    rows = [gpu_suite.run_check(c) for c in (bad, good)]
    assert rows[0]["ok"] is False and "boom: no device" in rows[0]["error"]
    assert rows[1] == {"name": "good", "ok": True, "seconds": rows[1]["seconds"], "x": 1}
    assert "| bad | NO |" in gpu_suite.markdown(rows, {"device": "CPU", "torch": "x", "python": "y", "smoke": True})
