"""ACC and ASR, the table's two numbers, computed one way for the curves, a run's final record and the evaluate stage.

ACC is the accuracy on the clean test images; ASR the fraction of the poisoned test images (every non-target test
image with the trigger, labelled with the target) that the model assigns to the target. Both are exact and
sample-weighted, from eval-mode predictions; an empty set has no value (None), never 0.
"""

from __future__ import annotations

from typing import Any

import torch

from asd_repro.engine.augment import Normalize
from asd_repro.engine.loop import predict_logits


def correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, normalize: Normalize,
            batch_size: int = 256) -> int:
    """How many of the images ``x`` the model labels ``y`` (eval mode)."""
    if len(y) == 0:
        return 0
    return int((predict_logits(model, x, normalize, batch_size).argmax(1) == y).sum().item())


def acc_asr(model: torch.nn.Module, test_x: torch.Tensor, test_y: torch.Tensor, bd_x: torch.Tensor,
            bd_y: torch.Tensor, normalize: Normalize, batch_size: int = 256) -> dict[str, Any]:
    """ACC (%) on (test_x, test_y), ASR (%) on the poisoned test set (bd_x, labelled bd_y = the target), and the sizes.

    Images are uint8 NCHW tensors on the model's device.
    """
    n_clean, n_asr = len(test_y), len(bd_y)
    acc = 100.0 * correct(model, test_x, test_y, normalize, batch_size) / n_clean if n_clean else None
    asr = 100.0 * correct(model, bd_x, bd_y, normalize, batch_size) / n_asr if n_asr else None
    return {"acc": acc, "asr": asr, "n_clean": n_clean, "n_asr": n_asr}


def check_asr_labels(bd_y: Any, target: int) -> None:
    """The poisoned test set must be labelled with the attack's target (else its 'ASR' would measure something else)."""
    if bool((bd_y != target).any()):
        raise ValueError("the poisoned test set must be labelled with the target class")
