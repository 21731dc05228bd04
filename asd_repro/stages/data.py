"""The data stages: ``prepare`` (a dataset as uint8 arrays), ``assets`` (an attack's trigger assets) and ``poison``
(the fixed poisoned training and test sets)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gin
import numpy as np

from asd_repro.core.cell import clean_digest, stopped_if_diverged, write_configs, write_operative
from asd_repro.core.config import configurable
from asd_repro.core.errors import check_seed
from asd_repro.core.io import atomic_dir, load_arrays, read_json, save_arrays, write_json
from asd_repro.core.provenance import environment


@configurable(module="stages")
def prepare(dataset: str, raw_root: Path, out: Path, asked_config: str = "") -> dict[str, Any]:
    """Materialise a dataset once as uint8 arrays + manifest."""
    from asd_repro.data import DATASETS, save_prepared

    source = DATASETS.create(dataset)
    start = time.perf_counter()
    train, test, info = source.load(Path(raw_root))
    with atomic_dir(out) as tmp:
        write_configs(tmp, asked_config)
        save_prepared(tmp, train, test, info)
        write_operative(tmp)
    print(f"prepared {dataset}: {len(train)} train / {len(test)} test images {train.x.shape[1:]} "
          f"in {time.perf_counter() - start:.1f}s -> {out}")
    return {"train": len(train), "test": len(test)}


@configurable(module="stages")
def assets(attack: str, clean: Path, out: Path, seed: int = gin.REQUIRED, asked_config: str = "") -> dict[str, Any]:
    """Build an attack's trigger assets once from the clean training set (may train a model)."""
    from asd_repro.attacks import ATTACKS
    from asd_repro.data import load_prepared

    check_seed("stages.assets.seed", seed)
    data = load_prepared(clean)
    atk = ATTACKS.create(attack)
    start = time.perf_counter()
    with stopped_if_diverged(out):
        atk.fit(data.train.x, data.train.y, np.random.default_rng(seed))
    meta = {"dataset": data.info.name, "attack": attack, "seed": seed,
            "seconds": round(time.perf_counter() - start, 2), "environment": environment()}
    with atomic_dir(out) as tmp:
        write_configs(tmp, asked_config)
        meta["files"] = save_arrays(tmp, atk.state())
        write_json(tmp / "meta.json", meta)
        write_operative(tmp)
    print(f"built {attack} assets for {data.info.name} in {meta['seconds']:.1f}s -> {out}")
    return meta


@configurable(module="stages")
def poison(attack: str, clean: Path, assets_dir: Path, out: Path, seed: int = gin.REQUIRED,
           asked_config: str = "") -> dict[str, Any]:
    """Build the FIXED poisoned training set and the poisoned test set for one attack."""
    from asd_repro.attacks import ATTACKS
    from asd_repro.data import load_prepared

    check_seed("stages.poison.seed", seed)
    data = load_prepared(clean)
    atk = ATTACKS.create(attack)
    assets_dir = Path(assets_dir)
    assets_meta = read_json(assets_dir / "meta.json")
    atk.load_state(load_arrays(assets_dir, assets_meta, producer=f"the assets stage of {attack}"))
    train = atk.poison_train(data.train.x, data.train.y, np.random.default_rng(seed))
    bd_x, bd_y, bd_index = atk.poison_test(data.test.x, data.test.y)
    meta = {
        "dataset": data.info.name, "clean_digest": clean_digest(clean), "attack": attack, "target": atk.target,
        "ratio": atk.ratio,
        "clean_label": atk.clean_label, "seed": seed,
        "counts": {"train": int(len(train.y)), "poisoned_train": int(train.poison.sum()),
                   "poisoned_train_fraction": float(train.poison.mean()), "test_asr_set": int(len(bd_y)),
                   "test_target_excluded": int((data.test.y == atk.target).sum())},
    }
    with atomic_dir(out) as tmp:
        write_configs(tmp, asked_config)
        meta["files"] = save_arrays(tmp, {"train_x": train.x, "train_y": train.y, "train_poison": train.poison,
                                          "test_x": bd_x, "test_y": bd_y, "test_index": bd_index})
        write_json(tmp / "meta.json", meta)
        write_operative(tmp)
    print(f"poisoned {data.info.name}/{attack}: {meta['counts']['poisoned_train']} of {len(train.y)} training "
          f"images ({100 * meta['counts']['poisoned_train_fraction']:.2f}%), ASR set {len(bd_y)} -> {out}")
    return meta
