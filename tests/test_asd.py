"""ASD and its parts: the three splits, the meta-split's virtual model, the gin values against the reference code's,
and an exact resume, all on hand-made inputs (its engine pieces: test_losses.py, test_mixmatch.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from asd_repro.defenses import Interrupted, asd
from asd_repro.defenses.asd import ASD, class_aware_split, stage1_k, train_virtual_model
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.mixmatch import MixMatch
from asd_repro.engine.optim import given
from asd_repro.engine.split import lowest_fraction

from conftest import defense_from, settings, tiny_context, tiny_data, tiny_model

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params"

# The reference code's values (KuofengGao/ASD, config/baseline_asd.yaml), as ASD's attributes hold them.
REFERENCE = {
    "epochs": 120, "stage2_epoch": 60, "stage3_epoch": 90, "seeds_per_class": 10, "n": 10, "t": 5,
    "alpha": 0.5, "gamma": 0.5, "virtual_epochs": 1, "virtual_layers": ("layer3", "layer4", "fc"),
    "virtual_batch_size": 128,
    "virtual_optimizer": {"name": "adam", "lr": 0.015, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
                          "schedule": "constant", "milestones": (0.5, 0.75), "drop_epochs": None, "gamma": 0.1},
    "optimizer": {"name": "adam", "lr": 0.002, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
                  "schedule": "constant", "milestones": (0.5, 0.75), "drop_epochs": None, "gamma": 0.1},
    "sce": {"ce_weight": 0.1, "rce_weight": 1.0, "prob_min": 1e-7, "onehot_min": 1e-4},
    "mixmatch": {"iterations": 1024, "batch_size": 64, "K": 2, "T": 0.5, "alpha": 0.75, "lambda_u": 15.0,
                 "rampup": 120},
}


# --- the three splits ----------------------------------------------------------------------------------------------


def test_stage1_schedule_adds_n_per_class_every_t_epochs():
    ks = [stage1_k(e, n=10, t=5) for e in range(60)]
    assert ks[:5] == [0] * 5 and ks[5:10] == [10] * 5 and ks[55:60] == [110] * 5
    assert ks == [10 * (e // 5) for e in range(60)]


def test_class_aware_split_takes_the_seeds_and_the_k_lowest_losses_of_each_labelled_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    loss = np.array([9.0, 3.0, 1.0, 2.0, 9.0, 5.0, 4.0, 0.5])
    seeds = np.array([0, 4])  # high-loss seeds stay in; other samples compete within their label's class
    assert class_aware_split(loss, labels, seeds, 0, 2).tolist() == [0, 4]
    assert class_aware_split(loss, labels, seeds, 1, 2).tolist() == [0, 2, 4, 7]
    assert class_aware_split(loss, labels, seeds, 2, 2).tolist() == [0, 2, 3, 4, 6, 7]
    assert class_aware_split(loss, labels, seeds, 10, 2).tolist() == list(range(8))


def test_class_agnostic_split_takes_the_lowest_fraction_of_the_whole_set():
    loss = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.0])
    assert lowest_fraction(loss, 0.5).tolist() == [1, 3, 5]
    assert lowest_fraction(loss, 0.4).tolist() == [1, 5]  # int(0.4 * 6) = 2, as the reference truncates


def test_virtual_model_trains_only_the_chosen_layers_and_leaves_the_model_untouched():
    torch.manual_seed(0)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y, _ = tiny_data()
    virtual = train_virtual_model(model, x, y, ("layer3", "layer4", "fc"), given("adam", 0.015), epochs=1, batch_size=16,
                                  augment=Augment(1, "reflect", True), normalize=Normalize((0.2,), (0.3,), "cpu"),
                                  generator=torch.Generator().manual_seed(0))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the real model changed: {k}"
    for name, p in virtual.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == name.startswith(("layer3.", "layer4.", "fc.")), name
    # train mode: batch-norm statistics move in the frozen layers too
    assert not torch.equal(virtual.state_dict()["layer1.0.bn1.running_mean"], before["layer1.0.bn1.running_mean"])


def test_meta_split_keeps_the_gamma_fraction_with_the_smallest_loss_reduction(monkeypatch):
    before = np.array([3.0, 3.0, 3.0, 3.0, 1.0, 1.0])
    after = np.array([0.5, 2.9, 3.2, 1.0, 0.1, 1.0])  # reductions 2.5, 0.1, -0.2, 2.0, 0.9, 0.0
    monkeypatch.setattr(asd, "train_virtual_model", lambda *args, **kwargs: "virtual model")
    defense = ASD(gamma=0.5)
    seen = []
    defense.split_loss = lambda model, ctx: seen.append(model) or after
    ctx = SimpleNamespace(train_x=None, train_y=None, augment=None, normalize=None, generator=None)
    assert defense.meta_split("model", ctx, before).tolist() == [1, 2, 5]
    assert seen == ["virtual model"]  # the "after" losses come from the virtual model


# --- gin values ----------------------------------------------------------------------------------------------------


def test_paper_profile_runs_the_reference_values():
    defense = defense_from("asd", "base.gin", "datasets/cifar10.gin", "defenses/asd.gin", "profiles/paper/common.gin",
                           "profiles/paper/asd.gin")
    assert settings(defense, REFERENCE) == REFERENCE


@pytest.mark.parametrize("profile", ["mini", "smoke"])
def test_small_profiles_run_every_stage(profile):
    d = defense_from("asd", "base.gin", "datasets/mnist5k.gin", "defenses/asd.gin", f"profiles/{profile}/common.gin",
                     f"profiles/{profile}/asd.gin")
    assert 0 < d.stage2_epoch < d.stage3_epoch < d.epochs
    assert d.mixmatch.settings["rampup"] == d.epochs  # the reference ramps lambda_u over the whole run


# --- the defense end to end: records, seeds, exact resume ----------------------------------------------------------


def tiny_asd() -> ASD:
    return ASD(epochs=4, stage2_epoch=2, stage3_epoch=3, seeds_per_class=2, n=3, t=1, virtual_batch_size=16,
               mixmatch=MixMatch(iterations=3, batch_size=4, rampup=4), loss_batch_size=16)


def test_asd_records_every_stage_and_the_seed_samples():
    ctx = tiny_context()
    defense = tiny_asd()
    defense.run(ctx)
    seeds = defense.run_info["asd_seed_indices"]
    assert seeds == ctx.clean_indices(2, np.random.default_rng(7)).tolist()
    assert not ctx.poison[seeds].any() and np.bincount(ctx.train_y.numpy()[seeds]).tolist() == [2, 2, 2]
    # stage 1 grows by n = 3 per class after its first epoch; stages 2 and 3 keep half of the 48 samples
    assert [(r["epoch"], r["stage"], r["clean_pool"]) for r in ctx.curves] == [(1, 1, 6), (2, 1, 15), (3, 2, 24),
                                                                               (4, 3, 24)]
    for r in ctx.curves:
        assert {"poisoned_in_clean_pool", "loss", "lx", "lu", "lambda_u", "seconds", "loss_pass_seconds",
                "meta_split_seconds", "mixmatch_seconds", "acc", "asr"} <= set(r)
        assert 0 <= r["poisoned_in_clean_pool"] <= r["clean_pool"]


def test_asd_resumed_twice_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    ctx = tiny_context()
    whole = tiny_asd().run(ctx).state_dict()
    for stop in (1, 3):  # killed within stage 1 (k grows next epoch) and after stage 2
        with pytest.raises(Interrupted):
            tiny_asd().run(tiny_context(tmp_path, stop_after_epoch=stop))
    resumed_ctx = tiny_context(tmp_path)
    resumed = tiny_asd().run(resumed_ctx).state_dict()
    for k, v in whole.items():
        assert torch.equal(v, resumed[k]), k
    timing = ("seconds", "loss_pass_seconds", "meta_split_seconds", "mixmatch_seconds")
    strip = [[{k: v for k, v in r.items() if k not in timing} for r in c.curves] for c in (ctx, resumed_ctx)]
    assert strip[0] == strip[1]


def test_a_pool_smaller_than_a_batch_is_one_line():
    from asd_repro.engine.mixmatch import endless_batches
    from asd_repro.core.errors import UserError

    with pytest.raises(UserError, match=r"a pool of 3 samples cannot fill one MixMatch batch of 4 .*lower the "
                                        r"defense's MixMatch batch size \(asd/engine.MixMatch.batch_size"):
        next(endless_batches(torch.arange(3), 4, torch.Generator().manual_seed(0), "cpu"))
