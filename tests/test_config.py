import dataclasses
import json

import pytest

from simclr_core.cli.common import config_from_args
from simclr_core.cli.train import build_parser
from simclr_core.config import TrainConfig, ViewConfig, check_field, check_run_name, sections, widget_spec
from simclr_core.errors import UserError


def parse(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


def test_defaults_are_the_papers():
    cfg = TrainConfig()
    assert cfg.method.temperature is None and cfg.model.proj_out_dim is None  # the method decides: 0.5 for simclr
    kw = ViewConfig().resolved(224).kwargs()
    assert kw["crop_scale"] == (0.08, 1.0) and kw["jitter_strength"] == 1.0 and kw["jitter_prob"] == 0.8
    assert kw["grayscale_prob"] == 0.2 and kw["blur_prob"] == 0.5 and kw["size"] == 224
    # the paper's CIFAR setting (appendix B.9) at 64 px or less: s = 0.5, no blur; the ImageNet one above
    assert (ViewConfig().resolved(32).kwargs()["jitter_strength"], ViewConfig().resolved(32).kwargs()["blur_prob"]) == (
        0.5,
        0.0,
    )
    assert (ViewConfig().resolved(65).kwargs()["jitter_strength"], ViewConfig().resolved(65).kwargs()["blur_prob"]) == (
        1.0,
        0.5,
    )
    assert ViewConfig(jitter_strength=0.8).resolved(32).kwargs()["jitter_strength"] == 0.8
    assert TrainConfig().optim.resolved().lr == pytest.approx(0.06)
    lars = TrainConfig().optim
    lars.optimizer, lars.batch_size = "lars", 512
    assert lars.resolved().lr == pytest.approx(0.6) and lars.resolved().weight_decay == 1e-6


def test_flags_override_file_and_are_reported(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optim": {"epochs": 7, "temperature": 0.2}, "data": {"dataset": "cifar10"}}))
    cfg, given = parse("--config", str(path), "--epochs", "3", "--no-proj-bn", "--jitter-strength", "0.5")
    assert (cfg.optim.epochs, cfg.method.temperature, cfg.data.dataset) == (3, 0.2, "cifar10")
    assert cfg.model.proj_bn is False and cfg.views.jitter_strength == 0.5
    assert given == {"epochs", "proj_bn", "jitter_strength"}


def test_config_files_of_0_2_load_into_the_method_section():
    old = {"model": {"method": "moco_v2", "backbone": "resnet_mini"}, "optim": {"temperature": 0.3, "epochs": 3}}
    cfg = TrainConfig.from_dict(old)
    assert (cfg.method.name, cfg.method.temperature, cfg.optim.epochs, cfg.model.backbone) == (
        "moco_v2",
        0.3,
        3,
        "resnet_mini",
    )
    saved = cfg.to_dict()
    assert "method" not in saved["model"] and "temperature" not in saved["optim"]
    assert TrainConfig.from_dict(saved) == cfg
    assert old == {
        "model": {"method": "moco_v2", "backbone": "resnet_mini"},
        "optim": {"temperature": 0.3, "epochs": 3},
    }  # the caller's dict is left alone
    assert TrainConfig.from_dict({"model": {"method": "byol"}, "method": {"name": "byol"}}).method.name == "byol"
    assert TrainConfig.from_dict({"model": {"method": "byol"}, "method": None}).method.name == "byol"  # `method:`
    with pytest.raises(UserError, match=r"optim.temperature \(0.3\) and method.temperature \(0.5\) disagree"):
        TrainConfig.from_dict({"optim": {"temperature": 0.3}, "method": {"temperature": 0.5}})
    # method.name is --method, run.name is --name: two options
    cfg, given = parse("--method", "byol", "--name", "x", "--temperature", "0.1")
    assert (cfg.method.name, cfg.run.name, cfg.method.temperature) == ("byol", "x", 0.1)
    assert given == {"method", "name", "temperature"}


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5e-4\n  weight_decay: 1E-6\nrun:\n  name: 1e3-run\n")
    cfg = TrainConfig.load(path)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.run.name) == (0.0005, 1e-6, "1e3-run")


def test_method_flags_and_their_checks():
    cfg, given = parse(
        "--method", "moco_v2", "--queue-size", "1024", "--moco-symmetric", "--ema", "0.999", "--ema-schedule", "cosine"
    )
    m = cfg.method
    assert (cfg.method.name, m.queue_size, m.moco_symmetric, m.ema, m.ema_schedule) == (
        "moco_v2",
        1024,
        True,
        0.999,
        "cosine",
    )
    for flags, message in [
        (("--ema", "1.5"), "--ema must be in [0, 1]"),
        (("--queue-size", "0"), "--queue-size must be in [1, 1048576]"),
        (("--pred-hidden-dim", "-4"), "--pred-hidden-dim must be in [1, 65536]"),
        (("--temperature", "0"), "--temperature must be a positive number"),
    ]:
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


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--batch-size", "0"], "--batch-size must be at least 2"),
        (["--batch-size", "1"], "--batch-size must be at least 2, got 1"),  # trains at loss 0 and learns nothing
        (["--epochs", "-1"], "--epochs must be at least 1"),
        (["--temperature", "0"], "--temperature must be a positive"),
        (["--temperature", "nan"], "--temperature must be a finite number"),
        (["--lr", "-0.1"], r"--lr must be in \(0, 100\]"),
        # values without an upper bound used to overflow, allocate terabytes or be killed by the OOM killer
        (["--lr", "1e300"], r"--lr must be in \(0, 100\], got 1e\+300 \(config key optim.lr\)"),
        (["--seed", str(2**70)], r"--seed must be in \[0, 4294967295\]"),
        (["--image-size", "100000"], r"--image-size must be in \[8, 2048\]"),
        (["--crop-size", "4096"], r"--crop-size must be in \[8, 2048\]"),
        (["--queue-size", str(10**10)], r"--queue-size must be in \[1, 1048576\]"),
        (["--workers", "100000"], r"--workers must be in \[0, 256\]"),
        (["--flip-prob", "1.5"], "--flip-prob must be in"),
        (["--proj-hidden-dim", "-3"], r"--proj-hidden-dim must be in \[1, 65536\]"),
        (["--crop-size", "-4"], r"--crop-size must be in \[8, 2048\]"),
        (["--num-threads", "-1"], r"--num-threads must be in \[1, 1024\]"),
        (["--workers", "-1"], r"--workers must be in \[0, 256\]"),
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
    ],
)
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
    for flag in [
        "--temperature",
        "--jitter-strength",
        "--blur-prob",
        "--resume",
        "--backbone",
        "--data-path",
        "--optimizer",
        "--device",
        "--name",
        "--batch-size",
        "--lr",
        "--epochs",
        "--method",
    ]:
        assert flag in out


@pytest.mark.parametrize(
    "section,value,match",
    [
        (
            {"optim": {"batch_size": 16.5}},
            None,
            r"--batch-size must be an integer or auto, got 16.5, a float \(config key optim.batch_size\)",
        ),
        ({"optim": {"batch_size": True}}, None, "--batch-size must be an integer or auto, got True"),
        ({"optim": {"lr": "0.1"}}, None, "--lr must be a number, got '0.1', a str"),
        (
            {"optim": {"temperature": "0.5"}},
            None,
            "--temperature must be a number, got '0.5'",
        ),  # not "must be positive"
        ({"data": {"image_size": "big"}}, None, "--image-size must be an integer, got 'big'"),
        ({"optim": 3}, None, "config section 'optim' must be a mapping of settings, got 3"),
        ({"optim": {"optimizer": "adam"}}, None, "--optimizer must be one of sgd, lars, got 'adam'"),
        ({"model": {"method": "simsiam"}}, None, "--method must be one of simclr, moco_v2, byol, got 'simsiam'"),
        ({"run": {"probe": "yes"}}, None, "--probe must be true or false"),
        ({"optim": {"epochs": None}}, None, "--epochs needs a value"),
    ],
)
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
    assert (
        ViewConfig.cifar().resolved(32).kwargs()["jitter_strength"],
        ViewConfig.cifar().resolved(32).kwargs()["blur_prob"],
    ) == (0.5, 0.0)
    # at any size: a preset is the recipe, not the size-based default
    assert ViewConfig.cifar().resolved(224).kwargs()["jitter_strength"] == 0.5
    assert (
        ViewConfig.imagenet().resolved(32).kwargs()["jitter_strength"],
        ViewConfig.imagenet().resolved(32).kwargs()["blur_prob"],
    ) == (
        1.0,
        0.5,
    )


def on_grid(value: float, start: float, step: float) -> bool:
    """True when ``value`` is a whole number of ``step`` from ``start`` (a slider can show it exactly)."""
    n = (value - start) / step
    return abs(n - round(n)) < 1e-6


def slider_fields():
    """(section, field, its WidgetSpec) for every field with a slider range and step in the field table."""
    for section, cls in sections().items():
        for f in dataclasses.fields(cls):
            spec = widget_spec(section, f.name)
            if spec.step is not None and spec.min is not None and spec.max is not None:
                yield section, f, spec


def test_every_slider_default_lies_in_its_range_and_on_its_step_grid():
    """The values the app's sliders start from (the dataclass defaults, the "auto" ones resolved at CIFAR and
    ImageNet sizes, the paper's view presets, every recipe's views) are values each slider can show, and each
    slider's ends are values a run accepts."""
    from simclr_core.presets import PRESETS, VIEW_PRESETS, preset

    shown = {f.name for _, f, _ in slider_fields()}
    assert {
        "crop_scale_min",
        "crop_scale_max",
        "flip_prob",
        "jitter_strength",
        "jitter_prob",
        "grayscale_prob",
        "blur_prob",
        "blur_sigma_min",
        "blur_sigma_max",
        "solarize_prob",
    } <= shown
    starts = (
        [
            vars(ViewConfig()),
            ViewConfig().resolved(32).kwargs(),
            ViewConfig().resolved(224).kwargs(),
            vars(ViewConfig.cifar()),
            vars(ViewConfig.imagenet()),
        ]
        + [vars(v()) for v in VIEW_PRESETS.values()]
        + [vars(preset(name).views) for name in PRESETS]
    )
    for section, f, spec in slider_fields():
        assert isinstance(spec.min, type(spec.step)) and isinstance(spec.max, type(spec.step))  # Streamlit's rule
        check_field(section, f, spec.min)
        check_field(section, f, spec.max)
        values = [spec.default] + [s[f.name] for s in starts if section == "views" and f.name in s]
        for v in [v for v in values if v is not None]:
            assert spec.min <= v <= spec.max, (f.name, v, spec)
            assert on_grid(v, spec.min, spec.step), (f.name, v, spec)
    # the Augmentations page slides each (low, high) pair in one range slider: both ends share one grid
    for low, high in (("crop_scale_min", "crop_scale_max"), ("blur_sigma_min", "blur_sigma_max")):
        a, b = widget_spec("views", low), widget_spec("views", high)
        assert (a.min, a.max, a.step) == (b.min, b.max, b.step)


def test_widget_spec_reads_the_field_table():
    t = widget_spec("method", "temperature")
    assert (t.label, t.default, t.optional, t.step, t.format, t.min, t.max) == (
        "Temperature",
        None,
        True,
        0.05,
        "%.3f",
        None,
        None,
    )  # open range: no slider ends
    assert "temperature tau" in t.help
    flip = widget_spec("views", "flip_prob")
    assert (flip.min, flip.max, flip.step) == (0.0, 1.0, 0.05) and isinstance(flip.min, float)  # float ends
    assert widget_spec("optim", "optimizer").choices == ("sgd", "lars")
    assert widget_spec("run", "knn_k").label == "Knn k"  # no label in the table: the name, readable
    with pytest.raises(KeyError, match="no field 'nope'"):
        widget_spec("optim", "nope")


# ---- issue 16: values that still failed, and a file that silently trains the defaults ----------------------


@pytest.mark.parametrize(
    "content, warned",
    [
        ("recipe:\n  title: My run\n  expected: kNN ~90%\n", True),  # the recipe block alone: every default
        ("recipe:\n  title: x\noptim:\ndata: {}\n", True),  # empty sections set nothing either
        ("recipe:\n  title: x\noptim:\n  epochs: 3\n", False),
    ],
)
def test_a_config_file_that_sets_no_training_field_is_warned_about(tmp_path, capsys, content, warned):
    path = tmp_path / "r.yaml"
    path.write_text(content)
    cfg, _ = parse("--config", str(path))
    err = capsys.readouterr().err
    if warned:
        assert err == (
            f"warning: {path} sets no training setting (only a recipe: block or empty sections), so every "
            "setting is its default; add sections such as data:, model: or optim: (see configs/)\n"
        )
        assert cfg == TrainConfig()
    else:
        assert err == "" and cfg.optim.epochs == 3


def test_the_upper_bounds_keep_real_sizes():
    """ImageNet-size work stays allowed: 1024-px views of 2048-px images, the paper's 65536 MoCo queue, LARS at
    a batch of 65536 (lr 0.3 * 256 = 76.8), any 32-bit seed."""
    cfg, _ = parse(
        "--image-size", "2048", "--crop-size", "1024", "--queue-size", "65536", "--seed", str(2**32 - 1),
        "--lr", "76.8", "--optimizer", "lars", "--batch-size", "65536",
    )  # fmt: skip
    assert (cfg.data.image_size, cfg.views.crop_size, cfg.run.seed) == (2048, 1024, 2**32 - 1)
    assert cfg.optim.default_lr() == pytest.approx(76.8)


def test_progressive_resolution_grows_the_view_side_in_steps_of_8_px():
    full = ViewConfig(crop_size=32).resolved(32)
    assert [full.size_at(p) for p in (0.0, 0.5, 1.0)] == [32, 32, 32]  # off by default
    grow = ViewConfig(crop_size=32, progressive_start=0.5, progressive_share=0.5).resolved(32)
    sides = [grow.size_at(i / 20) for i in range(21)]
    assert sides[0] == 16 and sides[5] == 24 and sides[10:] == [32] * 11  # full from half the run on
    assert sides == sorted(sides) and set(sides) == {16, 24, 32}  # three shapes: few recompiles
    assert ViewConfig(crop_size=16, progressive_start=0.1).resolved(16).size_at(0.0) == 8  # never below 8 px
    with pytest.raises(UserError, match="--progressive-start must be"):
        TrainConfig.from_dict({"views": {"progressive_start": 0}})
