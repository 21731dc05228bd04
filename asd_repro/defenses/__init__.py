"""Training-time defenses: each trains a model on the poisoned set its own way.

A defense plug-in is one file here plus one gin file in ``params/defenses/``. It receives a
``Context`` (data on the training device, a model factory, augmentation, checkpointing, logging)
and returns the final model. Ground-truth poison flags are in the context for diagnostics only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.checkpoint import Checkpointer
from asd_repro.engine.loop import Resumable, accuracy
from asd_repro.errors import UserError
from asd_repro.registry import Registry

DEFENSES = Registry("defense", "asd_repro.defenses")
register_defense = DEFENSES.register


class Interrupted(KeyboardInterrupt):
    """Raised by ``Context.end_epoch`` when a test asks the run to stop after an epoch."""


@dataclass
class Context:
    train_x: torch.Tensor  # uint8 (N, C, H, W) on device
    train_y: torch.Tensor  # labels as handed over by the attacker
    poison: np.ndarray  # ground truth, diagnostics only
    test_x: torch.Tensor
    test_y: torch.Tensor
    bd_x: torch.Tensor  # poisoned test set (non-target images with the trigger)
    bd_y: torch.Tensor
    num_classes: int
    augment: Augment
    normalize: Normalize
    new_model: Callable[[], torch.nn.Module]
    generator: torch.Generator
    checkpointer: Checkpointer
    device: torch.device
    seed: int
    stop_after_epoch: int | None = None  # tests only: simulate a kill after this many epochs
    upstream: Any = None  # the model a post-training defense starts from (``stages.train(upstream=...)``)
    eval_batch_size: int = 256  # of the per-epoch test evaluations (speed only: the same predictions)
    eval_every: int = 1  # test ACC/ASR in the curves every this many epochs, and after the last (diagnostics only)
    curves: list[dict[str, Any]] = field(default_factory=list)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        c, n = accuracy(model, self.test_x, self.test_y, self.normalize, self.eval_batch_size)
        pc, pn = accuracy(model, self.bd_x, self.bd_y, self.normalize, self.eval_batch_size)
        return {"acc": 100.0 * c / max(n, 1), "asr": 100.0 * pc / max(pn, 1)}

    def end_epoch(self, record: dict[str, Any], model: torch.nn.Module, epochs_done: int,
                  total: int) -> dict[str, Any]:
        """Add test ACC/ASR and the pool sizes, then append the record to the curves.

        Every record carries the same fields so that ``dvc plots`` can draw all cells alike. Test ACC/ASR are
        measured every ``eval_every`` epochs and after the last one (``total``); in between they are None
        (null in the JSON). Evaluation never touches the training state, so the cadence changes no weight.
        A defense that trains on a subset reports its own ``clean_pool``; otherwise the whole set is the clean
        pool (No Defense, in the paper's unified framework). The ground-truth count is for logging only.
        """
        if epochs_done % self.eval_every == 0 or epochs_done >= total:
            record.update(self.evaluate(model))
        else:
            record.update(acc=None, asr=None)
        record.setdefault("clean_pool", len(self.poison))
        record.setdefault("poisoned_in_clean_pool", int(self.poison.sum()))
        self.curves.append(record)
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
                          if v is not None)
        print(f"[epoch {epochs_done}/{total}] {shown}", flush=True)
        return record

    def uniform_curves(self) -> list[dict[str, Any]]:
        """The curves with every record holding every field seen in any record (None where a phase has none).

        ``dvc plots`` draws a file only when all its records have the same keys; the phases of a multi-phase
        defense (ABL, NAD, DBD) log different statistics, so their records are padded here.
        """
        fields = list(dict.fromkeys(key for record in self.curves for key in record))
        return [{key: record.get(key) for key in fields} for record in self.curves]

    def resumable(self, phase: str, **objects: Any) -> Resumable:
        """A ``Resumable`` with its own checkpoint file for ``phase``, for defenses with several phases.

        A finished phase keeps its last checkpoint until the run ends, so a run killed in a later phase
        restores the finished one's objects and skips its epochs (``resume`` returns its total).
        """
        return Resumable(self.checkpointer.phase(phase), self.generator, **objects)

    def resume(self, state: Resumable, phase: str, total: int) -> int:
        """Restore ``state`` and the curves from the last checkpoint; return the first epoch to run."""
        restored = state.restore(needs=("epoch", "curves"))
        if restored is None:
            return 0
        self.curves[:] = restored["curves"]
        print(f"resuming {phase} from epoch {restored['epoch']}/{total}", flush=True)
        return restored["epoch"]

    def upstream_model(self) -> torch.nn.Module:
        """A fresh copy of the upstream model (e.g. the No-defense model FP and NAD repair)."""
        if self.upstream is None:
            raise UserError("this defense starts from an upstream model; pass --upstream <run dir> (see dvc.yaml)")
        import copy

        return copy.deepcopy(self.upstream)

    def maybe_interrupt(self, epochs_done: int) -> None:
        if self.stop_after_epoch is not None and epochs_done >= self.stop_after_epoch:
            raise Interrupted(f"stopped after epoch {epochs_done} (test hook)")

    def clean_indices(self, per_class: int, rng: np.random.Generator) -> np.ndarray:
        """``per_class`` random CLEAN training samples of each class (the defender's clean data).

        Like the ASD reference, this uses the ground-truth poison flag: the defender is assumed to
        hold a few known-clean samples per class.
        """
        y = self.train_y.cpu().numpy()
        picks = []
        for c in range(self.num_classes):
            idx = np.flatnonzero((y == c) & ~self.poison)
            picks.append(rng.choice(idx, size=min(per_class, len(idx)), replace=False))
        return np.sort(np.concatenate(picks))


class Defense:
    """Base class: ``run(ctx)`` trains and returns the final model."""

    def run(self, ctx: Context) -> torch.nn.Module:
        raise NotImplementedError


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self.start = now - self.start, now
        return dt
