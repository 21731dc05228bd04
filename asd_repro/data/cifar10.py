"""cifar10: CIFAR-10 (50,000 train / 10,000 test colour 32x32 images, 10 classes), the ASD paper's main benchmark.

Read from the "python version" folder ``<raw_root>/cifar10/cifar-10-batches-py/`` (``data_batch_1..5``,
``test_batch``, ``batches.meta``). When that folder is missing, the archive is downloaded from the authors'
site by torchvision (md5-checked) and extracted there. Normalisation constants are those of the ASD reference
code (``config/baseline_asd.yaml``). The official train/test split is kept as is.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.data import DatasetInfo, DatasetSource, ImageSet, register_dataset

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


def read_pickle(path: Path) -> dict[bytes, Any]:
    """Unpickles one batch file (written by Python 2, hence ``encoding='bytes'`` and bytes keys)."""
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise UserError(f"{path}: missing; the {FOLDER} folder is incomplete, delete it and fetch it again") from None
    except Exception as e:  # a damaged pickle can fail with almost any exception type
        raise UserError(f"{path}: not a readable CIFAR-10 batch ({type(e).__name__}); delete the {FOLDER} folder "
                        "and fetch it again") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a CIFAR-10 batch (a {type(obj).__name__}, not a dict); fetch it again")
    return obj


def read_batches(folder: Path, names: list[str], num_classes: int) -> ImageSet:
    xs, ys = [], []
    for name in names:
        path = folder / name
        batch = read_pickle(path)
        try:
            x = np.asarray(batch[b"data"])
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except KeyError as e:
            raise UserError(f"{path}: CIFAR-10 batch without key {e}; fetch the {FOLDER} folder again") from None
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(x) != len(y):
            raise UserError(f"{path}: expected uint8 data of shape (N, 3072) and N labels, got {x.dtype} {x.shape} "
                            f"and {len(y)} labels; fetch the {FOLDER} folder again")
        if len(y) and not 0 <= y.min() <= y.max() < num_classes:
            raise UserError(f"{path}: labels outside 0..{num_classes - 1}; fetch the {FOLDER} folder again")
        # Rows are channel-planar: 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
        xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(y)
    return ImageSet(np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys))


def download(dest: Path) -> None:
    """Downloads and extracts the archive into ``dest`` with torchvision (md5-checked)."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, download_root=str(dest), md5=MD5)


@register_dataset("cifar10")
@configurable(module="datasets")
class Cifar10(DatasetSource):
    """CIFAR-10 from ``<raw_root>/cifar10/cifar-10-batches-py``, downloaded there when missing."""

    def load(self, raw_root: Path) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        root = Path(raw_root) / "cifar10"
        folder = root / FOLDER
        source = f"python-pickle batches from {folder}"
        if not folder.is_dir():
            try:
                download(root)
            except (OSError, RuntimeError, tarfile.TarError) as e:
                raise UserError(
                    f"cifar10: {folder} not found and download failed ({type(e).__name__}; offline?); connect to "
                    f"the internet or put the extracted {FOLDER} folder (from {URL}) at {folder}"
                ) from e
            source = f"{URL} (md5 {MD5}) downloaded by torchvision and extracted to {folder}"
        meta = read_pickle(folder / "batches.meta")
        try:
            class_names = [n.decode() for n in meta[b"label_names"]]
        except (KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise UserError(f"{folder / 'batches.meta'}: no list of label_names; fetch the {FOLDER} folder again")
        train = read_batches(folder, TRAIN_BATCHES, len(class_names))
        test = read_batches(folder, TEST_BATCHES, len(class_names))
        info = DatasetInfo(
            name="cifar10", class_names=class_names, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
            hflip=True, source=source, split="official CIFAR-10 train/test split",
        )
        return train, test, info
