"""Blend: the blending formula, a pattern fixed by its own seed, the ASR test set on hand-made labels."""

import numpy as np

from asd_repro.attacks.blend import Blend

from attacksmoke import images


def test_poisoned_test_set_excludes_target_class():
    y = np.array([0, 3, 1, 3, 2])
    x = images(5)
    atk = Blend(target=3, ratio=0.1)
    atk.fit(x, y, np.random.default_rng(0))
    bx, by, idx = atk.poison_test(x, y)
    assert idx.tolist() == [0, 2, 4]
    assert (by == 3).all() and len(bx) == 3


def test_blend_formula_and_fixed_pattern():
    x = np.full((2, 4, 4, 3), 100, np.uint8)
    atk = Blend(target=0, ratio=0.1, alpha=0.25, pattern_seed=7)
    atk.fit(x, np.zeros(2), np.random.default_rng(123))
    pattern = np.random.default_rng(7).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    assert np.array_equal(atk.pattern, pattern), "the pattern depends on pattern_seed only"
    expected = np.clip(np.rint(0.75 * 100 + 0.25 * pattern.astype(np.float32)), 0, 255).astype(np.uint8)
    assert np.array_equal(atk.apply(x)[1], expected)
