import json

import pytest

from simclr_core.errors import UserError
from simclr_core.evaluation import label_free
from simclr_core.evaluation.label_free import (
    DEFAULT_SIGNAL,
    agreement,
    chosen_signal,
    load_study,
    preferred_epoch,
    rank_runs,
    signal_epochs,
    spearman,
    trust,
    trust_level,
)

from tests.evaluation.label_free_runs import SIGNALS, study


def metrics(name: str, labelled: bool = False) -> list[dict]:
    """The epoch lines of one of the made-up runs (tests/evaluation/label_free_runs.py)."""
    _, signals = SIGNALS[name]
    return [
        {"epoch": e + 1, "step": 10 * (e + 1), **{k: v[e] for k, v in signals.items() if labelled or k != "knn_top1"}}
        for e in range(4)
    ]


RUNS = {name: metrics(name) for name in SIGNALS}


def test_the_study_file_is_read_and_its_absence_is_none(tmp_path, monkeypatch):
    monkeypatch.setattr(label_free, "STUDY_FILE", tmp_path / "label_free_study.json")
    assert load_study() is None  # not run yet
    (tmp_path / "label_free_study.json").write_text(json.dumps(study()))
    assert load_study()["best"] == {"runs": "rankme_h", "epochs": "lidar_h"}
    (tmp_path / "label_free_study.json").write_text("[1, 2]")  # not a study
    assert load_study() is None


def test_the_chosen_signal_is_the_studys_best_or_the_stated_default():
    assert chosen_signal(None) == (DEFAULT_SIGNAL, False) == ("rankme_h", False)
    assert chosen_signal(study()) == ("rankme_h", True)
    assert chosen_signal(study(), "epochs") == ("lidar_h", True)
    assert chosen_signal(study(runs="no_such_signal")) == ("rankme_h", False)  # a name the app cannot read


def test_preferred_epoch_follows_each_signals_direction():
    t05 = RUNS["simclr-t05"]
    assert preferred_epoch(t05, "rankme_h") == (3, 61.9)  # higher is better: 61.9 beats the last 60.4
    assert preferred_epoch(t05, "areq_h") == (3, 2.05)  # lower is better
    assert preferred_epoch(t05, "lidar_h") == (4, 190.4)
    assert preferred_epoch(RUNS["byol-lr1"], "rankme_h") == (2, 30.1)
    assert preferred_epoch([{"epoch": 1, "step": 1, "loss": 5.0}], "rankme_h") is None  # no monitor epoch yet


def test_a_tie_goes_to_the_later_epoch_and_a_resumed_epoch_keeps_its_last_line():
    lines = [
        {"epoch": 1, "rankme_h": 50.0},
        {"epoch": 2, "rankme_h": 40.0},
        {"epoch": 3, "rankme_h": 50.0},
        {"epoch": 2, "rankme_h": 55.0},  # epoch 2 again after a resume
        {"epoch": 4, "rankme_h": float("nan")},  # not a value
    ]
    assert signal_epochs(lines, "rankme_h") == [(1, 50.0), (2, 55.0), (3, 50.0)]
    assert preferred_epoch(lines[:3], "rankme_h") == (3, 50.0)


def test_runs_are_ranked_at_their_last_or_preferred_epoch():
    ranked = rank_runs(RUNS, "rankme_h")
    assert [(r.run, r.rank, r.epoch, r.value, r.preferred_epoch) for r in ranked] == [
        ("simclr-t02", 1, 4, 71.2, 4),
        ("simclr-t05", 2, 4, 60.4, 3),
        ("byol-lr1", 3, 4, 26.0, 2),
    ]
    assert all(r.knn_top1 is None and r.last_epoch == 4 for r in ranked)  # no labels: no kNN
    at_best = rank_runs(RUNS, "rankme_h", at="preferred")
    assert [(r.run, r.epoch, r.value) for r in at_best] == [
        ("simclr-t02", 4, 71.2),
        ("simclr-t05", 3, 61.9),
        ("byol-lr1", 2, 30.1),
    ]
    # ranked by one signal, each run's epoch picked by another (the study's best for epochs)
    mixed = rank_runs(RUNS, "rankme_h", at="preferred", epoch_signal="areq_h")
    assert [(r.run, r.epoch, r.value) for r in mixed] == [
        ("simclr-t02", 4, 71.2),
        ("simclr-t05", 3, 61.9),
        ("byol-lr1", 2, 30.1),
    ]
    assert [r.run for r in rank_runs(RUNS, "areq_h")] == ["simclr-t02", "simclr-t05", "byol-lr1"]  # lower first
    assert [r.run for r in rank_runs(RUNS, "alignment")] == ["byol-lr1", "simclr-t05", "simclr-t02"]


def test_a_run_without_the_signal_is_left_out_and_an_unknown_signal_is_an_error():
    runs = {**RUNS, "old": [{"epoch": 1, "step": 5, "epoch_loss": 4.0, "knn_top1": 30.0}]}
    assert [r.run for r in rank_runs(runs, "lidar_h")] == ["simclr-t05", "simclr-t02", "byol-lr1"]
    with pytest.raises(UserError, match="unknown label-free signal 'rank'; choose one of rankme_h"):
        rank_runs(runs, "rank")


def test_spearman_matches_the_textbook_values():
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)  # scipy's value
    assert spearman([38.2, 55.7, 61.9, 60.4], [31.5, 40.2, 44.8, 45.1]) == pytest.approx(0.8)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
    with pytest.raises(ValueError):
        spearman([1, 2, 3], [1, 2])


def test_agreement_with_the_knn_monitor_is_oriented_by_the_signals_direction():
    labelled = {name: metrics(name, labelled=True) for name in SIGNALS}
    by_rank = rank_runs(labelled, "rankme_h")
    assert [r.knn_top1 for r in by_rank] == [49.3, 45.1, 25.8]  # kNN at the same (last) epoch
    assert agreement(by_rank, "rankme_h") == (pytest.approx(1.0), 3)
    # lower alignment is "better", and here it picks the worst run first: they disagree
    assert agreement(rank_runs(labelled, "alignment"), "alignment") == (pytest.approx(-1.0), 3)
    assert agreement(rank_runs(RUNS, "rankme_h"), "rankme_h") is None  # no labels, nothing to agree with
    assert agreement(by_rank[:2], "rankme_h") is None  # two runs are too few


def test_trust_quotes_the_measured_rho_and_says_what_it_allows():
    s = study()
    assert trust(s, "rankme_h") == (
        "RankMe (h): Spearman ρ = 0.81 with the final kNN accuracy over the study's 24 runs on CIFAR-10 "
        "(2-core CPU dev box, no GPU, 2025-01-01): trust it to order runs; ones a point or two of accuracy apart "
        "may still swap."
    )
    one = trust(s, "rankme_h", methods=["simclr", "simclr"])
    assert "ρ = 0.88 with the final kNN accuracy among the simclr runs of the study's 24 runs" in one
    epochs = trust(s, "lidar_h", "epochs")
    assert "median Spearman ρ = 0.91" in epochs and "trust it to order epochs" in epochs
    assert "ρ = 0.62" in trust(s, "rankme_h", "epochs") and "strong epochs from weak ones" in trust(
        s, "rankme_h", "epochs"
    )
    assert "pointed the wrong way" in trust(s, "alignment")


def test_trust_across_methods_points_to_the_within_method_rho():
    s = study()
    mixed = trust(s, "lidar_h", methods=["simclr", "byol"])
    assert "ρ = 0.42 with the final kNN accuracy over the study's 24 runs" in mixed
    assert "within one method ρ = byol 0.79, simclr 0.86, higher than across them" in mixed
    assert "compare runs of the same method" in mixed
    held = trust(s, "rankme_h", methods=["simclr", "byol"])  # 0.81 across, 0.74 and 0.88 within
    assert "no better than across them" in held and "same method" not in held


def test_without_a_study_the_trust_line_says_not_measured():
    text = trust(None, "rankme_h")
    assert text.startswith("RankMe (h): not measured (the label-free study has not been run;")
    assert "bench/label_free.py" in text
    assert "the study did not measure it" in trust(study(), "pseudo_knn_h")
    assert trust(None, "rankme_h", "epochs") == (
        "RankMe (h): not measured for picking epochs (the label-free study has not been run). "
        "Take its best epoch as a hint."
    )


@pytest.mark.parametrize(
    ("rho", "words"),
    [(0.93, "order runs"), (0.6, "strong runs from weak"), (0.3, "weak hint"), (0.0, "no better than a guess")],
)
def test_trust_levels(rho, words):
    assert words in trust_level(rho)
