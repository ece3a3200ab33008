"""The flags shared by the commands: config -> flags -> config is the identity."""

from __future__ import annotations

import pytest

from simclr_core.cli.common import Parser, add_config_args, config_flags, config_from_args
from simclr_core.config import TrainConfig
from simclr_core.errors import UserError


def parse(argv: list[str]) -> TrainConfig:
    p = Parser(prog="t")
    add_config_args(p)
    cfg, _ = config_from_args(p.parse_args(argv))
    return cfg


def test_flags_give_back_the_config(tiny):
    tiny.method.name, tiny.method.temperature = "moco_v2", 0.2
    tiny.run.tensorboard = False  # a bool turned off: --no-tensorboard
    tiny.views.jitter_strength = 0.25
    argv = config_flags(tiny)
    assert "--no-tensorboard" in argv and argv[argv.index("--method") + 1] == "moco_v2"
    assert parse(argv).to_dict() == tiny.to_dict()


def test_defaults_give_no_flags():
    assert config_flags(TrainConfig()) == []


def test_none_where_the_default_is_a_value_has_no_flag():
    cfg = TrainConfig()
    cfg.optim.epochs = None  # type: ignore[assignment]
    with pytest.raises(UserError, match="optim.epochs = None has no command-line flag"):
        config_flags(cfg)
