"""Shared by the post-training defenses (FP, NAD): the defender's clean data and a resumable training phase on it.

Both start from the No-defense model of the same cell (``ctx.upstream_model()``) and repair it with a small set of
known-clean training samples, 5% of the training set in both papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from asd_repro.core.errors import UserError
from asd_repro.defenses import Context
from asd_repro.engine.loop import train_epoch
from asd_repro.engine.optim import Optimizer


@dataclass
class CleanData:
    """The defender's clean subset of the training set, with what ``run.json`` records about it."""

    x: torch.Tensor
    y: torch.Tensor
    indices: np.ndarray
    info: dict[str, Any]


def defender_clean_data(ctx: Context, fraction: float, binding: str) -> CleanData:
    """round(fraction * N / classes) known-clean training samples of every class, drawn with ``default_rng(seed)``.

    Args:
        binding: the gin binding of ``fraction``, named in the error when the fraction gives no sample per class.
    """
    per_class = round(fraction * len(ctx.train_y) / ctx.num_classes)
    if per_class < 1:
        raise UserError(f"{binding} = {fraction} gives no clean sample per class on {len(ctx.train_y)} training "
                        f"images; raise it")
    indices = ctx.clean_indices(per_class, np.random.default_rng(ctx.seed), binding)
    selected = torch.from_numpy(indices).to(ctx.train_y.device)
    info = {"fraction": fraction, "per_class": per_class, "count": len(indices),
            "drawn_with": "Context.clean_indices(per_class, numpy.random.default_rng(seed))",
            "indices": indices.tolist()}
    return CleanData(ctx.train_x[selected], ctx.train_y[selected], indices, info)


def clean_epoch(ctx: Context, model: torch.nn.Module, clean: CleanData, batch_size: int,
                desc: str) -> Callable[[torch.optim.Optimizer], dict[str, float]]:
    """``run_epoch`` of a ``training_phase`` that fine-tunes ``model`` with cross entropy on the clean data."""
    return lambda optimizer: train_epoch(model, optimizer, clean.x, clean.y, ctx.augment, ctx.normalize, batch_size,
                                         ctx.generator, desc=desc)


def training_phase(ctx: Context, phase: str, model: torch.nn.Module, optimizer: Optimizer, epochs: int,
                   clean: CleanData,
                   run_epoch: Callable[[torch.optim.Optimizer], dict[str, float]], first_epoch: int = 0,
                   total_epochs: int | None = None) -> torch.nn.Module:
    """``epochs`` resumable epochs of ``run_epoch(optimizer)`` on ``model`` with ``optimizer``'s build, one curve
    record each.

    Args:
        first_epoch: epochs of the run's earlier phases, so that records count epochs across phases.
        total_epochs: epochs of the whole run (for the progress line); defaults to this phase's.
    """
    optim, schedule = optimizer.build(model.parameters(), epochs)
    pools = {"clean_pool": len(clean.indices), "poisoned_in_clean_pool": int(ctx.poison[clean.indices].sum())}
    ctx.run_phase(phase, epochs, lambda epoch: {**pools, **run_epoch(optim)}, model, optim, schedule,
                  checkpoint=phase, first_epoch=first_epoch, total=total_epochs)
    return model
