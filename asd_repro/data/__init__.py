"""Datasets: a registry of sources, each materialised once as uint8 arrays plus a manifest.

A prepared dataset is a folder with ``train_x.npy`` (N,H,W,C uint8), ``train_y.npy`` (N, int64),
``test_x.npy``, ``test_y.npy`` and ``manifest.json`` (source, class names, normalisation,
whether horizontal flips are label-preserving, and the sha256 of every array).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asd_repro.core.errors import UserError
from asd_repro.core.io import load_arrays, read_json, save_arrays, write_json
from asd_repro.core.registry import Registry

DATASETS = Registry("dataset", "asd_repro.data")
register_dataset = DATASETS.register


@dataclass
class ImageSet:
    """Images as uint8 (N, H, W, C) and integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self):
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise ValueError(f"images must be uint8 (N,H,W,C), got {self.x.dtype} {self.x.shape}")
        self.y = np.asarray(self.y, dtype=np.int64)
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DatasetInfo:
    """Facts about a dataset that later stages need (recorded in the manifest)."""

    name: str
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    source: str
    split: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetSource:
    """A plug-in that reads one dataset from its raw form (download, system copy or local folder)."""

    def load(self, raw_root: Path) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        raise NotImplementedError


@dataclass
class Prepared:
    train: ImageSet
    test: ImageSet
    info: DatasetInfo


def save_prepared(folder: Path, train: ImageSet, test: ImageSet, info: DatasetInfo) -> None:
    files = save_arrays(folder, {"train_x": train.x, "train_y": train.y, "test_x": test.x, "test_y": test.y})
    manifest = {
        "dataset": info.name, "source": info.source, "split": info.split,
        "num_classes": info.num_classes, "class_names": list(info.class_names),
        "image_shape": list(train.x.shape[1:]), "mean": list(info.mean), "std": list(info.std),
        "hflip": info.hflip, "counts": {"train": len(train), "test": len(test)},
        "train_per_class": np.bincount(train.y, minlength=info.num_classes).tolist(),
        "test_per_class": np.bincount(test.y, minlength=info.num_classes).tolist(),
        **info.extra, "files": files,
    }
    write_json(folder / "manifest.json", manifest)


def info_from_manifest(m: dict[str, Any]) -> DatasetInfo:
    return DatasetInfo(name=m["dataset"], class_names=m["class_names"], mean=tuple(m["mean"]), std=tuple(m["std"]),
                       hflip=bool(m["hflip"]), source=m["source"], split=m["split"])


def load_prepared(folder: str | Path) -> Prepared:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: prepared dataset not found; run `dvc repro` (stage prepare) first")
    m = read_json(folder / "manifest.json")
    a = load_arrays(folder, m, producer=f"the prepare stage of {m.get('dataset', folder.name)}")
    return Prepared(ImageSet(a["train_x"], a["train_y"]), ImageSet(a["test_x"], a["test_y"]), info_from_manifest(m))


def stratified_split(y: np.ndarray, test_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): ``test_per_class`` random samples of every class go to test."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) <= test_per_class:
            raise UserError(f"class {c} has {len(idx)} samples, cannot hold out {test_per_class} for test")
        test.append(rng.choice(idx, size=test_per_class, replace=False))
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    return train, test


def to_nhwc_uint8(x: np.ndarray, h: int, w: int, c: int) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x.reshape(-1, h, w, c))
