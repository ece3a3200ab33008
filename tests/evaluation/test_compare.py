import json

from simclr_core.config import MethodConfig, OptimConfig, RunConfig, TrainConfig
from simclr_core.evaluation.compare import (
    config_differences,
    epoch_curves,
    flatten_config,
    latest_results,
    load_results,
    result_label,
)
from simclr_core.runs.rundir import RunDir


def test_config_differences_lists_only_differing_fields():
    a = TrainConfig(method=MethodConfig(temperature=0.5), run=RunConfig(name="a"))
    b = TrainConfig(method=MethodConfig(temperature=0.2), optim=OptimConfig(batch_size=128), run=RunConfig(name="b"))
    rows = config_differences({"a": a, "b": b, "c": a})
    assert rows == [
        {"field": "method.temperature", "differs": True, "a": 0.5, "b": 0.2, "c": 0.5},
        {"field": "optim.batch_size", "differs": True, "a": 256, "b": 128, "c": 256},
    ]
    assert config_differences({"a": a, "c": a}) == []


def test_config_differences_all_fields_flags_the_differing_ones():
    a, b = TrainConfig(), TrainConfig(method=MethodConfig(temperature=0.1))
    rows = config_differences({"a": a, "b": b}, all_fields=True)
    assert len(rows) == len(flatten_config(a)) - 2  # run.name and run.runs_dir left out
    assert [r["field"] for r in rows if r["differs"]] == ["method.temperature"]
    assert "data.dataset" in flatten_config(a) and flatten_config(a)["model.proj_out_dim"] is None


def test_epoch_curves_keep_epoch_lines_last_one_wins():
    metrics = [
        {"epoch": 1, "step": 1, "loss": 5.0},
        {"epoch": 1, "step": 2, "loss": 4.9, "epoch_loss": 4.95, "knn_top1": 20.0, "knn_top5": 60.0},
        {"epoch": 2, "step": 4, "loss": 4.5, "epoch_loss": 4.6},
        {"epoch": 1, "step": 2, "loss": 4.8, "epoch_loss": 4.85, "knn_top1": 21.0, "knn_top5": 61.0},  # resumed
    ]
    assert epoch_curves(metrics) == [
        {"epoch": 1, "epoch_loss": 4.85, "knn_top1": 21.0, "knn_top5": 61.0},
        {"epoch": 2, "epoch_loss": 4.6, "knn_top1": None, "knn_top5": None},
    ]
    assert epoch_curves([]) == []


def test_load_results_tolerates_missing_and_broken_files(tmp_path):
    run = RunDir(tmp_path)
    assert load_results(run) == []
    (tmp_path / "eval.json").write_text("{broken")
    assert load_results(run) == []
    (tmp_path / "eval.json").write_text(json.dumps([{"run": "r", "knn_top1": 50.0}, 3]))
    assert load_results(run) == [{"run": "r", "knn_top1": 50.0}]


def test_latest_results_newest_per_checkpoint():
    results = [
        {"run": "r", "checkpoint": "/r/last.pt", "epoch": 2, "knn_top1": 40.0, "time": 1},
        {"run": "r", "checkpoint": "random-init", "epoch": 0, "knn_top1": 10.0, "time": 2},
        {"run": "r", "checkpoint": "/r/last.pt", "epoch": 2, "knn_top1": 41.0, "time": 3},
        {"run": "r", "checkpoint": "/r/last.pt", "epoch": 5, "knn_top1": 60.0, "time": 4},
    ]
    assert [r["knn_top1"] for r in latest_results(results)] == [60.0, 41.0, 10.0]
    assert [result_label(r) for r in latest_results(results)] == ["r", "r", "r (random init)"]
