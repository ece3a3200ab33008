"""Encoders (torchvision ResNets, optional CIFAR stem) with their projection head (:mod:`simclr_core.heads`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from simclr_core import heads
from simclr_core.config import resolved
from simclr_core.errors import UserError
from simclr_core.heads import projection_head  # noqa: F401 - re-exported: its home before heads.py

if TYPE_CHECKING:
    from simclr_core.config import TrainConfig

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet_mini")

# Inputs arrive in [0, 1]; normalising inside the model keeps views displayable as they are and
# makes backbone.pt expect the usual torchvision (ImageNet) input convention.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std with constant, non-persistent buffers."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MiniResNet(torchvision.models.ResNet):
    """A narrow ResNet-10 (widths 32-256, one BasicBlock per stage) for CPU demos.

    It reuses torchvision's ResNet class so its state dict has the same layout; only the
    widths differ, so it loads into ``MiniResNet`` rather than ``torchvision.models.resnet18``.
    """

    widths = (32, 64, 128, 256)

    def __init__(self) -> None:
        super().__init__(BasicBlock, [1, 1, 1, 1])
        w = self.widths
        # torchvision hard-codes 64..512; rebuild the stages at our widths.
        self.inplanes = w[0]
        self.conv1 = nn.Conv2d(3, w[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.layer1 = self._make_layer(BasicBlock, w[0], 1)
        self.layer2 = self._make_layer(BasicBlock, w[1], 1, stride=2)
        self.layer3 = self._make_layer(BasicBlock, w[2], 1, stride=2)
        self.layer4 = self._make_layer(BasicBlock, w[3], 1, stride=2)
        self.fc = nn.Linear(w[3], 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def build_backbone(name: str, cifar_stem: bool) -> tuple[nn.Module, int]:
    """A ResNet trunk with its classifier replaced by identity.

    Args:
        name: one of :data:`BACKBONES`.
        cifar_stem: replace the 7x7/2 conv + max-pool by a 3x3/1 conv, as SimCLR does for
            32x32 images (keeps spatial detail that the ImageNet stem throws away).

    Returns:
        (module mapping (B, 3, H, W) -> (B, F), feature width F)
    """
    if name == "resnet_mini":
        net: torchvision.models.ResNet = MiniResNet()
    elif name in ("resnet18", "resnet34", "resnet50"):
        net = getattr(torchvision.models, name)(weights=None)
    else:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    width = net.fc.in_features
    net.fc = nn.Identity()
    return net, width


class Encoder(nn.Module):
    """Normalise -> backbone f(.) -> projection head g(.); ``features`` gives h, ``forward`` gives z.

    ``head`` names the head's style (:data:`simclr_core.heads.HEADS`); the ``proj_*`` values left at
    None take that head's defaults. The default, SimCLR's head, is also what every checkpoint saved
    before per-method heads holds, so their ``arch`` dicts (no ``head`` key) still build.
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        cifar_stem: bool = True,
        proj_hidden_dim: int | None = None,
        proj_out_dim: int | None = None,
        proj_layers: int = 2,
        proj_bn: bool | None = None,
        head: str = heads.LEGACY_HEAD,
    ):
        super().__init__()
        self.normalize = Normalize()
        self.backbone, self.feature_dim = build_backbone(backbone, cifar_stem)
        self.head_name = head
        self.hidden_dim, self.out_dim, bn = heads.resolve(
            head, self.feature_dim, proj_hidden_dim, proj_out_dim, proj_bn
        )
        self.head = heads.build(head, self.feature_dim, self.hidden_dim, self.out_dim, proj_layers, bn)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, F) representation h."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, D) projection z."""
        return self.head(self.features(x))


class Backbone(nn.Module):
    """What leaves a run: normalise -> ResNet trunk, images in [0, 1] to the representation h.

    The Python API's :func:`simclr_core.load_backbone` returns one, and the ONNX and TorchScript
    exports are one, so a deployment feeds plain [0, 1] RGB and needs no mean / std of its own.
    ``trunk`` alone is the torchvision ResNet (normalised input) that backbone.pt, safetensors and
    timm hold.
    """

    def __init__(self, trunk: nn.Module, feature_dim: int, meta: dict | None = None):
        super().__init__()
        self.normalize = Normalize()
        self.trunk = trunk
        self.feature_dim = feature_dim
        self.meta = dict(meta or {})  # backbone, cifar_stem, image_size, run, epoch, ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] -> (B, F) representation h."""
        return self.trunk(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def architecture(cfg: TrainConfig) -> dict:
    """The facts that decide whether a state dict fits a model, of a resolved config (:mod:`simclr_core.resolve`).

    Stored in every checkpoint so a mismatch gives a clear message, not a shape error. The SimCLR
    head is recorded without a ``head`` key, exactly as checkpoints made before per-method heads
    record it, so those still match; any other head is named.
    """
    model_cfg = cfg.model
    head = resolved(model_cfg.head, "model.head")
    arch = {
        "backbone": model_cfg.backbone,
        "cifar_stem": resolved(model_cfg.cifar_stem, "model.cifar_stem"),
        "proj_hidden_dim": model_cfg.proj_hidden_dim,  # None: the head's multiple of the backbone width
        "proj_out_dim": resolved(model_cfg.proj_out_dim, "model.proj_out_dim"),
        "proj_layers": model_cfg.proj_layers,
        "proj_bn": resolved(model_cfg.proj_bn, "model.proj_bn"),
    }
    if head != heads.LEGACY_HEAD:
        arch["head"] = head
    return arch


def build_encoder(arch: dict) -> Encoder:
    """An :class:`Encoder` from an :func:`architecture` dict."""
    return Encoder(**arch)
