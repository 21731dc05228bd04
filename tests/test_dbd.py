"""DBD and its parts: the pre-training stage, the linear warm-up, the split, the gin values against the reference
code's, and exact resumes of both stages, on hand-made inputs (SimCLR's own pieces: test_simclr.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gin
import numpy as np
import pytest
import torch

from asd_repro import stages
from asd_repro.core import config
from asd_repro.defenses import DEFENSES, Context, Interrupted
from asd_repro.defenses.dbd import (DBD, frozen_features, simclr_pretrain, train_linear_head,
                                    train_linear_head_cached)
from asd_repro.engine.simclr import SimCLRAugment, features, head_parameter_names
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.losses import SCE
from asd_repro.engine.optim import Optimizer, given
from asd_repro.engine.checkpoint import Checkpointer
from asd_repro.core.errors import UserError
from asd_repro.models import create_model
from asd_repro.cli.plugins import load_all

from conftest import badnets_poisoned, configure, settings, tiny_data, tiny_model

PARAMS = Path(__file__).resolve().parents[1] / "params"

# The reference code's values (SCLBD/DBD, config/defense/{simclr,mixmatch_finetune}/badnets/cifar10_resnet18).
REFERENCE_DBD = {
    "linear_epochs": 10, "linear_batch_size": 128, "linear_cached": False, "epsilon": 0.5,
    "epochs": 190,
    "optimizer": {"name": "adam", "lr": 0.002, "momentum": 0.9, "weight_decay": 0.0, "nesterov": False,
                  "schedule": "constant", "milestones": (0.5, 0.75), "drop_epochs": None, "gamma": 0.1},
    "sce": {"ce_weight": 0.1, "rce_weight": 1.0, "prob_min": 1e-7, "onehot_min": 1e-4},
    "mixmatch": {"iterations": 1024, "batch_size": 64, "K": 2, "T": 0.5, "alpha": 0.75, "lambda_u": 15.0,
                 "rampup": 190},
}
REFERENCE_SIMCLR = {"epochs": 1000, "batch_size": 512, "temperature": 0.5, "symmetric": False, "proj_dim": 128,
                    "optimizer": {"name": "sgd", "lr": 0.4, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
                                  "schedule": "cosine", "milestones": (0.5, 0.75), "drop_epochs": None, "gamma": 0.1}}
REFERENCE_AUGMENT = {"crop_scale": (0.2, 1.0), "interpolation": "bicubic", "hflip": None, "jitter_p": 0.8,
                     "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "grayscale_p": 0.2,
                     "blur_p": 0.5, "blur_sigma": (0.1, 2.0)}


# --- pre-training, warm-up, split ----------------------------------------------------------------------------------


def _pretrain(checkpointer=None, stop=None, epochs=2):
    torch.manual_seed(5)
    x, _, _ = tiny_data()
    return simclr_pretrain(x, tiny_model, torch.Generator().manual_seed(5), Normalize((0.2,), (0.3,), "cpu"), False,
                           checkpointer, epochs=epochs, batch_size=16, optimizer=given("sgd", 0.05, schedule="cosine"),
                           stop_after_epoch=stop)


def test_simclr_pretraining_returns_the_backbone_and_resumes_exactly(tmp_path):
    backbone, info = _pretrain()
    model = tiny_model()
    assert set(backbone) == set(model.state_dict()) - head_parameter_names(model) == set(model.state_dict()) - {
        "fc.weight", "fc.bias"}
    assert [r["epoch"] for r in info["history"]] == [1, 2] and info["history"][0]["lr"] == 0.05
    assert all(r["loss"] < math.log(2 * 16 - 1) + 0.5 for r in info["history"])
    with pytest.raises(Interrupted):
        _pretrain(Checkpointer(tmp_path, "k"), stop=1)
    resumed, resumed_info = _pretrain(Checkpointer(tmp_path, "k"))
    assert all(torch.equal(backbone[k], resumed[k]) for k in backbone)
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in i["history"]] for i in (info, resumed_info)]
    assert strip[0] == strip[1]


def test_simclr_pretraining_rejects_a_batch_without_negatives():
    with pytest.raises(UserError, match="defenses.simclr_pretrain: batch_size"):
        simclr_pretrain(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), tiny_model, torch.Generator(),
                        Normalize((0.2,), (0.3,), "cpu"), False, batch_size=1)


def _warmup_context(seed: int = 0) -> Context:
    torch.manual_seed(seed)
    x, y, poison = tiny_data()
    return Context(train_x=x, train_y=y, poison=poison, test_x=x, test_y=y, bd_x=x, bd_y=y, num_classes=3,
                   augment=Augment(1, "reflect", False), normalize=Normalize((0.2,), (0.3,), "cpu"),
                   new_model=tiny_model, generator=torch.Generator().manual_seed(seed),
                   checkpointer=Checkpointer(None, ""), device=torch.device("cpu"), seed=seed)


def test_linear_warmup_trains_only_the_head():
    ctx = _warmup_context()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters(), 0.01)  # one optimiser over the whole model, as in DBD
    train_linear_head(model, optimizer, ctx, 16, SCE(), "test")
    after = model.state_dict()
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != name.startswith("fc."), name
        assert p.requires_grad, f"{name} stays trainable for the fine-tuning"
    # train mode, as DBD's poison_linear_train: the frozen backbone's batch-norm statistics still move
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])


def test_cached_linear_warmup_trains_only_the_head_on_fixed_features():
    ctx = _warmup_context()
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = frozen_features(model, ctx.train_x, ctx.normalize, 7)
    torch.testing.assert_close(feats, features(model.eval(), ctx.normalize(ctx.train_x)))
    optimizer = torch.optim.Adam(model.parameters(), 0.01)
    stats = train_linear_head_cached(model, optimizer, feats, ctx.train_y, 16, ctx.generator, SCE())
    assert set(stats) == {"loss", "train_acc"}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"fc.weight", "fc.bias"}  # eval mode: not even batch-norm statistics move


def test_dbd_rejects_pools_smaller_than_a_batch():
    with pytest.raises(UserError, match="epsilon"):
        DBD(epsilon=1.0)
    ctx = _warmup_context()
    ctx.upstream = tiny_model()
    with pytest.raises(UserError, match="batch_size = 64"):
        DBD().run(ctx)  # 48 samples: pools of 24


# --- gin values ----------------------------------------------------------------------------------------------------


def composed(*files: str) -> tuple[DBD, dict, SimCLRAugment]:
    load_all()
    config.parse([PARAMS / f for f in files])
    try:
        bound = {k: gin.query_parameter(f"defenses.simclr_pretrain.{k}") for k in REFERENCE_SIMCLR if k != "optimizer"}
        with gin.config_scope("simclr"):
            bound["optimizer"] = Optimizer().settings
        return DEFENSES.create("dbd"), bound, SimCLRAugment()
    finally:
        gin.clear_config()


def test_paper_profile_runs_the_reference_values():
    defense, simclr, augment = composed("base.gin", "datasets/cifar10.gin", "defenses/dbd_pretrain.gin",
                                        "defenses/dbd.gin", "profiles/paper/common.gin",
                                        "profiles/paper/dbd_pretrain.gin", "profiles/paper/dbd.gin")
    assert settings(defense, REFERENCE_DBD) == REFERENCE_DBD
    assert simclr == REFERENCE_SIMCLR
    assert {k: getattr(augment, k) for k in REFERENCE_AUGMENT} == REFERENCE_AUGMENT


@pytest.mark.parametrize("profile", ["mini", "smoke"])
def test_small_profiles_ramp_lambda_u_over_the_mixmatch_epochs(profile):
    defense, simclr, _ = composed("base.gin", "datasets/mnist5k.gin", "defenses/dbd_pretrain.gin", "defenses/dbd.gin",
                                  f"profiles/{profile}/common.gin", f"profiles/{profile}/dbd_pretrain.gin",
                                  f"profiles/{profile}/dbd.gin")
    assert defense.mixmatch.settings["rampup"] == defense.epochs and defense.epsilon == 0.5
    assert simclr["epochs"] < REFERENCE_SIMCLR["epochs"] and simclr["temperature"] == 0.5


# --- both stages end to end: the model file, the records, exact resumes ---------------------------------------------

GIN = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/dbd_pretrain.gin", "params/defenses/dbd.gin",
       "params/profiles/smoke/common.gin", "params/profiles/smoke/dbd_pretrain.gin", "params/profiles/smoke/dbd.gin"]
BINDINGS = ["SEED = 3", "stages.train.device = 'cpu'", "defenses.simclr_pretrain.epochs = 2",
            "defenses.simclr_pretrain.batch_size = 32", "defenses.DBD.epochs = 2", "dbd/engine.MixMatch.rampup = 2"]


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory):
    return badnets_poisoned(tmp_path_factory.mktemp("dbd"), GIN)


def _pretrain_stage(clean, poisoned, out, ckpt, stop=None):
    asked = configure(GIN, BINDINGS)
    return stages.pretrain("dbd", clean, poisoned, out, ckpt, seed=3, device="cpu", asked_config=asked,
                           stop_after_epoch=stop)


def _train(clean, poisoned, upstream, out, ckpt, stop=None):
    asked = configure(GIN, BINDINGS)
    return stages.train("dbd", clean, poisoned, out, out.parent / f"{out.name}.json", ckpt, asked_config=asked,
                        stop_after_epoch=stop, upstream=upstream)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt")["state_dict"]


def test_pretrain_stage_writes_a_loadable_backbone_and_resumes_exactly(poisoned, tmp_path):
    clean, poisoned = poisoned
    record = _pretrain_stage(clean, poisoned, tmp_path / "straight", tmp_path / "ckpt_a")
    assert {"model.pt", "pretrain.json", "config.gin", "operative_config.gin"} <= {
        p.name for p in (tmp_path / "straight").iterdir()}
    assert json.loads((tmp_path / "straight" / "pretrain.json").read_text())["history"] == record["history"]
    assert "simclr_pretrain.epochs = 2" in (tmp_path / "straight" / "operative_config.gin").read_text()
    model, _ = stages.load_model(tmp_path / "straight", "cpu")
    torch.manual_seed(3)  # the head stays as initialised right after seeding
    fresh = create_model(**record["model"])
    assert torch.equal(model.fc.weight, fresh.fc.weight) and not torch.equal(model.conv1.weight, fresh.conv1.weight)
    with pytest.raises(Interrupted):
        _pretrain_stage(clean, poisoned, tmp_path / "resumed", tmp_path / "ckpt_b", stop=1)
    assert not (tmp_path / "resumed").exists()
    _pretrain_stage(clean, poisoned, tmp_path / "resumed", tmp_path / "ckpt_b")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any((tmp_path / "ckpt_b").rglob("*.pt")), "checkpoints are removed once the stage is done"


def test_dbd_cell_records_its_phases_and_resumes_to_identical_weights(poisoned, tmp_path):
    clean, poisoned = poisoned
    _pretrain_stage(clean, poisoned, tmp_path / "pretrain", None)
    info = _train(clean, poisoned, tmp_path / "pretrain", tmp_path / "straight", tmp_path / "ckpt_a")
    curves = json.loads((tmp_path / "straight.json").read_text())
    n = len(np.load(poisoned / "train_y.npy"))
    assert [(r["epoch"], r["phase"]) for r in curves] == [(1, "linear"), (2, "mixmatch"), (3, "mixmatch")]
    for r in curves[1:]:
        assert r["clean_pool"] == n // 2 and 0 <= r["poisoned_in_clean_pool"] <= r["clean_pool"]
        assert r["lambda_u"] < 15.0  # the ramp over the two MixMatch epochs starts at 0
    assert info["dbd_poisoned_in_labelled_pool"] == [r["poisoned_in_clean_pool"] for r in curves[1:]]
    for stop in (1, 2):  # killed after the warm-up, then after the first MixMatch epoch
        with pytest.raises(Interrupted):
            _train(clean, poisoned, tmp_path / "pretrain", tmp_path / "resumed", tmp_path / "ckpt_b", stop=stop)
    _train(clean, poisoned, tmp_path / "pretrain", tmp_path / "resumed", tmp_path / "ckpt_b")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    timing = ("seconds", "loss_pass_seconds", "mixmatch_seconds")
    strip = [[{k: v for k, v in r.items() if k not in timing} for r in json.loads((tmp_path / f).read_text())]
             for f in ("straight.json", "resumed.json")]
    assert strip[0] == strip[1]


def test_dbd_needs_the_pretrained_model(poisoned, tmp_path):
    clean, poisoned = poisoned
    with pytest.raises(UserError, match="--upstream"):
        _train(clean, poisoned, None, tmp_path / "run", None)
