"""What every stage root shares: the config files written beside each output, the cross-checks between a stage's
inputs, loading a poisoned set or a saved model, opening a training cell (data, device, seeded RNGs), writing a
model folder, and the process settings every stage applies first (``stages.torch_threads``,
``stages.deterministic``)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import gin
import numpy as np

from asd_repro.core.config import configurable
from asd_repro.core.errors import Diverged, UserError
from asd_repro.core.io import load_arrays, read_json, save_torch, write_json


def write_configs(folder: Path, asked: str) -> None:
    (folder / "config.gin").write_text(asked)


def write_operative(folder: Path) -> None:
    (folder / "operative_config.gin").write_text(gin.operative_config_str())


def clean_digest(clean: Path) -> str:
    """A digest of a prepared dataset's files (its manifest's file digests): what a poisoned set records it came from."""
    import hashlib

    files = read_json(Path(clean) / "manifest.json")["files"]
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def check_poisoned_from(meta: dict[str, Any], poisoned: Path, clean: Path, dataset: str) -> None:
    """A poisoned set made from another prepared set (another dataset, or the same one re-prepared differently) is
    an error naming the folder to rebuild, never a silently mixed cell."""
    made_from = meta.get("dataset"), meta.get("clean_digest")
    if made_from[0] != dataset or (made_from[1] is not None and made_from[1] != clean_digest(clean)):
        raise UserError(f"{poisoned}: this poisoned set was made from another prepared set ({made_from[0]}) than "
                        f"{clean} ({dataset}); rebuild it from that one (`dvc repro -f` its poison stage)")


def check_model_fits(model: Any, folder: Path, model_kwargs: dict[str, int]) -> None:
    """An upstream model whose classes, channels or image size differ from the cell's is an error naming it."""
    saved = getattr(model, "create_kwargs", {})
    wrong = {k: (saved[k], v) for k, v in model_kwargs.items() if k in saved and saved[k] != v}
    if wrong:
        detail = ", ".join(f"{k} {a} (the cell has {b})" for k, (a, b) in wrong.items())
        raise UserError(f"{folder}: its model has {detail}; give the run folder of this dataset's model")


def peak_memory(device: Any) -> dict[str, float]:
    """This process's peak host memory (MiB) and, on CUDA, the peak memory torch allocated on the device (MiB)."""
    import resource

    import torch

    peaks = {"host_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if getattr(device, "type", str(device)).startswith("cuda"):
        peaks["device_peak_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peaks


def load_poisoned(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: poisoned set not found; run `dvc repro` (stage poison) first")
    meta = read_json(folder / "meta.json")
    return meta, load_arrays(folder, meta, producer=f"the poison stage of {meta.get('attack', folder.name)}")


@configurable(module="stages")
def torch_threads(threads: int | None = None) -> None:
    """Set the CPU threads of this stage's process (torch's intra-op pool); None keeps torch's default (the cores).

    Sums split across threads round differently, so a stage's weights are bit-identical only at the same value. A
    profile whose stages run side by side (``asd-repro repro -j``, one stage per core) binds 1, which also fixes the
    weights of a plain ``dvc repro``.
    """
    import torch

    from asd_repro.core.errors import require

    if threads is not None:
        require("stages.torch_threads.threads", threads, threads >= 1, "an integer >= 1, or None (the cores)")
        torch.set_num_threads(threads)


@configurable(module="stages")
def deterministic(enabled: bool = False) -> None:
    """Deterministic GPU kernels (cuDNN, cuBLAS and torch's deterministic algorithms), for same-machine
    ``compare --exact`` of GPU runs; slower. CPU runs are deterministic at a fixed ``stages.torch_threads``."""
    import os

    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)


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
    check_poisoned_from(meta, poisoned, clean, data.info.name)
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
    write_configs(folder, asked_config)
    recipe = getattr(model, "create_kwargs", model_kwargs)
    save_torch({"model_kwargs": recipe, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}},
               folder / "model.pt", what="model")
    write_json(folder / record_name, record)
    write_operative(folder)


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
