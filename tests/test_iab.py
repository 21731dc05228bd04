"""IAB: input-specific triggers, cross samples, the state, the milestone schedule, the mask phase's step floor."""

import numpy as np

from attacksmoke import TARGET, fitted_once


def test_iab_triggers_differ_across_inputs(one_thread):
    atk, x, _ = fitted_once("iab", 3)
    delta = atk.apply(x).astype(int) - x
    assert len({d.tobytes() for d in delta}) == len(x), "every input gets its own trigger"
    own, other = atk.apply(x[:10]), atk.apply_cross(x[:10], x[10:20])
    assert all((own[i] != other[i]).any() for i in range(10)), "another image's trigger differs from the own one"


def test_iab_labels_and_which_samples_change(one_thread):
    atk, x, y = fitted_once("iab", 1)
    train = atk.poison_train(x, y, np.random.default_rng(4))
    poison, cross, source = atk.draw(y, np.random.default_rng(4))
    assert np.array_equal(train.poison, poison) and cross.any() and not (poison & cross).any()
    assert (source != np.flatnonzero(cross)).all(), "a cross sample takes another image's trigger"
    assert (train.y[poison] == TARGET).all() and np.array_equal(train.y[~poison], y[~poison])
    clean = ~poison & ~cross
    assert np.array_equal(train.x[clean], x[clean])
    assert np.array_equal(train.x[poison], atk.apply(x[poison]))
    assert np.array_equal(train.x[cross], atk.apply_cross(x[cross], x[source]))


def test_iab_state_holds_architecture_and_weights(one_thread):
    atk, _, _ = fitted_once("iab", 3)
    state = atk.state()
    assert state["arch"].tolist() == [3, 32, 3]  # the paper's colour sizes
    assert any(k.startswith("g.") for k in state) and any(k.startswith("m.") for k in state)
    assert fitted_once("iab", 1)[0].state()["arch"].tolist() == [1, 16, 2]  # the paper's MNIST sizes



def test_iab_milestones_never_drop_the_rate_before_the_first_epoch():
    import torch

    from asd_repro.attacks.iab import milestone_epochs

    assert milestone_epochs((0.4, 0.8), 1) == [1, 1]  # was [0, 1]: a 1-epoch phase ran at a tenth of its lr
    assert milestone_epochs((0.4, 0.8), 60) == [24, 48]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    torch.optim.lr_scheduler.MultiStepLR(opt, milestone_epochs((0.4, 0.8), 1), 0.1)
    assert opt.param_groups[0]["lr"] == 0.01, "the only epoch of the phase runs at the full rate"


def test_a_mask_phase_shorter_than_its_step_floor_runs_whole_epochs_until_it_reaches_it(monkeypatch, one_thread):
    import asd_repro.attacks.iab as iab

    from attacksmoke import data

    assert iab.mask_phase_epochs(1, 300, 31) == 10  # the mini profile: 1 epoch of 4,000 images at batch 128
    assert iab.mask_phase_epochs(25, 300, 390) == 25  # the paper's 25 CIFAR-10 epochs are far past the floor
    assert iab.mask_phase_epochs(3, 0, 31) == 3
    assert iab.mask_phase_epochs(0, 300, 31) == 0, "no mask phase stays none"

    phases = []

    class Recorded(iab.StepLosses):
        def __init__(self, name):
            phases.append(name)
            super().__init__(name)

    monkeypatch.setattr(iab, "StepLosses", Recorded)
    x, y = data(40, 28, 28, 1)  # 40 images at batch 16: 2 steps an epoch
    atk = iab.IAB(target=TARGET, ratio=0.1, mask_epochs=1, mask_min_steps=5, epochs=1, batch_size=16,
                  classifier="small_cnn", device="cpu")
    atk.fit(x, y, np.random.default_rng(0))
    assert [p for p in phases if p.startswith("IAB mask")] == [f"IAB mask generator {i}/3" for i in (1, 2, 3)]
    assert atk.mask_epochs == 1, "the binding itself is unchanged"

