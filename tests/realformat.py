"""Writers of tiny datasets in the real on-disk formats, so the loaders are tested on the code path real data takes.

Each writer returns what it wrote (arrays for lossless formats, image paths for the others) so tests can compare.
"""

from __future__ import annotations

import csv
import gzip
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_cifar10(raw_root: Path, n_train_per_class: int = 2, n_test_per_class: int = 1, seed: int = 0) -> dict:
    """Writes ``<raw_root>/cifar10/cifar-10-batches-py`` as the python-pickle version of CIFAR-10.

    Returns:
        ``train_x``/``test_x`` (N, 32, 32, 3) uint8 and ``train_y``/``test_y`` in file order, and ``class_names``.
    """
    rng = np.random.default_rng(seed)
    class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    folder = Path(raw_root) / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)

    def make(n_per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.permutation(np.repeat(np.arange(10), n_per_class))
        return rng.integers(0, 256, size=(len(y), 32, 32, 3), dtype=np.uint8), y

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        # The real files were pickled by Python 2: bytes keys, a list of int labels, channel-planar rows.
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in y],
                 b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(len(y))]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))

    train_x, train_y = make(n_train_per_class)
    for i, idx in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        dump(f"data_batch_{i}", train_x[idx], train_y[idx])
    test_x, test_y = make(n_test_per_class)
    dump("test_batch", test_x, test_y)
    meta = {b"label_names": [n.encode() for n in class_names], b"num_cases_per_batch": 10000, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "class_names": class_names}


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """Writes a uint8 array as a gzipped IDX file (magic 0x0000 08 <ndim>, big-endian int32 dimensions)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fashion_mnist(folder: Path, n_train_per_class: int = 2, n_test_per_class: int = 1, seed: int = 0) -> dict:
    """Writes the four Fashion-MNIST IDX ``.gz`` files into ``folder``.

    Returns:
        ``train_x``/``test_x`` (N, 28, 28) uint8 and ``train_y``/``test_y``, in file order.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train_per_class), ("test", "t10k", n_test_per_class)):
        y = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), n))
        x = rng.integers(0, 256, size=(len(y), 28, 28), dtype=np.uint8)
        write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
        out[f"{split}_x"], out[f"{split}_y"] = x, y.astype(np.int64)
    return out


def write_gtsrb(raw_root: Path, n_classes: int = 43, n_train_per_class: int = 1, n_test: int = 5,
                sizes: tuple[tuple[int, int], ...] = ((29, 31), (40, 48), (15, 15), (64, 50)), seed: int = 0) -> dict:
    """Writes ``<raw_root>/gtsrb`` in torchvision's GTSRB layout: .ppm photos of several sizes and the CSV files.

    The region-of-interest boxes in the CSVs are one pixel inside each border, like the real ones.

    Returns:
        ``train`` and ``test``: lists of (H, W, 3) uint8 arrays in the order torchvision lists the files, and
        ``train_y``/``test_y``.
    """
    rng = np.random.default_rng(seed)
    base = Path(raw_root) / "gtsrb"
    fields = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2", "ClassId"]

    def photo(i: int) -> np.ndarray:
        h, w = sizes[i % len(sizes)]
        return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)

    def write_csv(path: Path, rows: list[list]) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f, delimiter=";")
            writer.writerow(fields)
            writer.writerows(rows)

    out = {"train": [], "train_y": [], "test": [], "test_y": []}
    for c in range(n_classes):
        class_dir = base / "GTSRB" / "Training" / f"{c:05d}"
        class_dir.mkdir(parents=True)
        rows = []
        for j in range(n_train_per_class):
            x = photo(c * n_train_per_class + j)
            name = f"{j // 30:05d}_{j % 30:05d}.ppm"
            Image.fromarray(x).save(class_dir / name)
            rows.append([name, x.shape[1], x.shape[0], 1, 1, x.shape[1] - 2, x.shape[0] - 2, c])
            out["train"].append(x)
            out["train_y"].append(c)
        write_csv(class_dir / f"GT-{c:05d}.csv", rows)
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = []
    for i in range(n_test):
        x, c = photo(i + 1), int(rng.integers(n_classes))
        Image.fromarray(x).save(images / f"{i:05d}.ppm")
        rows.append([f"{i:05d}.ppm", x.shape[1], x.shape[0], 1, 1, x.shape[1] - 2, x.shape[0] - 2, c])
        out["test"].append(x)
        out["test_y"].append(c)
    write_csv(base / "GT-final_test.csv", rows)
    return out


def write_imagenet(raw_root: Path, wnids: list[str], n_train_per_class: int = 2, n_val_per_class: int = 1,
                   sizes: tuple[tuple[int, int], ...] = ((20, 30), (33, 18), (16, 16)), seed: int = 0) -> dict:
    """Writes ``<raw_root>/imagenet/{train,val}/<wnid>/*.JPEG`` (ImageFolder layout) with tiny JPEG photos.

    Returns:
        ``train`` and ``val``: lists of (path, label) in the order the loader should read them (label = position
        of the wnid in ``wnids``, files sorted by name).
    """
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train_per_class), ("val", n_val_per_class)):
        out[split] = []
        for label, wnid in enumerate(wnids):
            class_dir = Path(raw_root) / "imagenet" / split / wnid
            class_dir.mkdir(parents=True)
            for j in range(n):
                h, w = sizes[(label + j) % len(sizes)]
                path = class_dir / f"{wnid}_{j}.JPEG"
                Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, quality=90)
                out[split].append((path, label))
    return out
