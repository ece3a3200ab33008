import json

from simclr_core.config import MethodConfig, OptimConfig, RunConfig, TrainConfig
from simclr_core.evaluation.compare import (
    config_differences,
    epoch_curves,
    flatten_config,
    label_free_ranking,
    labelled,
    latest_results,
    load_results,
    result_label,
)
from simclr_core.runs.rundir import RunDir

from tests.evaluation.label_free_runs import fabricate


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


def test_unlabelled_runs_are_ranked_with_no_label_column(tmp_path):
    runs = fabricate(tmp_path / "runs")
    assert [labelled(r.metrics()) for r in runs] == [False, False, False]  # monitored, no kNN: no labels
    ranking = label_free_ranking(runs, "rankme_h", "rankme_h")
    assert ranking.missing == [] and ranking.agreement is None  # nothing to agree with
    assert ranking.rows == [
        {"rank": 1, "run": "simclr-t02", "method": "simclr", "epoch": 4, "value": 71.2, "preferred_epoch": 4,
         "last_epoch": 4},
        {"rank": 2, "run": "simclr-t05", "method": "simclr", "epoch": 4, "value": 60.4, "preferred_epoch": 3,
         "last_epoch": 4},
        {"rank": 3, "run": "byol-lr1", "method": "byol", "epoch": 4, "value": 26.0, "preferred_epoch": 2,
         "last_epoch": 4},
    ]  # fmt: skip
    assert ranking.picks == [
        {"run": "simclr-t02", "epoch": 4, "value": 71.2},
        {"run": "simclr-t05", "epoch": 3, "value": 61.9},
        {"run": "byol-lr1", "epoch": 2, "value": 30.1},
    ]
    assert len(ranking.curves) == 12 and ranking.curves[0] == {"run": "simclr-t05", "epoch": 1, "value": 38.2}
    at_best = label_free_ranking(runs, "rankme_h", "lidar_h", at="preferred").rows  # epochs picked by LiDAR (h)
    assert [(r["run"], r["epoch"], r["value"]) for r in at_best] == [
        ("simclr-t02", 4, 71.2),
        ("simclr-t05", 4, 60.4),
        ("byol-lr1", 2, 30.1),
    ]


def test_a_labelled_split_keeps_knn_and_probe_beside_the_signal(tmp_path):
    runs = fabricate(tmp_path / "runs", labelled=True)
    assert labelled(runs[0].metrics()) is True
    runs[1].add_eval_result({"run": "simclr-t02", "checkpoint": "x/last.pt", "epoch": 4, "probe_top1": 52.5, "time": 1})
    ranking = label_free_ranking(runs, "alignment", "rankme_h")  # alignment ranks the worst run first
    rows = ranking.rows
    assert [(r["run"], r["knn_top1"], r["knn_rank"]) for r in rows] == [
        ("byol-lr1", 25.8, 3),
        ("simclr-t05", 45.1, 2),
        ("simclr-t02", 49.3, 1),
    ]
    assert [(r["probe_top1"], r["probe_epoch"]) for r in rows] == [(None, None), (None, None), (52.5, 4)]
    assert ranking.agreement == (-1.0, 3)  # and they disagree, which the page says
    assert label_free_ranking(runs, "rankme_h", "rankme_h").agreement == (1.0, 3)


def test_a_run_before_its_first_monitor_epoch_is_listed_as_not_ranked(tmp_path):
    runs = fabricate(tmp_path / "runs", names=("simclr-t05",))
    fresh = RunDir(tmp_path / "runs" / "fresh")
    fresh.path.mkdir()
    fresh.append_metrics({"kind": "step", "epoch": 1, "step": 1, "loss": 5.1, "lr": 0.1})
    assert labelled(fresh.metrics()) is None
    ranking = label_free_ranking([*runs, fresh], "rankme_h", "rankme_h")
    assert [r["run"] for r in ranking.rows] == ["simclr-t05"] and ranking.missing == ["fresh"]
