"""The paper profile's code path (ResNet-18, CIFAR stem, paper optimiser) on tiny real-format CIFAR-10."""

import json

import torch

from asd_repro.cli import main

from realformat import write_cifar10
from test_models import _last_bn_scales

PAPER = ["params/base.gin", "params/datasets/cifar10.gin", "params/profiles/paper/common.gin"]


def test_paper_profile_runs_on_real_format_cifar10(tmp_path, repo_cwd):
    written = write_cifar10(tmp_path / "raw", n_train_per_class=5, n_test_per_class=2)
    prepared, assets, poisoned = tmp_path / "prepared", tmp_path / "assets", tmp_path / "poisoned"
    run = tmp_path / "run"
    assert main(["prepare", "cifar10", "--raw-root", str(tmp_path / "raw"), "--out", str(prepared),
                 "--gin", "params/datasets/cifar10.gin"]) == 0
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 50, "test": 20} and manifest["image_shape"] == [32, 32, 3]
    assert manifest["class_names"] == written["class_names"]

    attack_gin = [*PAPER[:2], "params/attacks/badnets.gin", "params/profiles/paper/attacks.gin"]
    assert main(["assets", "badnets", "--clean", str(prepared), "--out", str(assets), "--seed", "100",
                 "--gin", *attack_gin]) == 0
    assert main(["poison", "badnets", "--clean", str(prepared), "--assets", str(assets), "--out", str(poisoned),
                 "--seed", "100", "--gin", *attack_gin]) == 0
    meta = json.loads((poisoned / "meta.json").read_text())
    assert meta["target"] == 3 and meta["counts"]["test_asr_set"] == 18  # 20 test images minus 2 of class 3

    assert main(["train", "none", "--clean", str(prepared), "--poisoned", str(poisoned), "--out", str(run),
                 "--curves", str(tmp_path / "curves.json"), "--seed", "100",
                 "--gin", *PAPER[:2], "params/defenses/none.gin", PAPER[2], "params/profiles/paper/none.gin",
                 "--bind", "defenses.NoDefense.epochs = 1", "--bind", "stages.train.device = 'cpu'"]) == 0
    operative = (run / "operative_config.gin").read_text()
    assert "create_model.arch = 'resnet18'" in operative  # gin writes minimal selectors
    assert "Optimizer.lr = 0.1" in operative and "Optimizer.schedule = 'multistep'" in operative
    assert json.loads((run / "run.json").read_text())["model"] == {"num_classes": 10, "in_chans": 3, "image_size": 32}
    saved = torch.load(run / "model.pt", weights_only=True)["model_kwargs"]
    assert saved == {"num_classes": 10, "in_chans": 3, "image_size": 32, "arch": "resnet18", "stem": "cifar"}
    assert "defenses.NoDefense.epochs = 1" in (run / "config.gin").read_text()

    out = tmp_path / "metrics"
    params = tmp_path / "params.yaml"
    params.write_text("defenses:\n  scratch: [none]\nseeds: [100]\n")
    runs, poisoned_root = tmp_path / "runs", tmp_path / "poisoned_root"  # the pipeline's layout: one folder a seed
    (runs / "none").mkdir(parents=True)
    poisoned_root.mkdir()
    run.rename(runs / "none" / "s100")
    poisoned.rename(poisoned_root / "s100")
    assert main(["evaluate", "--clean", str(prepared), "--poisoned", str(poisoned_root), "--runs", str(runs),
                 "--params", str(params), "--out", str(out), "--gin", "params/base.gin", PAPER[2],
                 "--bind", "stages.evaluate.device = 'cpu'"]) == 0
    metrics = json.loads((out / "none.json").read_text())
    seed = metrics["seeds"]["100"]
    assert seed["n_clean"] == 20 and seed["n_asr"] == 18 and 0 <= seed["acc"] <= 100
    assert metrics["num_classes"] == 10 and seed["environment"]["torch"] == torch.__version__


def test_paper_model_is_the_cifar_resnet18():
    from asd_repro.models import create_model

    m = create_model(num_classes=10, in_chans=3, image_size=32, arch="resnet18", stem="auto")
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1)
    assert type(m.maxpool).__name__ == "Identity"
    assert [len(getattr(m, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert m.fc.in_features == 512 and m.fc.out_features == 10
    big = create_model(num_classes=30, in_chans=3, image_size=224, arch="resnet18", stem="auto")
    assert big.conv1.kernel_size == (7, 7) and type(big.maxpool).__name__ == "MaxPool2d"
    grey = create_model(num_classes=10, in_chans=1, image_size=28, arch="slim_resnet", stem="cifar")
    assert grey.conv1.in_channels == 1 and grey.fc.in_features == 128


def _composed(files, configurable):
    """The model (or attack) a stage would build from these gin files."""
    import gin

    from asd_repro.core import config
    from asd_repro.cli.plugins import load_all

    load_all()
    config.parse(files, ["SEED = 100"])
    try:
        return configurable()
    finally:
        gin.clear_config()


def test_the_paper_profile_builds_the_authors_initialisation_and_mini_timms(repo_cwd):
    from asd_repro.models import create_model

    def build():
        torch.manual_seed(0)
        return create_model(num_classes=10, in_chans=3, image_size=32)

    paper = _composed([*PAPER, "params/profiles/paper/none.gin"], build)
    mini = _composed(["params/base.gin", "params/datasets/cifar10.gin", "params/profiles/mini/common.gin"], build)
    assert all(bool((w == 1).all()) for w in _last_bn_scales(paper))  # the authors': BN scales 1
    assert paper.conv1.weight.std().item() > 0.05  # kaiming-normal fan_out: std sqrt(2 / (64 * 9)) = 0.059
    assert all(bool((w == 0).all()) for w in _last_bn_scales(mini))  # timm's zero_init_last, which mini binds


def test_the_clb_proxy_is_the_profiles_backbone(repo_cwd):
    from asd_repro.attacks import ATTACKS

    def proxy(profile):
        files = ["params/base.gin", "params/datasets/cifar10.gin", "params/attacks/clb.gin",
                 f"params/profiles/{profile}/attacks.gin"]
        return _composed(files, lambda: ATTACKS.create("clb")).proxy

    def backbone(profile):
        from asd_repro.models import create_model

        files = ["params/base.gin", "params/datasets/cifar10.gin", f"params/profiles/{profile}/common.gin"]
        return _composed(files, lambda: create_model(num_classes=10, in_chans=3, image_size=32).create_kwargs["arch"])

    for profile in ("paper", "mini", "smoke"):
        assert proxy(profile) == backbone(profile), profile
    assert proxy("paper") == "resnet18"
