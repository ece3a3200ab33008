"""The recipe zoo (configs/): every recipe loads, names its expected result and source, and trains a step."""

from __future__ import annotations

import math

import pytest

from simclr_core.cli.common import config_from_args
from simclr_core.cli.train import build_parser, train
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.presets import PRESETS, preset
from simclr_core.runs.rundir import RunDir
from simclr_core.zoo import read_recipe, recipe, recipes

ZOO = recipes()


def test_the_zoo_holds_the_anchor_recipes_in_the_apps_order():
    names = [r.name for r in ZOO]
    assert names[0] == "cpu-demo"  # the app's default preset
    assert {
        "simclr-cifar10-resnet18",
        "mocov2-cifar10-resnet18",
        "byol-cifar10-resnet18",
        "simclr-stl10-resnet18",
        "my-folder",
    } <= set(names)
    assert list(PRESETS) == [r.title for r in ZOO]  # the app's presets are the zoo


@pytest.mark.parametrize("r", ZOO, ids=[r.name for r in ZOO])
def test_every_recipe_loads_and_names_its_result_and_source(r):
    cfg = r.config()
    cfg.validate()
    assert r.expected and r.source and r.title
    assert any(ch.isdigit() for ch in r.expected) or r.name == "my-folder"  # a figure to reach
    # --config reads the same file to the same settings
    args = build_parser().parse_args(["--config", str(r.path)])
    assert config_from_args(args)[0] == cfg
    assert preset(r.title) == cfg and recipe(r.name) == cfg and recipe(r.name) is not recipe(r.name)


def test_the_anchor_settings():
    simclr, moco, byol = (
        recipe(n) for n in ("simclr-cifar10-resnet18", "mocov2-cifar10-resnet18", "byol-cifar10-resnet18")
    )
    for cfg in (simclr, moco, byol):
        assert (cfg.data.dataset, cfg.model.backbone, cfg.model.cifar_stem) == ("cifar10", "resnet18", True)
        assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.views.blur_prob) == (200, 512, 0.0)
    assert (simclr.method.name, moco.method.name, byol.method.name) == ("simclr", "moco_v2", "byol")
    assert moco.method.queue_size == 4096 and moco.method.moco_symmetric
    assert (byol.model.proj_out_dim, byol.method.ema_schedule) == (256, "cosine")


@pytest.mark.slow
@pytest.mark.parametrize("r", ZOO, ids=[r.name for r in ZOO])
def test_every_recipe_trains_one_step_on_tiny_data(r, tmp_path):
    cfg = r.config()
    # the recipe's method, model and optimiser; tiny data and one step
    cfg.data = type(cfg.data)(dataset="digits", data_dir=str(tmp_path / "data"), subset=8, image_size=16)
    cfg.optim.epochs, cfg.optim.batch_size = 1, 8
    cfg.run.name, cfg.run.runs_dir, cfg.run.knn_every, cfg.run.probe = "one-step", str(tmp_path / "runs"), 0, False
    cfg.run.compile = False  # the speedrun's torch.compile takes minutes on a CPU; tests/training covers it
    run = train(cfg)
    [line] = [m for m in RunDir(run.path).metrics("epoch")]
    assert line["step"] == 1 and math.isfinite(line["epoch_loss"])


def test_a_damaged_recipe_is_a_clear_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("recipe:\n  title: x\ndata: {dataset: digits}\n")
    with pytest.raises(UserError, match="lacks expected, source"):
        read_recipe(tmp_path / "bad.yaml")
    with pytest.raises(UserError, match="no recipe 'nope'; the zoo holds: cpu-demo"):
        recipe("nope")


def test_a_config_file_may_carry_a_recipe_block(tmp_path):
    (tmp_path / "r.yaml").write_text("recipe: {title: t, expected: e, source: s}\noptim: {epochs: 3}\n")
    assert TrainConfig.load(tmp_path / "r.yaml").optim.epochs == 3
