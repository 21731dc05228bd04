"""The evaluate stage: exact ACC and ASR of every defense's model and seed of one table row."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from asd_repro.core.cell import check_poisoned_from, load_model, load_poisoned, to_nchw
from asd_repro.core.config import configurable
from asd_repro.core.errors import require
from asd_repro.core.io import atomic_dir, read_json, write_json
from asd_repro.core.matrix import seed_folder


@configurable(module="stages")
def evaluate(clean: Path, poisoned: Path, runs: Path, defenses: list[str], seeds: list[int], out: Path,
             device: str = "auto", batch_size: int = 256, channels_last: bool = True) -> dict[str, Any]:
    """ACC on the clean test set and ASR on each seed's poisoned test set (target class excluded), exact, for the
    model of every defense and seed of one table row; writes ``out/<defense>.json`` with one entry per seed.

    ``poisoned`` and ``runs/<defense>`` hold one folder per seed (``seed_folder``). Each seed's entry carries the
    environment that trained its model (from its ``run.json``), so a table can say what made every number.
    """
    import torch

    from asd_repro.data import load_prepared
    from asd_repro.engine.augment import Normalize
    from asd_repro.engine.device import resolve_device
    from asd_repro.engine.evaluation import acc_asr, check_asr_labels

    require("stages.evaluate.batch_size", batch_size, batch_size >= 1, "a positive batch size")
    data = load_prepared(clean)
    dev = resolve_device(device, "stages.evaluate.device")
    norm = Normalize(data.info.mean, data.info.std, dev, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    test_x, test_y = to_nchw(data.test.x, dev), torch.from_numpy(data.test.y).to(dev)
    results: dict[str, Any] = {}
    for seed in seeds:
        meta, arrays = load_poisoned(seed_folder(poisoned, seed))
        check_poisoned_from(meta, seed_folder(poisoned, seed), clean, data.info.name)
        check_asr_labels(arrays["test_y"], meta["target"])
        bd_x, bd_y = to_nchw(arrays["test_x"], dev), torch.from_numpy(arrays["test_y"]).to(dev)
        for defense in defenses:
            run = seed_folder(Path(runs) / defense, seed)
            model, _ = load_model(run, dev, fmt)
            metrics = acc_asr(model, test_x, test_y, bd_x, bd_y, norm, batch_size)
            run_info = read_json(run / "run.json")
            entry = results.setdefault(defense, {
                "dataset": data.info.name, "attack": meta["attack"], "defense": run_info["defense"],
                "num_classes": data.info.num_classes,
                "asr_definition": "triggered test images whose true class is not the target",
                "checkpoint": "final epoch", "seeds": {}})
            entry["seeds"][str(seed)] = {**metrics, "environment": run_info.get("environment", {})}
            print(f"evaluated {data.info.name}/{meta['attack']}/{defense} seed {seed}: ACC {metrics['acc']:.2f} "
                  f"ASR {metrics['asr']:.2f}")
    with atomic_dir(out) as tmp:
        for defense, result in results.items():
            write_json(tmp / f"{defense}.json", result)
    return results
