"""Training-time defenses: each trains a model on the poisoned set its own way.

A defense plug-in is one file here plus one gin file in ``params/defenses/``, registered with
``@register_defense(name, family=...)`` (how the pipeline trains it). It receives a ``Context`` (data on the
training device, a model factory, augmentation, checkpointing, the curves) and returns the final model; each of its
phases is ``ctx.run_phase(name, epochs, epoch_body, model, optimizer, schedule)``, the engine's one resumable loop.
Ground-truth poison flags are in the context for diagnostics only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from asd_repro.core.errors import UserError
from asd_repro.core.matrix import FAMILIES
from asd_repro.core.registry import Registry
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.checkpoint import Checkpointer
from asd_repro.engine.evaluation import acc_asr
from asd_repro.engine.loop import Interrupted, run_epochs  # noqa: F401 (Interrupted: re-exported)

DEFENSES = Registry("defense", "asd_repro.defenses")


def register_defense(name: str, family: str = "scratch", pretrain: Callable[..., Any] | None = None):
    """Register a defense plug-in under ``name``, declaring how the pipeline trains it.

    Args:
        family: a key of ``matrix.FAMILIES``: 'scratch' (trained from scratch on the poisoned set), 'repair' (starts
            from the cell's No-defense model) or 'selfsup' (starts from a backbone pre-trained without labels).
        pretrain: for 'selfsup', the pre-training step the ``pretrain`` stage runs (``stages.pretrain`` documents
            its signature).
    """
    if family not in FAMILIES or (family == "selfsup") != (pretrain is not None):
        raise ValueError(f"defense {name!r}: family must be one of {', '.join(FAMILIES)}, with a pretrain step "
                         f"exactly for 'selfsup' (got {family!r}, pretrain={pretrain!r})")
    return DEFENSES.register(name, family=family, pretrain=pretrain)


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

    def evaluate(self, model: torch.nn.Module) -> dict[str, float | None]:
        """Test ACC and ASR (%) of ``model`` (``engine.evaluation.acc_asr``)."""
        metrics = acc_asr(model, self.test_x, self.test_y, self.bd_x, self.bd_y, self.normalize, self.eval_batch_size)
        return {"acc": metrics["acc"], "asr": metrics["asr"]}

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

    def run_phase(self, phase: str, epochs: int, body: Callable[[int], dict[str, Any]], model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer | None = None, schedule: Any = None,
                  checkpoint: str | None = None, first_epoch: int = 0, total: int | None = None) -> None:
        """Train ``model`` for one phase of ``epochs`` epochs, ``body(epoch)`` each (``engine.loop.run_epochs``).

        Each epoch's record gets test ACC/ASR and the pools (``end_epoch``) and joins the curves; the model, the
        optimiser and the schedule are checkpointed with every RNG state, so a killed run resumes bit-identically.

        Args:
            checkpoint: the phase's own checkpoint file, for defenses with several phases (a finished phase keeps
                its checkpoint until the run ends, so a run killed in a later phase skips it); None: the run's one.
            first_epoch: epochs of the earlier phases, so that the curves count epochs across phases.
            total: epochs of the whole run (the progress line and the last evaluation); defaults to this phase's end.
        """
        total = first_epoch + epochs if total is None else total
        objects = {"model": model, "optimizer": optimizer, "schedule": schedule}
        run_epochs(phase, epochs, body, generator=self.generator, records=self.curves, optimizer=optimizer,
                   schedule=schedule, first_epoch=first_epoch, stop_after_epoch=self.stop_after_epoch,
                   checkpointer=self.checkpointer if checkpoint is None else self.checkpointer.phase(checkpoint),
                   objects={k: v for k, v in objects.items() if v is not None},
                   end_epoch=lambda record, done: self.end_epoch(record, model, done, total))

    def upstream_model(self) -> torch.nn.Module:
        """A fresh copy of the upstream model (e.g. the No-defense model FP and NAD repair)."""
        if self.upstream is None:
            raise UserError("this defense starts from an upstream model; pass --upstream <run dir> (see dvc.yaml)")
        import copy

        return copy.deepcopy(self.upstream)

    def clean_indices(self, per_class: int, rng: np.random.Generator, binding: str = "per_class") -> np.ndarray:
        """``per_class`` random CLEAN training samples of each class (the defender's clean data).

        Like the ASD reference, this uses the ground-truth poison flag: the defender is assumed to
        hold a few known-clean samples per class. A class with some clean samples, but fewer than ``per_class``, is
        an error naming ``binding`` (the defender would otherwise be handed every clean sample of that class). A
        class with none (a clean-label attack that poisoned every target-class image, CLB on GTSRB) gives none.
        """
        y = self.train_y.cpu().numpy()
        picks = []
        for c in range(self.num_classes):
            idx = np.flatnonzero((y == c) & ~self.poison)
            if 0 < len(idx) < per_class:
                raise UserError(f"{binding} asks {per_class} clean samples of every class, but class {c} has only "
                                f"{len(idx)} clean training images; lower it")
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
