"""Every run mirrors metrics.jsonl into TensorBoard scalars; a resume drops what a killed process wrote past it."""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_core.cli.train import train
from simclr_core.config import RunConfig
from simclr_core.runs import tboard

from tests.conftest import tiny_config


def scalars(run_path: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_path))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_run_writes_its_metrics_as_scalars(tmp_path):
    run = train(tiny_config(tmp_path))
    got = scalars(run.path)
    assert {
        "train/loss",
        "train/lr",
        "train/images_per_s",
        "epoch/loss",
        "knn/top1",
        "knn/top5",
        "health/rankme_h",
        "health/uniformity",
    } <= set(got)
    steps = run.metrics("step")
    epochs = run.metrics("epoch")
    assert [s for s, _ in got["train/loss"]] == [m["step"] for m in steps]
    assert [v for _, v in got["train/loss"]] == pytest.approx([m["loss"] for m in steps], rel=1e-6)
    assert [(s, round(v, 3)) for s, v in got["knn/top1"]] == [(m["step"], round(m["knn_top1"], 3)) for m in epochs]


def test_resume_drops_the_events_past_the_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, epochs=1)
    run = train(cfg)
    first_end = run.metrics()[-1]["step"]
    stray = tboard.Scalars(run.path)  # a killed process's events past the checkpoint
    stray.write({"step": first_end + 1, "loss": 123.0})
    stray.close()
    cfg.optim.epochs = 2
    train(cfg, resume=True)
    losses = scalars(run.path)["train/loss"]
    assert 123.0 not in [v for _, v in losses]
    assert [s for s, _ in losses] == sorted({s for s, _ in losses})  # each step once


def test_off_by_flag_or_without_the_package(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, epochs=1)
    cfg.run = RunConfig(**{**cfg.run.__dict__, "tensorboard": False})
    run = train(cfg)
    assert not list(run.path.glob("events.out.tfevents.*"))
    monkeypatch.setattr(tboard, "available", lambda: False)  # as on a GPU box without tensorboard
    cfg2 = tiny_config(tmp_path, name="no-package", epochs=1)
    run2 = train(cfg2)
    assert not list(run2.path.glob("events.out.tfevents.*")) and run2.metrics()
