"""The run-time estimate (training.estimate): consistent figures from a real measurement, no run left behind."""

from __future__ import annotations

import json

import pytest
import torch

from simclr_core.cli.train import main
from simclr_core.errors import UserError
from simclr_core.explorer import compute as explore
from simclr_core.training.estimate import Estimate, estimate, job_spec

from tests.conftest import tiny_args, tiny_config


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*")) if folder.exists() else []


def test_the_estimate_adds_up_what_it_measured(tmp_path):
    cfg = tiny_config(tmp_path, epochs=3)
    cfg.run.knn_every = 2  # the monitor after epochs 2 and 3 (the last)
    before = json.dumps(cfg.to_dict())
    stages = []
    est = estimate(cfg, seconds=5, progress=lambda stage, done, total: stages.append(stage))
    assert json.dumps(cfg.to_dict()) == before  # prepare() resolved "auto" settings on a copy
    assert (est.epochs, est.batch_size, est.steps_per_epoch, est.total_steps) == (3, 32, 2, 6)
    assert est.monitor_epochs == 2 and est.monitor_label == "kNN monitor"
    assert est.step_s > 0 and est.monitor_s > 0 and est.checkpoint_s > 0 and est.start_s > 0
    assert est.measured_steps >= 1 and est.measured_batch == 32 and 0 < est.monitor_sample <= 1
    assert est.images_per_s == pytest.approx(32 / est.step_s)
    assert est.total_s == pytest.approx(
        est.start_s + est.step_s * est.total_steps + est.monitor_s * est.monitor_epochs + est.checkpoint_s * est.epochs
    )
    assert est.device_type == "cpu" and est.device == f"CPU ({est.threads} threads)"
    assert stages[0] == "loading the data and building the model" and "timing training steps" in stages
    line = est.describe()
    assert line.startswith("about ") and f"x {est.total_steps:,} steps" in line and "kNN monitor" in line
    assert "; measured just now" in line
    assert Estimate.from_dict({**est.to_dict(), "describe": line}) == est


def test_the_estimate_writes_nothing_into_the_runs_folder_and_keeps_threads(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg.run.num_threads = 1
    (tmp_path / "runs").mkdir()
    threads = torch.get_num_threads()
    estimate(cfg, seconds=3)
    assert _files(tmp_path / "runs") == []
    assert torch.get_num_threads() == threads


def test_without_a_monitor_the_estimate_is_the_steps_and_checkpoints(tmp_path):
    cfg = tiny_config(tmp_path, epochs=2)
    cfg.run.knn_every = 0
    est = estimate(cfg, seconds=3)
    assert (est.monitor_s, est.monitor_epochs, est.monitor_label) == (0.0, 0, "")
    assert "monitor" not in est.describe()
    assert est.total_s == pytest.approx(est.start_s + est.step_s * 4 + est.checkpoint_s * 2)


def test_describe_says_when_the_machine_was_busy_and_when_it_was_measured():
    est = Estimate(
        device="CPU (2 threads)",
        device_type="cpu",
        threads=2,
        cpus=2,
        load=2.4,
        epochs=50,
        batch_size=512,
        steps_per_epoch=23,
        total_steps=1150,
        step_s=0.42,
        images_per_s=512 / 0.42,
        measured_steps=3,
        measured_batch=32,
        monitor_s=3.0,
        monitor_epochs=50,
        monitor_label="kNN monitor",
        monitor_sample=0.25,
        checkpoint_s=0.1,
        start_s=2.0,
        total_s=2.0 + 0.42 * 1150 + 3.0 * 50 + 0.1 * 50,
        measure_s=12.0,
        measured_at=1_000_000.0,
    )
    line = est.describe(now=1_000_000.0 + 60)
    assert line.startswith("about 11 min on this machine's CPU (2 threads): 0.42 s per step x 1,150 steps")
    assert "(timed on 32 of 512 images a step, scaled)" in line
    assert "kNN monitor 3 s (from 25% of its images) x 50 epochs" in line
    assert "measured just now" in line and "busy (load average 2.4 on 2 cores)" in line
    assert "measured at " in est.describe(now=1_000_000.0 + 3600)
    assert est.busy and not Estimate.from_dict({**est.to_dict(), "load": 0.3}).busy


def test_the_estimate_job_runs_through_explore(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    spec = {**job_spec(cfg, device="cpu", requested=1.0).to_dict(), "seconds": 3}
    assert json.loads(json.dumps(spec)) == spec  # a job file holds it
    result = explore.run_job("estimate", spec)
    assert json.loads(json.dumps(result)) == result
    assert result["describe"].startswith("about ") and result["total_s"] > 0 and result["device_type"] == "cpu"
    assert Estimate.from_dict(result).describe() == result["describe"]
    assert _files(tmp_path / "runs") == []


def test_a_config_no_run_can_use_is_the_same_error_as_training(tmp_path):
    cfg = tiny_config(tmp_path)
    cfg.optim.batch_size = 1000
    with pytest.raises(UserError, match="larger than the 64 training images"):
        estimate(cfg)


def test_the_cli_prints_the_estimate_and_creates_no_run(tmp_path, capsys):
    code = main([*tiny_args(tmp_path, "est"), "--estimate"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out.startswith("about ") and "per step x 4 steps" in out and "measured just now" in out
    assert "images/s at batch 32" in out
    assert _files(tmp_path / "runs") == []


def test_the_cli_estimate_is_for_a_new_run(tmp_path, capsys):
    assert main([*tiny_args(tmp_path, "est"), "--estimate", "--resume", "est"]) == 2
    assert "--estimate measures a new run; drop --resume" in capsys.readouterr().err


def test_a_tight_budget_times_part_of_a_batch_and_a_sample_of_the_monitor_and_says_so(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1, batch_size=64)
    cfg.data.subset = 200
    est = estimate(cfg, seconds=0.01)  # no second step fits: the first steady slice of 32 images is all
    assert (est.measured_batch, est.measured_steps, est.steps_per_epoch) == (32, 1, 3)
    assert 0 < est.monitor_sample < 1
    line = est.describe()
    assert "(timed on 32 of 64 images a step, scaled)" in line and "% of its images)" in line
