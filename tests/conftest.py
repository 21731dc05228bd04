"""Shared fixtures: the repo root, gin set-up, and a tiny learnable prepared dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo_cwd(monkeypatch):
    """Run from the project root, as DVC does."""
    monkeypatch.chdir(REPO)
    return REPO


def configure(files: list[str], bindings: list[str] = ()) -> str:
    from asd_repro import config
    from asd_repro.plugins import load_all

    load_all()
    files = [str(REPO / f) for f in files]
    config.parse(files, list(bindings))
    return config.asked_config(files, bindings)


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
