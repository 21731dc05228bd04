"""Attack properties at small scale: CLB's perturbation stays within its radius and its trigger sits in the four
corners; IAB's mask network reaches its density target after the mask phase."""

import numpy as np

from asd_repro.attacks import scaled
from asd_repro.attacks.clb import CLB

from attacksmoke import TARGET, data, one_torch_thread


def corner_mask(h, w, size):
    m = np.zeros((h, w), bool)
    m[:size, :size] = m[:size, w - size:] = m[h - size:, :size] = m[h - size:, w - size:] = True
    return m


def test_clb_perturbation_within_radius_and_trigger_in_corners():
    x, y = data(80, 28, 28, 1)
    eps = 76.0
    atk = CLB(target=TARGET, ratio=0.1, eps=eps, step_size=eps / 4, steps=8, adv_eps=8.0, adv_step_size=4.0,
              adv_steps=1, epochs=1, batch_size=32, device="cpu")
    with one_torch_thread():
        atk.fit(x, y, np.random.default_rng(0))
    d = atk.perturbed.astype(float) - x[atk.index]
    assert (d != 0).any(), "PGD moved the target-class images"
    assert np.abs(d).max() <= eps
    corners = corner_mask(28, 28, scaled(3, 28))
    assert (atk.trigger[..., 0][~corners] == 0).all() and (atk.trigger[..., 0][corners] != 0).all()
    train = atk.poison_train(x, y, np.random.default_rng(1))
    assert train.poison.any() and np.array_equal(train.y, y), "clean-label"
    rows = np.searchsorted(atk.index, np.flatnonzero(train.poison))
    changed = train.x[train.poison] != atk.perturbed[rows]  # the trigger's stamp on the perturbed images
    assert not changed[:, ~corners].any(), "the trigger touches the corners only"
    bx, _, idx = atk.poison_test(x, y)
    assert not (bx != x[idx])[:, ~corners].any(), "test images: trigger only, in the corners"


def test_iab_mask_density_reaches_its_target_after_the_mask_phase():
    import torch

    from asd_repro.attacks.iab import IAB, _threshold

    x, y = data(64, 28, 28, 1, seed=3)
    atk = IAB(target=TARGET, ratio=0.1, mask_epochs=10, epochs=1, batch_size=16, classifier="small_cnn",
              device="cpu", mask_density=0.032)
    with one_torch_thread():
        atk.fit(x, y, np.random.default_rng(0))
        with torch.no_grad():
            density = _threshold(atk.m(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).float() / 255)).mean().item()
    assert density <= 1.5 * atk.mask_density, f"mask density {density:.3f} after the mask phase"


def test_the_chunked_channel_statistics_equal_the_whole_set_ones():
    """On an accelerator CLB and IAB normalise with statistics summed in chunks (no float copy of the whole set)."""
    import torch

    from asd_repro.attacks import channel_stats, chunked_channel_stats

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (50, 3, 9, 7), dtype=np.uint8))
    mean, std = channel_stats(images)
    for chunk in (1, 7, 50, 64):
        m, s = chunked_channel_stats(images, chunk)
        assert m.shape == s.shape == (1, 3, 1, 1) and m.dtype == s.dtype == torch.float32
        torch.testing.assert_close(m, mean, rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(s, std, rtol=1e-6, atol=1e-4)
