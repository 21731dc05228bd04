"""Bad attack bindings: every one is refused when the attack is built (or, for the target, when it first sees the
labels) with one line that names the gin binding, and through the CLI with exit status 2 and no output folder."""

from __future__ import annotations

import numpy as np
import pytest

from asd_repro.attacks.badnets import BadNets
from asd_repro.attacks.blend import Blend
from asd_repro.attacks.clb import CLB
from asd_repro.attacks.iab import IAB
from asd_repro.attacks.refool import Refool
from asd_repro.attacks.wanet import WaNet
from asd_repro.cli import main
from asd_repro.core.errors import UserError

from conftest import tiny_prepared

BAD = [
    (BadNets, {"ratio": 1.5}, "attacks.BadNets.ratio = 1.5"),
    (BadNets, {"ratio": "0.05"}, "attacks.BadNets.ratio = '0.05'"),
    (BadNets, {"target": -1}, "attacks.BadNets.target = -1"),
    (BadNets, {"target": 1.5}, "attacks.BadNets.target = 1.5"),
    (BadNets, {"patch_size": 0}, "attacks.BadNets.patch_size = 0"),
    (Blend, {"alpha": 2.0}, "attacks.Blend.alpha = 2.0"),
    (WaNet, {"k": 1}, "attacks.WaNet.k = 1"),
    (WaNet, {"cross_ratio": 40.0}, "attacks.WaNet.cross_ratio = 40.0"),
    (IAB, {"epochs": "ten"}, "attacks.IAB.epochs = 'ten'"),
    (IAB, {"mask_density": 0.0}, "attacks.IAB.mask_density = 0.0"),
    (IAB, {"mask_min_steps": -1}, "attacks.IAB.mask_min_steps = -1"),
    (IAB, {"train_bd_ratio": 0.6, "train_cross_ratio": 0.6}, "attacks.IAB.train_cross_ratio = 0.6"),
    (CLB, {"eps": -8.0}, "attacks.CLB.eps = -8.0"),
    (CLB, {"amplitude": 1.5}, "attacks.CLB.amplitude = 1.5"),
    (CLB, {"steps": 0}, "attacks.CLB.steps = 0"),
    (Refool, {"model": "mirror"}, "attacks.Refool.model = 'mirror'"),
    (Refool, {"alpha": (0.5, 0.1)}, "attacks.Refool.alpha = (0.5, 0.1)"),
]


@pytest.mark.parametrize("cls, kwargs, binding", BAD, ids=[b for _, _, b in BAD])
def test_a_bad_value_names_its_binding_in_one_line(cls, kwargs, binding):
    with pytest.raises(UserError) as e:
        cls(**{"target": 0, "ratio": 0.1, **kwargs})
    first = str(e.value).splitlines()[0]  # gin appends "In call to configurable ..."; the CLI prints the first line
    assert first.startswith(binding + " is invalid: expected ") and first.endswith("or --bind)"), first


def test_good_values_are_accepted():
    for cls in (BadNets, Blend, WaNet, IAB, CLB, Refool):
        assert cls(target=0, ratio=0.1).ratio == 0.1


@pytest.mark.parametrize("cls", [BadNets, WaNet, IAB, Refool])
def test_a_target_outside_the_classes_is_refused_before_poisoning(cls):
    atk = cls(target=12, ratio=0.5)
    y = np.repeat(np.arange(10), 3)
    with pytest.raises(UserError, match=r"attacks\.\w+\.target = 12 is invalid: expected one of this dataset's "
                                        r"classes, 0-9"):
        atk.eligible(y)


@pytest.mark.parametrize("cls", [IAB, CLB])
def test_attacks_that_train_on_the_target_check_it_before_fitting(cls):
    atk = cls(target=10, ratio=0.1)
    x = np.zeros((20, 8, 8, 1), np.uint8)
    with pytest.raises(UserError, match="target = 10"):
        atk.fit(x, np.repeat(np.arange(10), 2), np.random.default_rng(0))


def test_a_clb_trigger_too_large_for_the_image_is_refused_before_fitting():
    atk = CLB(target=0, ratio=0.1, trigger_size=5)
    x = np.zeros((20, 8, 8, 1), np.uint8)  # two 5-px corner patterns do not fit an 8-px side
    with pytest.raises(UserError, match=r"attacks.CLB.trigger_size = 5 is invalid: expected None or at most 4 px"):
        atk.fit(x, np.repeat(np.arange(10), 2), np.random.default_rng(0))


def _cli(capsys, argv):
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


def test_cli_ratio_out_of_range_is_one_line_exit_2_no_output(tmp_path, capsys, repo_cwd):
    clean = tiny_prepared(tmp_path / "prepared")
    out = tmp_path / "assets"
    rc, err = _cli(capsys, ["assets", "badnets", "--clean", clean, "--out", out, "--seed", 1,
                            "--gin", "params/base.gin", "params/attacks/badnets.gin",
                            "--bind", "attacks.BadNets.ratio = 1.5"])
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("asd-repro: error: attacks.BadNets.ratio = 1.5 is invalid"), err
    assert not out.exists() and not list(tmp_path.glob(".assets*"))


def test_cli_target_beyond_the_classes_is_one_line_exit_2_no_poisoned_set(tmp_path, capsys, repo_cwd):
    clean = tiny_prepared(tmp_path / "prepared")  # 10 classes
    gin = ["--gin", "params/base.gin", "params/attacks/badnets.gin", "--bind", "attacks.BadNets.target = 12"]
    assets = tmp_path / "assets"
    assert _cli(capsys, ["assets", "badnets", "--clean", clean, "--out", assets, "--seed", 1, *gin])[0] == 0
    out = tmp_path / "poisoned"
    rc, err = _cli(capsys, ["poison", "badnets", "--clean", clean, "--assets", assets, "--out", out, "--seed", 1,
                            *gin])
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "attacks.BadNets.target = 12 is invalid: expected one of this dataset's classes, 0-9" in err, err
    assert not out.exists() and not list(tmp_path.glob(".poisoned*"))


def test_clb_assets_of_another_training_set_say_to_rebuild_them():
    atk = CLB(target=0, ratio=0.1)
    atk.index = np.array([0, 1])  # built where the target class had two images
    atk.perturbed = np.zeros((2, 8, 8, 1), np.uint8)
    y = np.array([0, 0, 0, 1, 1, 2])  # this training set has three
    with pytest.raises(UserError, match=r"different training set.*re-run its assets stage"):
        atk.poison_train(np.zeros((6, 8, 8, 1), np.uint8), y, np.random.default_rng(0))
