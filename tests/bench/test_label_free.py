"""bench/label_free.py: its sweep, its reading of run folders and its Spearman table, on made-up runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from simclr_core.runs.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lf():
    sys.path.insert(0, str(REPO / "bench"))
    import label_free

    return label_free


def write_run(scratch: Path, name: str, lines: list[dict], state: str = "finished") -> None:
    run = RunDir(scratch / "runs" / name)
    run.path.mkdir(parents=True)
    for i, line in enumerate(lines, 1):
        run.append_metrics({"kind": "epoch", "epoch": i, "step": 10 * i, "loss": 5.0, **line})
    run.write_status(state, "")


def line(knn: float, rank: float, alpha: float | None, align: float, collapse: bool = False) -> dict:
    out = {"knn_top1": knn, "rankme_h": rank, "alignment": align}
    if alpha is not None:
        out["areq_h"] = alpha
    if collapse:
        out["collapse"] = "the representation has collapsed"
    return out


def test_the_sweep_meets_the_issue_and_each_run_goes_through_the_training_cli(lf, tmp_path):
    assert len(lf.SWEEP) >= 24 and len({s.name for s in lf.SWEEP}) == len(lf.SWEEP)
    assert {s.method for s in lf.SWEEP} == set(lf.METHODS)
    assert {"temperature", "lr", "views", "projection", "epochs"} <= {s.axis for s in lf.SWEEP}
    args = argparse.Namespace(scratch=tmp_path, epochs=5, batch_size=128, probe_size=500, num_threads=1)
    spec = next(s for s in lf.SWEEP if s.name == "moco-t0.01")
    cmd = lf.train_command(spec, args, tmp_path / "data")
    assert cmd[1:3] == ["-m", "simclr_core.train"]

    def flag(cmd: list[str], name: str) -> str:
        return cmd[cmd.index(name) + 1]

    assert flag(cmd, "--temperature") == "0.01" and flag(cmd, "--method") == "moco_v2"
    assert flag(cmd, "--backbone") == "resnet_mini" and flag(cmd, "--knn-every") == "1"
    assert flag(cmd, "--epochs") == "5" and flag(cmd, "--queue-size") == "1024"  # below the 3,000 images
    ep10 = lf.train_command(next(s for s in lf.SWEEP if s.name == "simclr-ep10"), args, tmp_path)
    assert flag(ep10, "--epochs") == "10"  # only the epochs axis changes the budget


def test_the_subset_is_class_balanced_and_made_once(lf, tmp_path):
    src = tmp_path / "full"
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (src / split / cls).mkdir(parents=True)
            for i in range(5):
                (src / split / cls / f"{i:04d}.jpg").write_bytes(b"x")
    out = lf.subset_folder(src, tmp_path / "sub", 3, 2)
    assert sorted(p.name for p in (out / "train" / "dog").iterdir()) == ["0000.jpg", "0001.jpg", "0002.jpg"]
    assert len(list((out / "test").rglob("*.jpg"))) == 4
    (out / "train" / "dog" / "0000.jpg").unlink()
    assert lf.subset_folder(src, tmp_path / "sub", 3, 2) == out  # not made again
    assert len(list((out / "train").rglob("*.jpg"))) == 5


def test_rho_follows_each_signals_direction_and_a_missing_value_ranks_worst(lf, tmp_path):
    # Four runs: RankMe (higher is better) orders them as kNN does; alignment (lower is better) points the wrong
    # way; α-ReQ (lower is better) is absent from the collapsed run, which has the lowest kNN.
    runs = {
        "simclr-base": [line(25, 50, 2.0, 0.9), line(30, 60, 1.8, 0.8), line(33, 70, 1.5, 0.7)],
        "simclr-t0.2": [line(26, 55, 1.9, 0.9), line(31, 65, 1.7, 0.8), line(35, 80, 1.4, 0.6)],
        "simclr-lr10": [line(12, 1.5, None, 0.0, collapse=True)],
        "simclr-t1": [line(24, 45, 2.2, 1.0), line(28, 52, 2.0, 0.95), line(29, 58, 1.9, 0.9)],
    }
    for name, lines in runs.items():
        write_run(tmp_path, name, lines, state="failed" if name == "simclr-lr10" else "finished")
    args = argparse.Namespace(scratch=tmp_path)
    results = [lf.read_result(s, args) for s in lf.SWEEP if s.name in runs]
    assert [(r.spec.name, r.final["knn_top1"]) for r in results] == [
        ("simclr-base", 33),
        ("simclr-t0.2", 35),
        ("simclr-t1", 29),
        ("simclr-lr10", 12),
    ]
    signals = lf.study(results)
    assert signals["rankme_h"]["all_runs"] == pytest.approx(1.0)
    assert signals["rankme_h"]["within_method"] == {"simclr": pytest.approx(1.0)}
    # lr10's alignment of 0.0 is the best, its kNN the worst: d^2 = 1 + 1 + 1 + 9, rho = 1 - 6 * 12 / 60
    assert signals["alignment"]["all_runs"] == pytest.approx(-0.2)
    assert signals["areq_h"]["all_runs"] == pytest.approx(1.0) and signals["areq_h"]["missing"] == 1
    # across epochs: the three 3-epoch runs; RankMe and α-ReQ rise and fall with kNN in each, alignment too
    assert signals["rankme_h"]["epochs_median"] == pytest.approx(1.0) and signals["rankme_h"]["epochs_runs"] == 3
    assert signals["lidar_h"]["all_runs"] is None and signals["lidar_h"]["missing"] == 4  # no run has it
    assert lf.best(signals) == {"runs": "rankme_h", "epochs": "rankme_h"}  # ties go to the first signal
    collapsed = [r.spec.name for r in results if r.collapsed]
    assert collapsed == ["simclr-lr10"] and [r.spec.name for r in results if r.diverged] == ["simclr-lr10"]
    boot = lf.bootstrap(results, 40)
    assert sum(b["best_runs"] for b in boot.values()) == pytest.approx(1.0)  # one pick per resample
    lo, hi = boot["alignment"]["all_runs_90"]
    assert -1.0 <= lo <= -0.2 <= hi <= 1.0
    assert "simclr-lr10" in lf.run_table(results) and "rankme_h" in lf.signal_table(signals, len(results), boot)
