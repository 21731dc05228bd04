"""ABL and its parts: the LGA loss around gamma, the isolation split, unlearning by gradient ascent, the gin values
against the paper's, the per-epoch records, and an exact resume through the train stage, on hand-made inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asd_repro import stages
from asd_repro.defenses import Interrupted
from asd_repro.defenses.abl import ABL, isolate, lga_loss, negated_ce
from asd_repro.engine.loop import predict_logits
from asd_repro.engine.optim import given
from asd_repro.core.errors import UserError

from conftest import configure, defense_from, tiny_context, tiny_model, tiny_prepared

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params"

# The paper's CIFAR-10 values (Sec. 4, Appendix A) and the authors' code's, as ABL's attributes hold them.
PAPER = {
    "isolation_epochs": 20, "gamma": 0.5, "isolation_ratio": 0.01, "finetune_epochs": 60, "unlearning_epochs": 20,
    "batch_size": 64,
    "optimizers": {phase: {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True,
                           "schedule": schedule, "milestones": milestones, "drop_epochs": None, "gamma": 0.1}
                   for phase, lr, schedule, milestones in (("isolation", 0.1, "constant", (0.5, 0.75)),
                                                           ("finetune", 0.1, "multistep", (0.6667,)),
                                                           ("unlearning", 0.0005, "constant", (0.5, 0.75)))},
    "augment": {"isolation": False, "finetune": True, "unlearning": False},
}


# --- the LGA loss --------------------------------------------------------------------------------------------------


def uniform_logits(n: int = 2, classes: int = 4) -> torch.Tensor:
    return torch.zeros(n, classes, requires_grad=True)  # cross entropy log(4) = 1.386 for every sample


@pytest.mark.parametrize("gamma,sign", [(0.5, 1.0), (1.0, 1.0), (2.0, -1.0), (5.0, -1.0)])
def test_lga_loss_descends_above_gamma_and_ascends_below(gamma, sign):
    targets = torch.tensor([0, 1])
    logits = uniform_logits()
    value = lga_loss(logits, targets, gamma)
    value.backward()
    assert value.item() == pytest.approx(sign * math.log(4), rel=1e-6)
    reference = uniform_logits()
    F.cross_entropy(reference, targets).backward()
    torch.testing.assert_close(logits.grad, sign * reference.grad)
    # one gradient step lowers the cross entropy above gamma and raises it below
    after = F.cross_entropy(logits.detach() - 0.5 * logits.grad, targets).item()
    assert (after < math.log(4)) == (sign > 0) and after != pytest.approx(math.log(4))


def test_lga_loss_uses_the_batch_mean_not_each_sample():
    # losses 0.05 and 2.0 (mean above gamma = 0.5): the whole batch is descended, the easy sample too
    targets = torch.tensor([0, 0])
    p_easy, p_hard = math.exp(-0.05), math.exp(-2.0)
    probs = torch.tensor([[p_easy, 1 - p_easy], [p_hard, 1 - p_hard]])
    logits = probs.log().requires_grad_(True)
    lga_loss(logits, targets, 0.5).backward()
    assert logits.grad[0, 0] < 0 and logits.grad[1, 0] < 0  # descent raises the label's logit of both


def test_negated_ce_is_the_ascent_direction():
    targets = torch.tensor([2, 3])
    logits = uniform_logits()
    negated_ce(logits, targets).backward()
    assert negated_ce(logits.detach(), targets).item() == pytest.approx(-math.log(4))
    assert (logits.grad[[0, 1], [2, 3]] > 0).all()  # minimising -CE pushes the label's logit down


# --- the isolation split -------------------------------------------------------------------------------------------


def test_isolation_takes_the_int_ratio_n_lowest_losses():
    loss = np.array([0.9, 0.01, 2.5, 0.3, 0.002, 1.1, 0.05, 0.7, 0.6, 0.4])
    isolated, remaining = isolate(loss, 0.25)  # int(2.5) = 2, truncated as the reference does
    assert isolated.tolist() == [1, 4]
    assert remaining.tolist() == [0, 2, 3, 5, 6, 7, 8, 9]
    assert isolate(loss, 0.3)[0].tolist() == [1, 4, 6]
    assert isolate(loss, 0.09)[0].tolist() == []


@pytest.mark.parametrize("binding", [{"isolation_ratio": 0.0}, {"isolation_ratio": 1.0}, {"isolation_epochs": 0},
                                     {"gamma": -0.1}, {"finetune_epochs": -1}])
def test_bad_bindings_are_user_errors_naming_the_configurable(binding):
    with pytest.raises(UserError, match=r"defenses\.ABL: .*fix the binding"):
        ABL(**binding)


# --- the defense on a tiny hand-made set ---------------------------------------------------------------------------


def tiny_abl(**overrides) -> ABL:
    kwargs = dict(isolation_epochs=2, finetune_epochs=2, unlearning_epochs=2, isolation_ratio=0.1, batch_size=16,
                  loss_batch_size=16)
    return ABL(**{**kwargs, **overrides})


def test_unlearning_raises_the_loss_on_the_isolated_samples():
    ctx = tiny_context()
    defense = tiny_abl(finetune_optimizer=given("sgd", 0.05, weight_decay=1e-4, nesterov=True),
                       unlearning_optimizer=given("sgd", 0.01, weight_decay=1e-4, nesterov=True))
    model = tiny_model()
    defense.train_phase(ctx, "finetune", model, 3, 0, None, F.cross_entropy, {})
    isolated = np.flatnonzero(ctx.poison)

    def isolated_loss():
        logits = predict_logits(model, ctx.train_x[isolated], ctx.normalize)
        return F.cross_entropy(logits, ctx.train_y[isolated]).item()

    before = isolated_loss()
    kept = {name: p.clone() for name, p in model.named_parameters()}
    defense.train_phase(ctx, "unlearning", model, 3, 3, isolated, negated_ce, {})
    assert isolated_loss() > before
    assert any(not torch.equal(p, kept[name]) for name, p in model.named_parameters())
    assert [r["phase"] for r in ctx.curves] == ["finetune"] * 3 + ["unlearning"] * 3
    assert all(r["loss"] < 0 for r in ctx.curves[3:])  # the recorded objective is -CE


def test_abl_records_every_phase_with_global_epochs_and_the_isolated_set():
    ctx = tiny_context()
    defense = tiny_abl()
    defense.run(ctx)
    info = defense.run_info
    assert info["abl_isolated"] == 4 == len(info["abl_isolated_indices"])  # int(0.1 * 48)
    assert info["abl_isolated_poisoned"] == int(ctx.poison[info["abl_isolated_indices"]].sum())
    json.dumps(info)
    assert [(r["epoch"], r["phase"]) for r in ctx.curves] == [
        (1, "isolation"), (2, "isolation"), (3, "finetune"), (4, "finetune"), (5, "unlearning"), (6, "unlearning")]
    assert all(r["clean_pool"] == 48 and "isolated" not in r for r in ctx.curves[:2])
    remaining = np.setdiff1d(np.arange(48), info["abl_isolated_indices"])
    for r in ctx.curves[2:]:
        assert r["clean_pool"] == 44 and r["isolated"] == 4
        assert r["poisoned_in_clean_pool"] == int(ctx.poison[remaining].sum())
        assert r["poisoned_in_isolated"] == info["abl_isolated_poisoned"]
    # isolation at a constant lr; fine-tuning x0.1 at round(2/3 * 2) = 1 epoch; unlearning at its own small lr
    assert [r["lr"] for r in ctx.curves] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.0005, 0.0005])
    # dvc plots drops a curves file whose records differ in their keys: the written curves are padded with None
    from dvc.render.converter.vega import get_datapoints

    assert len({tuple(r) for r in ctx.curves}) > 1, "the phases log different fields"
    uniform = ctx.uniform_curves()
    assert len({tuple(r) for r in uniform}) == 1 and get_datapoints(uniform) == uniform
    assert uniform[0]["isolated"] is None and uniform[2]["isolated"] == 4 and uniform[0]["acc"] == ctx.curves[0]["acc"]


def test_a_ratio_that_isolates_nothing_is_a_user_error():
    with pytest.raises(UserError, match="isolation_ratio = 0.01 isolates no sample"):
        tiny_abl(isolation_ratio=0.01).run(tiny_context())


# --- gin values ----------------------------------------------------------------------------------------------------


def test_paper_profile_runs_the_paper_values():
    defense = defense_from("abl", "base.gin", "datasets/cifar10.gin", "defenses/abl.gin", "profiles/paper/common.gin",
                           "profiles/paper/abl.gin")
    got = {k: getattr(defense, k) for k in PAPER}
    got["optimizers"] = {phase: o.settings for phase, o in got["optimizers"].items()}
    assert got == PAPER
    assert defense.total_epochs == 100
    # the reference decays the fine-tuning lr at epoch 40 of 60
    assert round(defense.optimizers["finetune"].milestones[0] * defense.finetune_epochs) == 40


@pytest.mark.parametrize("profile", ["mini", "smoke"])
def test_small_profiles_run_every_phase(profile):
    d = defense_from("abl", "base.gin", "datasets/mnist5k.gin", "defenses/abl.gin", f"profiles/{profile}/common.gin",
                     f"profiles/{profile}/abl.gin")
    assert d.isolation_epochs >= 1 and d.finetune_epochs >= 1 and d.unlearning_epochs >= 1
    assert d.gamma == 0.5 and d.isolation_ratio == 0.01 and d.optimizers["unlearning"].lr == 0.0005


# --- end to end through the train stage: exact resume from every phase ---------------------------------------------

GIN = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/abl.gin", "params/profiles/smoke/common.gin",
       "params/profiles/smoke/abl.gin"]
BINDINGS = ["SEED = 3", "attacks.BadNets.ratio = 0.2", "defenses.ABL.isolation_epochs = 2",
            "defenses.ABL.finetune_epochs = 2", "defenses.ABL.unlearning_epochs = 2", "defenses.ABL.batch_size = 16",
            "defenses.ABL.isolation_ratio = 0.05", "stages.train.device = 'cpu'"]


def test_abl_resumed_in_every_phase_ends_bit_identical(tmp_path):
    clean = tiny_prepared(tmp_path / "prepared")
    configure(GIN, BINDINGS)
    stages.assets("badnets", clean, tmp_path / "assets")
    stages.poison("badnets", clean, tmp_path / "assets", tmp_path / "poisoned")

    def train(name, stop=None):
        asked = configure(GIN, BINDINGS)
        return stages.train("abl", clean, tmp_path / "poisoned", tmp_path / name, tmp_path / f"{name}.json",
                            tmp_path / f"ckpt_{name}", asked_config=asked, stop_after_epoch=stop)

    straight = train("straight")
    # killed inside isolation, at its end, inside fine-tuning and inside unlearning
    for stop in (1, 2, 3, 5):
        with pytest.raises(Interrupted):
            train("resumed", stop)
    resumed = train("resumed")
    a = torch.load(tmp_path / "straight" / "model.pt")["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def curves(name):  # everything but wall-clock time
        return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((tmp_path / name).read_text())]

    assert curves("straight.json") == curves("resumed.json")
    assert [r["epoch"] for r in curves("resumed.json")] == [1, 2, 3, 4, 5, 6]
    assert straight["abl_isolated"] == resumed["abl_isolated"] == 6  # int(0.05 * 120)
    assert straight["abl_isolated_indices"] == resumed["abl_isolated_indices"]
    run = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert run["abl_isolated_poisoned"] == straight["abl_isolated_poisoned"]
    assert not any((tmp_path / "ckpt_resumed").rglob("*.pt")), "checkpoints are removed once the cell is done"
