"""WaNet: the warping field, the identity at s = 0, labels and which samples change (noise mode)."""

import numpy as np
import pytest

from asd_repro.attacks.wanet import WaNet, identity_grid

from attacksmoke import TARGET, data, fitted_once


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (17, 23, 3)])
def test_wanet_identity_field_leaves_images_unchanged(shape):
    x, y = data(8, *shape)
    atk = WaNet(target=TARGET, ratio=0.1, s=0.0)
    atk.fit(x, y, np.random.default_rng(0))
    assert np.array_equal(atk.grid, identity_grid(*shape[:2]))
    assert np.array_equal(atk.apply(x), x)


def test_wanet_field_is_the_papers_normalised_random_field():
    x, y = data(4, 32, 32, 3)
    atk = WaNet(target=TARGET, ratio=0.1, k=4, s=0.5)
    atk.fit(x, y, np.random.default_rng(11))
    field = np.random.default_rng(11).uniform(-1, 1, (2, 4, 4))
    field /= np.abs(field).mean()
    shift = atk.grid - identity_grid(32, 32)
    # bicubic upsampling with align_corners keeps the control points at the four corners
    for (i, j), (fi, fj) in {(0, 0): (0, 0), (0, 31): (0, 3), (31, 0): (3, 0), (31, 31): (3, 3)}.items():
        want = np.clip(identity_grid(32, 32)[i, j] + 0.5 * field[:, fi, fj] / 32, -1, 1) - identity_grid(32, 32)[i, j]
        np.testing.assert_allclose(shift[i, j], want, atol=1e-6)
    assert (atk.apply(x) != x).any()


def test_wanet_labels_and_which_samples_change(one_thread):
    atk, x, y = fitted_once("wanet", 3)
    train = atk.poison_train(x, y, np.random.default_rng(9))
    poison, cross = atk.draw(y, np.random.default_rng(9))
    assert np.array_equal(train.poison, poison) and cross.any() and not (poison & cross).any()
    assert (train.y[poison] == TARGET).all() and np.array_equal(train.y[~poison], y[~poison])
    assert not poison[y == TARGET].any()
    clean = ~poison & ~cross
    assert np.array_equal(train.x[clean], x[clean]), "untouched samples must be bit-identical"
    assert np.array_equal(train.x[poison], atk.apply(x[poison]))
    assert not np.array_equal(train.x[cross], atk.apply(x[cross])), "noise mode adds per-sample grid noise"
