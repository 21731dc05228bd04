"""WaNet (Nguyen & Tran, ICLR 2021): a fixed, smooth, nearly invisible warping field.

The field follows the paper's code: a k x k random field in [-1, 1] (two planes, x and y),
normalised by its mean absolute value, upsampled bicubically to H x W, scaled by s / H (s is the
strength in units of the image half-size, since grid coordinates span [-1, 1]), added to the
identity sampling grid and clamped to [-1, 1]; images are resampled with ``grid_sample``.
Poisoned samples take the target label. "Noise mode" cross samples are warped with the field
plus per-sample uniform grid noise in [-1, 1] / H and keep their true labels: they teach the
victim that only the exact field, not any warp, means the target. Cross samples are not backdoor
carriers, so they are outside the ``poison`` mask. The paper warps on the fly while it controls
training; here warps are applied once to a fixed poisoned set (data poisoning only).
"""

from __future__ import annotations

import gin
import numpy as np

from asd_repro.attacks import Attack, PoisonedTrain, is_integer, is_number, register_attack
from asd_repro.core.config import configurable


def identity_grid(h: int, w: int) -> np.ndarray:
    """(H, W, 2) sampling grid of ``grid_sample`` (align_corners=True): [..., 0] = x, [..., 1] = y."""
    ys, xs = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                         indexing="ij")
    return np.stack([xs, ys], axis=-1)


def warp(x: np.ndarray, grids: np.ndarray) -> np.ndarray:
    """Resample uint8 NHWC images with one (H, W, 2) grid or one grid per image (N, H, W, 2)."""
    import torch
    import torch.nn.functional as F

    if len(x) == 0:
        return x.copy()
    grid = torch.from_numpy(np.array(grids, dtype=np.float32))
    grid = grid.expand(len(x), -1, -1, -1) if grid.dim() == 3 else grid
    inputs = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()
    out = F.grid_sample(inputs, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


@register_attack("wanet")
@configurable(module="attacks")
class WaNet(Attack):
    """Args:
        k: side of the random control field (4 in the paper).
        s: warping strength in units of the image half-size (0.5 in the paper; 0 is the identity).
        cross_ratio: noise-mode samples per poisoned sample (2 in the paper): each sample outside the
            poison mask is a cross sample with probability ``cross_ratio * ratio``.
        batch_size: images warped per call of ``grid_sample`` (memory only, no effect on the result).
    """

    def __init__(self, target: int = gin.REQUIRED, ratio: float = gin.REQUIRED, k: int = 4, s: float = 0.5,
                 cross_ratio: float = 2.0, batch_size: int = 1024):
        super().__init__(target, ratio)
        self.require("k", k, is_integer(k) and k >= 2, "an integer >= 2 (control points per side)")
        self.require("s", s, is_number(s) and s >= 0, "a warping strength >= 0")
        self.require("cross_ratio", cross_ratio, is_number(cross_ratio) and 0 <= cross_ratio * ratio <= 1,
                     f"a number >= 0 with cross_ratio x ratio ({ratio}) in [0, 1]")
        self.require("batch_size", batch_size, is_integer(batch_size) and batch_size >= 1, "an integer >= 1")
        self.k = int(k)
        self.s = float(s)
        self.cross_ratio = float(cross_ratio)
        self.batch_size = int(batch_size)
        self.grid: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        import torch
        import torch.nn.functional as F

        h, w = x.shape[1:3]
        field = rng.uniform(-1.0, 1.0, size=(1, 2, self.k, self.k)).astype(np.float32)
        field /= np.mean(np.abs(field))
        smooth = F.interpolate(torch.from_numpy(field), size=(h, w), mode="bicubic", align_corners=True)
        smooth = smooth[0].permute(1, 2, 0).numpy()  # (H, W, 2), x and y planes last
        self.grid = np.clip(identity_grid(h, w) + self.s * smooth / h, -1.0, 1.0).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"grid": self.grid}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.grid = arrays["grid"]

    def apply(self, x: np.ndarray) -> np.ndarray:
        assert self.grid is not None, "fit() or load_state() first"
        return np.concatenate([warp(x[i:i + self.batch_size], self.grid)
                               for i in range(0, len(x), self.batch_size)] or [x.copy()])

    def apply_noisy(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noise mode: the field plus independent uniform grid noise in [-1, 1] / H per image."""
        assert self.grid is not None, "fit() or load_state() first"
        h = x.shape[1]
        out = []
        for i in range(0, len(x), self.batch_size):
            batch = x[i:i + self.batch_size]
            noise = rng.uniform(-1.0, 1.0, size=(len(batch), *self.grid.shape)).astype(np.float32) / h
            out.append(warp(batch, np.clip(self.grid + noise, -1.0, 1.0)))
        return np.concatenate(out) if out else x.copy()

    def draw(self, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """The poison mask (the base class's Bernoulli draw) and the noise-mode cross mask."""
        poison = self.eligible(y) & (rng.random(len(y)) < self.ratio)
        cross = ~poison & (rng.random(len(y)) < self.cross_ratio * self.ratio)
        return poison, cross

    def poison_train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> PoisonedTrain:
        poison, cross = self.draw(y, rng)
        x, y = x.copy(), y.copy()
        if poison.any():
            x[poison] = self.apply(x[poison])
            y[poison] = self.target
        if cross.any():
            x[cross] = self.apply_noisy(x[cross], rng)
        return PoisonedTrain(x, y, poison)
