"""BadNets: the reference trigger pixels at 32, 28 (grey) and 224 px, poison counts and labels, bad ratios."""

import numpy as np
import pytest

from asd_repro.attacks.badnets import BadNets
from asd_repro.core.errors import UserError

from attacksmoke import images


def test_badnets_reference_trigger_pixels_at_32x32():
    x = images(3)
    atk = BadNets(target=3, ratio=0.05)
    atk.fit(x, np.zeros(3), np.random.default_rng(0))
    out = atk.apply(x)
    assert out[0, 4, 4].tolist() == [180, 249, 112]
    assert out[1, 4, 5].tolist() == [155, 50, 126]
    assert out[2, 5, 4].tolist() == [234, 82, 68]
    assert out[0, 5, 5].tolist() == [187, 201, 219]
    changed = np.any(out != x, axis=(0, 3))
    outside = np.ones((32, 32), bool)
    outside[4:6, 4:6] = False
    assert not changed[outside].any(), "BadNets must only write the 2x2 patch"


def test_badnets_grey_28x28_uses_luma_and_scaled_patch():
    x = np.zeros((1, 28, 28, 1), np.uint8)
    atk = BadNets(target=3, ratio=0.05)
    atk.fit(x, np.zeros(1), np.random.default_rng(0))
    out = atk.apply(x)[0, :, :, 0]
    # luma of the reference colours: 0.299 R + 0.587 G + 0.114 B, rounded
    assert out[4:6, 4:6].tolist() == [[213, 90], [126, 199]]
    assert int((out > 0).sum()) == 4


def test_badnets_scales_to_224():
    x = np.zeros((1, 224, 224, 3), np.uint8)
    atk = BadNets(target=0, ratio=0.1)
    atk.fit(x, np.zeros(1), np.random.default_rng(0))
    out = atk.apply(x)[0]
    nz = np.argwhere(out.any(-1))
    assert nz.min(0).tolist() == [28, 28] and nz.max(0).tolist() == [41, 41]  # 14 px patch at 28
    assert out[28, 28].tolist() == [180, 249, 112] and out[41, 41].tolist() == [187, 201, 219]


def test_poison_counts_labels_and_determinism():
    n = 20000
    rng = np.random.default_rng(1)
    y = rng.integers(0, 10, n)
    x = images(n, 8, 8, 1)
    atk = BadNets(target=3, ratio=0.05, patch_size=2, offset=1)
    atk.fit(x, y, np.random.default_rng(0))
    a = atk.poison_train(x, y, np.random.default_rng(100))
    b = atk.poison_train(x, y, np.random.default_rng(100))
    assert np.array_equal(a.poison, b.poison) and np.array_equal(a.x, b.x)
    assert not a.poison[y == 3].any(), "target-class samples are never poisoned"
    eligible = (y != 3).sum()
    assert abs(a.poison.sum() - 0.05 * eligible) < 4 * np.sqrt(0.05 * 0.95 * eligible)
    assert (a.y[a.poison] == 3).all() and np.array_equal(a.y[~a.poison], y[~a.poison])
    assert np.array_equal(a.x[~a.poison], x[~a.poison]), "clean samples are untouched"
    assert (a.x[a.poison][:, 1:3, 1:3] != x[a.poison][:, 1:3, 1:3]).any()


def test_ratio_out_of_range_is_rejected():
    with pytest.raises(UserError, match=r"attacks\.BadNets\.ratio = 1\.5"):
        BadNets(target=0, ratio=1.5)
