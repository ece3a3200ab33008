"""Positive-pair previews, index picking and display scaling (simclr_core.data.preview)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from simclr_core.config import ViewConfig
from simclr_core.data.preview import parse_indices, positive_pairs, sample_indices, to_uint8_hwc, upscale_nearest
from simclr_core.errors import UserError

IDENTITY = ViewConfig(
    crop_scale_min=1.0,
    crop_scale_max=1.0,
    flip_prob=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)


@pytest.fixture
def images():
    return torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))


def test_shapes_and_dtypes_follow_the_view_size(images):
    orig, v1, v2 = positive_pairs(images, ViewConfig(crop_size=24).resolved(16).kwargs(), seed=0)
    for a in (orig, v1, v2):
        assert a.shape == (4, 24, 24, 3) and a.dtype == np.uint8


def test_same_seed_same_pairs_other_seed_other_pairs(images):
    kw = ViewConfig().resolved(16).kwargs()
    a = positive_pairs(images, kw, seed=7)
    b = positive_pairs(images, kw, seed=7)
    c = positive_pairs(images, kw, seed=8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a[0], c[0])  # the originals do not depend on the seed
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[2], c[2])


def test_the_two_views_differ(images):
    _, v1, v2 = positive_pairs(images, ViewConfig().resolved(16).kwargs(), seed=0)
    assert not np.array_equal(v1, v2)


@pytest.mark.parametrize("crop_size", [None, 32])
def test_identity_knobs_give_the_originals(images, crop_size):
    cfg = replace(IDENTITY, crop_size=crop_size)
    orig, v1, v2 = positive_pairs(images, cfg.resolved(16).kwargs(), seed=5)
    np.testing.assert_array_equal(v1, orig)
    np.testing.assert_array_equal(v2, orig)
    if crop_size is None:  # at the stored size the "original" is the image itself
        np.testing.assert_array_equal(orig, images.permute(0, 2, 3, 1).numpy())


def test_to_uint8_hwc_rounds_floats_and_keeps_uint8():
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = to_uint8_hwc(x)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, 0, 0].tolist() == [0, 128, 255]
    u8 = torch.arange(12, dtype=torch.uint8).view(1, 3, 2, 2)
    assert to_uint8_hwc(u8)[0, 1, 0].tolist() == [2, 6, 10]
    with pytest.raises(ValueError):
        to_uint8_hwc(torch.zeros(3, 4, 4))


def test_sample_indices_are_distinct_in_range_and_seeded():
    a = sample_indices(100, 10, seed=1)
    assert len(set(a)) == 10 and all(0 <= i < 100 for i in a) and a == sorted(a)
    assert sample_indices(100, 10, seed=1) == a
    assert sample_indices(100, 10, seed=2) != a
    assert sample_indices(3, 10, seed=0) == [0, 1, 2]
    with pytest.raises(UserError):
        sample_indices(0, 4, seed=0)


def test_parse_indices_accepts_commas_and_spaces():
    assert parse_indices("3, 0,7  12", total=20) == [3, 0, 7, 12]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "one or more"),
        ("1, x", "'x' is not a whole number"),
        ("2.5", "'2.5' is not a whole number"),
        ("5, 20", "index 20 is out of range"),
        ("-1", "index -1 is out of range"),
        (",".join(["1"] * 17), "at most 16"),
    ],
)
def test_parse_indices_names_the_problem(text, fragment):
    with pytest.raises(UserError, match=fragment):
        parse_indices(text, total=20)


def test_upscale_nearest_repeats_pixels_by_a_whole_factor():
    x = np.arange(2 * 3 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3, 3)
    y = upscale_nearest(x, 8)  # factor ceil(8 / 3) = 3
    assert y.shape == (2, 9, 9, 3)
    np.testing.assert_array_equal(y[:, ::3, ::3], x)
    np.testing.assert_array_equal(y[:, 2, 2], x[:, 0, 0])
    one = x[0]
    assert upscale_nearest(one, 2) is one  # large enough already: untouched
