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
