"""FP: the pruning order and stopping rule on hand-made features, the channel mask and its folding into the head,
the gin values, and the defense end to end from an upstream model with an exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from asd_repro import stages
from asd_repro.defenses.fp import FP, ChannelMask, pooled_features, prune_search, pruning_schedule
from asd_repro.engine.augment import Normalize
from asd_repro.core.errors import UserError
from asd_repro.models import create_model

from conftest import defense_from
from posttraining import poisoned_with_upstream, train_repair

PARAMS = Path(__file__).resolve().parents[1] / "params"

# Four samples of classes 0-3 and five channels; the head reads channel c as class c's score (channel 4 unused).
# Mean activations: channel 4 (0.025) < 1 (0.25) < 2 (1.0) < 0 (1.5) < 3 (3.125). Pruning channel 4 costs nothing,
# channel 1 then misclassifies sample 1 (accuracy 0.75), channel 2 sample 2 (0.5), channel 0 sample 0 (0.25).
FEATURES = torch.tensor([[5.0, 0.0, 1.0, 2.0, 0.1],
                         [0.0, 1.0, 0.0, 0.5, 0.0],
                         [0.0, 0.0, 3.0, 1.0, 0.0],
                         [1.0, 0.0, 0.0, 9.0, 0.0]])
LABELS = torch.tensor([0, 1, 2, 3])


def identity_head() -> torch.nn.Linear:
    head = torch.nn.Linear(5, 4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(4, 5))
        head.bias.zero_()
    return head


def test_channels_are_pruned_in_increasing_order_of_mean_activation():
    order, pruned, trace = prune_search(FEATURES, LABELS, identity_head(), acc_drop=1.0, max_ratio=1.0, step=1)
    assert order.tolist() == [4, 1, 2, 0, 3]
    assert [t["clean_acc"] for t in trace] == [1.0, 1.0, 0.75, 0.5, 0.25, 0.25]
    assert pruned == 5


@pytest.mark.parametrize("acc_drop, pruned", [(0.2, 1), (0.25, 2), (0.3, 2), (0.5, 3), (0.0, 1)])
def test_pruning_stops_before_the_step_that_drops_accuracy_by_more_than_acc_drop(acc_drop, pruned):
    order, n, trace = prune_search(FEATURES, LABELS, identity_head(), acc_drop=acc_drop, max_ratio=1.0, step=1)
    assert n == pruned
    assert trace[-1]["pruned"] == pruned + 1, "the rejected step is the last one tried"


def test_pruning_steps_and_the_cap():
    _, n, trace = prune_search(FEATURES, LABELS, identity_head(), acc_drop=0.3, max_ratio=1.0, step=2)
    assert (n, [t["pruned"] for t in trace]) == (2, [0, 2, 4])
    _, n, trace = prune_search(FEATURES, LABELS, identity_head(), acc_drop=1.0, max_ratio=0.4, step=1)
    assert (n, [t["pruned"] for t in trace]) == (2, [0, 1, 2])
    assert pruning_schedule(128, 10, 0.9) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 115]
    assert pruning_schedule(128, 1, 0.0) == []


def tiny_resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(num_classes=3, in_chans=1, image_size=12, arch="slim_resnet", stem="cifar").eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so every channel carries signal
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.bias.uniform_(0.0, 0.5)
    return model


def test_pooled_features_are_the_mean_of_layer4_output_over_positions():
    model, x = tiny_resnet(), torch.randint(0, 256, (6, 1, 12, 12), dtype=torch.uint8)
    norm = Normalize((0.2,), (0.3,), "cpu")
    seen = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: seen.setdefault("out", o.detach().clone()))
    model(norm(x))
    handle.remove()
    torch.testing.assert_close(pooled_features(model, x, norm, batch_size=4), seen["out"].mean((2, 3)))


def test_masked_model_does_not_depend_on_pruned_channels_and_folds_into_a_plain_model():
    model, x = tiny_resnet(), torch.randn(5, 1, 12, 12)
    pruned = torch.tensor([5, 17, 100])
    unmasked = model(x)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    mask = ChannelMask(model, "layer4", pruned)
    masked = model(x)
    assert not torch.allclose(masked, unmasked)
    with torch.no_grad():  # change what the pruned channels compute, and nothing else
        block = model.layer4[0]
        block.conv2.weight[pruned] += 3.0
        block.bn2.bias[pruned] += 5.0
        block.downsample[1].bias[pruned] -= 2.0
    assert torch.equal(model(x), masked)
    # the search's shortcut (masked pooled features into the head) is the masked network's output
    keep = torch.ones(128)
    keep[pruned] = 0
    torch.testing.assert_close(model.fc(feats * keep), masked)

    plain = mask.fold_into_head(model)
    assert not model.layer4._forward_hooks, "the hook is gone: the saved state dict is the whole model"
    assert torch.equal(plain.fc.weight[:, pruned], torch.zeros(3, 3))
    torch.testing.assert_close(plain(x), masked, rtol=0, atol=1e-6)
    rebuilt = create_model(num_classes=3, in_chans=1, image_size=12, arch="slim_resnet", stem="cifar").eval()
    rebuilt.load_state_dict(plain.state_dict())
    with torch.no_grad():
        rebuilt.layer4[0].bn2.bias[pruned] += 7.0
    torch.testing.assert_close(rebuilt(x), masked, rtol=0, atol=1e-6)


def test_bad_bindings_are_one_line_user_errors():
    for kwargs, name in (({"acc_drop": 10}, "acc_drop"), ({"prune_step": 0}, "prune_step"),
                         ({"max_prune_ratio": 1.5}, "max_prune_ratio"), ({"clean_fraction": 0}, "clean_fraction")):
        with pytest.raises(UserError, match=name):
            FP(**kwargs)


def test_paper_profile_runs_backdoorbench_values():
    fp = defense_from("fp", "base.gin", "datasets/cifar10.gin", "defenses/fp.gin", "profiles/paper/common.gin",
                      "profiles/paper/fp.gin")
    assert (fp.clean_fraction, fp.acc_drop, fp.max_prune_ratio, fp.prune_step, fp.finetune_epochs,
            fp.batch_size) == (0.05, 0.1, 1.0, 1, 100, 256)
    o = fp.optimizer
    assert (o.name, o.lr, o.momentum, o.weight_decay, o.nesterov, o.schedule) == ("sgd", 0.01, 0.9, 5e-4, False, "cosine")


def test_mini_profile_parses():
    fp = defense_from("fp", "base.gin", "datasets/mnist5k.gin", "defenses/fp.gin", "profiles/mini/common.gin",
                      "profiles/mini/fp.gin")
    assert fp.finetune_epochs >= 1


# --- end to end through stages.train, from the No-defense model ----------------------------------------------------


def _train(clean, poisoned, upstream, out, ckpt=None, stop=None):
    return train_repair("fp", ["defenses.FP.finetune_epochs = 3", "defenses.FP.acc_drop = 0.3"], clean, poisoned, upstream, out, ckpt, stop)


def test_fp_end_to_end_records_its_pruning_and_evaluates_like_the_pipeline(tmp_path):
    # (killed and resumed: test_defense_contract.py)
    clean, poisoned, upstream = poisoned_with_upstream(tmp_path)
    info = _train(clean, poisoned, upstream, tmp_path / "straight")
    run = json.loads((tmp_path / "straight" / "run.json").read_text())
    assert run["defender_clean"]["count"] == len(run["defender_clean"]["indices"]) == 10  # round(0.05 * 120 / 10) = 1
    assert 0 < run["pruned_channels"] == len(run["pruned"]) < run["channels"] == 128
    saved = torch.load(tmp_path / "straight" / "model.pt")["state_dict"]
    assert not saved["fc.weight"][:, run["pruned"]].any(), "the mask is folded into the saved head"
    curves = json.loads((tmp_path / "straight.json").read_text())
    assert [(r["epoch"], r["phase"], r["clean_pool"], r["poisoned_in_clean_pool"]) for r in curves] == [
        (e, "finetune", 10, 0) for e in (1, 2, 3)]
    layout = tmp_path / "layout"  # the pipeline's: <runs>/<defense>/s<seed>, <poisoned>/s<seed>
    (layout / "runs" / "fp").mkdir(parents=True)
    shutil.copytree(tmp_path / "straight", layout / "runs" / "fp" / "s7")
    shutil.copytree(poisoned, layout / "poisoned" / "s7")
    metrics = stages.evaluate(clean, layout / "poisoned", layout / "runs", ["fp"], [7], tmp_path / "eval",
                              device="cpu")["fp"]
    assert metrics["seeds"]["7"]["acc"] == pytest.approx(info["final_epoch"]["acc"])
    assert metrics["seeds"]["7"]["environment"]["threads"] >= 1
