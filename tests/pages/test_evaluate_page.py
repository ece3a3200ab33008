import json
import shutil

from simclr_core.explorer import jobs
from simclr_core.runs.rundir import RunDir

from tests.pages.conftest import app, plotly_specs


def charts(at):
    """Plotly figures on the page by key, as spec dicts."""
    return dict(plotly_specs(at))


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
    diff = at.dataframe[0].value
    assert diff["field"].tolist() == ["method.temperature"]
    assert diff[["tiny", "tiny2"]].values.tolist() == [["0.5", "0.2"]]
    assert [t["name"] for t in charts(at)["eval_loss_curves"]["data"]] == ["tiny", "tiny2"]

    at.toggle(key="eval_all_fields").set_value(True).run()
    full = at.dataframe[0].value
    fields = full["field"].tolist()
    assert len(fields) > 30 and "method.temperature" in fields and "model.backbone" in fields
