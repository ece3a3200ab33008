import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.methods import BYOL, METHODS, MoCoV2, SimCLR, build_method, ema_update, momentum_at
from simclr_core.models import Encoder


def small_encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder("resnet_mini", cifar_stem=False, proj_hidden_dim=32, proj_out_dim=16)


def test_registry_names_and_defaults_resolved_into_the_config():
    assert list(METHODS) == ["simclr", "moco_v2", "byol"]
    for name, cls, tau, ema, schedule in [("simclr", SimCLR, 0.5, None, None),
                                          ("moco_v2", MoCoV2, 0.2, 0.99, "constant"),
                                          ("byol", BYOL, None, 0.99, "cosine")]:
        cfg = TrainConfig()
        cfg.model.method = name
        assert isinstance(build_method(cfg, small_encoder()), cls)
        assert (cfg.optim.temperature, cfg.method.ema, cfg.method.ema_schedule) == (tau, ema, schedule)
    cfg = TrainConfig()
    cfg.model.method, cfg.optim.temperature, cfg.method.ema = "moco_v2", 0.1, 0.9  # given values win
    m = build_method(cfg, small_encoder())
    assert (m.temperature, m.ema) == (0.1, 0.9)
    cfg.model.method = "swav"
    with pytest.raises(UserError, match="unknown method 'swav'; choose one of simclr, moco_v2, byol"):
        build_method(cfg, small_encoder())


# ---------------------------------------------------------------- the momentum helper


def test_ema_update_is_the_formula_and_leaves_buffers():
    torch.manual_seed(1)
    target, online = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    online[1].running_mean.fill_(3.0)
    t0 = [p.detach().clone() for p in target.parameters()]
    o = [p.detach().clone() for p in online.parameters()]
    ema_update(target, online, 0.99)
    for t, a, b in zip(target.parameters(), t0, o):
        expected = 0.99 * a.double() + 0.01 * b.double()
        assert torch.allclose(t.double(), expected, rtol=0, atol=1e-7)
    assert torch.equal(target[1].running_mean, torch.zeros(4))  # the target's own statistics
    # Dyadic values make the arithmetic exact in float32.
    for p in target.parameters():
        p.data.fill_(1.0)
    for p in online.parameters():
        p.data.fill_(3.0)
    ema_update(target, online, 0.75)
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in target.parameters())
    ema_update(target, online, 1.0)  # m = 1: frozen
    assert all(torch.equal(p, torch.full_like(p, 1.5)) for p in target.parameters())
    ema_update(target, online, 0.0)  # m = 0: a copy
    assert all(torch.equal(p, q) for p, q in zip(target.parameters(), online.parameters()))
    with pytest.raises(ValueError, match="momentum"):
        ema_update(target, online, 1.5)


def test_momentum_schedules():
    assert momentum_at(37, 100, 0.99, "constant") == 0.99
    assert momentum_at(0, 100, 0.996, "cosine") == pytest.approx(0.996)
    assert momentum_at(50, 100, 0.996, "cosine") == pytest.approx(0.998)
    assert momentum_at(100, 100, 0.996, "cosine") == pytest.approx(1.0)
    k = 30
    assert momentum_at(k, 100, 0.9, "cosine") == pytest.approx(1 - 0.1 * (math.cos(math.pi * k / 100) + 1) / 2)
    with pytest.raises(ValueError, match="unknown momentum schedule"):
        momentum_at(1, 2, 0.9, "linear")


# ---------------------------------------------------------------- MoCo v2


def test_moco_queue_wraps_and_keeps_the_newest_keys():
    m = MoCoV2(small_encoder(), queue_size=5)
    start = m.queue.clone()
    keys = [F.normalize(torch.randn(n, 16), dim=1) for n in (3, 3, 7)]
    m._enqueue(keys[0])
    assert torch.equal(m.queue[:3], keys[0]) and torch.equal(m.queue[3:], start[3:]) and m.queue_ptr.item() == 3
    m._enqueue(keys[1])  # rows 3, 4, then wraps to row 0
    assert torch.equal(m.queue[3:], keys[1][:2]) and torch.equal(m.queue[0], keys[1][2])
    assert torch.equal(m.queue[1:3], keys[0][1:]) and m.queue_ptr.item() == 1
    m._enqueue(keys[2])  # more keys than the queue holds: the newest 5, from the pointer on
    assert m.queue_ptr.item() == 1
    assert torch.equal(m.queue[[1, 2, 3, 4, 0]], keys[2][2:])
    assert {"queue", "queue_ptr"} <= set(m.state_dict())  # saved, so resume is exact


def test_moco_step_uses_the_old_queue_then_enqueues_its_keys_and_moves_the_key_encoder():
    m = MoCoV2(small_encoder(), queue_size=64, ema=0.9, key_bn_splits=1).train()
    assert all(torch.equal(a, b) for a, b in zip(m.key_encoder.parameters(), m.encoder.parameters()))
    assert not any(p.requires_grad for p in m.key_encoder.parameters())
    v1, v2 = torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16)
    old_queue = m.queue.clone()
    with torch.no_grad():
        keys = F.normalize(m.key_encoder(v2), dim=1)
    loss = m(v1, v2)
    assert torch.allclose(m.queue[:8], keys, atol=1e-6) and m.queue_ptr.item() == 8
    assert torch.equal(m.queue[8:], old_queue[8:])
    # The loss saw the queue before this batch's keys went in.
    from simclr_core.losses import info_nce
    assert loss.item() == pytest.approx(info_nce(m.encoder(v1), keys, old_queue, 0.2).item(), abs=1e-5)
    loss.backward()
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.key_encoder.parameters()]
    m.after_step(1, 10)
    for k, b, q in zip(m.key_encoder.parameters(), before, m.encoder.parameters()):
        assert torch.allclose(k, 0.9 * b + 0.1 * q, atol=1e-6)


def test_moco_symmetric_and_shuffled_key_batch_norm():
    m = MoCoV2(small_encoder(), queue_size=64, symmetric=True, key_bn_splits=4).train()
    loss = m(torch.rand(8, 3, 16, 16), torch.rand(8, 3, 16, 16))
    loss.backward()
    assert torch.isfinite(loss) and m.queue_ptr.item() == 16  # both views' keys
    # Tiny batches still give every batch-norm part at least two images.
    m(torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16))


# ---------------------------------------------------------------- BYOL


def test_byol_target_is_a_frozen_copy_and_follows_the_cosine_schedule():
    m = BYOL(small_encoder(), ema=0.9, ema_schedule="cosine").train()
    assert all(torch.equal(a, b) for a, b in zip(m.target.parameters(), m.encoder.parameters()))
    assert not any(p.requires_grad for p in m.target.parameters())
    assert m.predictor[0].in_features == 16 and m.predictor[-1].out_features == 16
    assert not isinstance(m.predictor[-1], nn.BatchNorm1d)  # Linear -> BN -> ReLU -> Linear
    loss = m(torch.rand(6, 3, 16, 16), torch.rand(6, 3, 16, 16))
    assert 0 <= loss.item() <= 8
    loss.backward()
    assert all(p.grad is None for p in m.target.parameters())
    assert m.predictor[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        for p in m.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in m.target.parameters()]
    m.after_step(5, 10)  # halfway along the cosine: m = 1 - 0.1 / 2
    for t, b, o in zip(m.target.parameters(), before, m.encoder.parameters()):
        assert torch.allclose(t, 0.95 * b + 0.05 * o, atol=1e-6)
