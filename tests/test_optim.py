import itertools
import math

import pytest
import torch
from torch import nn

from simclr_core.optim import LARS, build_optimizer, lr_at, param_groups


def test_param_groups_exclude_bias_and_bn():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    decay, no_decay = param_groups(model, 1e-4)
    assert [p.shape for p in decay["params"]] == [torch.Size([3, 4])]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0 and no_decay["exclude"]


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    w.grad, b.grad = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5])
    opt = LARS(
        [dict(params=[w], weight_decay=0.1, exclude=False), dict(params=[b], weight_decay=0.0, exclude=True)],
        lr=0.1,
        eta=0.001,
    )
    opt.step()
    u = torch.tensor([[0.6, 0.8]]) + 0.1 * torch.tensor([[3.0, 4.0]])
    u = u * (0.001 * 5.0 / u.norm())
    assert torch.allclose(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * u)
    assert torch.allclose(b.detach(), torch.tensor([1.0 - 0.1 * 0.5]))  # excluded: plain SGD


def test_lars_momentum_accumulates():
    p = nn.Parameter(torch.zeros(1))
    opt = LARS([dict(params=[p], weight_decay=0.0, exclude=True)], lr=1.0, momentum=0.5)
    for _ in range(2):
        p.grad = torch.ones(1)
        opt.step()
    assert p.item() == pytest.approx(-(1 + 1.5))


def test_sgd_has_no_exclude_key():
    opt = build_optimizer(nn.Linear(2, 2), "sgd", 0.1, 0.9, 5e-4)
    assert isinstance(opt, torch.optim.SGD) and [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]


def test_lr_schedule_warmup_then_cosine():
    total, warm, peak = 100, 10, 0.4
    lrs = [lr_at(s, total, warm, peak) for s in range(total)]
    assert lrs[0] == pytest.approx(peak / warm) and lrs[warm - 1] == pytest.approx(peak)
    assert lrs[warm] == pytest.approx(peak)
    assert lrs[55] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in itertools.pairwise(lrs[warm:]))
    assert lr_at(total, total, warm, peak) == pytest.approx(0.0)
    assert lr_at(0, 10, 0, 1.0) == pytest.approx(1.0)  # no warm-up
