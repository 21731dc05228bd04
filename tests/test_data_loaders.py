"""Dataset plug-ins, each run through ``load()`` on tiny files in the real on-disk format (no network)."""

from __future__ import annotations

import ast
import gzip
import importlib.util
import random
import urllib.error
from pathlib import Path

import gin
import numpy as np
import pytest
from PIL import Image
from realformat import write_cifar10, write_fashion_mnist, write_gtsrb, write_idx_gz, write_imagenet

from asd_repro.data import DATASETS, cifar10, fashion_mnist, gtsrb, imagenet30
from asd_repro.data.mnist5k import Mnist5k
from asd_repro.engine import augment  # noqa: F401  (registers engine.Augment for the dataset gin files)
from asd_repro.core.errors import UserError

PARAMS = Path(__file__).resolve().parents[1] / "params" / "datasets"


def offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def no_download(*args, **kwargs):
    raise AssertionError("the loader tried to download although a local copy exists")


def test_every_plugin_is_registered():
    assert {"mnist5k", "fashion_mnist", "cifar10", "gtsrb", "imagenet30"} <= set(DATASETS.names())


# --- CIFAR-10 -----------------------------------------------------------------------------------------------------


def test_cifar10_reads_the_pickle_batches_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "download", no_download)
    written = write_cifar10(tmp_path, n_train_per_class=2, n_test_per_class=1)
    train, test, info = cifar10.Cifar10().load(tmp_path)
    assert train.x.shape == (20, 32, 32, 3) and train.x.dtype == np.uint8 and test.x.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(train.x, written["train_x"])
    np.testing.assert_array_equal(train.y, written["train_y"])
    np.testing.assert_array_equal(test.x, written["test_x"])
    np.testing.assert_array_equal(test.y, written["test_y"])
    assert info.class_names == written["class_names"] and info.num_classes == 10
    assert info.mean == (0.4914, 0.4822, 0.4465) and info.std == (0.2023, 0.1994, 0.2010) and info.hflip


def test_cifar10_downloads_into_raw_root_when_the_folder_is_missing(tmp_path, monkeypatch):
    calls = []

    def fake_download(dest):
        calls.append(dest)
        write_cifar10(dest.parent)

    monkeypatch.setattr(cifar10, "download", fake_download)
    train, _, info = cifar10.Cifar10().load(tmp_path)
    assert calls == [tmp_path / "cifar10"] and len(train) == 20 and cifar10.URL in info.source


def test_cifar10_offline_error_names_the_folder_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "download", offline)
    with pytest.raises(UserError) as e:
        cifar10.Cifar10().load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "cifar10" / "cifar-10-batches-py") in msg
    assert "internet" in msg and "put the extracted cifar-10-batches-py folder" in msg


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"not a pickle at all"])
def test_cifar10_corrupt_batch_is_a_user_error_naming_it(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(cifar10, "download", no_download)
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(damage(batch.read_bytes()))
    with pytest.raises(UserError, match="data_batch_3"):
        cifar10.Cifar10().load(tmp_path)


# --- Fashion-MNIST ------------------------------------------------------------------------------------------------


def assert_same_as_written(loaded, written):
    train, test, info = loaded
    assert train.x.shape == (20, 28, 28, 1) and train.x.dtype == np.uint8 and test.x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(train.x[..., 0], written["train_x"])
    np.testing.assert_array_equal(train.y, written["train_y"])
    np.testing.assert_array_equal(test.x[..., 0], written["test_x"])
    np.testing.assert_array_equal(test.y, written["test_y"])
    assert info.class_names[0] == "T-shirt/top" and info.num_classes == 10 and info.hflip
    assert info.mean == (0.2860,) and info.std == (0.3530,)


def test_fashion_mnist_prefers_the_raw_root_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "download", no_download)
    local = write_fashion_mnist(tmp_path / "raw" / "fashion_mnist", seed=1)
    write_fashion_mnist(tmp_path / "system", seed=2)
    loaded = fashion_mnist.FashionMnist(system_dir=tmp_path / "system").load(tmp_path / "raw")
    assert_same_as_written(loaded, local)
    assert str(tmp_path / "raw" / "fashion_mnist") in loaded[2].source


def test_fashion_mnist_falls_back_to_the_system_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "download", no_download)
    system = write_fashion_mnist(tmp_path / "system")
    loaded = fashion_mnist.FashionMnist(system_dir=tmp_path / "system").load(tmp_path / "raw")
    assert_same_as_written(loaded, system)
    assert "dataset-fashion-mnist" in loaded[2].source


def test_fashion_mnist_downloads_last(tmp_path, monkeypatch):
    written = {}
    monkeypatch.setattr(fashion_mnist, "download", lambda dest: written.update(write_fashion_mnist(dest)))
    loaded = fashion_mnist.FashionMnist(system_dir=tmp_path / "empty").load(tmp_path / "raw")
    assert_same_as_written(loaded, written)
    assert str(tmp_path / "raw" / "fashion_mnist_download") in loaded[2].source


def test_fashion_mnist_offline_error_names_both_places_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "download", offline)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as e:
        fashion_mnist.FashionMnist(system_dir=tmp_path / "empty").load(tmp_path / "raw")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "raw" / "fashion_mnist") in msg and str(tmp_path / "empty") in msg
    assert "internet" in msg and "apt-get install dataset-fashion-mnist" in msg


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def shorten_payload(path: Path) -> None:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-3])  # header intact, three labels missing


def wrong_magic(path: Path) -> None:
    write_idx_gz(path, np.zeros((10, 28, 28), dtype=np.uint8))  # an image file where labels belong


@pytest.mark.parametrize("damage", [truncate, shorten_payload, wrong_magic])
def test_fashion_mnist_corrupt_idx_is_a_user_error_naming_it(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(fashion_mnist, "download", no_download)
    write_fashion_mnist(tmp_path / "fashion_mnist")
    bad = tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz"
    damage(bad)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz"):
        fashion_mnist.FashionMnist(system_dir=tmp_path / "empty").load(tmp_path)


@pytest.mark.skipif(not fashion_mnist.has_all_files(fashion_mnist.SYSTEM_DIR), reason="dataset-fashion-mnist absent")
def test_fashion_mnist_debian_package_holds_the_full_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "download", no_download)
    train, test, _ = fashion_mnist.FashionMnist().load(tmp_path)
    assert train.x.shape == (60000, 28, 28, 1) and test.x.shape == (10000, 28, 28, 1)
    assert np.bincount(train.y).tolist() == [6000] * 10 and np.bincount(test.y).tolist() == [1000] * 10


# --- GTSRB --------------------------------------------------------------------------------------------------------


def whole_image_resized(x: np.ndarray, size: int) -> np.ndarray:
    """The reference: torchvision's Resize((size, size)) on the whole photo (ROI ignored)."""
    from torchvision.transforms import functional as tf

    return np.asarray(tf.resize(Image.fromarray(x), [size, size], interpolation=tf.InterpolationMode.BILINEAR))


@pytest.mark.parametrize("size", [32, 16])
def test_gtsrb_resizes_every_whole_photo(tmp_path, monkeypatch, size):
    monkeypatch.setattr(gtsrb, "download", no_download)
    written = write_gtsrb(tmp_path)
    train, test, info = gtsrb.Gtsrb(image_size=size).load(tmp_path)
    assert train.x.shape == (43, size, size, 3) and train.x.dtype == np.uint8 and test.x.shape == (5, size, size, 3)
    np.testing.assert_array_equal(train.y, written["train_y"])
    np.testing.assert_array_equal(test.y, written["test_y"])
    for loaded, photos in ((train.x, written["train"]), (test.x, written["test"])):
        for got, photo in zip(loaded, photos):
            np.testing.assert_array_equal(got, whole_image_resized(photo, size))
    assert info.num_classes == 43 and info.class_names[14] == "Stop" and not info.hflip


def test_gtsrb_offline_error_names_the_folder_and_both_fixes(tmp_path, monkeypatch):
    monkeypatch.setattr(gtsrb, "download", offline)
    with pytest.raises(UserError) as e:
        gtsrb.Gtsrb().load(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "gtsrb") in msg and "internet" in msg and "GTSRB_Final_Test_GT.zip" in msg


# --- ImageNet-30 --------------------------------------------------------------------------------------------------


def test_imagenet30_class_list_is_the_deterministic_draw_from_timm():
    synsets = Path(importlib.util.find_spec("timm").origin).parent / "data" / "_info" / "imagenet_synsets.txt"
    all_wnids = synsets.read_text().split()
    assert len(all_wnids) == 1000
    wnids = imagenet30.class_wnids()
    assert len(wnids) == len(set(wnids)) == 30
    assert wnids == sorted(random.Random(0).sample(sorted(all_wnids), 30))


def resize_center_crop_reference(path: Path, resize: int, size: int) -> np.ndarray:
    """The reference: torchvision's Resize(resize) + CenterCrop(size), ImageNet's evaluation preprocessing."""
    from torchvision.transforms import functional as tf

    img = tf.resize(Image.open(path).convert("RGB"), resize, interpolation=tf.InterpolationMode.BILINEAR)
    return np.asarray(tf.center_crop(img, [size, size]))


def test_imagenet30_reads_the_30_classes_with_resize_and_center_crop(tmp_path):
    wnids = imagenet30.class_wnids()
    written = write_imagenet(tmp_path, wnids + ["n99999999"])  # an extra class the loader must skip
    train, test, info = imagenet30.ImageNet30(image_size=8, resize=12).load(tmp_path)
    assert train.x.shape == (60, 8, 8, 3) and train.x.dtype == np.uint8 and test.x.shape == (30, 8, 8, 3)
    for loaded, samples in ((train, written["train"]), (test, written["val"])):
        samples = [s for s in samples if s[1] < 30]
        np.testing.assert_array_equal(loaded.y, [label for _, label in samples])
        for got, (path, _) in zip(loaded.x, samples):
            np.testing.assert_array_equal(got, resize_center_crop_reference(path, 12, 8))
    assert info.num_classes == 30 and info.extra["wnids"] == wnids and info.class_names[0] == "whiptail"
    assert info.hflip and info.mean == (0.485, 0.456, 0.406)


def test_imagenet30_missing_folder_says_to_symlink(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'imagenet' / 'train'} not found.*symlink"):
        imagenet30.ImageNet30().load(tmp_path)


def test_imagenet30_missing_class_folder_is_named(tmp_path):
    wnids = imagenet30.class_wnids()
    write_imagenet(tmp_path, [w for w in wnids if w != wnids[7]], n_train_per_class=1, sizes=((12, 12),))
    with pytest.raises(UserError, match=f"{tmp_path / 'imagenet' / 'train' / wnids[7]} is missing.*symlink"):
        imagenet30.ImageNet30(image_size=8, resize=12).load(tmp_path)


# --- mnist5k ------------------------------------------------------------------------------------------------------


def test_mnist5k_is_a_deterministic_stratified_split():
    train, test, info = Mnist5k().load(Path("unused"))
    assert train.x.shape == (4000, 28, 28, 1) and test.x.shape == (1000, 28, 28, 1) and train.x.dtype == np.uint8
    assert np.bincount(train.y).tolist() == [400] * 10 and np.bincount(test.y).tolist() == [100] * 10
    again_train, again_test, _ = Mnist5k().load(Path("unused"))
    np.testing.assert_array_equal(train.x, again_train.x)
    np.testing.assert_array_equal(test.y, again_test.y)
    assert info.num_classes == 10 and not info.hflip


# --- gin files ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, cls", [("mnist5k", Mnist5k), ("fashion_mnist", fashion_mnist.FashionMnist),
                                       ("cifar10", cifar10.Cifar10), ("gtsrb", gtsrb.Gtsrb),
                                       ("imagenet30", imagenet30.ImageNet30)])
def test_gin_file_parses_and_binds_only_its_own_class(name, cls):
    """A dataset file binds its own class, plus at most the train-time augmentation it needs."""
    path = PARAMS / f"{name}.gin"
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("#")
    bindings = [line for line in lines if not line.startswith(("#", "engine.Augment."))]
    assert all(line.startswith(f"datasets.{cls.__name__}.") for line in bindings)
    gin.clear_config()
    try:
        gin.parse_config_file(str(path))
        obj = cls()
        for line in bindings:
            key, value = (s.strip() for s in line.split("=", 1))
            assert getattr(obj, key.rsplit(".", 1)[1]) == gin.query_parameter(key) == ast.literal_eval(value)
    finally:
        gin.clear_config()


# --- bad data in the real on-disk formats (docs/errors.md) --------------------------------------------------------


def _gtsrb_error(tmp_path, monkeypatch) -> str:
    monkeypatch.setattr(gtsrb, "download", no_download)
    with pytest.raises(UserError) as e:
        gtsrb.Gtsrb(image_size=8).load(tmp_path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_gtsrb_empty_class_folder_is_named(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_test=1)
    empty = tmp_path / "gtsrb" / "GTSRB" / "Training" / "00007"
    for f in empty.glob("*.ppm"):
        f.unlink()
    assert _gtsrb_error(tmp_path, monkeypatch).startswith(f"{empty}: a class folder without .ppm images")


def test_gtsrb_non_image_file_is_named(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_test=1)
    bad = next((tmp_path / "gtsrb" / "GTSRB" / "Training" / "00003").glob("*.ppm"))
    bad.write_text("not an image")
    assert _gtsrb_error(tmp_path, monkeypatch).startswith(f"{bad}: unreadable image")


def test_gtsrb_truncated_image_is_named(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_test=1)
    bad = next((tmp_path / "gtsrb" / "GTSRB" / "Final_Test" / "Images").glob("*.ppm"))
    bad.write_bytes(bad.read_bytes()[:20])
    assert _gtsrb_error(tmp_path, monkeypatch).startswith(f"{bad}: unreadable image")


def test_gtsrb_test_label_out_of_range_is_named(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_test=1)
    csv_path = tmp_path / "gtsrb" / "GT-final_test.csv"
    header, row = csv_path.read_text().splitlines()
    csv_path.write_text(header + "\n" + row.rsplit(";", 1)[0] + ";43\n")
    assert _gtsrb_error(tmp_path, monkeypatch) == f"{csv_path}: ClassId 43 is out of range 0..42"


def test_gtsrb_foreign_csv_is_named(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_test=1)
    csv_path = tmp_path / "gtsrb" / "GT-final_test.csv"
    csv_path.write_text("a,b,c\n1,2,3\n")
    assert _gtsrb_error(tmp_path, monkeypatch).startswith(f"{csv_path}: not the GTSRB test ground truth")


def test_gtsrb_stray_folder_in_training_is_named(tmp_path, monkeypatch):
    write_gtsrb(tmp_path, n_test=1)
    stray = tmp_path / "gtsrb" / "GTSRB" / "Training" / "extra"
    stray.mkdir()
    assert _gtsrb_error(tmp_path, monkeypatch).startswith(f"{stray}: not a GTSRB class folder")


def test_imagenet30_non_image_file_is_named(tmp_path):
    wnids = imagenet30.class_wnids()
    written = write_imagenet(tmp_path, wnids, n_train_per_class=1, sizes=((12, 12),))
    bad = written["train"][4][0]
    bad.write_text("not a JPEG")
    with pytest.raises(UserError) as e:
        imagenet30.ImageNet30(image_size=8, resize=12).load(tmp_path)
    assert str(e.value).startswith(f"{bad}: unreadable image") and "\n" not in str(e.value)


def test_imagenet30_empty_class_folder_is_named(tmp_path):
    wnids = imagenet30.class_wnids()
    written = write_imagenet(tmp_path, wnids, n_train_per_class=1, sizes=((12, 12),))
    folder = written["val"][2][0].parent
    for f in folder.iterdir():
        f.unlink()
    with pytest.raises(UserError, match=f"{folder} is missing or holds no images"):
        imagenet30.ImageNet30(image_size=8, resize=12).load(tmp_path)
