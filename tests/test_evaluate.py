import json

import pytest

from simclr_core.evaluate import evaluate_run, main
from simclr_core.train import train

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
