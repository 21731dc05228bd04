"""The one way an optimiser is set: ``engine.Optimizer``, bound by scope for each training phase.

A defense takes one ``Optimizer`` per phase that has its own settings, and its gin file binds it by scoped
reference, so every learning rate reads the same way (``<scope>/engine.Optimizer.lr``)::

    defenses.ASD.optimizer = @asd/engine.Optimizer()
    asd/engine.Optimizer.name = 'adam'
    asd/engine.Optimizer.lr = 0.002
"""

from __future__ import annotations

from typing import Iterable

import torch

from asd_repro.core.config import configurable, scoped
from asd_repro.core.errors import require

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "multistep")


@configurable(module="engine")
class Optimizer:
    """An optimiser and its per-epoch learning-rate schedule; ``build`` makes both for a phase.

    Args:
        name: 'sgd' (momentum, nesterov, weight_decay apply) or 'adam' (weight_decay applies).
        lr: learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        nesterov: SGD's Nesterov momentum.
        schedule: 'constant', 'cosine' (to zero over the phase's epochs) or 'multistep'.
        milestones: for 'multistep', fractions of the phase's epochs at which the lr is multiplied by ``gamma``.
        drop_epochs: for 'multistep', absolute epochs of the phase instead of ``milestones`` (as the FP and NAD
            reference codes write them); None uses ``milestones``.
        gamma: the multistep multiplier.
    """

    def __init__(self, name: str = "sgd", lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = False, schedule: str = "cosine", milestones: tuple[float, ...] = (0.5, 0.75),
                 drop_epochs: tuple[int, ...] | None = None, gamma: float = 0.1):
        at = scoped("engine.Optimizer")
        require(f"{at}.name", name, name in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}")
        require(f"{at}.lr", lr, lr > 0, "a learning rate > 0")
        require(f"{at}.momentum", momentum, momentum >= 0, "a number >= 0")
        require(f"{at}.weight_decay", weight_decay, weight_decay >= 0, "a number >= 0")
        require(f"{at}.schedule", schedule, schedule in SCHEDULES, f"one of {', '.join(SCHEDULES)}")
        require(f"{at}.milestones", milestones, all(m > 0 for m in milestones), "fractions > 0")
        require(f"{at}.drop_epochs", drop_epochs, drop_epochs is None or all(e >= 1 for e in drop_epochs),
                "None or epochs >= 1")
        require(f"{at}.gamma", gamma, gamma > 0, "a multiplier > 0")
        self.name, self.lr, self.momentum, self.weight_decay, self.nesterov = name, lr, momentum, weight_decay, nesterov
        self.schedule, self.milestones, self.drop_epochs, self.gamma = schedule, tuple(milestones), drop_epochs, gamma

    @property
    def settings(self) -> dict:
        return {"name": self.name, "lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "nesterov": self.nesterov, "schedule": self.schedule, "milestones": self.milestones,
                "drop_epochs": self.drop_epochs, "gamma": self.gamma}

    def make(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimiser alone, over ``params`` (a phase without a schedule)."""
        return make_optimizer(params, self.name, self.lr, self.momentum, self.weight_decay, self.nesterov)

    def build(self, params: Iterable[torch.nn.Parameter], epochs: int):
        """(optimiser, schedule) over ``params`` for a phase of ``epochs`` epochs."""
        optimizer = self.make(params)
        milestones = (self.milestones if self.drop_epochs is None
                      else tuple(e / max(epochs, 1) for e in self.drop_epochs))
        return optimizer, make_schedule(optimizer, epochs, self.schedule, milestones, self.gamma)

    def __repr__(self) -> str:
        return f"Optimizer({', '.join(f'{k}={v!r}' for k, v in self.settings.items())})"


def given(name: str, lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0, nesterov: bool = False,
          schedule: str = "constant", milestones: tuple[float, ...] = (0.5, 0.75),
          drop_epochs: tuple[int, ...] | None = None, gamma: float = 0.1) -> Optimizer:
    """An ``Optimizer`` with every setting passed, so no gin binding changes it: a defense's Python default (its gin
    file binds the same values by scope)."""
    return Optimizer(name=name, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                     schedule=schedule, milestones=milestones, drop_epochs=drop_epochs, gamma=gamma)


def make_optimizer(params: Iterable[torch.nn.Parameter], name: str, lr: float, momentum: float,
                   weight_decay: float, nesterov: bool) -> torch.optim.Optimizer:
    """The torch optimiser ``name`` (checked by ``Optimizer``)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise AssertionError(name)  # unreachable: checked above


def make_schedule(optimizer: torch.optim.Optimizer, epochs: int, name: str, milestones: tuple[float, ...],
                  gamma: float):
    """Per-epoch learning-rate schedule ``name`` (checked by ``Optimizer``): constant, cosine to zero over ``epochs``,
    or the lr multiplied by ``gamma`` at the ``milestones`` fractions of ``epochs``."""
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if name == "multistep":
        steps = sorted({max(1, int(round(m * epochs))) for m in milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=gamma)
    raise AssertionError(name)  # unreachable: checked above
