"""gtsrb: the German Traffic Sign Recognition Benchmark (39,209 train / 12,630 test photos, 43 sign classes).

The on-disk layout is torchvision's (``torchvision.datasets.GTSRB``), under ``<raw_root>/gtsrb/``::

    GTSRB/Training/00000/*.ppm ... GTSRB/Training/00042/*.ppm   (label = folder name)
    GTSRB/Final_Test/Images/*.ppm
    GT-final_test.csv                                           (';'-separated, columns Filename ... ClassId)

When a part is missing, torchvision downloads and extracts the three official archives (md5-checked). The photos
vary in size (15x15 to 250x250 pixels); each WHOLE photo is resized to ``image_size`` x ``image_size`` with PIL's
bilinear filter, ignoring the region-of-interest boxes in the CSV files, as torchvision-based backdoor code does
(BackdoorBox resizes whole GTSRB images to 32x32). The public ASD and DBD code (github.com/KuofengGao/ASD,
github.com/SCLBD/DBD) only ship CIFAR-10 loaders and give no GTSRB statistics, so the normalisation constants
are the GTSRB training-set values common in public backdoor code. Horizontal flips are off: they turn "keep left"
into "keep right" and mirror the digits of speed limits (BackdoorBox does flip GTSRB in its examples; we do not).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.data import DatasetInfo, DatasetSource, ImageSet, register_dataset

ARCHIVES_URL = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"
CLASS_NAMES = [
    "Speed limit (20km/h)", "Speed limit (30km/h)", "Speed limit (50km/h)", "Speed limit (60km/h)",
    "Speed limit (70km/h)", "Speed limit (80km/h)", "End of speed limit (80km/h)", "Speed limit (100km/h)",
    "Speed limit (120km/h)", "No passing", "No passing for vehicles over 3.5 metric tons",
    "Right-of-way at the next intersection", "Priority road", "Yield", "Stop", "No vehicles",
    "Vehicles over 3.5 metric tons prohibited", "No entry", "General caution", "Dangerous curve to the left",
    "Dangerous curve to the right", "Double curve", "Bumpy road", "Slippery road", "Road narrows on the right",
    "Road work", "Traffic signals", "Pedestrians", "Children crossing", "Bicycles crossing", "Beware of ice/snow",
    "Wild animals crossing", "End of all speed and passing limits", "Turn right ahead", "Turn left ahead",
    "Ahead only", "Go straight or right", "Go straight or left", "Keep right", "Keep left", "Roundabout mandatory",
    "End of no passing", "End of no passing by vehicles over 3.5 metric tons",
]


def layout(base: Path) -> dict[str, Path]:
    return {
        "train": base / "GTSRB" / "Training",
        "test": base / "GTSRB" / "Final_Test" / "Images",
        "test_csv": base / "GT-final_test.csv",
    }


def download(raw_root: Path) -> None:
    """Downloads and extracts the official archives into ``<raw_root>/gtsrb`` with torchvision (md5-checked)."""
    from torchvision.datasets import GTSRB

    for split in ("train", "test"):
        GTSRB(root=str(raw_root), split=split, download=True)


def train_samples(folder: Path) -> list[tuple[Path, int]]:
    samples = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        if not (class_dir.name.isdigit() and int(class_dir.name) < len(CLASS_NAMES)):
            raise UserError(f"{class_dir}: not a GTSRB class folder (00000..00042); remove it")
        images = [(p, int(class_dir.name)) for p in sorted(class_dir.glob("*.ppm"))]
        if not images:
            raise UserError(f"{class_dir}: a class folder without .ppm images; extract GTSRB-Training_fixed.zip "
                            "again")
        samples += images
    if not samples:
        raise UserError(f"{folder}: no .ppm images in class folders 00000..00042; extract GTSRB-Training_fixed.zip "
                        "again")
    return samples


def test_samples(folder: Path, csv_path: Path) -> list[tuple[Path, int]]:
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";", skipinitialspace=True))
        samples = [(folder / row["Filename"], int(row["ClassId"])) for row in rows]
    except (KeyError, ValueError, TypeError, csv.Error):
        raise UserError(f"{csv_path}: not the GTSRB test ground truth (';'-separated with Filename and ClassId "
                        "columns); extract GTSRB_Final_Test_GT.zip again") from None
    bad = [label for _, label in samples if not 0 <= label < len(CLASS_NAMES)]
    if bad:
        raise UserError(f"{csv_path}: ClassId {bad[0]} is out of range 0..{len(CLASS_NAMES) - 1}")
    return samples


def read_images(samples: list[tuple[Path, int]], size: int, desc: str) -> ImageSet:
    x = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(tqdm(samples, desc=desc, unit="img")):
        try:
            with Image.open(path) as img:
                x[i] = np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))
        except OSError as e:
            raise UserError(f"{path}: unreadable image ({e}); extract the GTSRB archives again") from None
    return ImageSet(x, np.array([label for _, label in samples], dtype=np.int64))


@register_dataset("gtsrb")
@configurable(module="datasets")
class Gtsrb(DatasetSource):
    """GTSRB in torchvision's layout under ``<raw_root>/gtsrb``, downloaded there when missing.

    Args:
        image_size: Side in pixels that every whole photo is resized to.
    """

    def __init__(self, image_size: int = 32):
        self.image_size = image_size

    def load(self, raw_root: Path) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        base = Path(raw_root) / "gtsrb"
        paths = layout(base)
        source = f"GTSRB .ppm files and GT-final_test.csv under {base} (torchvision layout)"
        if not all(p.exists() for p in paths.values()):
            try:
                download(Path(raw_root))
            except (OSError, RuntimeError) as e:
                raise UserError(
                    f"gtsrb: {base} is incomplete and download failed ({type(e).__name__}; offline?); connect to the "
                    "internet or extract GTSRB-Training_fixed.zip, GTSRB_Final_Test_Images.zip and "
                    f"GTSRB_Final_Test_GT.zip from {ARCHIVES_URL} into {base}"
                ) from e
            source = f"official archives from {ARCHIVES_URL} downloaded by torchvision (md5-checked) into {base}"
        missing = [p for p in paths.values() if not p.exists()]
        if missing:
            raise UserError(f"gtsrb: {missing[0]} is missing; extract the GTSRB archives from {ARCHIVES_URL} into "
                            f"{base}")
        train = read_images(train_samples(paths["train"]), self.image_size, "gtsrb train")
        test = read_images(test_samples(paths["test"], paths["test_csv"]), self.image_size, "gtsrb test")
        info = DatasetInfo(
            name="gtsrb", class_names=list(CLASS_NAMES), mean=(0.3337, 0.3064, 0.3171), std=(0.2672, 0.2564, 0.2629),
            hflip=False, source=source,
            split="official GTSRB train (Final_Training) / test (Final_Test) split",
            extra={"preprocess": f"whole image (no ROI crop) resized to {self.image_size}x{self.image_size} "
                                 "with PIL bilinear"},
        )
        return train, test, info
