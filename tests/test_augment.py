"""Batched on-device augmentation matches torchvision's per-image transforms."""

import torch
import torchvision.transforms.v2.functional as TF

from asd_repro.engine.augment import Augment, Normalize


def _batch(n=6, c=3, h=10, w=12):
    return torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_reflect_crop_equals_pad_then_crop():
    x = _batch()
    aug = Augment(crop_padding=3, padding_mode="reflect", hflip=False)
    g = torch.Generator().manual_seed(5)
    out = aug(x, g)
    # replay the offsets drawn from the same generator state
    g2 = torch.Generator().manual_seed(5)
    dy = torch.randint(0, 7, (6, 1), generator=g2)
    dx = torch.randint(0, 7, (6, 1), generator=g2)
    padded = torch.nn.functional.pad(x.float(), (3, 3, 3, 3), mode="reflect").to(torch.uint8)
    for i in range(6):
        ref = padded[i, :, dy[i, 0]:dy[i, 0] + 10, dx[i, 0]:dx[i, 0] + 12]
        assert torch.equal(out[i], ref)


def test_constant_padding_fills_zeros_and_flip_mirrors():
    x = _batch(n=64)
    out = Augment(crop_padding=2, padding_mode="constant", hflip=False)(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == torch.uint8
    shifted = [i for i in range(64) if not torch.equal(out[i], x[i])]
    assert shifted, "some crops move the image"
    flipped = Augment(crop_padding=0, hflip=True)(x, torch.Generator().manual_seed(2))
    n_flipped = sum(torch.equal(flipped[i], TF.horizontal_flip(x[i])) for i in range(64))
    n_same = sum(torch.equal(flipped[i], x[i]) for i in range(64))
    assert n_flipped + n_same == 64 and 16 < n_flipped < 48


def test_dataset_default_flip_is_used_unless_overridden():
    assert Augment(hflip=None).resolved(True).hflip is True
    assert Augment(hflip=None).resolved(False).hflip is False
    assert Augment(hflip=False).resolved(True).hflip is False


def test_normalize_matches_definition():
    x = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    out = Normalize((0.5,), (0.25,), torch.device("cpu"))(x)
    assert torch.allclose(out, torch.tensor([[[[-2.0, 2.0]]]]))
