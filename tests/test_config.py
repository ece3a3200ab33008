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
    assert cfg.optim.temperature is None and cfg.model.proj_out_dim is None  # the method decides: 0.5 for simclr
    kw = ViewConfig().kwargs(224)
    assert kw["crop_scale"] == (0.08, 1.0) and kw["jitter_strength"] == 1.0 and kw["jitter_prob"] == 0.8
    assert kw["grayscale_prob"] == 0.2 and kw["blur_prob"] == 0.5 and kw["size"] == 224
    # the paper's CIFAR setting (appendix B.9) at 64 px or less: s = 0.5, no blur; the ImageNet one above
    assert (ViewConfig().kwargs(32)["jitter_strength"], ViewConfig().kwargs(32)["blur_prob"]) == (0.5, 0.0)
    assert (ViewConfig().kwargs(65)["jitter_strength"], ViewConfig().kwargs(65)["blur_prob"]) == (1.0, 0.5)
    assert ViewConfig(jitter_strength=0.8).kwargs(32)["jitter_strength"] == 0.8
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
                           (("--queue-size", "0"), "--queue-size must be at least 1"),
                           (("--pred-hidden-dim", "-4"), "--pred-hidden-dim must be at least 1"),
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
    (["--batch-size", "0"], "--batch-size must be at least 2"),
    (["--batch-size", "1"], "--batch-size must be at least 2, got 1"),  # trains at loss 0 and learns nothing
    (["--epochs", "-1"], "--epochs must be at least 1"),
    (["--temperature", "0"], "--temperature must be a positive"),
    (["--temperature", "nan"], "--temperature must be a finite number"),
    (["--lr", "-0.1"], "--lr must be a positive"),
    (["--flip-prob", "1.5"], "--flip-prob must be in"),
    (["--proj-hidden-dim", "-3"], "--proj-hidden-dim must be at least 1"),
    (["--crop-size", "-4"], "--crop-size must be at least 8"),
    (["--num-threads", "-1"], "--num-threads must be at least 1"),
    (["--workers", "-1"], "--workers must be at least 0"),
    (["--momentum", "-1"], r"--momentum must be in \[0, 1\)"),
    (["--knn-k", "0"], "--knn-k must be at least 1"),
    (["--knn-every", "-1"], "--knn-every must be at least 0"),
    (["--weight-decay", "-0.0001"], "--weight-decay must be at least 0"),
    (["--warmup-epochs", "-2"], "--warmup-epochs must be at least 0"),
    (["--jitter-strength", "-0.5"], "--jitter-strength must be at least 0"),
    (["--blur-sigma-min", "-0.1"], "--blur-sigma-min must be at least 0"),
    (["--blur-sigma-min", "3", "--blur-sigma-max", "2"], "need --blur-sigma-min <= --blur-sigma-max"),
    (["--name", "../evil"], "invalid run name"),
    (["--name", "a/b"], "invalid run name"),
    (["--name", "run\n"], "invalid run name"),  # a trailing newline passed a `$` regex
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


@pytest.mark.parametrize("section,value,match", [
    ({"optim": {"batch_size": 16.5}}, None,
     r"--batch-size must be an integer, got 16.5, a float \(config key optim.batch_size\)"),
    ({"optim": {"batch_size": True}}, None, "--batch-size must be an integer, got True"),
    ({"optim": {"lr": "0.1"}}, None, "--lr must be a number, got '0.1', a str"),
    ({"optim": {"temperature": "0.5"}}, None, "--temperature must be a number, got '0.5'"),  # not "must be positive"
    ({"data": {"image_size": "big"}}, None, "--image-size must be an integer, got 'big'"),
    ({"optim": 3}, None, "config section 'optim' must be a mapping of settings, got 3"),
    ({"optim": {"optimizer": "adam"}}, None, "--optimizer must be one of sgd, lars, got 'adam'"),
    ({"model": {"method": "simsiam"}}, None, "--method must be one of simclr, moco_v2, byol, got 'simsiam'"),
    ({"run": {"probe": "yes"}}, None, "--probe must be true or false"),
    ({"optim": {"epochs": None}}, None, "--epochs needs a value"),
])
def test_config_file_values_of_the_wrong_type(tmp_path, section, value, match):
    (tmp_path / "c.json").write_text(json.dumps(section))
    with pytest.raises(UserError, match=match):
        TrainConfig.load(tmp_path / "c.json")


def test_config_file_that_is_not_utf8(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"optim:\n  lr: 0.1 # caf\xe9\n")
    with pytest.raises(UserError, match="is not UTF-8 text .*save it as UTF-8"):
        TrainConfig.load(tmp_path / "c.yaml")


def test_api_configs_are_checked_too():
    cfg = TrainConfig()
    cfg.optim.lr = "0.1"  # a notebook user's typo; the type hint alone stops nothing
    with pytest.raises(UserError, match="--lr must be a number"):
        cfg.validate()


def test_every_bound_in_the_field_table_is_enforced():
    """Each field's min/max/gt/lt in its metadata is checked by validate(), at the bound and just past it."""
    from dataclasses import fields

    from simclr_core.config import check_field, sections

    checked = 0
    for section, cls in sections().items():
        for f in fields(cls):
            m, base = f.metadata, str(f.type).split(" | ")[0]
            step = 1 if base == "int" else 1e-3
            for key, sign in (("min", -1), ("gt", 0), ("max", 1), ("lt", 0)):
                if key not in m:
                    continue
                check_field(section, f, m[key] + (0 if key in ("min", "max") else -step if key == "lt" else step))
                with pytest.raises(UserError, match=f.name.replace("_", "-")):
                    check_field(section, f, m[key] + sign * step)
                checked += 1
    assert checked >= 30


def test_the_papers_view_presets():
    assert (ViewConfig.cifar().kwargs(32)["jitter_strength"], ViewConfig.cifar().kwargs(32)["blur_prob"]) == (0.5, 0.0)
    # at any size: a preset is the recipe, not the size-based default
    assert ViewConfig.cifar().kwargs(224)["jitter_strength"] == 0.5
    assert (ViewConfig.imagenet().kwargs(32)["jitter_strength"], ViewConfig.imagenet().kwargs(32)["blur_prob"]) == \
        (1.0, 0.5)
