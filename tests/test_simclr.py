"""engine.simclr: NT-Xent on hand-computed inputs and SimCLR's batched augmentation against torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from asd_repro.engine.simclr import SimCLRAugment, _shift_hue, nt_xent


# --- NT-Xent -------------------------------------------------------------------------------------------------------


def test_nt_xent_of_a_2x2_batch_matches_a_hand_computation():
    # Two images, each view equal to its pair: cosine 1 with the positive, 0 with both negatives.
    # Per anchor: -log(e^(1/tau) / (e^(1/tau) + 2 e^0)) = log(1 + 2 e^-2) at tau = 0.5.
    z = torch.eye(2)
    expected = math.log(1 + 2 * math.exp(-2))
    assert nt_xent(z, z, 0.5).item() == pytest.approx(expected, rel=1e-6)
    assert nt_xent(z, z, 0.5, symmetric=True).item() == pytest.approx(expected, rel=1e-6)
    # Views at 60 degrees: cos(positive) = 1/2, the negatives are orthogonal or at 30 degrees.
    z1, z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.5, math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]])
    # anchor z1[0]: others z1[1] (cos 0), z2[0] (1/2, the positive), z2[1] (sqrt(3)/2); tau = 1
    a0 = -0.5 + math.log(math.exp(0) + math.exp(0.5) + math.exp(math.sqrt(3) / 2))
    assert nt_xent(z1, z2, 1.0).item() == pytest.approx(a0, rel=1e-6)  # both anchors of z1 are alike by symmetry


def test_nt_xent_prefers_true_pairs_and_ignores_the_embeddings_length():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(16, 8, generator=g)
    z2 = z1 + 0.1 * torch.randn(16, 8, generator=g)
    true_pairs = nt_xent(z1, z2, 0.5)
    assert true_pairs < nt_xent(z1, z2[torch.roll(torch.arange(16), 1)], 0.5)
    assert true_pairs < math.log(2 * 16 - 1)  # below chance: each positive scores above the negatives
    assert nt_xent(3 * z1, 0.5 * z2, 0.5).item() == pytest.approx(true_pairs.item(), rel=1e-5)


def test_symmetric_nt_xent_averages_both_views_as_anchors():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    both = nt_xent(z1, z2, 0.5, symmetric=True)
    assert both.item() == pytest.approx(((nt_xent(z1, z2, 0.5) + nt_xent(z2, z1, 0.5)) / 2).item(), rel=1e-6)


# --- SimCLR's augmentation -----------------------------------------------------------------------------------------


def _images(n=32, c=3, h=12, w=12, seed=0):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_keeps_shape_and_dtype_and_repeats_with_the_generator(channels):
    x = _images(c=channels)
    aug = SimCLRAugment().resolved(True)
    out = aug(x, torch.Generator().manual_seed(3))
    assert out.shape == x.shape and out.dtype == torch.uint8 and out.is_contiguous()
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, aug(x, torch.Generator().manual_seed(4)))
    assert sum(not torch.equal(out[i], x[i]) for i in range(len(x))) > len(x) // 2


def test_full_crop_without_jitter_or_blur_is_the_identity_and_flip_mirrors():
    x = _images()
    plain = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    assert torch.equal(SimCLRAugment(hflip=False, **plain)(x, torch.Generator().manual_seed(0)), x)
    for interpolation in ("bicubic", "bilinear"):
        flipped = SimCLRAugment(hflip=True, interpolation=interpolation, **plain)(x, torch.Generator().manual_seed(0))
        mirrored = sum(torch.equal(flipped[i], TF.horizontal_flip(x[i])) for i in range(32))
        same = sum(torch.equal(flipped[i], x[i]) for i in range(32))
        assert mirrored + same == 32 and 6 < mirrored < 26


def test_crop_boxes_fit_the_image_and_follow_the_scale_and_ratio():
    aug = SimCLRAugment(crop_scale=(0.2, 1.0))
    top, left, h, w = aug.crop_boxes(2000, 28, 28, torch.Generator().manual_seed(0))
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 28).all() and (left + w <= 28).all()
    area = h * w / 28 ** 2
    assert area.min() >= 0.15 and area.max() <= 1.0  # 0.2..1 up to rounding of the sides
    assert (w / h).min() >= 3 / 4 - 0.1 and (w / h).max() <= 4 / 3 + 0.1
    assert area.mean() == pytest.approx(0.6, abs=0.05)  # uniform area fraction on [0.2, 1]
    centred = SimCLRAugment(crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0)).crop_boxes(4, 10, 10,
                                                                                  torch.Generator().manual_seed(0))
    # no box of the whole area and a 2:1 ratio fits a square: torchvision's fallback, the centred full-width crop
    assert [t.tolist() for t in centred] == [[2.0] * 4, [0.0] * 4, [5.0] * 4, [10.0] * 4]


def test_hue_shift_matches_torchvision():
    x = torch.rand(6, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([0.1, -0.1, 0.05, 0.3, -0.45, 0.0])
    expected = torch.stack([TF.adjust_hue(x[i], float(shift[i])) for i in range(6)])
    torch.testing.assert_close(_shift_hue(x, shift), expected, atol=1e-5, rtol=0)


def test_grey_images_ignore_saturation_hue_and_greyscale():
    x = _images(c=1)
    colour_only = SimCLRAugment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False, jitter_p=1.0,
                                brightness=0.0, contrast=0.0, saturation=0.9, hue=0.5, grayscale_p=1.0, blur_p=0.0)
    assert torch.equal(colour_only(x, torch.Generator().manual_seed(0)), x)


def test_blur_keeps_flat_images_and_spreads_a_point_symmetrically():
    aug = SimCLRAugment(blur_p=1.0, blur_sigma=(1.0, 1.0))
    flat = torch.full((2, 1, 9, 9), 0.5)
    torch.testing.assert_close(aug.blur(flat, torch.Generator().manual_seed(0)), flat)
    point = torch.zeros(1, 1, 9, 9)
    point[0, 0, 4, 4] = 1.0
    out = aug.blur(point, torch.Generator().manual_seed(0))[0, 0]
    assert out.sum().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(out, out.flip(0).T)
    assert out[4, 4] / out[4, 5] == pytest.approx(math.exp(0.5), rel=1e-5)  # Gaussian with sigma 1
