"""CLB: the four-corner trigger, PGD-perturbed target images, the ratio, the proxy subset."""

import numpy as np

from asd_repro.attacks.clb import CLB, four_corner_trigger

from attacksmoke import TARGET, data, fitted, fitted_once


def test_clb_four_corner_trigger_pixels():
    t = four_corner_trigger(32, 32, 3)
    corner = [[255, -255, -255], [-255, 255, -255], [255, -255, 255]]
    assert t[:3, :3, 0].tolist() == corner and t[29:, :3, 1].tolist() == corner
    assert t[:3, 29:, 2].tolist() == [row[::-1] for row in corner] == t[29:, 29:, 0].tolist()
    assert np.count_nonzero(t[..., 0]) == 36 and (t[..., 0] == t[..., 2]).all()
    grey = four_corner_trigger(224, 224, 1)
    assert grey.shape == (224, 224, 1) and np.count_nonzero(grey) == 4 * 21 * 21  # 3 px at 32 scaled to 224


def test_clb_poisons_only_target_class_with_perturbation_and_trigger(one_thread):
    atk, x, y = fitted_once("clb", 3)
    assert np.array_equal(atk.index, np.flatnonzero(y == TARGET))
    d = atk.perturbed.astype(int) - x[atk.index]
    assert np.abs(d).max() <= atk.eps and (d != 0).any(), "L_inf-bounded PGD perturbation"
    train = atk.poison_train(x, y, np.random.default_rng(1))
    assert np.array_equal(train.y, y), "clean-label: labels unchanged"
    assert train.poison.any() and (y[train.poison] == TARGET).all()
    assert np.array_equal(train.x[~train.poison], x[~train.poison])
    rows = np.searchsorted(atk.index, np.flatnonzero(train.poison))
    assert np.array_equal(train.x[train.poison], atk.apply(atk.perturbed[rows]))


def test_clb_ratio_is_a_fraction_of_the_training_set_and_test_has_trigger_only(one_thread):
    atk, x, y = fitted_once("clb", 1)
    many = CLB(target=TARGET, ratio=0.1)
    many.load_state(atk.state())
    assert many.poison_train(x, y, np.random.default_rng(0)).poison.sum() == (y == TARGET).sum()  # 0.1 * N = N_target
    bx, _, idx = atk.poison_test(x, y)
    expected = np.clip(x[idx].astype(int) + atk.trigger, 0, 255)
    assert np.array_equal(bx, expected), "test images get the trigger, no perturbation"
    assert atk.trigger.shape == (12, 12, 1)


def test_clb_subset_trains_the_proxy_on_fewer_images_but_perturbs_every_target_image(one_thread):
    import torch

    x, y = data(80, 12, 12, 1)
    torch.set_num_threads(2)  # one_thread restores the session's count afterwards
    atk = fitted("clb", x, y, subset=20)
    assert torch.get_num_threads() == 2, "fit trains on one thread and restores torch's thread count"
    assert np.array_equal(atk.index, np.flatnonzero(y == TARGET)) and len(atk.perturbed) == len(atk.index)


def test_clb_support_keeps_the_perturbation_next_to_the_digit(one_thread):
    """On a black background, PGD with ``support = 1`` moves only pixels within 1 px of the image's non-zero
    pixels (and stays within eps); without it the background moves too."""
    x, y = data(40, 12, 12, 1)
    x = x.copy()
    x[:, :4] = 0  # a black band on top of every image: pixels 2+ rows from any non-zero pixel
    free = fitted("clb", x, y, eps=64.0, step_size=16.0)
    near = fitted("clb", x, y, eps=64.0, step_size=16.0, support=1)
    far = np.zeros((12, 12), bool)
    far[:2] = True  # rows 0-1 are >= 2 px from row 4, the first that may be non-zero
    for atk in (free, near):
        d = atk.perturbed.astype(int) - x[atk.index]
        assert np.abs(d).max() <= atk.eps
    d_free = free.perturbed.astype(int) - x[free.index]
    d_near = near.perturbed.astype(int) - x[near.index]
    assert (d_free[:, far] != 0).any(), "without support, PGD brightens the black band"
    assert not (d_near[:, far] != 0).any() and (d_near != 0).any(), "with support 1, only pixels next to the digit"


def test_clb_support_and_warmup_are_checked():
    import pytest

    from asd_repro.core.errors import UserError

    with pytest.raises(UserError, match="attacks.CLB.support"):
        CLB(target=TARGET, ratio=0.1, support=-1)
    with pytest.raises(UserError, match="attacks.CLB.adv_warmup"):
        CLB(target=TARGET, ratio=0.1, adv_warmup=1.5)


def test_clb_warmup_zero_is_the_full_radius_from_the_first_step(one_thread):
    """adv_warmup = 0 trains the proxy exactly as before the option existed (the same perturbed images)."""
    x, y = data(40, 12, 12, 1)
    a = fitted("clb", x, y)
    b = fitted("clb", x, y, adv_warmup=0.0)
    c = fitted("clb", x, y, adv_warmup=1.0)
    assert np.array_equal(a.perturbed, b.perturbed)
    assert not np.array_equal(a.perturbed, c.perturbed), "a ramped radius trains another proxy"


def _halves(n=200, seed=0):
    """12x12 grey images: the target class bright in the top half, every other class in the bottom half."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = rng.integers(0, 40, (n, 12, 12, 1)).astype(np.uint8)
    x[y == TARGET, :6] += 180
    x[y != TARGET, 6:] += 180
    return x, y


def test_clb_interpolation_moves_target_images_towards_other_classes_and_tau_0_keeps_them(one_thread):
    """``method = 'interpolate'``: each target image moves tau of the way, in the autoencoder's code, towards an image
    of another class; the image's own pixels stay, only the drift is added (tau 0: no drift at all)."""
    x, y = _halves()
    kw = dict(method="interpolate", ae_epochs=30)  # SMOKE["clb"] trains in batches of 32
    moved = fitted("clb", x, y, tau=0.6, **kw)
    kept = fitted("clb", x, y, tau=0.0, **kw)
    assert np.array_equal(moved.index, np.flatnonzero(y == TARGET)) and len(moved.perturbed) == len(moved.index)
    assert np.array_equal(kept.perturbed, x[kept.index]), "tau 0 leaves the target images as they are"
    own = x[moved.index].astype(float)
    new = moved.perturbed.astype(float)
    # the other classes' bright half appears (and the target's own fades): content drifts to another class
    assert new[:, 6:].mean() > own[:, 6:].mean() + 40
    assert new[:, :6].mean() < own[:, :6].mean() - 20
    again = fitted("clb", x, y, tau=0.6, **kw)
    assert np.array_equal(again.perturbed, moved.perturbed), "the same seed gives the same poisoned images"
    train = moved.poison_train(x, y, np.random.default_rng(1))
    assert np.array_equal(train.y, y) and (y[train.poison] == TARGET).all(), "clean-label"


def test_clb_method_and_interpolation_settings_are_checked():
    import pytest

    from asd_repro.core.errors import UserError

    for bad, name in (({"method": "gan"}, "method"), ({"tau": 1.5}, "tau"), ({"latent": 0}, "latent"),
                      ({"ae_epochs": 0}, "ae_epochs")):
        with pytest.raises(UserError, match=rf"attacks.CLB.{name} = .* is invalid"):
            CLB(target=TARGET, ratio=0.1, **bad)
