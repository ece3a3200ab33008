import json

import pytest

from simclr_core.cli.evaluate import main
from simclr_core.cli.train import train
from simclr_core.evaluation.run import evaluate_run, job_spec
from simclr_core.explorer import jobs

from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return train(tiny_config(tmp_path_factory.mktemp("ev")))


def test_evaluate_run_numbers(finished_run):
    r = evaluate_run(finished_run, probe_epochs=20, max_bank=300)
    assert r["n_bank"] == 300 and r["n_query"] == 360 and r["epoch"] == 2
    assert 10 < r["knn_top1"] <= r["knn_top5"] <= 100  # digits: far above the 10% of chance
    assert 10 < r["probe_top1"] <= r["probe_top5"] <= 100


def test_cli_with_baseline_writes_eval_json(finished_run, capsys):
    code = main(
        [
            "--run",
            finished_run.name,
            "--runs-dir",
            str(finished_run.path.parent),
            "--baseline",
            "--probe-epochs",
            "10",
            "--max-bank",
            "200",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "knn_top1" in out and "random-init" in out
    results = json.loads((finished_run.path / "eval.json").read_text())
    assert [r["checkpoint"] == "random-init" for r in results[-2:]] == [False, True]


def test_cli_errors(finished_run, capsys):
    runs = str(finished_run.path.parent)
    assert main(["--run", "nope", "--runs-dir", runs]) == 2
    assert "no run named" in capsys.readouterr().err
    assert main(["--run", finished_run.name, "--runs-dir", runs, "--k", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_an_evaluate_job_shows_the_probe_epoch_in_its_stage(finished_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_JOBS", "inline")
    written = []
    real = jobs.write_json_atomic
    monkeypatch.setattr(jobs, "write_json_atomic", lambda path, job: written.append(dict(job)) or real(path, job))
    spec = job_spec([finished_run], baseline=False, k=20, probe_epochs=5, max_bank=200)
    jid = jobs.submit(tmp_path / ".jobs", spec.kind, spec.to_dict())
    assert jobs.status(tmp_path / ".jobs", jid)["state"] == "done"
    # what the job file said while the probe trained: each epoch, counted in done / total
    probe = [(j["stage"], j["done"], j["total"]) for j in written if "probe epoch" in j.get("stage", "")]
    assert [(d, t) for _, d, t in probe] == [(e, 5) for e in range(1, 6)]
    assert probe[0][0].startswith(f"{finished_run.name}: linear probe epoch 1/5, train loss ")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "xpu"])
def test_evaluate_on_a_device_that_is_not_there(finished_run, capsys, device):
    runs = str(finished_run.path.parent)
    assert main(["--run", finished_run.name, "--runs-dir", runs, "--no-probe", "--device", device]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert ("no CUDA GPU is visible here" if device.startswith("cuda") else "unknown device 'xpu'") in err
