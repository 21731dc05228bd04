"""A slice of the paper table run by the paper profile on tiny data in the datasets' real on-disk formats: every
attack and every defense at least once on CIFAR-10 pickles, and ImageNet-30 JPEGs at the paper's 224 px, through
the evaluate stage. The whole table (108 cells, through the table stage) is `benchmarks/paper_dryrun.py`; this
slice uses its minimum budgets (`BINDINGS`) and calls the stages' commands in-process, without DVC."""

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from asd_repro.cli import main

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paper_dryrun", REPO / "benchmarks" / "paper_dryrun.py")
dryrun = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dryrun)

PAPER = "params/profiles/paper"
# (dataset, attack, defense): each attack and each defense once; FP and NAD repair the same cell's No-Defense model.
CELLS = [("cifar10", "badnets", "asd"), ("cifar10", "blend", "abl"), ("cifar10", "wanet", "dbd"),
         ("cifar10", "iab", "fp"), ("cifar10", "refool", "nad"), ("cifar10", "clb", "none"),
         ("imagenet30", "badnets", "none")]


def _binds(*families):
    return [arg for family in families for binding in dryrun.BINDINGS[family] for arg in ("--bind", binding)]


def _train_gin(dataset, defense):
    return ["params/base.gin", f"params/datasets/{dataset}.gin", f"params/defenses/{defense}.gin",
            f"{PAPER}/common.gin", f"{PAPER}/{defense}.gin"]


@pytest.mark.slow
def test_a_paper_slice_runs_every_attack_and_defense_and_imagenet30_at_224(tmp_path, repo_cwd, one_thread):
    raw = tmp_path / "raw"
    dryrun.write_raw(raw, ["cifar10", "imagenet30"])
    seed = "100"
    for dataset in ("cifar10", "imagenet30"):
        assert main(["prepare", dataset, "--raw-root", str(raw), "--out", str(tmp_path / "prepared" / dataset),
                     "--gin", f"params/datasets/{dataset}.gin"]) == 0
    shape = json.loads((tmp_path / "prepared" / "imagenet30" / "manifest.json").read_text())["image_shape"]
    assert shape == [224, 224, 3], "ImageNet-30 at the paper's 224 px"

    def cell(dataset, attack, defense):
        prepared, root = tmp_path / "prepared" / dataset, tmp_path / dataset / attack
        poisoned, runs = root / "poisoned" / f"s{seed}", root / "runs"
        if not poisoned.exists():
            attack_gin = ["params/base.gin", f"params/datasets/{dataset}.gin", f"params/attacks/{attack}.gin",
                          f"{PAPER}/attacks.gin"]
            common = ["--clean", str(prepared), "--seed", seed, "--gin", *attack_gin, *_binds("poison")]
            assert main(["assets", attack, "--out", str(root / "assets"), *common]) == 0
            assert main(["poison", attack, "--assets", str(root / "assets"), "--out", str(poisoned), *common]) == 0
        stage = ["--clean", str(prepared), "--poisoned", str(poisoned), "--seed", seed]
        upstream = []
        if defense in ("fp", "nad"):
            cell(dataset, attack, "none")
            upstream = ["--upstream", str(runs / "none" / f"s{seed}")]
        if defense == "dbd":
            pretrained = root / "pretrained"
            assert main(["pretrain", "dbd", *stage, "--out", str(pretrained),
                         "--gin", "params/base.gin", f"params/datasets/{dataset}.gin", "params/defenses/dbd_pretrain.gin",
                         f"{PAPER}/common.gin", f"{PAPER}/dbd_pretrain.gin", *_binds("pretrain", "dbd")]) == 0
            upstream = ["--upstream", str(pretrained)]
        out = runs / defense / f"s{seed}"
        if not out.exists():
            assert main(["train", defense, *stage, *upstream, "--out", str(out),
                         "--curves", str(root / f"{defense}.json"), "--gin", *_train_gin(dataset, defense),
                         *_binds("train", defense)]) == 0

    for dataset, attack, defense in CELLS:
        cell(dataset, attack, defense)

    rows = {}
    for dataset, attack, defense in CELLS:
        rows.setdefault((dataset, attack), []).append(defense)
    for (dataset, attack), defenses in rows.items():
        root = tmp_path / dataset / attack
        trained = sorted(p.name for p in (root / "runs").iterdir())
        params = tmp_path / f"params-{dataset}-{attack}.yaml"
        params.write_text(yaml.safe_dump({"defenses": {"scratch": trained}, "seeds": [int(seed)]}))
        metrics = root / "metrics"
        assert main(["evaluate", "--clean", str(tmp_path / "prepared" / dataset), "--poisoned", str(root / "poisoned"),
                     "--runs", str(root / "runs"), "--params", str(params), "--out", str(metrics),
                     "--gin", "params/base.gin", f"{PAPER}/common.gin"]) == 0
        for defense in defenses:
            result = json.loads((metrics / f"{defense}.json").read_text())
            entry = result["seeds"][seed]
            assert result["attack"] == attack and 0 <= entry["acc"] <= 100 and 0 <= entry["asr"] <= 100
            assert entry["n_clean"] == {"cifar10": 20, "imagenet30": 30}[dataset]
    run = json.loads((tmp_path / "imagenet30" / "badnets" / "runs" / "none" / f"s{seed}" / "run.json").read_text())
    assert run["model"] == {"num_classes": 30, "in_chans": 3, "image_size": 224}
