import pytest
import torch
import torchvision
from torch import nn

from simclr_core.errors import UserError
from simclr_core.models import Encoder, build_backbone, projection_head


@pytest.mark.parametrize("name,width", [("resnet18", 512), ("resnet50", 2048), ("resnet_mini", 256)])
def test_backbone_widths_and_cifar_stem(name, width):
    net, w = build_backbone(name, cifar_stem=True)
    assert w == width
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, nn.Identity)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, width)


def test_imagenet_stem_kept_without_cifar_stem():
    net, _ = build_backbone("resnet18", cifar_stem=False)
    assert net.conv1.kernel_size == (7, 7) and isinstance(net.maxpool, nn.MaxPool2d)


def test_backbone_state_loads_into_plain_torchvision_resnet():
    net, _ = build_backbone("resnet18", cifar_stem=True)
    plain = torchvision.models.resnet18()
    plain.fc = nn.Identity()
    plain.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    plain.maxpool = nn.Identity()
    plain.load_state_dict(net.state_dict())  # strict: same keys, same shapes
    x = torch.rand(2, 3, 32, 32)
    net.eval(), plain.eval()
    assert torch.equal(net(x), plain(x))


def test_projection_head_layers():
    head = projection_head(512, 256, 128, layers=3, bn=True)
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 256), (256, 256), (256, 128)]
    assert head(torch.randn(4, 512)).shape == (4, 128)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in projection_head(8, 8, 4, bn=False))


def test_encoder_shapes():
    enc = Encoder("resnet_mini", cifar_stem=False, proj_hidden_dim=64, proj_out_dim=16)
    x = torch.rand(3, 3, 32, 32)
    assert enc.features(x).shape == (3, 256)
    assert enc(x).shape == (3, 16)


def test_unknown_backbone():
    with pytest.raises(UserError, match="unknown backbone 'vgg'"):
        build_backbone("vgg", cifar_stem=False)
