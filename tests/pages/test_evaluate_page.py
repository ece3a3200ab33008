import json
import shutil

import pytest

from simclr_core.evaluation import label_free
from simclr_core.explorer import jobs
from simclr_core.runs.rundir import RunDir

from tests.evaluation.label_free_runs import fabricate, study
from tests.pages.conftest import app, plotly_specs


@pytest.fixture(autouse=True)
def study_file(tmp_path, monkeypatch):
    """Where the page reads the label-free study: absent (not run) unless a test writes it."""
    path = tmp_path / "label_free_study.json"
    monkeypatch.setattr(label_free, "STUDY_FILE", path)
    return path


def charts(at):
    """Plotly figures on the page by key, as spec dicts."""
    return dict(plotly_specs(at))


TABLES = {"eval_rank_table": "preferred_epoch", "eval_config_diff": "field"}  # a column only that table has


def table(at, key):
    """The page's table ``key`` as a pandas DataFrame (AppTest gives a st.dataframe no key; its columns tell)."""
    return next(d.value for d in at.dataframe if TABLES[key] in d.value.columns)


def test_no_runs_shows_guidance(runs_dir):
    at = app("evaluate")
    assert not at.exception
    assert any("No runs yet" in i.value for i in at.info)


def test_finished_run_shows_form_and_curves(finished_run):
    at = app("evaluate")
    assert not at.exception
    assert at.multiselect(key="eval_runs").value == ["tiny"]
    assert at.button(key="eval_submit").label == "Run evaluation"
    assert any("No evaluations of these runs yet" in c.value for c in at.caption)
    specs = charts(at)
    loss = specs["eval_loss_curves"]["data"][0]
    assert loss["x"] == [1, 2] and len(loss["y"]) == 2  # the two epochs of the tiny run
    assert "eval_knn_curves" in specs
    # a real run's label-free ranking, its kNN monitor beside it (digits have labels)
    [row] = table(at, "eval_rank_table").to_dict("records")
    assert row["run"] == "tiny" and row["epoch"] == 2 and row["value"] > 1 and 0 < row["knn_top1"] <= 100


def _evaluate(at, baseline: bool):
    at.number_input(key="eval_probe_epochs").set_value(5)
    at.number_input(key="eval_max_bank").set_value(200)
    at.checkbox(key="eval_baseline").set_value(baseline)
    at.button(key="eval_submit").click()
    return at.run()


def test_run_evaluation_shows_table_bars_and_confusion(finished_run):
    at = _evaluate(app("evaluate"), baseline=False)
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert table["result"].tolist() == ["tiny · epoch 2"]
    assert 10 < table["knn_top1"][0] <= table["knn_top5"][0] <= 100  # digits: far above chance
    assert 0 < table["probe_top1"][0] <= 100 and table["n_bank"][0] == 200
    specs = charts(at)
    bars = specs["eval_bars"]["data"]
    assert [b["type"] for b in bars] == ["bar"] and len(bars[0]["x"]) == 4
    heat = specs["eval_heat"]["data"][0]
    assert heat["type"] == "heatmap" and heat["x"] == [str(c) for c in range(10)]
    assert sum(map(sum, heat["z"])) == 360  # every query image counted once
    saved = json.loads((finished_run.path / "eval.json").read_text())
    assert len(saved) == 1 and saved[0]["knn_top1"] == table["knn_top1"][0]
    [job] = jobs.find(jobs.jobs_dir(finished_run.path.parent), "evaluate")  # computed by a background job
    assert job["state"] == "done" and job["spec"]["max_bank"] == 200 and job["spec"]["probe_epochs"] == 5
    assert any("1 of 1 model(s)" in c.value for c in at.caption)

    # a fresh session shows the saved result without evaluating again
    again = app("evaluate")
    assert again.dataframe[0].value["knn_top1"].tolist() == [saved[0]["knn_top1"]]


def test_random_init_baseline_row(finished_run):
    at = _evaluate(app("evaluate"), baseline=True)
    assert not at.exception
    table = at.dataframe[0].value
    assert sorted(table["result"]) == ["tiny (random init)", "tiny · epoch 2"]
    assert table.set_index("result").loc["tiny (random init)", "epoch"] == 0
    assert len(charts(at)["eval_bars"]["data"]) == 2  # one group colour per model
    assert [r["checkpoint"] == "random-init" for r in json.loads((finished_run.path / "eval.json").read_text())] == [
        False,
        True,
    ]


def test_run_without_checkpoint_is_an_error_not_a_crash(finished_run):
    finished_run.last_ckpt.unlink()
    at = _evaluate(app("evaluate"), baseline=False)
    assert not at.exception
    assert any("no checkpoint" in e.value for e in at.error)


def test_a_failing_run_does_not_stop_the_others(finished_run, runs_dir):
    shutil.copytree(finished_run.path, runs_dir / "empty")
    RunDir(runs_dir / "empty").last_ckpt.unlink()
    at = _evaluate(app("evaluate", eval_runs=["empty", "tiny"]), baseline=False)
    assert not at.exception
    [error] = at.error
    assert error.value.startswith("empty: ") and "train it for an epoch first" in error.value  # names the fix
    assert at.dataframe[0].value["result"].tolist() == ["tiny · epoch 2"]
    assert any("1 of 2 model(s)" in c.value for c in at.caption)


def test_a_reload_finds_a_running_evaluation_and_shows_its_results(finished_run, monkeypatch):
    monkeypatch.delenv("SIMCLR_JOBS")
    monkeypatch.setattr(jobs, "ensure_worker", lambda directory: 0)  # no worker: the job waits in its file
    at = _evaluate(app("evaluate"), baseline=False)
    assert not at.exception
    [job] = jobs.find(jobs.jobs_dir(finished_run.path.parent), "evaluate")
    assert job["state"] == "queued"

    reloaded = app("evaluate")  # a new session: nothing in session_state knows the job
    [bar] = reloaded.get("progress")
    assert bar.proto.text == "Evaluating tiny: waiting for the worker"
    assert not reloaded.exception and not reloaded.error

    jobs.worker(jobs.jobs_dir(finished_run.path.parent), warm_up=False, idle_exit_s=0)  # runs it, then exits
    reloaded.run()
    assert not reloaded.get("progress")
    assert reloaded.dataframe[0].value["result"].tolist() == ["tiny · epoch 2"]


def test_compare_two_runs_shows_differing_fields(finished_run, runs_dir):
    shutil.copytree(finished_run.path, runs_dir / "tiny2")
    cfg_path = RunDir(runs_dir / "tiny2").config_path
    cfg = json.loads(cfg_path.read_text())
    cfg["method"]["temperature"] = 0.2
    cfg["run"]["name"] = "tiny2"
    cfg_path.write_text(json.dumps(cfg))
    at = app("evaluate", eval_runs=["tiny", "tiny2"])
    assert not at.exception
    diff = table(at, "eval_config_diff")
    assert diff["field"].tolist() == ["method.temperature"]
    assert diff[["tiny", "tiny2"]].values.tolist() == [["0.5", "0.2"]]
    assert [t["name"] for t in charts(at)["eval_loss_curves"]["data"]] == ["tiny", "tiny2"]

    at.toggle(key="eval_all_fields").set_value(True).run()
    full = table(at, "eval_config_diff")
    fields = full["field"].tolist()
    assert len(fields) > 30 and "method.temperature" in fields and "model.backbone" in fields


RANKED = ["simclr-t02", "simclr-t05", "byol-lr1"]  # by RankMe (h) at the last epoch: 71.2, 60.4, 26.0


def test_an_unlabelled_folders_runs_are_ranked_with_no_labels_anywhere(runs_dir):
    fabricate(runs_dir)
    at = app("evaluate", eval_runs=RANKED)
    assert not at.exception and not at.error
    assert any("trained on images without labels" in i.value for i in at.info)
    assert not at.get("form") and not [b for b in at.button if b.key == "eval_submit"]  # no kNN / probe form
    ranked = table(at, "eval_rank_table")
    assert ranked["run"].tolist() == RANKED and ranked["rank"].tolist() == [1, 2, 3]
    assert ranked["value"].tolist() == [71.2, 60.4, 26.0] and ranked["preferred_epoch"].tolist() == [4, 3, 2]
    for frame in at.dataframe:  # no kNN, probe or label column in any table of the page
        assert not [c for c in frame.value.columns if "knn" in c.lower() or "probe" in c.lower()]
    assert at.selectbox(key="eval_rank_signal").value == "rankme_h"
    trust = " ".join(m.value for m in at.markdown)
    assert "How far to trust this order." in trust and "RankMe (h): not measured" in trust  # no study yet
    curves = charts(at)["eval_rank_curves"]["data"]
    star = curves[-1]
    assert star["x"] == [4, 3, 2] and star["y"] == [71.2, 61.9, 30.1] and star["text"] == RANKED
    assert "eval_knn_curves" not in charts(at)
    assert any("images have no labels" in c.value for c in at.caption)


def test_the_studys_best_signal_ranks_and_its_rho_says_how_far_to_trust_it(runs_dir, study_file):
    study_file.write_text(json.dumps(study(runs="lidar_h", epochs="rankme_h")))
    fabricate(runs_dir)
    at = app("evaluate", eval_runs=RANKED)
    assert not at.exception
    assert at.selectbox(key="eval_rank_signal").value == "lidar_h"
    ranked = table(at, "eval_rank_table")
    assert ranked["run"].tolist() == ["simclr-t05", "simclr-t02", "byol-lr1"]  # LiDAR (h): 190.4, 176.5, 95.2
    trust = " ".join(m.value for m in at.markdown)
    assert "LiDAR (h): Spearman ρ = 0.42 with the final kNN accuracy over the study's 24 runs on CIFAR-10" in trust
    assert "compare runs of the same method" in trust  # simclr and byol mixed: 0.86 and 0.79 within each
    assert any("median Spearman ρ = 0.62" in c.value for c in at.caption)  # RankMe (h) picks the epochs

    # one method only: the ρ within it; read at each run's best epoch
    at.multiselect(key="eval_runs").set_value(["simclr-t05", "simclr-t02"])
    at.radio(key="eval_rank_at").set_value("preferred").run()
    ranked = table(at, "eval_rank_table")
    assert ranked[["run", "epoch"]].values.tolist() == [["simclr-t05", 3], ["simclr-t02", 4]]
    assert ranked["value"].tolist() == [188.0, 176.5]
    assert "ρ = 0.86 with the final kNN accuracy among the simclr runs" in " ".join(m.value for m in at.markdown)


def test_a_labelled_split_shows_knn_beside_the_signal_and_whether_they_agree(runs_dir):
    fabricate(runs_dir, labelled=True)
    at = app("evaluate", eval_runs=RANKED)
    assert not at.exception
    assert at.button(key="eval_submit")  # kNN and the probe can measure these
    ranked = table(at, "eval_rank_table")
    assert ranked["knn_top1"].tolist() == [49.3, 45.1, 25.8] and ranked["knn_rank"].tolist() == [1, 2, 3]
    assert any("RankMe (h) and the kNN monitor **agree**: Spearman ρ = 1.00" in c.value for c in at.caption)
    at.selectbox(key="eval_rank_signal").set_value("alignment").run()
    assert table(at, "eval_rank_table")["run"].tolist() == ["byol-lr1", "simclr-t05", "simclr-t02"]
    assert any("alignment and the kNN monitor **disagree**: Spearman ρ = -1.00" in c.value for c in at.caption)
