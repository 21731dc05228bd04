"""BadNets (Gu et al., 2017): a small patch stamped on the image, label set to the target.

At 32x32 the trigger is the ASD reference's: black everywhere except a 2x2 coloured patch at
rows 4-5, cols 4-5. Injection zeroes the trigger's pixels and adds the trigger (i.e. writes the
patch). For other sizes the patch and its position scale with the image (nearest-neighbour
upsampling of the 2x2 pattern); grey images take the pattern's luma.
"""

from __future__ import annotations

import gin
import numpy as np

from asd_repro.attacks import Attack, is_integer, register_attack, scaled, to_channels
from asd_repro.core.config import configurable

# The reference trigger's four pixels (row, col) -> RGB at 32x32.
REFERENCE_PATCH = np.array([[[180, 249, 112], [155, 50, 126]],
                            [[234, 82, 68], [187, 201, 219]]], dtype=np.uint8)
REFERENCE_OFFSET = 4


@register_attack("badnets")
@configurable(module="attacks")
class BadNets(Attack):
    """Args:
        patch_size: patch side in pixels; None scales the reference's 2 px with the image size.
        offset: row/col of the patch's top-left pixel; None scales the reference's 4 px.
    """

    def __init__(self, target: int = gin.REQUIRED, ratio: float = gin.REQUIRED,
                 patch_size: int | None = None, offset: int | None = None):
        super().__init__(target, ratio)
        self.require("patch_size", patch_size, patch_size is None or (is_integer(patch_size) and patch_size >= 1),
                     "None or a side in pixels >= 1")
        self.require("offset", offset, offset is None or (is_integer(offset) and offset >= 0),
                     "None or a pixel offset >= 0")
        self.patch_size = patch_size
        self.offset = offset
        self.patch: np.ndarray | None = None
        self.at: int = 0

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        h, w, c = x.shape[1:]
        size = self.patch_size or scaled(2, min(h, w))
        self.at = self.offset if self.offset is not None else scaled(REFERENCE_OFFSET, min(h, w))
        self.require("patch_size", self.patch_size, self.at + size <= min(h, w),
                     f"a patch that fits the {h}x{w} image: {size} px at offset {self.at} does not (see also offset)")
        rep = -(-size // 2)  # ceil: upsample the 2x2 pattern, then crop to the requested size
        patch = REFERENCE_PATCH.repeat(rep, axis=0).repeat(rep, axis=1)[:size, :size]
        self.patch = to_channels(patch, c)

    def state(self) -> dict[str, np.ndarray]:
        return {"patch": self.patch, "offset": np.array(self.at)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.patch, self.at = arrays["patch"], int(arrays["offset"])

    def apply(self, x: np.ndarray) -> np.ndarray:
        assert self.patch is not None, "fit() or load_state() first"
        x = x.copy()
        s = self.patch.shape[0]
        x[:, self.at:self.at + s, self.at:self.at + s, :] = self.patch
        return x
