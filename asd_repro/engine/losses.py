"""Loss functions shared by the defenses.

Symmetric cross entropy (Wang et al., ICCV 2019) is the split loss of ASD and the linear-head loss of
DBD: ``ce_weight * CE + rce_weight * RCE``, where the reverse cross entropy swaps the roles of the
prediction and the label, ``RCE = -sum_j p_j * log(clamp(onehot_j, onehot_min, 1))``, with the
prediction clamped to ``[prob_min, 1]``. Because log(1) = 0 only the wrong classes contribute:
RCE is about ``-log(onehot_min) * (1 - p_y)``, a bounded loss that a few noisy labels cannot blow up.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from asd_repro.core.config import configurable, scoped
from asd_repro.core.errors import require


def sce_per_sample(logits: torch.Tensor, targets: torch.Tensor, ce_weight: float = 0.1, rce_weight: float = 1.0,
                   prob_min: float = 1e-7, onehot_min: float = 1e-4) -> torch.Tensor:
    """Symmetric cross entropy of every sample (shape ``(N,)``); defaults are DBD's and ASD's.

    Args:
        logits: (N, C) unnormalised scores.
        targets: (N,) integer labels.
        ce_weight: weight of the cross entropy (alpha in the SCE paper).
        rce_weight: weight of the reverse cross entropy (beta in the SCE paper).
        prob_min: lower clamp of the softmax probabilities inside RCE.
        onehot_min: lower clamp of the one-hot label inside RCE's log (log(0) would be infinite).
    """
    logits = logits.float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    prob = logits.softmax(dim=1).clamp(min=prob_min, max=1.0)
    # log(clamp(onehot, onehot_min, 1)) is 0 on the label and log(onehot_min) elsewhere.
    wrong = torch.ones_like(prob).scatter_(1, targets.view(-1, 1), 0.0)
    rce = -math.log(onehot_min) * (prob * wrong).sum(dim=1)
    return ce_weight * ce + rce_weight * rce


def sce(logits: torch.Tensor, targets: torch.Tensor, **kwargs: float) -> torch.Tensor:
    """Mean symmetric cross entropy over the batch; ``kwargs`` as in ``sce_per_sample``."""
    return sce_per_sample(logits, targets, **kwargs).mean()


@configurable(module="engine")
class SCE:
    """Symmetric cross entropy with its settings, the object a defense takes (``defenses.ASD.sce = @asd/engine.SCE()``).

    Args: as in ``sce_per_sample`` (ce_weight, rce_weight, prob_min, onehot_min).
    """

    def __init__(self, ce_weight: float = 0.1, rce_weight: float = 1.0, prob_min: float = 1e-7,
                 onehot_min: float = 1e-4):
        at = scoped("engine.SCE")
        require(f"{at}.ce_weight", ce_weight, ce_weight >= 0, "a weight >= 0")
        require(f"{at}.rce_weight", rce_weight, rce_weight >= 0, "a weight >= 0")
        require(f"{at}.prob_min", prob_min, 0 < prob_min < 1, "a probability in (0, 1)")
        require(f"{at}.onehot_min", onehot_min, 0 < onehot_min < 1, "a value in (0, 1)")
        self.settings = {"ce_weight": ce_weight, "rce_weight": rce_weight, "prob_min": prob_min,
                         "onehot_min": onehot_min}

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sce_per_sample(logits, targets, **self.settings)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch mean."""
        return sce(logits, targets, **self.settings)

    def __repr__(self) -> str:
        return f"SCE({', '.join(f'{k}={v}' for k, v in self.settings.items())})"
