"""NAD: the attention map and AT loss on hand-made tensors, the distillation epoch (beta = 0 is CE fine-tuning, the
teacher never moves), the gin values, and the defense end to end from an upstream model with an exact resume."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from asd_repro.defenses import Interrupted
from asd_repro.defenses.nad import NAD, at_loss, attention_map, distill_epoch, stage_outputs
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.loop import train_epoch
from asd_repro.core.errors import UserError
from asd_repro.models import create_model

from conftest import defense_from
from posttraining import poisoned_with_upstream, train_repair

PARAMS = Path(__file__).resolve().parents[1] / "params"
STAGES = ("layer2", "layer3", "layer4")


def test_attention_map_sums_squares_over_channels_and_normalises_over_positions():
    f = torch.zeros(1, 2, 2, 2)
    f[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    f[0, 1] = torch.tensor([[-1.0, 0.0], [0.0, 1.0]])  # |F|: the sign does not matter
    # sum_c F^2 = [[2, 0], [0, 1]], L2 norm sqrt(5)
    expected = torch.tensor([[2.0, 0.0], [0.0, 1.0]]) / math.sqrt(5)
    torch.testing.assert_close(attention_map(f)[0, 0], expected, rtol=1e-5, atol=0)
    # p = 1 on 2F: sum_c |2F| = [[4, 0], [0, 2]], the same map
    torch.testing.assert_close(attention_map(f * 2, p=1)[0, 0], expected, rtol=1e-5, atol=0)


def test_at_loss_is_the_mean_squared_difference_of_the_maps():
    s = torch.zeros(1, 2, 2, 2)
    s[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    s[0, 1] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.zeros(1, 2, 2, 2)
    t[0, 0, 0, 1] = 3.0  # map [[0, 1], [0, 0]]
    # ((2/sqrt5)^2 + 1 + 0 + (1/sqrt5)^2) / 4 = (4/5 + 1 + 1/5) / 4 = 0.5
    assert at_loss(s, t).item() == pytest.approx(0.5, rel=1e-5)
    assert at_loss(s, s * 7).item() == pytest.approx(0.0, abs=1e-10), "the map ignores the features' scale"
    s.requires_grad_(True)
    t.requires_grad_(True)
    at_loss(s, t).backward()
    assert s.grad is not None and t.grad is None, "no gradient flows into the teacher"


def tiny_resnet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(num_classes=3, in_chans=1, image_size=12, arch="slim_resnet", stem="cifar")


def tiny_data(n: int = 24):
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, 256, (n, 1, 12, 12), dtype=torch.uint8, generator=g), torch.arange(n) % 3


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True)


def test_with_every_beta_zero_distillation_is_plain_cross_entropy_fine_tuning():
    x, y = tiny_data()
    norm, aug = Normalize((0.2,), (0.3,), "cpu"), Augment(1, "reflect", True)
    student, reference, teacher = tiny_resnet(0), tiny_resnet(0), tiny_resnet(1)
    stats = distill_epoch(student, teacher, sgd(student), x, y, dict.fromkeys(STAGES, 0.0), 2.0, aug, norm, 8,
                          torch.Generator().manual_seed(3))
    expected = train_epoch(reference, sgd(reference), x, y, aug, norm, 8, torch.Generator().manual_seed(3))
    assert stats["loss"] == pytest.approx(expected["loss"], rel=1e-6) and stats["at"] == 0.0
    a, b = student.state_dict(), reference.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_loss_is_ce_plus_the_weighted_at_losses_of_the_stages():
    x, y = tiny_data(8)
    norm, no_aug = Normalize((0.2,), (0.3,), "cpu"), Augment(0, "reflect", False)
    student, teacher = tiny_resnet(0), tiny_resnet(1).eval()
    betas = {"layer2": 500.0, "layer3": 0.0, "layer4": 1000.0}
    probe = copy.deepcopy(student).train()
    with torch.no_grad(), stage_outputs(probe, STAGES) as s, stage_outputs(teacher, STAGES) as t:
        logits = probe(norm(x))
        teacher(norm(x))
        ce = F.cross_entropy(logits, y)
        at = 500 * at_loss(s["layer2"], t["layer2"]) + 1000 * at_loss(s["layer4"], t["layer4"])
    stats = distill_epoch(student, teacher, sgd(student), x, y, betas, 2.0, no_aug, norm, 8, torch.Generator())
    assert stats["ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert stats["at"] == pytest.approx(at.item(), rel=1e-5) and stats["at"] > 0
    assert stats["loss"] == pytest.approx((ce + at).item(), rel=1e-5)


def test_the_teacher_is_not_updated_during_distillation():
    x, y = tiny_data()
    norm, aug = Normalize((0.2,), (0.3,), "cpu"), Augment(1, "reflect", True)
    student, teacher = tiny_resnet(0), tiny_resnet(1)
    teacher.train()  # distill_epoch must put it in eval mode itself: batch-norm statistics would move otherwise
    before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(student.state_dict())
    distill_epoch(student, teacher, sgd(student), x, y, dict(zip(STAGES, (500.0, 1000.0, 1000.0))), 2.0, aug,
                  norm, 8, torch.Generator().manual_seed(0))
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training and all(p.grad is None for p in teacher.parameters())
    assert not teacher.layer4._forward_hooks and not student.layer4._forward_hooks, "hooks are removed"
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_bad_bindings_are_one_line_user_errors():
    with pytest.raises(UserError, match="betas"):
        NAD(betas={"layer4": -1.0})
    with pytest.raises(UserError, match="epochs"):
        NAD(epochs=0)
    with pytest.raises(UserError, match="no stage layer9"):
        NAD(betas={"layer9": 1.0}).run(SimpleNamespace(upstream_model=lambda: tiny_resnet(0)))


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedule is stepped without training
def test_paper_profile_runs_the_reference_values():
    nad = defense_from("nad", "base.gin", "datasets/cifar10.gin", "defenses/nad.gin", "profiles/paper/common.gin",
                       "profiles/paper/nad.gin")
    assert (nad.clean_fraction, nad.teacher_epochs, nad.epochs, nad.p, nad.batch_size) == (0.05, 10, 20, 2.0, 64)
    assert nad.betas == {"layer2": 500.0, "layer3": 1000.0, "layer4": 1000.0}
    o = nad.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.nesterov) == ("sgd", 0.1, 0.9, 1e-4, True)
    # the reference's adjust_learning_rate: 0.1 for epochs 0-1, 0.01 from epoch 2
    optimizer, schedule = nad.optimizer.build(tiny_resnet(0).parameters(), nad.epochs)
    lrs = []
    for _ in range(nad.epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    assert lrs == pytest.approx([0.1, 0.1] + [0.01] * 18)


def test_mini_profile_parses():
    nad = defense_from("nad", "base.gin", "datasets/mnist5k.gin", "defenses/nad.gin", "profiles/mini/common.gin",
                       "profiles/mini/nad.gin")
    assert nad.teacher_epochs >= 1 and nad.epochs >= 1


# --- end to end through stages.train, from the No-defense model ----------------------------------------------------


def _train(clean, poisoned, upstream, out, ckpt=None, stop=None):
    return train_repair("nad", ["defenses.NAD.teacher_epochs = 2", "defenses.NAD.epochs = 2"], clean, poisoned, upstream, out, ckpt, stop)


def test_nad_end_to_end_records_both_phases_and_resumes_to_identical_weights(tmp_path):
    clean, poisoned, upstream = poisoned_with_upstream(tmp_path)
    _train(clean, poisoned, upstream, tmp_path / "straight")
    run = json.loads((tmp_path / "straight" / "run.json").read_text())
    assert run["defender_clean"]["count"] == len(run["defender_clean"]["indices"]) == 10
    curves = json.loads((tmp_path / "straight.json").read_text())
    assert [(r["epoch"], r["phase"], r["clean_pool"], r["poisoned_in_clean_pool"]) for r in curves] == [
        (1, "teacher", 10, 0), (2, "teacher", 10, 0), (3, "student", 10, 0), (4, "student", 10, 0)]
    assert all(r["at"] > 0 for r in curves[2:])

    for stop in (1, 3):  # killed within the teacher phase, then within the student phase
        with pytest.raises(Interrupted):
            _train(clean, poisoned, upstream, tmp_path / "resumed", tmp_path / "ckpt", stop=stop)
    _train(clean, poisoned, upstream, tmp_path / "resumed", tmp_path / "ckpt")
    a = torch.load(tmp_path / "straight" / "model.pt")["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt")["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in json.loads((tmp_path / f).read_text())]
             for f in ("straight.json", "resumed.json")]
    assert strip[0] == strip[1]
