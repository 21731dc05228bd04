"""Loss-guided splits of the poisoned training set, shared by the defenses that split it (ABL, DBD, ASD)."""

from __future__ import annotations

import numpy as np
import torch

from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.loop import predict_logits
from asd_repro.engine.losses import SCE


def lowest_fraction(score: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the int(fraction * N) lowest scores, sorted (ties: the lower index first)."""
    return np.sort(np.argsort(score, kind="stable")[:int(len(score) * fraction)])


def sce_split_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, normalize: Normalize, batch_size: int,
                   augment: Augment, generator: torch.Generator, sce: SCE) -> np.ndarray:
    """The symmetric cross entropy ``sce`` of every sample: eval mode, train-augmented images, the labels as handed
    over (DBD's and ASD's split loss)."""
    logits = predict_logits(model, x, normalize, batch_size, augment, generator)
    return sce.per_sample(logits, y).cpu().numpy()
