import json

import pytest

from simclr_core.cli import config_from_args
from simclr_core.config import TrainConfig, ViewConfig, check_run_name
from simclr_core.errors import UserError
from simclr_core.train import build_parser


def parse(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.optim.temperature is None and cfg.model.proj_out_dim == 128  # the method decides: 0.5 for simclr
    kw = ViewConfig().kwargs(224)
    assert kw["crop_scale"] == (0.08, 1.0) and kw["jitter_strength"] == 1.0 and kw["jitter_prob"] == 0.8
    assert kw["grayscale_prob"] == 0.2 and kw["blur_prob"] == 0.5 and kw["size"] == 224
    assert ViewConfig().kwargs(32)["blur_prob"] == 0.0  # the paper's CIFAR setting
    assert TrainConfig().optim.peak_lr() == pytest.approx(0.06)
    lars = TrainConfig().optim
    lars.optimizer, lars.batch_size = "lars", 512
    assert lars.peak_lr() == pytest.approx(0.6) and lars.decay() == 1e-6


def test_flags_override_file_and_are_reported(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optim": {"epochs": 7, "temperature": 0.2}, "data": {"dataset": "cifar10"}}))
    cfg, given = parse("--config", str(path), "--epochs", "3", "--no-proj-bn", "--jitter-strength", "0.5")
    assert (cfg.optim.epochs, cfg.optim.temperature, cfg.data.dataset) == (3, 0.2, "cifar10")
    assert cfg.model.proj_bn is False and cfg.views.jitter_strength == 0.5
    assert given == {"epochs", "proj_bn", "jitter_strength"}


def test_method_flags_and_their_checks():
    cfg, given = parse("--method", "moco_v2", "--queue-size", "1024", "--moco-symmetric", "--ema", "0.999",
                       "--ema-schedule", "cosine")
    m = cfg.method
    assert (cfg.model.method, m.queue_size, m.moco_symmetric, m.ema, m.ema_schedule) == \
        ("moco_v2", 1024, True, 0.999, "cosine")
    for flags, message in [(("--ema", "1.5"), "--ema must be in [0, 1]"),
                           (("--queue-size", "0"), "--queue-size must be a positive number"),
                           (("--pred-hidden-dim", "-4"), "--pred-hidden-dim must be a positive number"),
                           (("--temperature", "0"), "--temperature must be a positive number")]:
        with pytest.raises(UserError) as e:
            parse(*flags)
        assert message in str(e.value)
    old = TrainConfig().to_dict()
    del old["method"]  # a config.json written before the method section existed still loads
    assert TrainConfig.from_dict(old).method.queue_size == 4096


def test_yaml_and_json_round_trip(tmp_path):
    cfg = TrainConfig()
    cfg.optim.batch_size = 64
    cfg.save(tmp_path / "a.json")
    assert TrainConfig.load(tmp_path / "a.json") == cfg
    (tmp_path / "b.yaml").write_text("optim:\n  batch_size: 64\n")
    assert TrainConfig.load(tmp_path / "b.yaml").optim.batch_size == 64


@pytest.mark.parametrize("argv,match", [
    (["--batch-size", "0"], "--batch-size must be a positive"),
    (["--epochs", "-1"], "--epochs must be a positive"),
    (["--temperature", "0"], "--temperature must be a positive"),
    (["--temperature", "nan"], "--temperature must be a positive"),
    (["--lr", "-0.1"], "--lr must be a positive"),
    (["--flip-prob", "1.5"], "--flip-prob must be in"),
    (["--name", "../evil"], "invalid run name"),
    (["--name", "a/b"], "invalid run name"),
    (["--dataset", "folder"], "needs --data-path"),
])
def test_bad_values_are_user_errors(argv, match):
    with pytest.raises(UserError, match=match):
        parse(*argv)


def test_unknown_keys_and_bad_files(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"optim": {"epoch": 3}}))
    with pytest.raises(UserError, match=r"unknown key\(s\) \['epoch'\]"):
        TrainConfig.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot parse"):
        TrainConfig.load(tmp_path / "y.json")
    with pytest.raises(UserError, match="does not exist"):
        TrainConfig.load(tmp_path / "missing.yaml")


def test_run_names():
    assert check_run_name("cifar10-r18_b512.v2") == "cifar10-r18_b512.v2"
    for bad in ["", "..", ".hidden", "a..b", "x" * 101, "a b"]:
        with pytest.raises(UserError):
            check_run_name(bad)


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ["--temperature", "--jitter-strength", "--blur-prob", "--resume", "--backbone", "--data-path",
                 "--optimizer", "--device", "--name", "--batch-size", "--lr", "--epochs", "--method"]:
        assert flag in out
