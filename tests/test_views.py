"""Behaviour of the batched SimCLR view transform, checked against torchvision where it has a twin."""

import itertools

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from simclr_core import views
from simclr_core.views import (
    IDENTITY_VIEW,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    crop_flip,
    gaussian_blur,
    sample_crop_boxes,
    simclr_view,
    solarize,
    to_grayscale,
    two_views,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def u8():
    return torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=gen(1))


@pytest.fixture
def imgs():
    """Float images with saturated, grey and mid-range pixels, to exercise hue sectors and clamping."""
    x = torch.rand(6, 3, 20, 24, generator=gen(2))
    x[0, :, :4] = 0.5  # grey patch: max == min in HSV
    x[1, 0] = 1.0
    x[2, :, :, :3] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return x


FACTORS = torch.tensor([0.0, 0.2, 0.7, 1.0, 1.3, 1.8])


# ---------------------------------------------------------------- the view


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_view_shape_dtype_range(u8, dtype):
    x = u8 if dtype == torch.uint8 else u8.float() / 255
    v = simclr_view(x, generator=gen(), solarize_prob=0.5)
    assert v.shape == (16, 3, 32, 32) and v.dtype == torch.float32 and v.device == x.device
    assert v.min() >= 0 and v.max() <= 1
    assert simclr_view(x, 24, generator=gen()).shape == (16, 3, 24, 24)


def test_non_square_input_gives_square_output():
    x = torch.rand(4, 3, 20, 30, generator=gen())
    assert simclr_view(x, generator=gen()).shape == (4, 3, 20, 20)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_view_on_cuda(u8):
    g = torch.Generator(device="cuda").manual_seed(0)
    v = simclr_view(u8.cuda(), generator=g, solarize_prob=0.5)
    assert v.device.type == "cuda" and v.shape == (16, 3, 32, 32)


def test_seeds(u8):
    a = simclr_view(u8, generator=gen(5))
    assert torch.equal(a, simclr_view(u8, generator=gen(5)))
    assert not torch.equal(a, simclr_view(u8, generator=gen(6)))
    v1, v2 = two_views(u8, generator=gen(5))
    assert v1.shape == v2.shape == a.shape
    assert torch.equal(v1, a)  # the first view is a plain simclr_view call
    assert not torch.allclose(v1, v2)


def test_no_augmentation_is_identity(u8):
    v = simclr_view(u8, generator=gen(), **IDENTITY_VIEW)
    torch.testing.assert_close(v, u8.float() / 255, atol=1e-6, rtol=0)


def test_full_flip_is_mirror(u8):
    v = simclr_view(u8, generator=gen(), **{**IDENTITY_VIEW, "flip_prob": 1.0})
    torch.testing.assert_close(v, torch.flip(u8.float() / 255, [-1]), atol=1e-6, rtol=0)


def test_full_grayscale_has_equal_channels(u8):
    v = simclr_view(u8, generator=gen(), grayscale_prob=1.0)
    assert torch.equal(v[:, 0], v[:, 1]) and torch.equal(v[:, 1], v[:, 2])


def changed_fraction(x, **kw):
    v = simclr_view(x, generator=gen(3), **{**IDENTITY_VIEW, **kw})
    return (v - x).abs().amax(dim=(1, 2, 3)).gt(1e-4).float().mean().item()


def test_op_probabilities():
    # saturated colourful images so that every applied op visibly changes them
    x = torch.rand(2000, 3, 8, 8, generator=gen(4))
    assert abs(changed_fraction(x, jitter_prob=0.8) - 0.8) < 0.03
    assert abs(changed_fraction(x, grayscale_prob=0.2) - 0.2) < 0.03
    assert abs(changed_fraction(x, blur_prob=0.5) - 0.5) < 0.04
    assert abs(changed_fraction(x, flip_prob=0.5) - 0.5) < 0.04


# ---------------------------------------------------------------- crop + flip


def test_crop_flip_full_box_is_interpolate(imgs):
    B, _, H, W = imgs.shape
    boxes = torch.tensor([[0.0, 0.0, W, H]]).expand(B, 4)
    for size in (12, 20, 37):
        want = F.interpolate(imgs, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        torch.testing.assert_close(
            crop_flip(imgs, boxes, torch.zeros(B, dtype=torch.bool), size), want, atol=1e-5, rtol=0
        )


def resized_crop(img, box, size, flip, antialias):
    """torchvision's crop-then-resize of one image, the reference for ``crop_flip``."""
    x0, y0, w, h = (int(v) for v in box)
    out = TF.resized_crop(img, y0, x0, h, w, [size, size], antialias=antialias)
    return TF.horizontal_flip(out) if flip else out


@pytest.mark.parametrize("size", [12, 24])
def test_crop_flip_matches_resized_crop(imgs, size):
    # at size 12 the first six boxes are at least the output (downsampling), at size 24 all are smaller
    # (upsampling), where torchvision's resize clamps at the crop's edge; the last boxes are 1-5 px
    boxes = torch.tensor(
        [
            [0, 0, 24, 20],
            [3, 2, 16, 12],
            [8, 5, 12, 15],
            [1, 7, 20, 13],
            [11, 0, 13, 20],
            [4, 4, 12, 12],
            [0, 0, 5, 7],
            [19, 13, 5, 7],
            [2, 9, 3, 3],
            [23, 0, 1, 20],
            [6, 19, 2, 1],
            [10, 10, 1, 1],
        ],
        dtype=torch.float32,
    )
    x = imgs.repeat(2, 1, 1, 1)
    flip = torch.arange(len(boxes)) % 3 == 1
    out = crop_flip(x, boxes, flip, size)
    for i, box in enumerate(boxes.tolist()):
        want = resized_crop(x[i], box, size, flip[i], antialias=False)
        torch.testing.assert_close(out[i], want, atol=1e-5, rtol=0)
        if box[2] <= size and box[3] <= size:  # upsampling: antialias changes nothing
            torch.testing.assert_close(
                out[i], resized_crop(x[i], box, size, flip[i], antialias=True), atol=1e-5, rtol=0
            )


def test_crop_flip_random_boxes_match_resized_crop():
    # boxes of every shape, including one side larger than the output and the other smaller
    g = gen(7)
    x = torch.rand(64, 3, 20, 24, generator=g)
    w = torch.randint(1, 25, (64,), generator=g)
    h = torch.randint(1, 21, (64,), generator=g)
    x0 = (torch.rand(64, generator=g) * (25 - w)).floor()
    y0 = (torch.rand(64, generator=g) * (21 - h)).floor()
    boxes = torch.stack([x0, y0, w.float(), h.float()], dim=1)
    flip = torch.rand(64, generator=g) < 0.5
    for size in (8, 16, 30):
        out = crop_flip(x, boxes, flip, size)
        for i, box in enumerate(boxes.tolist()):
            torch.testing.assert_close(
                out[i], resized_crop(x[i], box, size, flip[i], antialias=False), atol=1e-5, rtol=0
            )


def test_enlarged_crop_reads_no_pixel_outside_its_box():
    # white columns 0-1, crop over columns 2-5 enlarged to 8 px: only the black box may show
    x = torch.zeros(1, 3, 8, 8)
    x[..., :2] = 1.0
    x[..., 6:] = 1.0  # and white to the right of the box, for the flipped view's first column
    for flip in (False, True):
        out = crop_flip(x, torch.tensor([[2.0, 0.0, 4.0, 8.0]]), torch.tensor([flip]), 8)
        assert out.abs().max().item() == 0.0
        torch.testing.assert_close(out[0], resized_crop(x[0], (2, 0, 4, 8), 8, flip, antialias=True))


def test_crop_boxes_inside_image_and_ratio_range():
    H, W = 32, 48
    b = sample_crop_boxes(20000, H, W, (0.08, 1.0), (3 / 4, 4 / 3), gen(), "cpu")
    x0, y0, w, h = b.unbind(1)
    assert torch.equal(b, b.round())
    assert (x0 >= 0).all() and (y0 >= 0).all() and (w > 0).all() and (h > 0).all()
    assert (x0 + w <= W).all() and (y0 + h <= H).all()
    r = w / h  # w, h are rounded, so allow one pixel of slack in the ratio
    assert ((r >= 3 / 4 * (1 - 2 / h)) & (r <= 4 / 3 * (1 + 2 / h))).all()
    # offsets cover the whole allowed range
    assert (x0 == 0).any() and (x0 + w == W).any()


@pytest.mark.parametrize("H,W,scale,ratio", [(32, 32, (0.08, 1.0), (3 / 4, 4 / 3)), (24, 40, (0.3, 1.0), (1 / 2, 2.0))])
def test_crop_box_statistics_match_torchvision(H, W, scale, ratio):
    n = 20000
    ours = sample_crop_boxes(n, H, W, scale, ratio, gen(), "cpu")
    torch.manual_seed(0)
    dummy = torch.empty(3, H, W)
    tv = torch.tensor(
        [RandomResizedCrop.get_params(dummy, list(scale), list(ratio)) for _ in range(n)], dtype=torch.float32
    )  # (i, j, h, w)
    ours_area = ours[:, 2] * ours[:, 3] / (H * W)
    tv_area = tv[:, 2] * tv[:, 3] / (H * W)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])
    assert abs(ours_area.mean() - tv_area.mean()) < 0.01
    torch.testing.assert_close(ours_area.quantile(q), tv_area.quantile(q), atol=0.02, rtol=0)
    # the box centre is where offsets show up
    ours_cx = (ours[:, 0] + ours[:, 2] / 2) / W
    tv_cx = (tv[:, 1] + tv[:, 3] / 2) / W
    torch.testing.assert_close(ours_cx.quantile(q), tv_cx.quantile(q), atol=0.02, rtol=0)
    torch.testing.assert_close(
        (ours[:, 2] / ours[:, 3]).quantile(q), (tv[:, 3] / tv[:, 2]).quantile(q), atol=0.03, rtol=0
    )


def test_crop_box_fallback_is_central():
    # ratio 2..3 never fits a full-area crop of a square image, so every sample falls back
    b = sample_crop_boxes(7, 30, 30, (1.0, 1.0), (2.0, 3.0), gen(), "cpu")
    assert torch.equal(b, torch.tensor([[0.0, 7.0, 30.0, 15.0]]).expand(7, 4))
    assert RandomResizedCrop.get_params(torch.empty(3, 30, 30), [1.0, 1.0], [2.0, 3.0]) == (7, 0, 15, 30)


# ---------------------------------------------------------------- colour ops vs torchvision


@pytest.mark.parametrize(
    "ours,theirs",
    [
        (adjust_brightness, TF.adjust_brightness),
        (adjust_contrast, TF.adjust_contrast),
        (adjust_saturation, TF.adjust_saturation),
    ],
)
def test_adjust_ops_match_torchvision(imgs, ours, theirs):
    out = ours(imgs, FACTORS)
    for i, f in enumerate(FACTORS.tolist()):
        torch.testing.assert_close(out[i], theirs(imgs[i], f), atol=1e-5, rtol=0)


def test_adjust_hue_matches_torchvision(imgs):
    hues = torch.tensor([-0.5, -0.2, -0.03, 0.0, 0.17, 0.5])
    out = adjust_hue(imgs, hues)
    for i, h in enumerate(hues.tolist()):
        torch.testing.assert_close(out[i], TF.adjust_hue(imgs[i], h), atol=1e-5, rtol=0)


def test_hsv_round_trip_covers_all_sectors():
    # dense colour sweep: every hue sector, plus greys, blacks and whites
    x = torch.rand(4, 3, 64, 64, generator=gen(9))
    x[0, :, :8] = torch.linspace(0, 1, 64).view(1, 1, 64)
    torch.testing.assert_close(views._hsv_to_rgb(views._rgb_to_hsv(x)), x, atol=1e-5, rtol=0)


def test_to_grayscale_matches_torchvision(imgs):
    torch.testing.assert_close(to_grayscale(imgs), TF.rgb_to_grayscale(imgs, num_output_channels=3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("k", [3, 5, 9])
def test_gaussian_blur_matches_torchvision(imgs, k):
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.3])
    out = gaussian_blur(imgs, sigmas, k)
    for i, s in enumerate(sigmas.tolist()):
        torch.testing.assert_close(out[i], TF.gaussian_blur(imgs[i], [k, k], [s, s]), atol=1e-5, rtol=0)


def test_solarize_matches_torchvision(imgs):
    torch.testing.assert_close(solarize(imgs, 0.5), TF.solarize(imgs, 0.5), atol=0, rtol=0)


# ---------------------------------------------------------------- colour jitter


def test_jitter_factor_ranges():
    f, order = views._sample_jitter(20000, 1.0, gen(), "cpu")
    lo, hi = f.amin(0), f.amax(0)
    assert (lo[:3] >= 0.2).all() and (hi[:3] <= 1.8).all() and (lo[:3] < 0.21).all() and (hi[:3] > 1.79).all()
    assert -0.2 <= lo[3] < -0.19 and 0.19 < hi[3] <= 0.2
    f, _ = views._sample_jitter(1000, 2.0, gen(), "cpu")  # strength 2: factor floor 0, hue capped at 0.5
    assert f[:, :3].min() >= 0 and f[:, 3].abs().max() <= 0.5


def test_jitter_order_is_uniform_over_all_permutations():
    _, order = views._sample_jitter(24000, 1.0, gen(), "cpu")
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(24000, 4))
    perms, counts = torch.unique(order, dim=0, return_counts=True)
    assert len(perms) == 24
    assert (counts - 1000).abs().max() < 150  # ~4.7 sigma of a binomial(24000, 1/24)


def test_color_jitter_applies_ops_in_each_samples_order():
    B = 240  # enough samples to meet every one of the 24 orders
    x = torch.rand(B, 3, 5, 5, generator=gen(7))
    factors, order = views._sample_jitter(B, 1.0, gen(7), "cpu")
    assert len(torch.unique(order, dim=0)) == 24
    out = views._color_jitter(x, factors, order)
    tv_ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(B):
        want = x[i]
        for k in order[i].tolist():
            want = tv_ops[k](want, factors[i, k].item())
        torch.testing.assert_close(out[i], want, atol=1e-4, rtol=0)
    # and the order matters: one fixed order for everyone gives visibly different images
    fixed = views._color_jitter(x, factors, torch.arange(4).expand(B, 4))
    assert (fixed - out).abs().amax(dim=(1, 2, 3)).gt(1e-3).float().mean() > 0.5


def test_brightness_only_jitter_ignores_order(imgs):
    B = imgs.shape[0]
    factors = torch.stack([FACTORS, torch.ones(B), torch.ones(B), torch.zeros(B)], dim=1)
    want = adjust_brightness(imgs, FACTORS)
    for p in itertools.permutations(range(4)):
        out = views._color_jitter(imgs, factors, torch.tensor(p).expand(B, 4))
        torch.testing.assert_close(out, want, atol=1e-5, rtol=0)


def test_skipped_samples_are_bit_identical():
    x = torch.rand(64, 3, 16, 16, generator=gen(8))
    v = simclr_view(
        x, generator=gen(), **{**IDENTITY_VIEW, "jitter_prob": 0.5, "grayscale_prob": 0.3, "blur_prob": 0.5}
    )
    cropped = simclr_view(x, generator=gen(), **IDENTITY_VIEW)  # crop draws come first, so same crops as `v`
    same = (v == cropped).flatten(1).all(dim=1)
    assert 0 < same.sum() < 64  # e.g. about 0.5 * 0.7 * 0.5 of them skip everything


def _view_statistics(views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Summary statistics of a batch of views (N, 3, S, S) in [0, 1]."""
    spread = views.amax(dim=1) - views.amin(dim=1)  # 0 for grey pixels
    return {
        "channel_mean": views.mean(dim=(0, 2, 3)),
        "channel_std": views.std(dim=(0, 2, 3)),
        "colourfulness": spread.mean(),
        "grey_fraction": (spread.flatten(1).amax(dim=1) < 1e-3).float().mean(),
        "sharpness": (views[..., 1:] - views[..., :-1]).abs().mean(),
    }


@pytest.mark.parametrize(
    "setting",
    [
        dict(jitter_strength=0.5, blur_prob=0.0),  # the paper's CIFAR views
        dict(jitter_strength=1.0, blur_prob=0.5),
    ],  # its ImageNet views
    ids=["cifar", "imagenet"],
)
def test_output_statistics_match_the_torchvision_pipeline(setting):
    """Our batched views and torchvision's PIL pipeline, same knobs, agree on the statistics of what they make."""
    from PIL import Image
    from torchvision.transforms import v2

    g = torch.Generator().manual_seed(0)
    # smooth, colourful 32x32 images: random 4x4 colour fields upsampled
    base = F.interpolate(torch.rand(600, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False)
    images = (base * 255).round().to(torch.uint8)
    s, blur = setting["jitter_strength"], setting["blur_prob"]
    ops = [
        v2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(0.2),
    ]
    if blur:
        ops.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], p=blur))
    reference = v2.Compose(ops + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    torch.manual_seed(1)
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    theirs = torch.stack([reference(p) for p in pil for _ in range(4)])
    ours = torch.cat([simclr_view(images, generator=g, **setting) for _ in range(4)])
    a, b = _view_statistics(ours), _view_statistics(theirs)
    assert torch.allclose(a["channel_mean"], b["channel_mean"], atol=0.015), (a, b)
    assert torch.allclose(a["channel_std"], b["channel_std"], atol=0.015), (a, b)
    assert a["colourfulness"] == pytest.approx(b["colourfulness"].item(), abs=0.015), (a, b)
    assert a["grey_fraction"] == pytest.approx(b["grey_fraction"].item(), abs=0.035), (a, b)
    assert a["sharpness"] == pytest.approx(b["sharpness"].item(), rel=0.1), (a, b)
