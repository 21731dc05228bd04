"""Data-poisoning attacks: each turns a clean dataset into a FIXED poisoned training set.

The attacker hands over a poisoned training set and never touches training, so every attack is
materialised once and cached, in two stages: ``assets`` builds the trigger (a patch, a pattern, a
warping field, a trained generator, adversarial perturbations) with ``fit`` and saves ``state()``;
``poison`` restores it with ``load_state`` and applies it. An attack plug-in is one file here plus
one gin file in ``params/attacks/``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asd_repro.core.errors import UserError, is_integer, is_number, is_range  # noqa: F401 (re-exported to the attacks)
from asd_repro.core.registry import Registry

ATTACKS = Registry("attack", "asd_repro.attacks")
register_attack = ATTACKS.register


@dataclass
class PoisonedTrain:
    x: np.ndarray  # uint8 (N, H, W, C)
    y: np.ndarray  # labels as handed to the victim (poisoned labels included)
    poison: np.ndarray  # bool (N,): ground truth, for diagnostics and the reference's seed-sample draw only


class Attack:
    """Base class: a fixed trigger applied to a random ``ratio`` of non-target training samples.

    Args:
        target: the attacker's target label.
        ratio: probability that each eligible training sample is poisoned (the reference draws every
            non-target sample independently with this probability: ~4.5% of CIFAR-10 at 0.05).
        clean_label: poison only target-class samples and keep labels (CLB, clean-label Refool).
    """

    clean_label = False

    def __init__(self, target: int, ratio: float):
        self.require("target", target, is_integer(target) and target >= 0, "a class label, an integer >= 0")
        self.require("ratio", ratio, is_number(ratio) and 0.0 <= ratio <= 1.0, "a fraction in [0, 1]")
        self.target = int(target)
        self.ratio = float(ratio)

    def require(self, name: str, value: object, ok: bool, expected: str) -> None:
        """Raise the one-line error that names this attack's gin binding ``name`` unless ``ok``."""
        if not ok:
            raise UserError(f"attacks.{type(self).__name__}.{name} = {value!r} is invalid: expected {expected}; "
                            "fix the binding (params/attacks/*.gin, bindings.poison or --bind)")

    def check_target(self, y: np.ndarray) -> None:
        """The target must be one of the training set's classes (labels 0 .. max)."""
        top = int(y.max()) if len(y) else -1
        self.require("target", self.target, self.target <= top, f"one of this dataset's classes, 0-{top}")

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        """Build the trigger (pattern, warping field, ...) from the clean training set ``(x, y)``."""

    def state(self) -> dict[str, np.ndarray]:
        """The trigger assets built by ``fit``, as named arrays (saved by the ``assets`` stage)."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what ``state`` returned."""

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Return triggered copies of uint8 images (N, H, W, C)."""
        raise NotImplementedError

    def eligible(self, y: np.ndarray) -> np.ndarray:
        self.check_target(y)
        return y == self.target if self.clean_label else y != self.target

    def poison_train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> PoisonedTrain:
        mask = self.eligible(y) & (rng.random(len(y)) < self.ratio)
        x, y = x.copy(), y.copy()
        if mask.any():
            x[mask] = self.apply(x[mask])
        if not self.clean_label:
            y[mask] = self.target
        return PoisonedTrain(x, y, mask)

    def poison_test(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ASR set: every test image whose true class is not the target, triggered, labelled target."""
        index = np.flatnonzero(y != self.target)
        return self.apply(x[index]), np.full(len(index), self.target, dtype=np.int64), index


def scaled(value: int, size: int, reference: int = 32) -> int:
    """A pixel quantity defined at 32x32 (the reference's CIFAR-10), scaled to another image size."""
    return max(1, int(round(value * size / reference)))


def to_channels(rgb: np.ndarray, channels: int) -> np.ndarray:
    """Map an (..., 3) RGB pattern to ``channels`` channels: luma for grey images, repeat otherwise."""
    if channels == 3:
        return rgb
    if channels == 1:
        luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(np.rint(luma), 0, 255).astype(np.uint8)[..., None]
    return np.repeat(rgb[..., :1], channels, axis=-1)


def channel_stats(images):
    """Per-channel mean and standard deviation (unbiased) of uint8 NCHW ``images``, float32 (1, C, 1, 1) tensors.

    On the CPU from one float copy of the images; on an accelerator in chunks (``chunked_channel_stats``), because a
    float copy of a 224 px training set (22 GiB for ImageNet-30) does not fit a card beside the set."""
    if images.device.type != "cpu":
        return chunked_channel_stats(images)
    values = images.float()
    return values.mean(dim=(0, 2, 3), keepdim=True), values.std(dim=(0, 2, 3), keepdim=True)


def chunked_channel_stats(images, chunk: int = 1024):
    """``channel_stats`` from float64 sums over ``chunk`` images at a time (equal up to float32 rounding)."""
    import torch

    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for i in range(0, len(images), chunk):
        part = images[i:i + chunk].double()
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    var = (squares - count * mean.square()) / max(count - 1, 1)
    shape = (1, -1, 1, 1)
    return mean.float().view(shape), var.clamp_min(0).sqrt().float().view(shape)
