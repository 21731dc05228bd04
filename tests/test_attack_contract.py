"""Every attack: shapes and dtypes, state round trip, bit-identical fit for a seed, the ASR test set."""

import numpy as np
import pytest

from attacksmoke import SMOKE, TARGET, data, fitted, fitted_once, restored


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name", list(SMOKE))
def test_shapes_dtypes_and_state_round_trip(one_thread, name, c):
    atk, x, y = fitted_once(name, c)
    out = atk.apply(x)
    assert out.shape == x.shape and out.dtype == np.uint8
    if (name, c) != ("iab", 1):  # 5 mask epochs on grey noise shrink IAB's mask to nothing at this scale
        assert (out != x).any(), "the trigger changes the images"
    assert all(isinstance(v, np.ndarray) for v in atk.state().values())
    assert np.array_equal(restored(name, atk).apply(x), out), "load_state(state()) must reproduce apply"
    train = atk.poison_train(x, y, np.random.default_rng(5))
    assert train.x.shape == x.shape and train.x.dtype == np.uint8 and train.poison.dtype == bool
    assert train.y.dtype == y.dtype and train.poison.any()


@pytest.mark.parametrize("name", list(SMOKE))
def test_fit_is_deterministic_for_a_seed(one_thread, name):
    x, y = data(seed=1)
    a, b = fitted(name, x, y, seed=7), fitted(name, x, y, seed=7)
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa), "fit must be bit-identical"
    pa, pb = (atk.poison_train(x, y, np.random.default_rng(3)) for atk in (a, b))
    assert np.array_equal(pa.x, pb.x) and np.array_equal(pa.y, pb.y) and np.array_equal(pa.poison, pb.poison)


@pytest.mark.parametrize("name", list(SMOKE))
def test_poison_test_excludes_target_class_and_relabels_to_the_target(one_thread, name):
    atk, x, y = fitted_once(name, 1)
    bx, by, idx = atk.poison_test(x, y)
    assert np.array_equal(idx, np.flatnonzero(y != TARGET))
    assert (by == TARGET).all() and len(bx) == len(idx) and bx.dtype == np.uint8
