"""No defense: plain supervised training on the poisoned set (the paper's "No Defense" column)."""

from __future__ import annotations

import gin
import torch

from asd_repro.core.config import configurable
from asd_repro.core.errors import check_types, require
from asd_repro.defenses import Context, Defense, register_defense
from asd_repro.engine.loop import train_epoch
from asd_repro.engine.optim import make_optimizer, make_schedule


def supervised_training(ctx: Context, model: torch.nn.Module, epochs: int, batch_size: int,
                        phase: str = "train") -> torch.nn.Module:
    """Cross-entropy training on the poisoned set with the gin-bound optimiser and schedule (resumable)."""
    optimizer = make_optimizer(model.parameters())
    schedule = make_schedule(optimizer, epochs)
    ctx.run_phase(phase, epochs, lambda epoch: train_epoch(
        model, optimizer, ctx.train_x, ctx.train_y, ctx.augment, ctx.normalize, batch_size, ctx.generator,
        desc=f"{phase} {epoch + 1}/{epochs}"), model, optimizer, schedule)
    return model


@register_defense("none")
@configurable(module="defenses")
class NoDefense(Defense):
    """Args:
        epochs: training epochs.
        batch_size: mini-batch size.
    """

    def __init__(self, epochs: int = gin.REQUIRED, batch_size: int = 128):
        check_types("defenses.NoDefense", type(self).__init__, locals())
        require("defenses.NoDefense.epochs", epochs, epochs >= 1, "an integer >= 1")
        require("defenses.NoDefense.batch_size", batch_size, batch_size >= 1, "an integer >= 1")
        self.epochs = epochs
        self.batch_size = batch_size

    def run(self, ctx: Context) -> torch.nn.Module:
        return supervised_training(ctx, ctx.new_model(), self.epochs, self.batch_size)
