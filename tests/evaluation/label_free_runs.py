"""Run folders made up of files only (config, status, metrics.jsonl with the label-free signals), for the
tests of ranking runs without labels: three finished 4-epoch runs on a folder of images.

The signals per epoch are of the sizes a real run writes (RankMe of a ResNet's 512-d h in the tens, α-ReQ
near 2, uniformity between -0.5 and -2). Last-epoch RankMe (h) orders them simclr-t02 (71.2) > simclr-t05
(60.4) > byol-lr1 (26.0); RankMe (h) prefers epochs 4, 3 and 2; LiDAR (h) orders simclr-t05 first.
"""

from __future__ import annotations

from pathlib import Path

from simclr_core.config import DataConfig, MethodConfig, OptimConfig, RunConfig, TrainConfig
from simclr_core.runs.rundir import RunDir

EPOCHS = 4
SIGNALS: dict[str, tuple[str, dict[str, list[float]]]] = {
    "simclr-t05": (
        "simclr",
        {
            "rankme_h": [38.2, 55.7, 61.9, 60.4],
            "lidar_h": [140.1, 171.3, 188.0, 190.4],
            "areq_h": [2.41, 2.20, 2.05, 2.07],
            "pseudo_knn_h": [0.61, 0.70, 0.74, 0.75],
            "alignment": [0.95, 0.81, 0.74, 0.72],
            "uniformity": [-0.62, -1.10, -1.41, -1.47],
            "knn_top1": [31.5, 40.2, 44.8, 45.1],
        },
    ),
    "simclr-t02": (
        "simclr",
        {
            "rankme_h": [41.0, 58.3, 66.5, 71.2],
            "lidar_h": [138.7, 160.2, 171.9, 176.5],
            "areq_h": [2.38, 2.11, 1.96, 1.91],
            "pseudo_knn_h": [0.63, 0.72, 0.77, 0.79],
            "alignment": [0.99, 0.86, 0.78, 0.75],
            "uniformity": [-0.70, -1.25, -1.60, -1.71],
            "knn_top1": [33.0, 42.9, 47.6, 49.3],
        },
    ),
    "byol-lr1": (
        "byol",
        {
            "rankme_h": [22.4, 30.1, 28.7, 26.0],
            "lidar_h": [90.5, 101.8, 99.0, 95.2],
            "areq_h": [2.95, 2.80, 2.86, 2.93],
            "pseudo_knn_h": [0.42, 0.47, 0.46, 0.44],
            "alignment": [0.52, 0.40, 0.37, 0.35],
            "uniformity": [-0.31, -0.40, -0.38, -0.36],
            "knn_top1": [22.0, 27.4, 26.9, 25.8],
        },
    ),
}


def fabricate(runs_dir: Path, labelled: bool = False, names: tuple[str, ...] = tuple(SIGNALS)) -> list[RunDir]:
    """Write the runs ``names`` into ``runs_dir`` (their images: an unlabelled folder, unless ``labelled``,
    which adds the kNN monitor's numbers); the last name is the newest run."""
    images = runs_dir.parent / "images"
    images.mkdir(exist_ok=True)
    out = []
    for name in names:
        method, signals = SIGNALS[name]
        run = RunDir(runs_dir / name)
        run.path.mkdir(parents=True)
        TrainConfig(
            data=DataConfig(dataset="folder", data_path=str(images)),
            method=MethodConfig(name=method),
            optim=OptimConfig(epochs=EPOCHS),
            run=RunConfig(name=name, runs_dir=str(runs_dir), knn_every=1),
        ).save(run.config_path)
        for e in range(1, EPOCHS + 1):
            line = {"kind": "epoch", "epoch": e, "step": 10 * e, "loss": 5.0 - 0.3 * e, "lr": 0.3}
            line["epoch_loss"] = line["loss"]
            for key, values in signals.items():
                if key != "knn_top1" or labelled:
                    line[key] = values[e - 1]
            line.update({k.replace("_h", "_z"): line[k] / 4 for k in ("rankme_h", "lidar_h")})
            line.update({"areq_z": line["areq_h"] - 0.3, "pseudo_knn_z": line["pseudo_knn_h"] - 0.02})
            run.append_metrics(line)
        run.write_status("finished", f"finished {EPOCHS} epochs", epoch=EPOCHS, step=10 * EPOCHS, total_steps=40)
        out.append(run)
    return out


def study(**best: str) -> dict:
    """A study file's contents as bench/label_free.py writes it, with measured-looking ρ values."""
    return {
        "command": "python bench/label_free.py --runs 24",
        "machine": "2-core CPU dev box, no GPU",
        "date": "2025-01-01",
        "runs": 24,
        "dataset": "CIFAR-10",
        "signals": {
            "rankme_h": {"all_runs": 0.81, "within_method": {"simclr": 0.88, "byol": 0.74}, "epochs_median": 0.62},
            "lidar_h": {"all_runs": 0.42, "within_method": {"simclr": 0.86, "byol": 0.79}, "epochs_median": 0.91},
            "alignment": {"all_runs": -0.35, "within_method": {"simclr": -0.2, "byol": 0.1}, "epochs_median": 0.05},
        },
        "best": {"runs": "rankme_h", "epochs": "lidar_h", **best},
    }
