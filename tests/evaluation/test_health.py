"""Label-free health measures on constructed cases: collapsed, isotropic, aligned and opposite views."""

import math

import pytest
import torch

from simclr_core.evaluation.health import alignment, collapse_alarm, health, rankme, uniformity


def test_collapsed_embeddings_have_rank_one_and_raise_the_alarm():
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 128, generator=g)
    collapsed = one.repeat(500, 1) * torch.rand(500, 1, generator=g)  # one direction, any length
    r = rankme(collapsed)
    assert r == pytest.approx(1.0, abs=0.01)
    z = collapsed + 1e-6 * torch.randn(500, 128, generator=g)
    h = health(collapsed, z, z, z)
    assert "collapse" in h and "collapsed" in h["collapse"] and "learning rate" in h["collapse"]
    assert uniformity(z) > -1e-3  # every normalised point in the same place
    assert rankme(torch.zeros(10, 4)) == 1.0


def test_isotropic_embeddings_have_nearly_full_rank_and_no_alarm():
    x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(1))
    assert 60 < rankme(x) <= 64
    u = uniformity(x)
    assert u < -3.0  # spread over the sphere: close to the bound -4 of t = 2
    assert collapse_alarm(rankme(x), u) is None
    assert "collapse" not in health(x, x, x, x + 0.01)


def test_rank_counts_the_dimensions_used():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2000, 8, generator=g) @ torch.linalg.qr(torch.randn(64, 8, generator=g))[0].T  # 8 of 64
    assert 7 < rankme(x) < 8.01


def test_alignment_of_identical_opposite_and_orthogonal_views():
    z = torch.randn(100, 16, generator=torch.Generator().manual_seed(3))
    assert alignment(z, 3 * z) == pytest.approx(0.0, abs=1e-6)  # scale does not matter: normalised
    assert alignment(z, -z) == pytest.approx(4.0, abs=1e-5)  # ||a - (-a)||^2 = 4 on the unit sphere
    e = torch.eye(2)
    assert alignment(e[:1], e[1:]) == pytest.approx(2.0)


def test_uniformity_of_two_points_is_the_formula():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert uniformity(torch.cat([a, b])) == pytest.approx(-2 * 2.0)  # log exp(-2 * ||a-b||^2), ||a-b||^2 = 2
    assert uniformity(torch.cat([a, -a]), t=1.0) == pytest.approx(-4.0)
    assert math.isfinite(uniformity(torch.randn(3, 5)))


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError):
        rankme(torch.zeros(0, 3))
    with pytest.raises(ValueError):
        uniformity(torch.zeros(1, 3))
    with pytest.raises(ValueError):
        alignment(torch.zeros(2, 3), torch.zeros(3, 3))


def test_likely_causes_name_each_setting_far_from_its_methods_usual():
    from simclr_core.config import TrainConfig
    from simclr_core.evaluation.health import likely_causes

    cfg = TrainConfig()
    cfg.optim.batch_size = 64  # sgd's usual lr: 0.06 x 64 / 256 = 0.015
    assert likely_causes(cfg) == []  # the defaults ("auto") name nothing
    cfg.method.temperature, cfg.optim.lr = 0.5, 0.06  # 4x the usual: still not "far above"
    assert likely_causes(cfg) == []
    cfg.method.temperature, cfg.optim.lr = 0.05, 10.0
    temperature, lr = likely_causes(cfg)
    assert (
        temperature.what == "--temperature 0.05 is far below simclr's usual 0.5"
        and temperature.fix == "--temperature 0.5"
    )
    assert lr.what == "--lr 10 is 667x the usual 0.015 for sgd at batch 64" and lr.fix == "--lr 0.015"
    assert temperature.resumable and lr.resumable

    cfg = TrainConfig()
    cfg.method.name, cfg.method.predictor, cfg.method.ema = "byol", False, 0.0
    predictor, ema = likely_causes(cfg)
    assert "BYOL without its predictor (--no-predictor)" in predictor.what and predictor.fix == "--predictor"
    assert ema.what.startswith("--ema 0: the target encoder") and ema.fix == "--ema 0.99"
    assert not predictor.resumable and not ema.resumable
    cfg.method.name = "moco_v2"  # MoCo has no predictor; its key encoder without momentum is named
    (ema,) = likely_causes(cfg)
    assert ema.what.startswith("--ema 0: the key encoder") and ema.fix == "--ema 0.99"
    cfg.method.name = "simclr"  # neither setting means anything to SimCLR
    assert likely_causes(cfg) == []


def test_a_cause_is_resumable_exactly_when_its_flag_may_change_on_resume():
    from simclr_core.cli.train import RESUMABLE
    from simclr_core.config import TrainConfig
    from simclr_core.evaluation.health import likely_causes

    cfg = TrainConfig()
    cfg.method.name, cfg.method.predictor, cfg.method.ema = "byol", False, 0.0
    cfg.optim.batch_size, cfg.optim.lr = 256, 100.0
    causes = likely_causes(cfg)
    cfg.method.name, cfg.method.temperature = "moco_v2", 0.01
    causes += likely_causes(cfg)
    assert {c.fix.split()[0] for c in causes} == {"--predictor", "--ema", "--lr", "--temperature"}
    for c in causes:
        assert c.resumable == (c.fix.split()[0].removeprefix("--") in RESUMABLE), c


def test_the_alarm_names_the_cause_in_place_of_the_general_advice():
    from simclr_core.evaluation.health import Cause

    temperature = Cause("--temperature 0.01 is far below simclr's usual 0.5", "--temperature 0.5", resumable=True)
    predictor = Cause("BYOL without its predictor (--no-predictor)", "--predictor", resumable=False)
    assert collapse_alarm(1.1, -0.5, [temperature], run="r") == (
        "the representation has collapsed: its effective rank is 1.10, so every image maps to (nearly) the same "
        "direction. likely cause: --temperature 0.01 is far below simclr's usual 0.5; resume with --resume r "
        "--temperature 0.5"
    )
    both = collapse_alarm(30.0, -0.01, [predictor, temperature], run="r")
    assert both.startswith("the representation has collapsed: uniformity is -0.010")
    assert both.endswith("start a new run with --predictor --temperature 0.5")  # one fix needs a new run: all do
    assert "Lower the learning rate" in collapse_alarm(1.1, -0.5)  # no cause known: the general advice
    assert collapse_alarm(30.0, -1.0, [temperature]) is None  # a cause alone raises nothing: the numbers decide
