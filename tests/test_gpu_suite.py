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
    assert list(rows) == [  # the most valuable first
        "train_bf16",
        "speedrun",
        "train_compile",
        "nccl_torchrun",
        "methods",
        "export",
        "augment",
    ]
    assert all(r["ok"] for r in rows.values())
    assert rows["train_bf16"]["images_per_s"] > 0 and rows["train_bf16"]["epochs"] == 2
    # model FLOPs of a step: no peak for a CPU, so no utilisation; the FLOP rate follows from images/s
    bf16 = rows["train_bf16"]
    assert bf16["gflop_per_image"] > 0 and bf16["mfu"] is None
    assert bf16["tflop_s"] == pytest.approx(bf16["images_per_s"] * bf16["gflop_per_image"] / 1e3, rel=0.05, abs=0.01)
    assert rows["train_compile"]["compile_failed"] is False
    assert rows["augment"]["views_per_s"]["ours"] > 0
    assert rows["nccl_torchrun"]["epochs"] == 1
    assert rows["speedrun"]["minutes_epoch_knn"]  # the speedrun recipe's code ran, at tiny scale
    assert set(rows["speedrun"]["minutes_to"]) == {"80", "85", "90"}
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


def load_suite():
    sys.path.insert(0, str(REPO / "bench"))
    import gpu_suite

    return gpu_suite


def test_the_plan_fits_the_budget_and_keeps_the_most_valuable_checks():
    suite = load_suite()

    def checks():
        costs = {"train_bf16": 90, "speedrun": 120, "train_compile": 150, "nccl_torchrun": 60, "methods": 120}
        costs |= {"export": 60, "augment": 60}
        return [
            suite.Check(n, n, [], s, flexible=n == "speedrun", most_s=540 if n == "speedrun" else float("inf"))
            for n, s in reversed(costs.items())  # given in any order
        ]

    for budget in (120, 300, 510, 900, 2000):
        chosen, left = suite.plan(checks(), budget, 45)
        assert sum(c.timeout_s for c in chosen) <= budget - 45
        assert [c.name for c in chosen] == [n for n in suite.PRIORITY if n in {c.name for c in chosen}]
        assert sorted([c.name for c in chosen] + left) == sorted(suite.PRIORITY)
    chosen, left = suite.plan(checks(), 510, 45)  # one 10-minute call: the bf16 figure, the speedrun, compile
    times = {c.name: c.timeout_s for c in chosen}
    assert list(times) == ["train_bf16", "speedrun", "train_compile", "nccl_torchrun"]
    assert times["speedrun"] == 465 - 90 - 150 - 60 and left == ["methods", "export", "augment"]
    chosen, _ = suite.plan(checks(), 2000, 45)  # room for all: the speedrun stops at its most
    assert {c.name: c.timeout_s for c in chosen}["speedrun"] == 540
    assert suite.plan(checks(), 100, 45)[0] == []  # not even the first fits
    everything, left = suite.plan(checks(), None, 45)
    assert len(everything) == 7 and left == [] and everything[1].timeout_s == 540


def test_each_result_is_written_as_soon_as_its_check_ends(tmp_path, monkeypatch):
    suite = load_suite()
    calls = []

    def run_check(check):
        calls.append(check.name)
        if len(calls) == 2:  # the call is cut short during the second check
            raise KeyboardInterrupt
        return {"name": check.name, "ok": True, "seconds": 1.0}

    monkeypatch.setattr(suite, "run_check", run_check)
    monkeypatch.setattr(
        suite, "checks", lambda args, folder, work: [suite.Check(n, n, ["x"], 10) for n in suite.PRIORITY]
    )
    with pytest.raises(KeyboardInterrupt):
        suite.main(["--smoke", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--budget", "100"])
    report = json.loads((tmp_path / "out" / "gpu_suite.json").read_text())
    assert [r["name"] for r in report["checks"]] == ["train_bf16"]  # the result before the cut is there
    assert [c["name"] for c in report["planned"]] == list(suite.PRIORITY)  # 7 x 10 s fit 100 s
    assert "| train_bf16 | yes |" in (tmp_path / "out" / "gpu_suite.md").read_text()


def test_how_prints_the_carry_list_and_the_command_in_one_line(capsys):
    suite = load_suite()
    assert suite.main(["--how"]) == 0
    out = capsys.readouterr().out.strip()
    assert "\n" not in out and 'carry: [".bench/cifar10-jpg.tar.gz"]' in out and "--budget 510" in out


@pytest.mark.slow
def test_a_smoke_run_within_a_budget(tmp_path):
    """``--smoke --budget 120`` on the CPU: the plan's timeouts fit the budget, the checks it kept pass, and the
    report names those it left out."""
    site = gpu_machine_site(tmp_path)
    out = tmp_path / "out"
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    cmd = [sys.executable, "bench/gpu_suite.py", "--smoke", "--budget", "120", "--data", str(tmp_path / "none")]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert sum(c["timeout_s"] for c in report["planned"]) <= 120
    assert [r["name"] for r in report["checks"]] == [c["name"] for c in report["planned"]]
    assert report["checks"][:2] == [r for r in report["checks"][:2] if r["ok"]]
    assert [r["name"] for r in report["checks"]][:2] == ["train_bf16", "speedrun"]
    assert report["left_out"] and "Left out to fit --budget 120" in (out / "gpu_suite.md").read_text()
