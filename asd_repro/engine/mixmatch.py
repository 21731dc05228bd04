"""MixMatch (Berthelot et al., NeurIPS 2019) as used by DBD and ASD: one epoch on a labelled and an unlabelled pool.

Follows the MixMatch paper's public code (YU1ut/MixMatch-pytorch) that DBD and ASD adapted: K augmentations of
each unlabelled image, their mean softmax sharpened with temperature T as the guessed label, MixUp of the whole
batch with a random permutation of itself and lambda = max(l, 1 - l), l ~ Beta(alpha, alpha), the batch-norm
interleave, ``Lx`` = soft cross entropy on the labelled part, ``Lu`` = squared error on the unlabelled part, and
``Lx + lambda_u(t) * Lu`` with a linear ramp of lambda_u. There is no EMA model (neither DBD nor ASD use one).

All randomness (shuffles, augmentations, Beta draws, permutations) comes from one ``torch.Generator`` whose state
the caller checkpoints, so a resumed run repeats exactly the draws an uninterrupted one makes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from asd_repro.core.config import configurable, scoped
from asd_repro.core.errors import UserError, require
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.loop import StepLosses, index_batches


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    """Lower the entropy of each row of probabilities: ``p ** (1 / T)``, renormalised."""
    pt = p ** (1.0 / T)
    return pt / pt.sum(dim=1, keepdim=True)


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha) from ``generator`` (as X / (X + Y) with X, Y ~ Gamma(alpha)).

    ``torch.distributions.Beta`` takes no generator, so it would draw from the global RNG instead.
    """
    g = torch._standard_gamma(torch.full((2,), float(alpha), dtype=torch.float64), generator=generator)
    return float(g[0] / g.sum())


def mixup_lambda(alpha: float, generator: torch.Generator) -> float:
    """The MixUp weight of the original sample: max(l, 1 - l), so each mixed sample stays closer to its source."""
    lam = sample_beta(alpha, generator)
    return max(lam, 1.0 - lam)


def mixup(inputs: torch.Tensor, targets: torch.Tensor, lam: float,
          perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix every sample (and its soft target) with the sample ``perm`` sends it to, weight ``lam`` on itself."""
    return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]


def interleave_offsets(batch: int, nu: int) -> list[int]:
    """Boundaries of ``nu + 1`` nearly equal slices of a batch (the last slices take the remainder)."""
    groups = [batch // (nu + 1)] * (nu + 1)
    for i in range(batch - sum(groups)):
        groups[-i - 1] += 1
    return [0, *np.cumsum(groups).tolist()]


def interleave(chunks: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """Swap slice i of chunk 0 with slice i of chunk i (i >= 1), as in the MixMatch code.

    The model sees the labelled and unlabelled chunks in separate forward passes; after the swap every pass holds
    labelled and unlabelled samples alike, so batch-norm statistics are not computed from labelled data alone.
    The swap is its own inverse: applying it to the outputs puts every logit back in its input's place.
    """
    offsets = interleave_offsets(batch, len(chunks) - 1)
    parts = [[c[offsets[p]:offsets[p + 1]] for p in range(len(chunks))] for c in chunks]
    for i in range(1, len(chunks)):
        parts[0][i], parts[i][i] = parts[i][i], parts[0][i]
    return [torch.cat(p, dim=0) for p in parts]


def mixmatch_loss(x_logits: torch.Tensor, x_targets: torch.Tensor, u_logits: torch.Tensor,
                  u_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Lx``: cross entropy against soft targets (mean over samples); ``Lu``: squared error of the softmax
    (mean over all elements, as in the MixMatch code)."""
    lx = -(F.log_softmax(x_logits, dim=1) * x_targets).sum(dim=1).mean()
    lu = ((u_logits.softmax(dim=1) - u_targets) ** 2).mean()
    return lx, lu


def ramped_lambda_u(progress: float, lambda_u: float, rampup: float) -> float:
    """lambda_u(t) = lambda_u * clip(t / rampup, 0, 1), t counted in (fractional) epochs from 0."""
    if rampup == 0:
        return float(lambda_u)
    return float(lambda_u * np.clip(progress / rampup, 0.0, 1.0))


def endless_batches(pool: torch.Tensor, batch_size: int, generator: torch.Generator,
                    device: torch.device | str) -> Iterator[torch.Tensor]:
    """Shuffled full batches (drop_last) of the indices in ``pool``, reshuffled each time the pool is exhausted."""
    if len(pool) < batch_size:
        raise UserError(f"a pool of {len(pool)} samples cannot fill one MixMatch batch of {batch_size} (drop_last); "
                        "lower the defense's MixMatch batch size (asd/engine.MixMatch.batch_size or "
                        "dbd/engine.MixMatch.batch_size)")
    while True:
        for b in index_batches(len(pool), batch_size, generator, drop_last=True):
            yield pool[b].to(device)


def mixmatch_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   labelled: torch.Tensor, unlabelled: torch.Tensor, augment: Augment, normalize: Normalize,
                   generator: torch.Generator, num_classes: int, epoch: int, iterations: int = 1024,
                   batch_size: int = 64, K: int = 2, T: float = 0.5, alpha: float = 0.75, lambda_u: float = 15.0,
                   rampup: float = 120, desc: str = "mixmatch") -> dict[str, float]:
    """One MixMatch epoch; returns the mean loss, Lx, Lu and lambda_u over its iterations.

    Args:
        model: trained in place, kept in train mode throughout (the label guesses too, as in the MixMatch code).
        x: uint8 (N, C, H, W) images on the training device.
        y: labels; only those of ``labelled`` are read.
        labelled: indices (into ``x``) of the labelled pool.
        unlabelled: indices of the unlabelled pool (its labels are never read).
        epoch: 0-based epoch, the start of this epoch on the lambda_u ramp.
        iterations: optimiser steps in the epoch; each pool's batches restart, reshuffled, when exhausted.
        batch_size: labelled and unlabelled batch size (equal: the interleave splits the mixed batch in K + 1
            chunks of this size).
        K: augmentations per unlabelled image.
        T: sharpening temperature of the guessed labels.
        alpha: the MixUp Beta(alpha, alpha) parameter.
        lambda_u: the final weight of ``Lu``.
        rampup: epochs over which lambda_u ramps linearly from 0.
    """
    model.train()
    device = x.device
    xs = endless_batches(labelled.cpu(), batch_size, generator, device)
    us = endless_batches(unlabelled.cpu(), batch_size, generator, device)
    sums = torch.zeros(3, device=device)  # loss, Lx, Lu summed on the device: no sync per iteration
    weights = 0.0
    losses = StepLosses(desc)
    for i in tqdm(range(iterations), desc=desc, leave=False, mininterval=1.0):
        xi, ui = next(xs), next(us)
        x_in = normalize(augment(x[xi], generator))
        x_target = F.one_hot(y[xi], num_classes).float()
        u_in = [normalize(augment(x[ui], generator)) for _ in range(K)]
        with torch.no_grad():
            p = torch.stack([model(u).softmax(dim=1) for u in u_in]).mean(dim=0)
            u_target = sharpen(p, T)
        inputs = torch.cat([x_in, *u_in])
        targets = torch.cat([x_target, *[u_target] * K])
        lam = mixup_lambda(alpha, generator)
        perm = torch.randperm(len(inputs), generator=generator).to(device)
        mixed_in, mixed_target = mixup(inputs, targets, lam, perm)
        logits = interleave([model(c) for c in interleave(list(mixed_in.split(batch_size)), batch_size)],
                            batch_size)
        lx, lu = mixmatch_loss(logits[0], mixed_target[:batch_size], torch.cat(logits[1:]),
                               mixed_target[batch_size:])
        weight = ramped_lambda_u(epoch + i / iterations, lambda_u, rampup)
        loss = lx + weight * lu
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([loss, lx, lu]).detach()
        losses.add(loss)
        weights += weight
    losses.check()
    loss, lx, lu = (sums / max(iterations, 1)).tolist()
    return {"loss": loss, "lx": lx, "lu": lu, "lambda_u": weights / max(iterations, 1)}


@configurable(module="engine")
class MixMatch:
    """MixMatch's settings, the object a defense takes (``defenses.ASD.mixmatch = @asd/engine.MixMatch()``);
    ``epoch`` runs one ``mixmatch_epoch`` with them.

    Args:
        iterations: optimiser steps an epoch.
        batch_size: labelled and unlabelled batch size.
        K: augmentations per unlabelled image.
        T: sharpening temperature of the guessed labels.
        alpha: the MixUp Beta(alpha, alpha) parameter.
        lambda_u: the final weight of ``Lu``.
        rampup: epochs over which lambda_u ramps linearly from 0 (the references tie it to the epochs).
    """

    def __init__(self, iterations: int = 1024, batch_size: int = 64, K: int = 2, T: float = 0.5,
                 alpha: float = 0.75, lambda_u: float = 15.0, rampup: float = 120):
        at = scoped("engine.MixMatch")
        require(f"{at}.iterations", iterations, iterations >= 1, "an integer >= 1")
        require(f"{at}.batch_size", batch_size, batch_size >= 1, "an integer >= 1")
        require(f"{at}.K", K, K >= 1, "an integer >= 1")
        require(f"{at}.T", T, T > 0, "a temperature > 0")
        require(f"{at}.alpha", alpha, alpha > 0, "a number > 0")
        require(f"{at}.lambda_u", lambda_u, lambda_u >= 0, "a weight >= 0")
        require(f"{at}.rampup", rampup, rampup >= 0, "epochs >= 0")
        self.settings = {"iterations": iterations, "batch_size": batch_size, "K": K, "T": T, "alpha": alpha,
                         "lambda_u": lambda_u, "rampup": rampup}

    @property
    def batch_size(self) -> int:
        return self.settings["batch_size"]

    def epoch(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              labelled: torch.Tensor, unlabelled: torch.Tensor, augment: Augment, normalize: Normalize,
              generator: torch.Generator, num_classes: int, epoch: int, desc: str = "mixmatch") -> dict[str, float]:
        """One MixMatch epoch (``mixmatch_epoch``) with these settings."""
        return mixmatch_epoch(model, optimizer, x, y, labelled, unlabelled, augment, normalize, generator,
                              num_classes, epoch, desc=desc, **self.settings)

    def __repr__(self) -> str:
        return f"MixMatch({', '.join(f'{k}={v}' for k, v in self.settings.items())})"
