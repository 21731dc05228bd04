"""Optimisers and learning-rate schedules as gin choices (closed sets, checked by name)."""

from __future__ import annotations

from typing import Iterable

import torch

from asd_repro.core.config import configurable
from asd_repro.core.errors import check_types, require

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "multistep")


@configurable(module="engine")
def make_optimizer(params: Iterable[torch.nn.Parameter], name: str = "sgd", lr: float = 0.1, momentum: float = 0.9,
                   weight_decay: float = 5e-4, nesterov: bool = False) -> torch.optim.Optimizer:
    """Args:
        name: 'sgd' (momentum, nesterov, weight_decay apply) or 'adam' (weight_decay applies).
        lr: learning rate.
    """
    check_types("engine.make_optimizer", make_optimizer, locals())
    require("engine.make_optimizer.name", name, name in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}")
    require("engine.make_optimizer.lr", lr, lr > 0, "a learning rate > 0")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise AssertionError(name)  # unreachable: checked above


@configurable(module="engine")
def make_schedule(optimizer: torch.optim.Optimizer, epochs: int, name: str = "cosine",
                  milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1):
    """Per-epoch learning-rate schedule.

    Args:
        name: 'constant', 'cosine' (to zero over ``epochs``) or 'multistep'.
        milestones: for 'multistep', fractions of ``epochs`` at which the lr is multiplied by ``gamma``.
    """
    check_types("engine.make_schedule", make_schedule, locals())
    require("engine.make_schedule.name", name, name in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "multistep":
        steps = sorted({max(1, int(round(m * epochs))) for m in milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=gamma)
    raise AssertionError(name)  # unreachable: checked above
