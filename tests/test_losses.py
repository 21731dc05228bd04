"""engine.losses: the symmetric cross entropy (ASD's split loss, DBD's warm-up and split loss) on hand-computed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asd_repro.engine.losses import sce, sce_per_sample


# --- symmetric cross entropy ---------------------------------------------------------------------------------------


def test_sce_matches_a_hand_computation():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25]]))
    targets = torch.tensor([0, 1])
    # CE = -log p_y; RCE = -log(1e-4) * (1 - p_y); SCE = 0.1 CE + 1.0 RCE
    expected = [0.1 * math.log(2) + math.log(1e4) * 0.5, 0.1 * math.log(4) + math.log(1e4) * 0.75]
    np.testing.assert_allclose(sce_per_sample(logits, targets).numpy(), expected, rtol=1e-6)
    assert sce(logits, targets).item() == pytest.approx(sum(expected) / 2, rel=1e-6)
    weighted = sce_per_sample(logits, targets, ce_weight=1.0, rce_weight=0.0)
    np.testing.assert_allclose(weighted.numpy(), [math.log(2), math.log(4)], rtol=1e-6)


def test_sce_clamps_tiny_probabilities_at_1e_minus_7():
    # p = (1, e^-100, e^-100): without the clamp RCE would be ~0; with it each wrong class counts 1e-7.
    value = sce_per_sample(torch.tensor([[100.0, 0.0, 0.0]]), torch.tensor([0])).item()
    assert value == pytest.approx(math.log(1e4) * 2e-7, rel=1e-3)
