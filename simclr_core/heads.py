"""Projection and prediction heads, each the one its method's paper describes (quoted in its docstring).

A head maps the backbone's representation h to the space where the loss is applied. Widths scale
with the backbone, as CIFAR reproductions scale the papers' ResNet-50 widths down to a ResNet-18
(lightly's CIFAR-10 benchmark: ``SimCLRProjectionHead(512, 512, 128)``,
``MoCoProjectionHead(512, 512, 128)``, ``BYOLProjectionHead(512, 1024, 256)`` and
``BYOLPredictionHead(256, 1024, 256)``): the hidden layer is the backbone width for SimCLR and
MoCo v2 (2048 on a ResNet-50, as the papers) and twice it for BYOL (the paper's 4096).

Every head is an ``nn.Sequential`` with the layout of :func:`projection_head`, so its state-dict
keys (``0.weight``, ``1.running_mean``, ...) are those of the heads before per-method heads existed.
Runs saved then have the SimCLR head whatever their method (:data:`LEGACY_HEAD`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from simclr_core.config import HEAD_NAMES
from simclr_core.errors import UserError

LEGACY_HEAD = "simclr"  # the head of every run saved before per-method heads (MoCo v2 and BYOL too)


def projection_head(
    in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, bn: bool = True, final_bn: bool | None = None
) -> nn.Sequential:
    """An MLP of ``layers`` linear layers; every hidden layer is Linear -> [BN] -> ReLU.

    ``final_bn`` (default: ``bn``) adds a BN without affine after the last layer. A linear layer
    followed by BN has no bias (BN's shift replaces it).
    """
    final_bn = bn if final_bn is None else final_bn
    mods: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(dim, hidden_dim, bias=not bn)]
        if bn:
            mods.append(nn.BatchNorm1d(hidden_dim))
        mods.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    mods.append(nn.Linear(dim, out_dim, bias=not final_bn))
    if final_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)


class SimCLRProjectionHead(nn.Sequential):
    """SimCLR's g(.): Linear -> BN -> ReLU -> Linear -> BN (no affine).

    "We use a MLP with one hidden layer to obtain z_i = g(h_i) = W(2) σ(W(1) h_i) where σ is a
    ReLU non-linearity." [0] The hidden layer is as wide as h (2048 on a ResNet-50), z is
    128-d. Batch norm after every layer, the last without affine, as SimCLR v2 [1] and most CIFAR
    reproductions; ``bn=False`` gives the bare MLP of the quote.

    [0] SimCLR, Chen et al. 2020, https://arxiv.org/abs/2002.05709
    [1] SimCLR v2, Chen et al. 2020, https://arxiv.org/abs/2006.10029
    """

    def __init__(
        self, in_dim: int = 2048, hidden_dim: int = 2048, out_dim: int = 128, layers: int = 2, bn: bool = True
    ):
        super().__init__(*projection_head(in_dim, hidden_dim, out_dim, layers, bn, final_bn=bn))


class MoCoProjectionHead(nn.Sequential):
    """MoCo v2's head: Linear -> ReLU -> Linear, no batch norm.

    "(...) we replace the fc head in MoCo with a 2-layer MLP head (hidden layer 2048-d, with
    ReLU)." [0] The output is MoCo's 128-d feature. ``bn=True`` adds BN after the hidden layer.

    [0] MoCo v2, Chen, Fan, Girshick, He 2020, https://arxiv.org/abs/2003.04297
    """

    def __init__(
        self, in_dim: int = 2048, hidden_dim: int = 2048, out_dim: int = 128, layers: int = 2, bn: bool = False
    ):
        super().__init__(*projection_head(in_dim, hidden_dim, out_dim, layers, bn, final_bn=False))


class BYOLProjectionHead(nn.Sequential):
    """BYOL's projector g(.): Linear -> BN -> ReLU -> Linear.

    "This MLP consists in a linear layer with output size 4096 followed by batch normalization,
    rectified linear units (ReLU), and a final linear layer with output dimension 256." [0]

    [0] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733
    """

    def __init__(
        self, in_dim: int = 2048, hidden_dim: int = 4096, out_dim: int = 256, layers: int = 2, bn: bool = True
    ):
        super().__init__(*projection_head(in_dim, hidden_dim, out_dim, layers, bn, final_bn=False))


class BYOLPredictionHead(nn.Sequential):
    """BYOL's predictor q(.): Linear -> BN -> ReLU -> Linear, from z back to z's size.

    "(...) the predictor q_θ uses the same architecture as g_θ." [0]

    [0] BYOL, Grill et al. 2020, https://arxiv.org/abs/2006.07733
    """

    def __init__(self, in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256):
        super().__init__(*projection_head(in_dim, hidden_dim, out_dim, layers=2, bn=True, final_bn=False))


class HeadSpec(NamedTuple):
    """A head's class and its defaults: hidden width as a multiple of the backbone width, z size, BN."""

    # A projection head class, called as cls(in_dim, hidden_dim, out_dim, layers, bn).
    cls: Callable[[int, int, int, int, bool], nn.Sequential]
    hidden_mult: int
    out_dim: int
    bn: bool


SPECS: dict[str, HeadSpec] = {
    "simclr": HeadSpec(SimCLRProjectionHead, 1, 128, True),
    "moco_v2": HeadSpec(MoCoProjectionHead, 1, 128, False),
    "byol": HeadSpec(BYOLProjectionHead, 2, 256, True),  # 4096 on a ResNet-50, 1024 on a ResNet-18
}


HEADS = tuple(SPECS)
if HEADS != HEAD_NAMES:  # the config's choices name exactly these heads
    raise ImportError(f"heads.SPECS {HEADS} differ from config.HEAD_NAMES {HEAD_NAMES}")


def check_head(head: str) -> str:
    """Return ``head`` if it names a head, else raise a UserError listing them."""
    if head not in SPECS:
        raise UserError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    return head


def resolve(
    head: str, feature_dim: int, hidden_dim: int | None = None, out_dim: int | None = None, bn: bool | None = None
) -> tuple[int, int, bool]:
    """(hidden width, output size, batch norm) of ``head``: the given values, else the head's defaults."""
    spec = SPECS[check_head(head)]
    return (hidden_dim or spec.hidden_mult * feature_dim, out_dim or spec.out_dim, spec.bn if bn is None else bn)


def build(head: str, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2, bn: bool = True) -> nn.Sequential:
    """The projection head of that name."""
    return SPECS[check_head(head)].cls(in_dim, hidden_dim, out_dim, layers, bn)
