"""Shared fixtures: the repo root, gin set-up, and a tiny learnable prepared dataset."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_gin_left_behind():
    """Every test ends with gin's bindings cleared, so a binding one test parses (a profile's
    ``models.create_model.init``, say) never reaches a later test: the suite's order cannot change a result."""
    yield
    import gin

    gin.clear_config()


@pytest.fixture
def dvc_on_path(monkeypatch):
    """The environment's `dvc` first on PATH (the virtualenv's bin), without analytics."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def one_thread():
    """Torch on one thread for the test (tiny convolutions run fastest so on a busy 2-core CPU)."""
    from attacksmoke import one_torch_thread

    with one_torch_thread():
        yield


@pytest.fixture
def repo_cwd(monkeypatch):
    """Run from the project root, as DVC does."""
    monkeypatch.chdir(REPO)
    return REPO


def configure(files: list[str], bindings: list[str] = ()) -> str:
    from asd_repro.core import config
    from asd_repro.cli.plugins import load_all

    load_all()
    files = [str(REPO / f) for f in files]
    config.parse(files, list(bindings))
    return config.asked_config(files, bindings)


def settings(obj, names) -> dict:
    """``obj``'s attributes ``names``, a collaborator (``engine.Optimizer``, ``SCE``, ``MixMatch``) as its settings."""
    return {k: getattr(getattr(obj, k), "settings", getattr(obj, k)) for k in names}


def defense_from(name: str, *files: str):
    """The defense ``name`` as the gin files under params/ (composed in that order, SEED = 100) configure it."""
    import gin

    from asd_repro.core import config
    from asd_repro.defenses import DEFENSES
    from asd_repro.cli.plugins import load_all

    load_all()
    config.parse([str(REPO / "params" / f) for f in files], ["SEED = 100"])
    try:
        return DEFENSES.create(name)
    finally:
        gin.clear_config()


def tiny_prepared(folder: Path, n_per_class: int = 12, n_test_per_class: int = 4, size: int = 12,
                  channels: int = 1, classes: int = 10) -> Path:
    """A learnable toy dataset: class c is a bright horizontal bar at row c (plus noise)."""
    from asd_repro.data import DatasetInfo, ImageSet, save_prepared

    rng = np.random.default_rng(0)

    def make(n):
        y = np.repeat(np.arange(classes), n)
        x = rng.integers(0, 60, (len(y), size, size, channels)).astype(np.uint8)
        for i, c in enumerate(y):
            x[i, 1 + c % (size - 2), :, :] = 230
        return ImageSet(x, y)

    info = DatasetInfo(name="toy", class_names=[str(c) for c in range(classes)], mean=(0.2,) * channels,
                       std=(0.3,) * channels, hflip=False, source="synthetic (tests)", split="synthetic")
    folder.mkdir(parents=True, exist_ok=True)
    save_prepared(folder, make(n_per_class), make(n_test_per_class), info)
    return folder


def tiny_model(num_classes: int = 3):
    """A slim ResNet for 8x8 grey images."""
    from asd_repro.models import create_model

    return create_model(num_classes, 1, 8, arch="slim_resnet", stem="cifar")


def tiny_data(n_per_class: int = 16, num_classes: int = 3, seed: int = 0):
    """(x, y, poison) of a learnable 8x8 toy set in which 4 non-target images carry a corner patch and label 0."""
    import torch

    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(num_classes), n_per_class)
    x = rng.integers(0, 60, size=(len(y), 1, 8, 8)).astype(np.uint8)
    x[np.arange(len(y)), 0, y, :] = 250  # a class-dependent bright row makes the task learnable
    poison = np.zeros(len(y), dtype=bool)
    poison[rng.choice(np.flatnonzero(y != 0), size=4, replace=False)] = True
    x[poison, 0, 6:8, 6:8] = 255  # a BadNets-like corner patch...
    y[poison] = 0  # ...and the target label
    return torch.from_numpy(x), torch.from_numpy(y), poison


def badnets_poisoned(folder: Path, gin_files: list[str], bindings: list[str] = ()) -> tuple[Path, Path]:
    """(clean, poisoned) folders: ``tiny_prepared`` poisoned by BadNets (seed 3, ratio 0.2) through the stages."""
    from asd_repro import stages

    clean = tiny_prepared(folder / "prepared")
    configure(gin_files, ["SEED = 3", "attacks.BadNets.ratio = 0.2", *bindings])
    stages.assets("badnets", clean, folder / "assets")
    stages.poison("badnets", clean, folder / "assets", folder / "poisoned")
    return clean, folder / "poisoned"


def tiny_context(checkpoints: Path | None = None, stop_after_epoch: int | None = None):
    """A defense's Context over ``tiny_data`` (3 classes, target 0), seeded as a fresh ``stages.train`` process."""
    import torch

    from asd_repro.defenses import Context
    from asd_repro.engine.augment import Augment, Normalize
    from asd_repro.engine.checkpoint import Checkpointer

    torch.manual_seed(7)  # a fresh process: the seed stages.train sets
    x, y, poison = tiny_data()
    test_x, test_y, _ = tiny_data(4, seed=1)
    return Context(
        train_x=x, train_y=y, poison=poison, test_x=test_x, test_y=test_y, bd_x=test_x[4:], bd_y=torch.zeros(8).long(),
        num_classes=3, augment=Augment(1, "reflect", True), normalize=Normalize((0.2,), (0.3,), "cpu"),
        new_model=tiny_model, generator=torch.Generator().manual_seed(7), checkpointer=Checkpointer(checkpoints, "k"),
        device=torch.device("cpu"), seed=7, stop_after_epoch=stop_after_epoch)


METRICS_ENV = {"torch": "2.0", "numpy": "1.0", "cpu": "X", "threads": 2, "device": "cpu"}


def write_metrics(root: Path, cells: dict, num_classes: int = 10, n_clean: int = 1000, n_asr: int = 900) -> Path:
    """``cells``: (dataset, attack, defense) -> {seed: (acc, asr)}, written as the evaluate stage writes them."""
    for (d, a, f), seeds in cells.items():
        p = root / d / a / f"{f}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"dataset": d, "attack": a, "defense": f, "num_classes": num_classes, "seeds": {
            str(s): {"acc": acc, "asr": asr, "n_clean": n_clean, "n_asr": n_asr, "environment": METRICS_ENV}
            for s, (acc, asr) in seeds.items()}}))
    return root
