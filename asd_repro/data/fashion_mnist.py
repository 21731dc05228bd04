"""fashion_mnist: Zalando's Fashion-MNIST (60,000 train / 10,000 test grey 28x28 images, 10 clothing classes).

The four original IDX ``.gz`` files are read by a small numpy reader, from the first place that has all four:

1. ``<raw_root>/fashion_mnist/`` (a copy the user put there);
2. ``system_dir``, by default the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
3. ``<raw_root>/fashion_mnist_download/``, downloaded by torchvision from its mirror with its md5 checksums.

The official train/test split is kept as is.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.data import DatasetInfo, DatasetSource, ImageSet, register_dataset

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# IDX magic numbers: two zero bytes, type code 0x08 (unsigned byte), number of dimensions.
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Reads one gzipped IDX file of unsigned bytes.

    Args:
        path: The ``.gz`` file.
        magic: The expected magic number; its low byte is the number of dimensions.

    Returns:
        The array, shaped by the dimensions in the header.

    Raises:
        UserError: The file is unreadable, truncated, or not an IDX file of that kind.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"{path}: not a readable gzip file ({e}); delete it and fetch it again") from None
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise UserError(f"{path}: not an IDX file with magic number {magic:#010x}; delete it and fetch it again")
    shape = tuple(int.from_bytes(raw[4 * (i + 1):4 * (i + 2)], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise UserError(f"{path}: header announces shape {shape} but {len(raw) - header} data bytes follow; "
                        "the file is truncated or corrupt, delete it and fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_split(folder: Path, images_file: str, labels_file: str) -> ImageSet:
    x = read_idx(folder / images_file, IMAGES_MAGIC)
    y = read_idx(folder / labels_file, LABELS_MAGIC)
    if x.shape[1:] != (28, 28):
        raise UserError(f"{folder / images_file}: images are {x.shape[1:]}, Fashion-MNIST images are (28, 28)")
    if len(x) != len(y):
        raise UserError(f"{folder}: {images_file} holds {len(x)} images but {labels_file} {len(y)} labels")
    if len(y) and y.max() >= len(CLASS_NAMES):
        raise UserError(f"{folder / labels_file}: label {y.max()} is out of range 0..{len(CLASS_NAMES) - 1}")
    return ImageSet(x[..., None].copy(), y)


def has_all_files(folder: Path) -> bool:
    return all((folder / name).is_file() for pair in FILES.values() for name in pair)


def download(dest: Path) -> None:
    """Downloads the four ``.gz`` files into ``dest`` with torchvision (md5-checked; kept files are not refetched)."""
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    for filename, md5 in FashionMNIST.resources:
        download_url(FashionMNIST.mirrors[0] + filename, dest, filename=filename, md5=md5)


@register_dataset("fashion_mnist")
@configurable(module="datasets")
class FashionMnist(DatasetSource):
    """Fashion-MNIST from a local copy, the Debian package or a download, in that order.

    Args:
        system_dir: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
    """

    def __init__(self, system_dir: str | Path = SYSTEM_DIR):
        self.system_dir = Path(system_dir)

    def find_files(self, raw_root: Path) -> tuple[Path, str]:
        """The folder holding the four files and a description of where it came from (downloading if needed)."""
        local = raw_root / "fashion_mnist"
        if has_all_files(local):
            return local, f"IDX files from {local}"
        if has_all_files(self.system_dir):
            return self.system_dir, f"IDX files from {self.system_dir} (Debian package dataset-fashion-mnist)"
        downloaded = raw_root / "fashion_mnist_download"
        try:
            download(downloaded)
        except (OSError, RuntimeError) as e:
            raise UserError(
                f"fashion_mnist: no local copy in {local} or {self.system_dir} and download failed "
                f"({type(e).__name__}; offline?); connect to the internet or `apt-get install dataset-fashion-mnist`"
            ) from e
        return downloaded, f"IDX files downloaded by torchvision into {downloaded} (md5-checked)"

    def load(self, raw_root: Path) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        folder, source = self.find_files(Path(raw_root))
        train, test = (read_split(folder, *FILES[split]) for split in ("train", "test"))
        info = DatasetInfo(
            name="fashion_mnist", class_names=list(CLASS_NAMES), mean=(0.2860,), std=(0.3530,), hflip=True,
            source=source, split="official Fashion-MNIST train/test split",
        )
        return train, test, info
