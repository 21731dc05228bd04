"""engine.mixmatch: sharpening, MixUp, the interleave, the losses and the lambda_u ramp on hand-made inputs, and one
epoch that never reads an unlabelled label (shared by ASD and DBD)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.mixmatch import (interleave, interleave_offsets, mixmatch_epoch, mixmatch_loss, mixup,
                                       mixup_lambda, ramped_lambda_u, sample_beta, sharpen)

from conftest import tiny_data, tiny_model


# --- MixMatch ------------------------------------------------------------------------------------------------------


def test_sharpen_raises_to_one_over_t_and_renormalises():
    out = sharpen(torch.tensor([[0.6, 0.4], [0.5, 0.5]]), T=0.5)
    np.testing.assert_allclose(out.numpy(), [[0.36 / 0.52, 0.16 / 0.52], [0.5, 0.5]], rtol=1e-6)


def test_mixup_mixes_inputs_and_targets_with_the_permuted_partners():
    inputs = torch.tensor([[1.0], [3.0], [10.0]])
    targets = torch.eye(3)
    mixed_in, mixed_target = mixup(inputs, targets, 0.7, torch.tensor([1, 2, 0]))
    np.testing.assert_allclose(mixed_in.numpy().ravel(), [0.7 * 1 + 0.3 * 3, 0.7 * 3 + 0.3 * 10, 0.7 * 10 + 0.3 * 1])
    np.testing.assert_allclose(mixed_target.numpy(), [[0.7, 0.3, 0], [0, 0.7, 0.3], [0.3, 0, 0.7]], rtol=1e-6)


def test_mixup_lambda_is_the_larger_side_of_a_beta_draw_from_the_generator():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        raw = sample_beta(0.75, torch.Generator().set_state(g.get_state()))
        assert mixup_lambda(0.75, g) == max(raw, 1 - raw) >= 0.5
    draws = np.array([sample_beta(0.75, g) for _ in range(4000)])
    # Beta(0.75, 0.75): mean 1/2, variance a^2 / ((2a)^2 (2a + 1)) = 0.1
    assert draws.mean() == pytest.approx(0.5, abs=0.02) and draws.var() == pytest.approx(0.1, abs=0.01)


def test_lambda_u_ramps_linearly_over_rampup_epochs_then_stays():
    assert [ramped_lambda_u(p, 15, 120) for p in (0, 30, 60, 120, 500)] == [0.0, 3.75, 7.5, 15.0, 15.0]
    assert ramped_lambda_u(3.0, 15, 0) == 15.0


def test_mixmatch_loss_is_soft_cross_entropy_plus_mean_squared_error():
    x_logits, x_targets = torch.log(torch.tensor([[0.5, 0.5]])), torch.tensor([[0.8, 0.2]])
    u_logits, u_targets = torch.log(torch.tensor([[0.75, 0.25]])), torch.tensor([[1.0, 0.0]])
    lx, lu = mixmatch_loss(x_logits, x_targets, u_logits, u_targets)
    assert lx.item() == pytest.approx(math.log(2), rel=1e-6)
    assert lu.item() == pytest.approx((0.25 ** 2 + 0.25 ** 2) / 2, rel=1e-6)


@pytest.mark.parametrize("chunks,batch", [(3, 64), (4, 10), (3, 5)])
def test_interleave_is_a_permutation_that_round_trips(chunks, batch):
    xs = list(torch.arange(chunks * batch).view(chunks, batch))
    mixed = interleave(xs, batch)
    assert sorted(torch.cat(mixed).tolist()) == list(range(chunks * batch))
    for a, b in zip(interleave(mixed, batch), xs):
        assert torch.equal(a, b)
    # every forward batch now holds a slice of the labelled chunk 0 and of the unlabelled ones
    for i, m in enumerate(mixed):
        assert any(v < batch for v in m.tolist()) and (i > 0 or any(v >= batch for v in m.tolist()))


def test_interleave_offsets_of_the_reference_batch():
    assert interleave_offsets(64, 2) == [0, 21, 42, 64]


def test_mixmatch_epoch_never_reads_unlabelled_labels_and_ramps_lambda_u_within_the_epoch():
    torch.manual_seed(0)
    x, y, _ = tiny_data()
    y = y.clone()
    y[24:] = -1  # one_hot would fail on these: the unlabelled pool's labels must not be read
    model = tiny_model()
    start = [p.clone() for p in model.parameters()]
    stats = mixmatch_epoch(model, torch.optim.Adam(model.parameters(), 0.002), x, y, torch.arange(24),
                           torch.arange(24, 48), Augment(1, "reflect", True), Normalize((0.2,), (0.3,), "cpu"),
                           torch.Generator().manual_seed(0), 3, epoch=3, iterations=4, batch_size=8, rampup=12)
    assert stats["lambda_u"] == pytest.approx(np.mean([15 * (3 + i / 4) / 12 for i in range(4)]))
    assert all(not torch.equal(a, b) for a, b in zip(start, model.parameters()))
