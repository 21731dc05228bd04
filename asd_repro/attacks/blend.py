"""Blend (Chen et al., 2017): x' = (1 - alpha) * x + alpha * P for a fixed pattern P.

DBD and ASD blend a cartoon image with alpha = 0.1; that image is not available offline, so P is
a fixed uniform-noise image drawn from ``pattern_seed`` (Chen et al.'s random-pattern variant).
This is listed in DEVIATIONS.md.
"""

from __future__ import annotations

import gin
import numpy as np

from asd_repro.attacks import Attack, is_integer, is_number, register_attack
from asd_repro.core.config import configurable


@register_attack("blend")
@configurable(module="attacks")
class Blend(Attack):
    """Args:
        alpha: blend weight of the pattern, used for both the poisoned training and test images.
        pattern_seed: seed of the noise pattern (independent of which samples are poisoned).
    """

    def __init__(self, target: int = gin.REQUIRED, ratio: float = gin.REQUIRED, alpha: float = 0.1,
                 pattern_seed: int = 0):
        super().__init__(target, ratio)
        self.require("alpha", alpha, is_number(alpha) and 0.0 <= alpha <= 1.0, "a blend weight in [0, 1]")
        self.require("pattern_seed", pattern_seed, is_integer(pattern_seed) and pattern_seed >= 0, "an integer >= 0")
        self.alpha = float(alpha)
        self.pattern_seed = pattern_seed
        self.pattern: np.ndarray | None = None

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        pattern_rng = np.random.default_rng(self.pattern_seed)
        self.pattern = pattern_rng.integers(0, 256, size=x.shape[1:], dtype=np.uint8)

    def state(self) -> dict[str, np.ndarray]:
        return {"pattern": self.pattern}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.pattern = arrays["pattern"]

    def apply(self, x: np.ndarray) -> np.ndarray:
        assert self.pattern is not None, "fit() or load_state() first"
        mixed = (1.0 - self.alpha) * x.astype(np.float32) + self.alpha * self.pattern.astype(np.float32)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
