"""WaNet, IAB, Refool, CLB: trigger shapes, determinism, labels, which samples change, the ASR test set.

Tiny images and smoke-scale training settings keep the whole file fast on a CPU.
"""

import numpy as np
import pytest

from asd_repro.attacks.clb import CLB, four_corner_trigger
from asd_repro.attacks.iab import IAB
from asd_repro.attacks.refool import Refool
from asd_repro.attacks.wanet import WaNet, identity_grid

TARGET = 3
SMOKE = {  # smoke-scale attack-side training for 60 tiny images (IAB needs a few steps to make masks input-specific)
    "wanet": lambda **kw: WaNet(target=TARGET, ratio=0.2, **kw),
    "iab": lambda **kw: IAB(target=TARGET, ratio=0.2, mask_epochs=5, epochs=2, batch_size=16,
                            classifier="slim_resnet", device="cpu", **kw),
    "refool": lambda **kw: Refool(target=TARGET, ratio=0.2, n_reflections=8, **kw),
    "clb": lambda **kw: CLB(target=TARGET, ratio=0.08, epochs=1, batch_size=32, adv_steps=1, steps=3,
                            device="cpu", **kw),
}


def _data(n=60, h=12, w=12, c=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), np.arange(n) % 10


def _fitted(name, x, y, seed=0, **kw):
    atk = SMOKE[name](**kw)
    atk.fit(x, y, np.random.default_rng(seed))
    return atk


def _restored(name, atk, **kw):
    fresh = SMOKE[name](**kw)
    fresh.load_state({k: np.array(v) for k, v in atk.state().items()})
    return fresh


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread; two threads on a busy shared CPU wait on each other."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fitted(one_thread):
    """Each attack fitted once on grey and colour tiny sets: {(name, channels): (attack, x, y)}."""
    out = {}
    for c in (1, 3):
        x, y = _data(c=c)
        for name in SMOKE:
            out[name, c] = (_fitted(name, x, y), x, y)
    return out


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("name", list(SMOKE))
def test_shapes_dtypes_and_state_round_trip(fitted, name, c):
    atk, x, y = fitted[name, c]
    out = atk.apply(x)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert all(isinstance(v, np.ndarray) for v in atk.state().values())
    assert np.array_equal(_restored(name, atk).apply(x), out), "load_state(state()) must reproduce apply"
    train = atk.poison_train(x, y, np.random.default_rng(5))
    assert train.x.shape == x.shape and train.x.dtype == np.uint8 and train.poison.dtype == bool
    assert train.y.dtype == y.dtype and train.poison.any()


@pytest.mark.parametrize("name", list(SMOKE))
def test_fit_is_deterministic_for_a_seed(name):
    x, y = _data(seed=1)
    a, b = _fitted(name, x, y, seed=7), _fitted(name, x, y, seed=7)
    sa, sb = a.state(), b.state()
    assert sa.keys() == sb.keys() and all(np.array_equal(sa[k], sb[k]) for k in sa), "fit must be bit-identical"
    pa, pb = (atk.poison_train(x, y, np.random.default_rng(3)) for atk in (a, b))
    assert np.array_equal(pa.x, pb.x) and np.array_equal(pa.y, pb.y) and np.array_equal(pa.poison, pb.poison)


@pytest.mark.parametrize("name", list(SMOKE))
def test_poison_test_excludes_target_class(fitted, name):
    atk, x, y = fitted[name, 1]
    bx, by, idx = atk.poison_test(x, y)
    assert np.array_equal(idx, np.flatnonzero(y != TARGET))
    assert (by == TARGET).all() and len(bx) == len(idx) and bx.dtype == np.uint8


# ----- WaNet -----

@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (17, 23, 3)])
def test_wanet_identity_field_leaves_images_unchanged(shape):
    x, y = _data(8, *shape)
    atk = WaNet(target=TARGET, ratio=0.1, s=0.0)
    atk.fit(x, y, np.random.default_rng(0))
    assert np.array_equal(atk.grid, identity_grid(*shape[:2]))
    assert np.array_equal(atk.apply(x), x)


def test_wanet_field_is_the_papers_normalised_random_field():
    x, y = _data(4, 32, 32, 3)
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


def test_wanet_labels_and_which_samples_change(fitted):
    atk, x, y = fitted["wanet", 3]
    train = atk.poison_train(x, y, np.random.default_rng(9))
    poison, cross = atk.draw(y, np.random.default_rng(9))
    assert np.array_equal(train.poison, poison) and cross.any() and not (poison & cross).any()
    assert (train.y[poison] == TARGET).all() and np.array_equal(train.y[~poison], y[~poison])
    assert not poison[y == TARGET].any()
    clean = ~poison & ~cross
    assert np.array_equal(train.x[clean], x[clean]), "untouched samples must be bit-identical"
    assert np.array_equal(train.x[poison], atk.apply(x[poison]))
    assert not np.array_equal(train.x[cross], atk.apply(x[cross])), "noise mode adds per-sample grid noise"


# ----- IAB -----

def test_iab_triggers_differ_across_inputs(fitted):
    atk, x, _ = fitted["iab", 3]
    delta = atk.apply(x).astype(int) - x
    assert len({d.tobytes() for d in delta}) == len(x), "every input gets its own trigger"
    own, other = atk.apply(x[:10]), atk.apply_cross(x[:10], x[10:20])
    assert all((own[i] != other[i]).any() for i in range(10)), "another image's trigger differs from the own one"


def test_iab_labels_and_which_samples_change(fitted):
    atk, x, y = fitted["iab", 1]
    train = atk.poison_train(x, y, np.random.default_rng(4))
    poison, cross, source = atk.draw(y, np.random.default_rng(4))
    assert np.array_equal(train.poison, poison) and cross.any() and not (poison & cross).any()
    assert (source != np.flatnonzero(cross)).all(), "a cross sample takes another image's trigger"
    assert (train.y[poison] == TARGET).all() and np.array_equal(train.y[~poison], y[~poison])
    clean = ~poison & ~cross
    assert np.array_equal(train.x[clean], x[clean])
    assert np.array_equal(train.x[poison], atk.apply(x[poison]))
    assert np.array_equal(train.x[cross], atk.apply_cross(x[cross], x[source]))


def test_iab_state_holds_architecture_and_weights(fitted):
    atk, _, _ = fitted["iab", 3]
    state = atk.state()
    assert state["arch"].tolist() == [3, 32, 3]  # the paper's colour sizes
    assert any(k.startswith("g.") for k in state) and any(k.startswith("m.") for k in state)
    assert fitted["iab", 1][0].state()["arch"].tolist() == [1, 16, 2]  # the paper's MNIST sizes


# ----- Refool -----

@pytest.mark.parametrize("model", ["same_depth", "out_of_focus", "ghost"])
def test_refool_dirty_label_labels_and_which_samples_change(model):
    x, y = _data(80, 16, 16, 3)
    atk = _fitted("refool", x, y, model=model)
    assert atk.reflections.shape == (8, 16, 16, 3)
    train = atk.poison_train(x, y, np.random.default_rng(2))
    p = train.poison
    assert p.any() and not p[y == TARGET].any()
    assert (train.y[p] == TARGET).all() and np.array_equal(train.y[~p], y[~p])
    assert np.array_equal(train.x[~p], x[~p])
    assert all((train.x[i] != x[i]).any() for i in np.flatnonzero(p))


def test_refool_clean_label_keeps_labels_and_poisons_target_class_only():
    x, y = _data(100, 12, 12, 1)
    atk = _fitted("refool", x, y, clean_label=True)
    assert atk.reflections.shape[-1] == 1, "reflections take the dataset's channel count"
    train = atk.poison_train(x, y, np.random.default_rng(2))
    assert np.array_equal(train.y, y)
    assert train.poison.any() and (y[train.poison] == TARGET).all()
    assert np.array_equal(train.x[~train.poison], x[~train.poison])


def test_refool_zero_weight_is_the_identity_and_test_reflections_are_seeded_per_index():
    x, y = _data(30, 12, 12, 3)
    assert np.array_equal(_fitted("refool", x, y, alpha=(0.0, 0.0)).apply(x), x)
    atk = _fitted("refool", x, y)
    bx, _, idx = atk.poison_test(x, y)
    sub = idx[5:9]
    again, _, _ = atk.poison_test(x[sub], np.zeros(len(sub), int))
    assert not np.array_equal(again, bx[5:9]), "keyed by test index, not by position"
    assert np.array_equal(atk.apply_keyed(x[sub], sub), bx[5:9])


# ----- CLB -----

def test_clb_four_corner_trigger_pixels():
    t = four_corner_trigger(32, 32, 3)
    corner = [[255, -255, -255], [-255, 255, -255], [255, -255, 255]]
    assert t[:3, :3, 0].tolist() == corner and t[29:, :3, 1].tolist() == corner
    assert t[:3, 29:, 2].tolist() == [row[::-1] for row in corner] == t[29:, 29:, 0].tolist()
    assert np.count_nonzero(t[..., 0]) == 36 and (t[..., 0] == t[..., 2]).all()
    grey = four_corner_trigger(224, 224, 1)
    assert grey.shape == (224, 224, 1) and np.count_nonzero(grey) == 4 * 21 * 21  # 3 px at 32 scaled to 224


def test_clb_poisons_only_target_class_with_perturbation_and_trigger(fitted):
    atk, x, y = fitted["clb", 3]
    assert np.array_equal(atk.index, np.flatnonzero(y == TARGET))
    d = atk.perturbed.astype(int) - x[atk.index]
    assert np.abs(d).max() <= atk.eps and (d != 0).any(), "L_inf-bounded PGD perturbation"
    train = atk.poison_train(x, y, np.random.default_rng(1))
    assert np.array_equal(train.y, y), "clean-label: labels unchanged"
    assert train.poison.any() and (y[train.poison] == TARGET).all()
    assert np.array_equal(train.x[~train.poison], x[~train.poison])
    rows = np.searchsorted(atk.index, np.flatnonzero(train.poison))
    assert np.array_equal(train.x[train.poison], atk.apply(atk.perturbed[rows]))


def test_clb_ratio_is_a_fraction_of_the_training_set_and_test_has_trigger_only(fitted):
    atk, x, y = fitted["clb", 1]
    many = CLB(target=TARGET, ratio=0.1)
    many.load_state(atk.state())
    assert many.poison_train(x, y, np.random.default_rng(0)).poison.sum() == (y == TARGET).sum()  # 0.1 * N = N_target
    bx, _, idx = atk.poison_test(x, y)
    expected = np.clip(x[idx].astype(int) + atk.trigger, 0, 255)
    assert np.array_equal(bx, expected), "test images get the trigger, no perturbation"
    assert atk.trigger.shape == (12, 12, 1)


def test_clb_subset_trains_the_proxy_on_fewer_images_but_perturbs_every_target_image():
    import torch

    x, y = _data(80, 12, 12, 1)
    torch.set_num_threads(2)
    try:
        atk = _fitted("clb", x, y, subset=20)
        assert torch.get_num_threads() == 2, "fit trains on one thread and restores torch's thread count"
    finally:
        torch.set_num_threads(1)
    assert np.array_equal(atk.index, np.flatnonzero(y == TARGET)) and len(atk.perturbed) == len(atk.index)


def test_iab_milestones_never_drop_the_rate_before_the_first_epoch():
    import torch

    from asd_repro.attacks.iab import milestone_epochs

    assert milestone_epochs((0.4, 0.8), 1) == [1, 1]  # was [0, 1]: a 1-epoch phase ran at a tenth of its lr
    assert milestone_epochs((0.4, 0.8), 60) == [24, 48]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    torch.optim.lr_scheduler.MultiStepLR(opt, milestone_epochs((0.4, 0.8), 1), 0.1)
    assert opt.param_groups[0]["lr"] == 0.01, "the only epoch of the phase runs at the full rate"
