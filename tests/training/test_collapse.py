"""Collapse caught early: runs that collapse on purpose raise the alarm within two monitor epochs, and the
alarm names the setting that did it (simclr_core.evaluation.health.likely_causes).

Each run is planned for 10 epochs (so the learning rate is still near its peak) and stopped after its
second monitor epoch. Measured here (digits at 16 px, resnet_mini, batch 32, seed 0):

- SimCLR at --temperature 0.01: effective rank of z 1.15 at the first monitor epoch (loss 65, finite);
- SimCLR at --lr 10: effective rank of z 1.04 at the first monitor epoch;
- BYOL without its predictor: the projections draw to one point, uniformity -0.10 after 8 steps and
  -0.02 after 16, with a projector without batch norm. With BYOL's own projector (batch norm after its
  hidden layer) the same collapse takes longer: uniformity crossed -0.05 after ~125 steps (momentum 0.99;
  -0.75 after 16, -0.12 after 64, -0.027 from step 200 on) or ~60 steps (no momentum), too many for a test;
- the same runs with the usual settings raise nothing (uniformity -0.7 to -1.0 for SimCLR, -0.4 for BYOL).
"""

import pytest

from simclr_core.config import TrainConfig

from tests.conftest import tiny_config
from tests.training.common import train_until_stopped

STEPS_PER_EPOCH = 4  # SimCLR: 128 images at batch 32; BYOL takes twice the images (its collapse is slower)


def planned(tmp_path, method: str, **settings) -> TrainConfig:
    cfg = tiny_config(tmp_path, name=method)
    cfg.method.name = method
    images = STEPS_PER_EPOCH * 32 * (2 if method == "byol" else 1)
    cfg.data.subset, cfg.optim.epochs, cfg.run.probe_size, cfg.run.knn_max_bank = images, 10, 128, 100
    for key, value in settings.items():
        section = next(part for part in ("method", "optim", "model") if hasattr(getattr(cfg, part), key))
        setattr(getattr(cfg, section), key, value)
    return cfg


def first_two_monitor_epochs(cfg: TrainConfig, monkeypatch) -> dict[int, dict]:
    """Train ``cfg`` until its second monitor epoch ends: epoch -> its metrics line."""
    steps = cfg.data.subset // 32 * 2
    run = train_until_stopped(cfg, monkeypatch, step=steps)
    lines = {m["epoch"]: m for m in run.metrics("epoch")}
    assert sorted(lines) == [1, 2] and all("rankme_z" in m for m in lines.values())
    return lines


@pytest.mark.parametrize(
    ("method", "settings", "cause", "fix"),
    [
        ("simclr", {"temperature": 0.01}, "--temperature 0.01 is far below simclr's usual 0.5", "--temperature 0.5"),
        ("simclr", {"lr": 10.0}, "--lr 10 is 1,333x the usual 0.0075 for sgd at batch 32", "--lr 0.0075"),
        (
            "byol",
            {"predictor": False, "proj_bn": False},
            "BYOL without its predictor (--no-predictor)",
            "start a new run with --predictor",
        ),
    ],
    ids=["temperature-0.01", "lr-10", "byol-no-predictor"],
)
def test_a_deliberate_collapse_is_caught_within_two_monitor_epochs_with_its_cause(
    tmp_path, monkeypatch, method, settings, cause, fix
):
    lines = first_two_monitor_epochs(planned(tmp_path, method, **settings), monkeypatch)
    alarms = [lines[e]["collapse"] for e in (1, 2) if "collapse" in lines[e]]
    assert alarms, f"no collapse alarm in two monitor epochs: {lines}"
    assert alarms[0].startswith("the representation has collapsed")
    assert f"likely cause: {cause}" in alarms[0] and fix in alarms[0], alarms[0]
    if method == "simclr":  # a temperature or a learning rate may change on resume (cli.train.RESUMABLE)
        assert f"resume with --resume simclr {fix}" in alarms[0]


@pytest.mark.parametrize(
    ("method", "settings"), [("simclr", {}), ("byol", {"proj_bn": False})], ids=["simclr", "byol-with-predictor"]
)
def test_the_same_runs_with_the_usual_settings_raise_no_alarm(tmp_path, monkeypatch, method, settings):
    lines = first_two_monitor_epochs(planned(tmp_path, method, **settings), monkeypatch)
    assert not [m["collapse"] for m in lines.values() if "collapse" in m]
    assert all(m["uniformity"] < -0.2 and m["rankme_z"] > 5 for m in lines.values()), lines
