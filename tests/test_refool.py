"""Refool: dirty- and clean-label poisoning, the three reflection models, keyed test reflections."""

import numpy as np
import pytest

from attacksmoke import TARGET, data, fitted


@pytest.mark.parametrize("model", ["same_depth", "out_of_focus", "ghost"])
def test_refool_dirty_label_labels_and_which_samples_change(model):
    x, y = data(80, 16, 16, 3)
    atk = fitted("refool", x, y, model=model)
    assert atk.reflections.shape == (8, 16, 16, 3)
    train = atk.poison_train(x, y, np.random.default_rng(2))
    p = train.poison
    assert p.any() and not p[y == TARGET].any()
    assert (train.y[p] == TARGET).all() and np.array_equal(train.y[~p], y[~p])
    assert np.array_equal(train.x[~p], x[~p])
    assert all((train.x[i] != x[i]).any() for i in np.flatnonzero(p))


def test_refool_clean_label_keeps_labels_and_poisons_target_class_only():
    x, y = data(100, 12, 12, 1)
    atk = fitted("refool", x, y, clean_label=True)
    assert atk.reflections.shape[-1] == 1, "reflections take the dataset's channel count"
    train = atk.poison_train(x, y, np.random.default_rng(2))
    assert np.array_equal(train.y, y)
    assert train.poison.any() and (y[train.poison] == TARGET).all()
    assert np.array_equal(train.x[~train.poison], x[~train.poison])


def test_refool_zero_weight_is_the_identity_and_test_reflections_are_seeded_per_index():
    x, y = data(30, 12, 12, 3)
    assert np.array_equal(fitted("refool", x, y, alpha=(0.0, 0.0)).apply(x), x)
    atk = fitted("refool", x, y)
    bx, _, idx = atk.poison_test(x, y)
    sub = idx[5:9]
    again, _, _ = atk.poison_test(x[sub], np.zeros(len(sub), int))
    assert not np.array_equal(again, bx[5:9]), "keyed by test index, not by position"
    assert np.array_equal(atk.apply_keyed(x[sub], sub), bx[5:9])
