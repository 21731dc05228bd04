"""imagenet30: a 30-class subset of ImageNet-1k (about 39,000 train / 1,500 val photos), read from a local copy.

ImageNet cannot be downloaded without an account, so the user links their copy in torchvision's ImageFolder
layout: ``<raw_root>/imagenet/train/<wnid>/*.JPEG`` and ``<raw_root>/imagenet/val/<wnid>/*.JPEG`` (the
validation images sorted into class folders, e.g. by the usual ``valprep.sh``). Only the 30 classes listed in
``imagenet30_classes.txt`` (next to this file; label i is its i-th wnid) are read. Every photo gets the standard
ImageNet evaluation preprocessing, as torchvision's ``Resize(resize)`` + ``CenterCrop(image_size)`` compute it:
RGB, shorter side resized to ``resize`` (PIL bilinear), centre crop of ``image_size`` x ``image_size``. The
official ImageNet validation set is the test split.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.data import DatasetInfo, DatasetSource, ImageSet, register_dataset

CLASS_FILE = Path(__file__).with_name("imagenet30_classes.txt")
EXTENSIONS = {".jpeg", ".jpg", ".png"}


def class_wnids() -> list[str]:
    """The 30 wnids in label order, from the versioned class list."""
    lines = (line.strip() for line in CLASS_FILE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def lemmas(wnids: list[str]) -> list[str]:
    """The first English name of each wnid, from the table packaged with timm (found without importing timm)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        return list(wnids)
    table = Path(spec.origin).parent / "data" / "_info" / "imagenet_synset_to_lemma.txt"
    if not table.is_file():
        return list(wnids)
    names = dict(line.split("\t", 1) for line in table.read_text().splitlines() if "\t" in line)
    return [names.get(w, w).split(",")[0] for w in wnids]


def resize_center_crop(img: Image.Image, resize: int, size: int) -> np.ndarray:
    """Shorter side to ``resize`` then the central ``size`` x ``size`` crop, rounding as torchvision does."""
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    img = img.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))


@register_dataset("imagenet30")
@configurable(module="datasets")
class ImageNet30(DatasetSource):
    """Thirty ImageNet classes from a local ImageFolder copy at ``<raw_root>/imagenet``.

    Args:
        image_size: Side in pixels of the centre crop.
        resize: Length in pixels the shorter side is resized to before cropping.
    """

    def __init__(self, image_size: int = 224, resize: int = 256):
        if image_size > resize:
            raise UserError(f"datasets.ImageNet30.image_size = {image_size} exceeds resize = {resize}; the centre "
                            "crop must fit inside the resized image, lower image_size or raise resize")
        self.image_size = image_size
        self.resize = resize

    def samples(self, folder: Path, wnids: list[str]) -> list[tuple[Path, int]]:
        hint = (f"symlink your ImageNet train/ and val/ folders (one sub-folder per wnid) to {folder.parent}/train "
                f"and {folder.parent}/val")
        if not folder.is_dir():
            raise UserError(f"imagenet30: {folder} not found; {hint}")
        samples = []
        for label, wnid in enumerate(wnids):
            class_dir = folder / wnid
            files = [p for p in sorted(class_dir.glob("*")) if p.suffix.lower() in EXTENSIONS]
            if not files:
                raise UserError(f"imagenet30: {class_dir} is missing or holds no images; {hint}")
            samples += [(p, label) for p in files]
        return samples

    def read(self, samples: list[tuple[Path, int]], desc: str) -> ImageSet:
        x = np.empty((len(samples), self.image_size, self.image_size, 3), dtype=np.uint8)
        for i, (path, _) in enumerate(tqdm(samples, desc=desc, unit="img")):
            try:
                with Image.open(path) as img:
                    x[i] = resize_center_crop(img.convert("RGB"), self.resize, self.image_size)
            except OSError as e:
                raise UserError(f"{path}: unreadable image ({e}); replace or delete it") from None
        return ImageSet(x, np.array([label for _, label in samples], dtype=np.int64))

    def load(self, raw_root: Path) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        root = Path(raw_root) / "imagenet"
        wnids = class_wnids()
        train_samples, test_samples = self.samples(root / "train", wnids), self.samples(root / "val", wnids)
        train = self.read(train_samples, "imagenet30 train")
        test = self.read(test_samples, "imagenet30 val")
        info = DatasetInfo(
            name="imagenet30", class_names=lemmas(wnids), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
            hflip=True, source=f"local ImageNet copy at {root} (ImageFolder layout)",
            split="official ImageNet train / val split, restricted to the 30 classes of imagenet30_classes.txt",
            extra={"wnids": wnids,
                   "preprocess": f"RGB, shorter side to {self.resize} (PIL bilinear), centre crop {self.image_size}"},
        )
        return train, test, info
