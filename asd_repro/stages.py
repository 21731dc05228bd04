"""The pipeline's stage functions, one gin-configurable root per DVC stage.

prepare -> poison -> train -> evaluate -> table. Each writes its outputs atomically (a failed stage
leaves nothing behind) together with ``config.gin`` (what was asked) and ``operative_config.gin``
(what was used). Paths come from the command line (dvc.yaml is their one source), never from gin.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import gin
import numpy as np

from asd_repro.errors import Diverged, UserError
from asd_repro.matrix import seed_folder
from asd_repro.io import atomic_dir, load_arrays, read_json, save_arrays, save_torch, write_json
from asd_repro.provenance import environment


def _write_configs(folder: Path, asked: str) -> None:
    (folder / "config.gin").write_text(asked)


def _write_operative(folder: Path) -> None:
    (folder / "operative_config.gin").write_text(gin.operative_config_str())


@gin.configurable(module="stages")
def prepare(dataset: str, raw_root: Path, out: Path, asked_config: str = "") -> dict[str, Any]:
    """Materialise a dataset once as uint8 arrays + manifest."""
    from asd_repro.data import DATASETS, save_prepared

    source = DATASETS.create(dataset)
    start = time.perf_counter()
    train, test, info = source.load(Path(raw_root))
    with atomic_dir(out) as tmp:
        _write_configs(tmp, asked_config)
        save_prepared(tmp, train, test, info)
        _write_operative(tmp)
    print(f"prepared {dataset}: {len(train)} train / {len(test)} test images {train.x.shape[1:]} "
          f"in {time.perf_counter() - start:.1f}s -> {out}")
    return {"train": len(train), "test": len(test)}


@gin.configurable(module="stages")
def assets(attack: str, clean: Path, out: Path, seed: int = gin.REQUIRED, asked_config: str = "") -> dict[str, Any]:
    """Build an attack's trigger assets once from the clean training set (may train a model)."""
    from asd_repro.attacks import ATTACKS
    from asd_repro.data import load_prepared

    data = load_prepared(clean)
    atk = ATTACKS.create(attack)
    start = time.perf_counter()
    with stopped_if_diverged(out):
        atk.fit(data.train.x, data.train.y, np.random.default_rng(seed))
    meta = {"dataset": data.info.name, "attack": attack, "seed": seed,
            "seconds": round(time.perf_counter() - start, 2), "environment": environment()}
    with atomic_dir(out) as tmp:
        _write_configs(tmp, asked_config)
        meta["files"] = save_arrays(tmp, atk.state())
        write_json(tmp / "meta.json", meta)
        _write_operative(tmp)
    print(f"built {attack} assets for {data.info.name} in {meta['seconds']:.1f}s -> {out}")
    return meta


@gin.configurable(module="stages")
def poison(attack: str, clean: Path, assets_dir: Path, out: Path, seed: int = gin.REQUIRED,
           asked_config: str = "") -> dict[str, Any]:
    """Build the FIXED poisoned training set and the poisoned test set for one attack."""
    from asd_repro.attacks import ATTACKS
    from asd_repro.data import load_prepared

    data = load_prepared(clean)
    atk = ATTACKS.create(attack)
    assets_dir = Path(assets_dir)
    assets_meta = read_json(assets_dir / "meta.json")
    atk.load_state(load_arrays(assets_dir, assets_meta, producer=f"the assets stage of {attack}"))
    train = atk.poison_train(data.train.x, data.train.y, np.random.default_rng(seed))
    bd_x, bd_y, bd_index = atk.poison_test(data.test.x, data.test.y)
    meta = {
        "dataset": data.info.name, "attack": attack, "target": atk.target, "ratio": atk.ratio,
        "clean_label": atk.clean_label, "seed": seed,
        "counts": {"train": int(len(train.y)), "poisoned_train": int(train.poison.sum()),
                   "poisoned_train_fraction": float(train.poison.mean()), "test_asr_set": int(len(bd_y)),
                   "test_target_excluded": int((data.test.y == atk.target).sum())},
    }
    with atomic_dir(out) as tmp:
        _write_configs(tmp, asked_config)
        meta["files"] = save_arrays(tmp, {"train_x": train.x, "train_y": train.y, "train_poison": train.poison,
                                          "test_x": bd_x, "test_y": bd_y, "test_index": bd_index})
        write_json(tmp / "meta.json", meta)
        _write_operative(tmp)
    print(f"poisoned {data.info.name}/{attack}: {meta['counts']['poisoned_train']} of {len(train.y)} training "
          f"images ({100 * meta['counts']['poisoned_train_fraction']:.2f}%), ASR set {len(bd_y)} -> {out}")
    return meta


def load_poisoned(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: poisoned set not found; run `dvc repro` (stage poison) first")
    meta = read_json(folder / "meta.json")
    return meta, load_arrays(folder, meta, producer=f"the poison stage of {meta.get('attack', folder.name)}")


@gin.configurable(module="stages")
def torch_threads(threads: int | None = None) -> None:
    """Set the CPU threads of this stage's process (torch's intra-op pool); None keeps torch's default (the cores).

    Sums split across threads round differently, so a stage's weights are bit-identical only at the same value. A
    profile whose stages run side by side (``asd-repro repro -j``, one stage per core) binds 1, which also fixes the
    weights of a plain ``dvc repro``.
    """
    import torch

    from asd_repro.errors import check_types, require

    check_types("stages.torch_threads", torch_threads, locals())
    if threads is not None:
        require("stages.torch_threads.threads", threads, threads >= 1, "an integer >= 1, or None (the cores)")
        torch.set_num_threads(threads)


@dataclass
class Cell:
    """What every training stage of one table cell starts from: its data, device, seeded RNGs and model factory.

    ``open_cell`` seeds python, numpy and torch, so models built afterwards (``new_model``) are initialised from
    the seed in the order the stage builds them.
    """

    data: Any  # data.PreparedDataset
    meta: dict[str, Any]  # the poisoned set's meta.json
    arrays: dict[str, np.ndarray]  # the poisoned set
    device: Any
    generator: Any  # torch.Generator of every random draw after the model initialisations
    model_kwargs: dict[str, int]
    seed: int
    channels_last: bool
    clean_files: dict[str, Any]  # the prepared dataset's file digests (part of the checkpoint key)

    @property
    def memory_format(self) -> Any:
        import torch

        return torch.channels_last if self.channels_last else torch.contiguous_format

    def new_model(self) -> Any:
        from asd_repro.models import create_model

        return create_model(**self.model_kwargs).to(self.device, memory_format=self.memory_format)

    def normalize(self) -> Any:
        from asd_repro.engine.augment import Normalize

        return Normalize(self.data.info.mean, self.data.info.std, self.device, self.channels_last)

    def fingerprint(self, asked_config: str, name: str, *extra: str) -> str:
        """The checkpoint key of stage ``name``: the asked config, the seed, the digests of the cell's data files
        and ``extra`` (e.g. the digest of an upstream model)."""
        from asd_repro.engine.checkpoint import fingerprint

        return fingerprint(asked_config, name, str(self.seed), json.dumps(self.meta["files"], sort_keys=True),
                           json.dumps(self.clean_files, sort_keys=True), *extra)


def open_cell(clean: Path, poisoned: Path, seed: int, device: str, channels_last: bool,
              stage: str = "train") -> Cell:
    """Load a cell's prepared and poisoned sets, pick the device (``stages.<stage>.device``) and seed every RNG
    (see ``Cell``)."""
    import random

    import torch

    from asd_repro.data import load_prepared
    from asd_repro.engine.device import resolve_device

    data = load_prepared(clean)
    meta, arrays = load_poisoned(poisoned)
    dev = resolve_device(device, f"stages.{stage}.device")
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    generator = torch.Generator().manual_seed(seed)
    h, w, c = arrays["train_x"].shape[1:]
    return Cell(data=data, meta=meta, arrays=arrays, device=dev, generator=generator,
                model_kwargs={"num_classes": data.info.num_classes, "in_chans": int(c), "image_size": int(h)},
                seed=seed, channels_last=channels_last, clean_files=read_json(Path(clean) / "manifest.json")["files"])


def write_run_folder(folder: Path, asked_config: str, model: Any, model_kwargs: dict[str, Any], record_name: str,
                     record: dict[str, Any]) -> None:
    """Fill a model folder: ``config.gin``, ``model.pt``, the stage's JSON record and ``operative_config.gin``.

    ``model.pt`` holds the weights on the CPU with the recipe ``load_model`` rebuilds the model from: the model's
    own ``create_kwargs`` when ``models.create_model`` built it, else ``model_kwargs``.
    """
    _write_configs(folder, asked_config)
    recipe = getattr(model, "create_kwargs", model_kwargs)
    save_torch({"model_kwargs": recipe, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}},
               folder / "model.pt", what="model")
    write_json(folder / record_name, record)
    _write_operative(folder)

@contextlib.contextmanager
def stopped_if_diverged(out: Path) -> Iterator[None]:
    """Name the stage's output in a divergence error (the loops name the phase, epoch and step)."""
    try:
        yield
    except Diverged as e:
        raise Diverged(f"{out}: {str(e).splitlines()[0]}; stopped, nothing written, the last good checkpoint "
                       "kept; lower the learning rate (or fix the binding that diverged) and re-run") from None


def to_nchw(a: np.ndarray, device) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device)


@gin.configurable(module="stages")
def train(defense: str, clean: Path, poisoned: Path, out: Path, curves: Path, checkpoints: Path | None = None,
          seed: int = gin.REQUIRED, device: str = "auto", channels_last: bool = True, asked_config: str = "",
          stop_after_epoch: int | None = None, upstream: Path | None = None,
          eval_batch_size: int = 256, eval_every: int = 1) -> dict[str, Any]:
    """Train one table cell's model with a defense; resumable from per-epoch checkpoints.

    The curves hold test ACC/ASR (every ``eval_every`` epochs and after the last) for diagnostics only: the
    table reports the final epoch, never a test-selected one.

    Args:
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.
        channels_last: channels-last memory format for the model and its inputs (faster convolutions).
        stop_after_epoch: tests only, simulates a kill after that many epochs.
        eval_batch_size: batch of the per-epoch test evaluations (256 is ~2x faster than 1,024 on a laptop CPU).
        eval_every: evaluate the curves' test ACC/ASR every this many epochs (and after the last one); the other
            epochs record None. Speed only: the trained weights are the same for any value.
        upstream: a run folder (``model.pt``) whose model a post-training defense (FP, NAD) starts from, or
            the folder of a pre-training stage (DBD's self-supervised backbone); its files enter the checkpoint key.
    """
    import torch

    from asd_repro.defenses import DEFENSES, Context
    from asd_repro.engine.augment import Augment
    from asd_repro.engine.checkpoint import Checkpointer

    if eval_every < 1:
        raise UserError(f"stages.train.eval_every must be a positive number of epochs, got {eval_every}; "
                        "fix the binding")
    cell = open_cell(clean, poisoned, seed, device, channels_last)
    data, arrays, dev = cell.data, cell.arrays, cell.device
    defense_obj = DEFENSES.create(defense)
    upstream_model, upstream_key = None, ""
    if upstream is not None:
        upstream_model, upstream_key = load_model(upstream, dev, cell.memory_format)
    key = cell.fingerprint(asked_config, defense, upstream_key)
    ctx = Context(
        train_x=to_nchw(arrays["train_x"], dev), train_y=torch.from_numpy(arrays["train_y"]).to(dev),
        poison=arrays["train_poison"], test_x=to_nchw(data.test.x, dev), test_y=torch.from_numpy(data.test.y).to(dev),
        bd_x=to_nchw(arrays["test_x"], dev), bd_y=torch.from_numpy(arrays["test_y"]).to(dev),
        num_classes=data.info.num_classes, augment=Augment().resolved(data.info.hflip),
        normalize=cell.normalize(), new_model=cell.new_model, generator=cell.generator,
        checkpointer=Checkpointer(checkpoints, key), device=dev, seed=seed,
        stop_after_epoch=stop_after_epoch, upstream=upstream_model, eval_batch_size=eval_batch_size,
        eval_every=eval_every,
    )
    start = time.perf_counter()
    with ctx.checkpointer.lock(), stopped_if_diverged(out):
        model = defense_obj.run(ctx)
    seconds = time.perf_counter() - start
    last = ctx.curves[-1] if ctx.curves else {}
    # the last epoch is always evaluated, on the model the defense returns (FP's folded mask gives the same outputs)
    final = {"acc": last["acc"], "asr": last["asr"]} if last.get("acc") is not None else ctx.evaluate(model)
    info = {"dataset": data.info.name, "attack": cell.meta["attack"], "defense": defense, "seed": seed,
            "device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
            "train_seconds": round(seconds, 2), "final_epoch": final, "model": cell.model_kwargs,
            "environment": environment(dev), **getattr(defense_obj, "run_info", {})}
    with atomic_dir(out) as tmp:
        write_run_folder(tmp, asked_config, model, cell.model_kwargs, "run.json", info)
    write_json(curves, ctx.uniform_curves())
    ctx.checkpointer.clear()
    print(f"trained {data.info.name}/{cell.meta['attack']}/{defense} in {seconds:.1f}s on {dev}: "
          f"ACC {final['acc']:.2f} ASR {final['asr']:.2f} -> {out}")
    return info


@gin.configurable(module="stages")
def pretrain(defense: str, clean: Path, poisoned: Path, out: Path, checkpoints: Path | None = None,
             seed: int = gin.REQUIRED, device: str = "auto", channels_last: bool = True, asked_config: str = "",
             stop_after_epoch: int | None = None) -> dict[str, Any]:
    """A self-supervised defense's pre-training stage (DBD: SimCLR), written as a model folder for ``train``.

    The pre-training step is the one the defense declared at registration (``@register_defense(pretrain=...)``).
    ``out/model.pt`` has the format ``train`` writes (so ``train(upstream=out)`` loads it): the trained backbone with
    the model's freshly initialised head; ``out/pretrain.json`` records the losses and times. Resumable per epoch.

    Args:
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.
        channels_last: channels-last memory format for the model and its inputs.
        stop_after_epoch: tests only, simulates a kill after that many epochs.
    """
    import torch

    from asd_repro.defenses import DEFENSES
    from asd_repro.engine.checkpoint import Checkpointer
    from asd_repro.engine.simclr import head_parameter_names
    from asd_repro.models import create_model

    pretrain_step = DEFENSES.meta(defense).get("pretrain")
    if pretrain_step is None:
        selfsup = ", ".join(n for n in DEFENSES.names() if DEFENSES.meta(n).get("pretrain") is not None)
        raise UserError(f"{defense!r} has no pre-training stage (only {selfsup}); list it in defenses.scratch")
    cell = open_cell(clean, poisoned, seed, device, channels_last, stage="pretrain")
    data, dev = cell.data, cell.device
    checkpointer = Checkpointer(checkpoints, cell.fingerprint(asked_config, f"{defense}-pretrain"))
    x = to_nchw(cell.arrays["train_x"], dev)
    model = create_model(**cell.model_kwargs)  # its head stays as initialised here, right after seeding
    start = time.perf_counter()
    with checkpointer.lock(), stopped_if_diverged(out):
        backbone, info = pretrain_step(x, cell.new_model, cell.generator, cell.normalize(), data.info.hflip,
                                       checkpointer, stop_after_epoch=stop_after_epoch)
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert not unexpected and set(missing) == head_parameter_names(model), (missing, unexpected)
    record = {"dataset": data.info.name, "attack": cell.meta["attack"], "seed": seed, "device": str(dev),
              "torch": torch.__version__, "python": platform.python_version(),
              "wall_seconds": round(time.perf_counter() - start, 2), "model": cell.model_kwargs,
              "environment": environment(dev), **info}
    with atomic_dir(out) as tmp:
        write_run_folder(tmp, asked_config, model, cell.model_kwargs, "pretrain.json", record)
    checkpointer.clear()
    print(f"pre-trained the {defense} backbone of {data.info.name}/{cell.meta['attack']} in {info['seconds']:.1f}s "
          f"on {dev}: final loss {info['final_loss']:.4f} -> {out}")
    return record


def load_model(folder: Path, device: Any, memory_format: Any = None) -> tuple[Any, str]:
    """The model saved in ``folder/model.pt`` (built with its saved kwargs) and a digest of the file."""
    import hashlib
    import io

    import torch

    from asd_repro.models import create_model

    path = Path(folder) / "model.pt"
    if not path.is_file():
        raise UserError(f"{path}: model not found; run the stage that writes {folder} first (`dvc repro`)")
    data = path.read_bytes()  # read once: loaded and hashed
    try:
        saved = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = create_model(**saved["model_kwargs"])
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any failure here means a corrupt or foreign file
        raise UserError(f"{path}: cannot load the model ({type(exc).__name__}); delete it and re-run its stage") from exc
    model = model.to(device) if memory_format is None else model.to(device, memory_format=memory_format)
    return model, hashlib.sha256(data).hexdigest()


@gin.configurable(module="stages")
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

    data = load_prepared(clean)
    dev = resolve_device(device, "stages.evaluate.device")
    norm = Normalize(data.info.mean, data.info.std, dev, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    test_x, test_y = to_nchw(data.test.x, dev), torch.from_numpy(data.test.y).to(dev)
    results: dict[str, Any] = {}
    for seed in seeds:
        meta, arrays = load_poisoned(seed_folder(poisoned, seed))
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
