import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from simclr_core.config import TrainConfig
from simclr_core.errors import UserError
from simclr_core.heads import BYOLPredictionHead, BYOLProjectionHead, MoCoProjectionHead, SimCLRProjectionHead
from simclr_core.methods import BYOL, METHODS, MoCoV2, SimCLR, build_method, ema_update, momentum_at
from simclr_core.methods.base import as_module
from simclr_core.models import Encoder, architecture, build_encoder
from simclr_core.resolve import resolve
from simclr_core.runs.checkpoints import check_architecture
from simclr_core.runs.rundir import RunDir


def small_encoder() -> Encoder:
    torch.manual_seed(0)
    return Encoder("resnet_mini", cifar_stem=False, proj_hidden_dim=32, proj_out_dim=16)


def test_registry_names_and_defaults_resolved_into_the_config():
    assert list(METHODS) == ["simclr", "moco_v2", "byol"]
    for name, cls, tau, ema, schedule in [
        ("simclr", SimCLR, 0.5, None, None),
        ("moco_v2", MoCoV2, 0.2, 0.99, "constant"),
        ("byol", BYOL, None, 0.99, "cosine"),
    ]:
        cfg = TrainConfig()
        cfg.method.name = name
        cfg = resolve(cfg, 32)
        assert isinstance(build_method(cfg, small_encoder()), cls)
        assert (cfg.method.temperature, cfg.method.ema, cfg.method.ema_schedule) == (tau, ema, schedule)
    cfg = TrainConfig()
    cfg.method.name, cfg.method.temperature, cfg.method.ema = "moco_v2", 0.1, 0.9  # given values win
    m = build_method(resolve(cfg, 32), small_encoder())
    assert (m.temperature, m.ema) == (0.1, 0.9)
    cfg.method.name = "swav"
    with pytest.raises(UserError, match="unknown method 'swav'; choose one of simclr, moco_v2, byol"):
        resolve(cfg, 32)
    with pytest.raises(UserError, match="unknown method 'swav'; choose one of simclr, moco_v2, byol"):
        build_method(cfg, small_encoder())


def test_every_registered_method_is_a_module_built_from_its_config_section():
    for name, cls in METHODS.items():
        cfg = TrainConfig()
        cfg.method.name, cfg.method.ema = name, 0.5
        m = build_method(resolve(cfg, 32), small_encoder())
        assert type(m) is cls and as_module(m) is m and m.encoder is not None
        assert getattr(m, "ema", 0.5) == 0.5  # from_config took the section's values
        assert cls.loss_name and isinstance(cls.defaults, dict)
    with pytest.raises(TypeError, match="not an nn.Module"):
        as_module(object())


# ---------------------------------------------------------------- the momentum helper


def test_ema_update_is_the_formula_and_leaves_buffers():
    torch.manual_seed(1)
    target = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    online = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    online[1].running_mean.fill_(3.0)
    t0 = [p.detach().clone() for p in target.parameters()]
    o = [p.detach().clone() for p in online.parameters()]
    ema_update(target, online, 0.99)
    for t, a, b in zip(target.parameters(), t0, o, strict=True):
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
    assert all(torch.equal(p, q) for p, q in zip(target.parameters(), online.parameters(), strict=True))
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
    assert all(torch.equal(a, b) for a, b in zip(m.key_encoder.parameters(), m.encoder.parameters(), strict=True))
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
    for k, b, q in zip(m.key_encoder.parameters(), before, m.encoder.parameters(), strict=True):
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
    assert all(torch.equal(a, b) for a, b in zip(m.target.parameters(), m.encoder.parameters(), strict=True))
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
    for t, b, o in zip(m.target.parameters(), before, m.encoder.parameters(), strict=True):
        assert torch.allclose(t, 0.95 * b + 0.05 * o, atol=1e-6)


# ---------------------------------------------------------------- each method's own head


def layout(mlp: nn.Module) -> list[tuple]:
    """An MLP as one tuple per layer: ("linear", in, out, has bias), ("bn", features, affine), ("relu",)."""
    rows = []
    for m in mlp:
        if isinstance(m, nn.Linear):
            rows.append(("linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            rows.append(("bn", m.num_features, m.affine))
        else:
            rows.append((type(m).__name__.lower(),))
    return rows


def auto_config(method: str, **model) -> TrainConfig:
    """resnet_mini (256-d features) with every head setting left to the method, then ``model``'s values."""
    cfg = TrainConfig()
    cfg.method.name = method
    settings = {"backbone": "resnet_mini", "cifar_stem": False, "proj_out_dim": None, "proj_bn": None, **model}
    for key, value in settings.items():
        setattr(cfg.model, key, value)
    return cfg


def built(cfg: TrainConfig) -> nn.Module:
    """The method as training builds it: "auto" resolved, the architecture, then the method around its encoder."""
    torch.manual_seed(0)
    cfg = resolve(cfg, 32)
    return build_method(cfg, build_encoder(architecture(cfg)))


def test_each_method_has_its_papers_head():
    simclr, moco, byol = (built(auto_config(m)) for m in METHODS)
    # SimCLR: BN after both layers, the last without affine (hidden = the backbone width, z 128)
    assert isinstance(simclr.encoder.head, SimCLRProjectionHead)
    assert layout(simclr.encoder.head) == [
        ("linear", 256, 256, False),
        ("bn", 256, True),
        ("relu",),
        ("linear", 256, 128, False),
        ("bn", 128, False),
    ]
    # MoCo v2: "a 2-layer MLP head (hidden layer 2048-d, with ReLU)", no BN; 2048 is a ResNet-50's width
    assert isinstance(moco.encoder.head, MoCoProjectionHead)
    assert layout(moco.encoder.head) == [("linear", 256, 256, True), ("relu",), ("linear", 256, 128, True)]
    assert layout(moco.key_encoder.head) == layout(moco.encoder.head) and moco.queue.shape == (4096, 128)
    # BYOL: 4096 -> 256 on a ResNet-50's 2048, so twice the width; BN only after the hidden layer
    assert isinstance(byol.encoder.head, BYOLProjectionHead) and isinstance(byol.predictor, BYOLPredictionHead)
    assert layout(byol.encoder.head) == [
        ("linear", 256, 512, False),
        ("bn", 512, True),
        ("relu",),
        ("linear", 512, 256, True),
    ]
    assert layout(byol.predictor) == [
        ("linear", 256, 512, False),
        ("bn", 512, True),
        ("relu",),
        ("linear", 512, 256, True),
    ]
    assert layout(byol.target.head) == layout(byol.encoder.head)
    loss = byol(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))
    assert torch.isfinite(loss)


def test_the_resolved_head_is_recorded_in_the_config():
    for method, out, bn in (("simclr", 128, True), ("moco_v2", 128, False), ("byol", 256, True)):
        cfg = resolve(auto_config(method), 32)
        arch = architecture(cfg)
        built(cfg)
        assert (cfg.model.proj_out_dim, cfg.model.proj_bn) == (out, bn)
        # config.json read back gives the same architecture, so a resume matches its checkpoint
        assert architecture(TrainConfig.from_dict(cfg.to_dict())) == arch
        assert arch.get("head") == (None if method == "simclr" else method)


def test_head_flags_override_the_papers_defaults():
    moco = built(auto_config("moco_v2", proj_hidden_dim=64, proj_out_dim=32, proj_bn=True))
    assert layout(moco.encoder.head) == [
        ("linear", 256, 64, False),
        ("bn", 64, True),
        ("relu",),
        ("linear", 64, 32, True),
    ]
    byol_cfg = auto_config("byol", proj_bn=False, proj_layers=3, proj_out_dim=64)
    byol_cfg.method.pred_hidden_dim = 48
    byol = built(byol_cfg)
    assert layout(byol.encoder.head) == [
        ("linear", 256, 512, True),
        ("relu",),
        ("linear", 512, 512, True),
        ("relu",),
        ("linear", 512, 64, True),
    ]
    assert layout(byol.predictor) == [("linear", 64, 48, False), ("bn", 48, True), ("relu",), ("linear", 48, 64, True)]
    simclr = built(auto_config("simclr", proj_bn=False))
    assert not any(isinstance(m, nn.BatchNorm1d) for m in simclr.encoder.head)
    # any method can take another's head (an ablation)
    cfg = auto_config("simclr", head="byol")
    assert isinstance(built(cfg).encoder.head, BYOLProjectionHead)
    assert architecture(resolve(cfg, 32))["head"] == "byol"
    cfg = auto_config("simclr", head="swav")
    with pytest.raises(UserError, match="unknown head 'swav'; choose one of simclr, moco_v2, byol"):
        architecture(resolve(cfg, 32))


# What a BYOL run on resnet_mini saved before per-method heads holds: SimCLR's head, a 128-d z and a
# predictor as wide as the backbone (the shapes of its last.pt, without backbone and target).
OLD_ARCH = {
    "backbone": "resnet_mini",
    "cifar_stem": False,
    "proj_hidden_dim": None,
    "proj_out_dim": 128,
    "proj_layers": 2,
    "proj_bn": True,
}
OLD_BYOL_SHAPES = {
    "encoder.head.0.weight": (256, 256),
    "encoder.head.1.weight": (256,),
    "encoder.head.1.bias": (256,),
    "encoder.head.1.running_mean": (256,),
    "encoder.head.1.running_var": (256,),
    "encoder.head.1.num_batches_tracked": (),
    "encoder.head.3.weight": (128, 256),
    "encoder.head.4.running_mean": (128,),
    "encoder.head.4.running_var": (128,),
    "encoder.head.4.num_batches_tracked": (),
    "predictor.0.weight": (256, 128),
    "predictor.1.weight": (256,),
    "predictor.1.bias": (256,),
    "predictor.1.running_mean": (256,),
    "predictor.1.running_var": (256,),
    "predictor.1.num_batches_tracked": (),
    "predictor.3.weight": (128, 256),
    "predictor.3.bias": (128,),
}


def test_runs_saved_before_per_method_heads_keep_their_head(tmp_path):
    # an old config.json has no `head` key and records the old defaults; the run folder reads it as SimCLR's head
    saved = TrainConfig().to_dict()
    del saved["model"]["head"], saved["method"]["name"]  # a 0.2 file: the method is model.method
    saved["model"].update(method="byol", backbone="resnet_mini", cifar_stem=False, proj_out_dim=128, proj_bn=True)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert RunDir(tmp_path).config().model.head == "simclr"
    saved["model"]["head"] = "byol"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert RunDir(tmp_path).config().model.head == "byol"
    cfg = auto_config("byol", head="simclr", proj_out_dim=128, proj_bn=True)
    assert architecture(resolve(cfg, 32)) == OLD_ARCH  # so the checkpoint's arch check passes on resume
    m = built(cfg)
    state = {k: tuple(v.shape) for k, v in m.state_dict().items() if not k.startswith(("encoder.backbone", "target."))}
    assert state == OLD_BYOL_SHAPES  # so load_state_dict (strict) takes the old last.pt
    # evaluate and embed build the encoder from the checkpoint's own arch: no `head` key is SimCLR's head
    enc = build_encoder(OLD_ARCH)
    enc.load_state_dict(m.encoder.state_dict())
    assert isinstance(enc.head, SimCLRProjectionHead)
    # without the legacy head, resume refuses with a message naming the head, not a shape traceback
    with pytest.raises(UserError, match="head: checkpoint None vs config 'byol'"):
        check_architecture(
            OLD_ARCH, architecture(resolve(auto_config("byol", proj_out_dim=128, proj_bn=True), 32)), "last.pt"
        )


def test_default_config_gives_each_method_its_papers_head():
    # the config's head settings default to None ("the method's own") and config.json records them
    for method, head, out, bn in (
        ("simclr", "simclr", 128, True),
        ("moco_v2", "moco_v2", 128, False),
        ("byol", "byol", 256, True),
    ):
        cfg = TrainConfig()
        cfg.method.name, cfg.model.backbone = method, "resnet_mini"
        assert (cfg.model.head, cfg.model.proj_out_dim, cfg.model.proj_bn) == (None, None, None)
        cfg = resolve(cfg, 32)
        built(cfg)
        saved = cfg.to_dict()["model"]
        assert (saved["head"], saved["proj_out_dim"], saved["proj_bn"]) == (head, out, bn)
        assert architecture(TrainConfig.from_dict(cfg.to_dict())).get("head") == (None if head == "simclr" else head)
