"""No defense: plain supervised training on the poisoned set (the paper's "No Defense" column)."""

from __future__ import annotations

import gin
import torch

from asd_repro.core.config import configurable
from asd_repro.core.errors import require
from asd_repro.defenses import Context, Defense, register_defense
from asd_repro.engine.loop import train_epoch
from asd_repro.engine.optim import Optimizer, given


def supervised_training(ctx: Context, model: torch.nn.Module, epochs: int, batch_size: int, optimizer: Optimizer,
                        phase: str = "train") -> torch.nn.Module:
    """Cross-entropy training on the poisoned set with ``optimizer``'s optimiser and schedule (resumable)."""
    optimizer, schedule = optimizer.build(model.parameters(), epochs)
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
        optimizer: SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine to zero (the paper profile binds the
            paper's multistep schedule).
    """

    def __init__(self, epochs: int = gin.REQUIRED, batch_size: int = 128, optimizer: Optimizer | None = None):
        require("defenses.NoDefense.epochs", epochs, epochs >= 1, "an integer >= 1")
        require("defenses.NoDefense.batch_size", batch_size, batch_size >= 1, "an integer >= 1")
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer or given("sgd", 0.1, weight_decay=5e-4, schedule="cosine")

    def run(self, ctx: Context) -> torch.nn.Module:
        return supervised_training(ctx, ctx.new_model(), self.epochs, self.batch_size, self.optimizer)
