"""Refool (Liu et al., ECCV 2020): a natural reflection blended into the image.

x' = (1 - a) * x + a * R(x_R) in linear light (gamma 2.2, as the paper's code), with a reflection
weight a drawn per image and one of the paper's three reflection models R:
  - 'same_depth': the sharp reflection (reflector and scene in focus together);
  - 'out_of_focus': the reflection Gaussian-blurred (camera focused on the scene);
  - 'ghost': a double reflection, the reflection plus a shifted, attenuated copy (thick glass).
The paper draws reflection images from PASCAL VOC, which is not available offline: the pool here is
random patches of the two colour photographs shipped with scikit-learn, resized to the image size and
converted to the dataset's channel count (the luma for grey images). The paper's adversarial
selection of the most effective reflections (it trains models to rank candidates) is not done.
Every poisoned or test image draws its own reflection, weight and model parameters from a per-image
seed, so the ASR set is fixed by the assets' ``test_seed`` and the test index.

The original attack is clean-label (only target-class images, labels kept); BackdoorBench switched to
dirty-label because clean-label ASR was too low. ``clean_label`` is a binding, dirty-label by default.
"""

from __future__ import annotations

import gin
import numpy as np

from asd_repro.attacks import Attack, PoisonedTrain, is_integer, is_range, register_attack, to_channels
from asd_repro.core.config import configurable

GAMMA = 2.2
MODELS = ("same_depth", "out_of_focus", "ghost")


def _resize(patch: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased bilinear resize of one uint8 HWC image."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(patch.transpose(2, 0, 1)))[None].float()
    out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate an HWC image down/right by (dy, dx) >= 0 pixels, zero-filled."""
    out = np.zeros_like(a)
    out[dy:, dx:] = a[:a.shape[0] - dy, :a.shape[1] - dx]
    return out


@register_attack("refool")
@configurable(module="attacks")
class Refool(Attack):
    """Args:
        clean_label: poison target-class images only and keep labels (the paper); False relabels poisoned
            non-target images (BackdoorBench). Clean-label ``ratio`` is a fraction of the whole training set,
            as for CLB (BackdoorBench's convention): each target-class image is poisoned with probability
            ``min(1, ratio * N / N_target)``.
        model: reflection model, one of 'same_depth', 'out_of_focus', 'ghost'.
        n_reflections: size of the reflection pool.
        patch_size: (min, max) side of a pool patch as a fraction of the photograph's shorter side.
        alpha: (min, max) reflection weight in linear light (the paper's 1 - alpha_t, 0.05-0.45).
        blur_sigma: (min, max) Gaussian sigma of 'out_of_focus' as a fraction of the image side.
        ghost_shift: (min, max) offset of the ghost copy as a fraction of the image side.
        ghost_weight: (min, max) weight of one of the two ghost copies (the paper's 0.15-0.5, either copy).
    """

    def __init__(self, target: int = gin.REQUIRED, ratio: float = gin.REQUIRED, clean_label: bool = False,
                 model: str = "ghost", n_reflections: int = 200, patch_size: tuple[float, float] = (0.15, 0.5),
                 alpha: tuple[float, float] = (0.05, 0.45), blur_sigma: tuple[float, float] = (0.02, 0.06),
                 ghost_shift: tuple[float, float] = (0.05, 0.15), ghost_weight: tuple[float, float] = (0.15, 0.5)):
        super().__init__(target, ratio)
        self.require("model", model, model in MODELS, f"one of {', '.join(repr(m) for m in MODELS)}")
        self.require("n_reflections", n_reflections, is_integer(n_reflections) and n_reflections >= 1,
                     "an integer >= 1")
        for name, value in (("patch_size", patch_size), ("alpha", alpha), ("blur_sigma", blur_sigma),
                            ("ghost_shift", ghost_shift), ("ghost_weight", ghost_weight)):
            self.require(name, value, is_range(value), "a (min, max) pair with 0 <= min <= max <= 1")
        self.clean_label = bool(clean_label)
        self.model = model
        self.n_reflections = int(n_reflections)
        self.patch_size, self.alpha = tuple(patch_size), tuple(alpha)
        self.blur_sigma, self.ghost_shift = tuple(blur_sigma), tuple(ghost_shift)
        self.ghost_weight = tuple(ghost_weight)
        self.reflections: np.ndarray | None = None
        self.test_seed: int = 0

    def fit(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> None:
        from sklearn.datasets import load_sample_images

        photos = load_sample_images().images
        h, w, c = x.shape[1:]
        pool = []
        for _ in range(self.n_reflections):
            photo = photos[rng.integers(len(photos))]
            ph = int(rng.uniform(*self.patch_size) * min(photo.shape[:2]))
            pw = min(photo.shape[1], max(1, int(round(ph * w / h))))  # the image's aspect ratio
            top, left = rng.integers(photo.shape[0] - ph + 1), rng.integers(photo.shape[1] - pw + 1)
            pool.append(to_channels(_resize(photo[top:top + ph, left:left + pw], h, w), c))
        self.reflections = np.stack(pool)
        self.test_seed = int(rng.integers(2**31 - 1))

    def state(self) -> dict[str, np.ndarray]:
        return {"reflections": self.reflections, "test_seed": np.array(self.test_seed, dtype=np.int64)}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.reflections, self.test_seed = arrays["reflections"], int(arrays["test_seed"])

    def reflect(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One uint8 HWC image with a reflection drawn from ``rng``."""
        from scipy.ndimage import gaussian_filter

        assert self.reflections is not None, "fit() or load_state() first"
        h, w = image.shape[:2]
        t = (image / 255.0) ** GAMMA
        r = (self.reflections[rng.integers(len(self.reflections))] / 255.0) ** GAMMA
        a = rng.uniform(*self.alpha)
        if self.model == "out_of_focus":
            sigma = rng.uniform(*self.blur_sigma) * min(h, w)
            r = gaussian_filter(r, sigma=(sigma, sigma, 0), mode="reflect")
        elif self.model == "ghost":
            dy, dx = (max(1, int(round(rng.uniform(*self.ghost_shift) * n))) for n in (h, w))
            b = rng.uniform(*self.ghost_weight)
            b = 1 - b if rng.random() < 0.5 else b
            r = (1 - b) * r + b * _shift(r, dy, dx)
        out = np.clip((1 - a) * t + a * r, 0.0, 1.0) ** (1 / GAMMA)
        return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)

    def apply_keyed(self, x: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Reflect each image with its own generator ``default_rng([test_seed, seed])``."""
        out = x.copy()
        for i, s in enumerate(seeds):
            out[i] = self.reflect(x[i], np.random.default_rng([self.test_seed, int(s)]))
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        return self.apply_keyed(x, np.arange(len(x)))

    def draw(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        eligible = self.eligible(y)
        p = min(1.0, self.ratio * len(y) / max(int(eligible.sum()), 1)) if self.clean_label else self.ratio
        return eligible & (rng.random(len(y)) < p)

    def poison_train(self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> PoisonedTrain:
        mask = self.draw(y, rng)
        x, y = x.copy(), y.copy()
        index = np.flatnonzero(mask)
        # training reflections use a seed stream of their own, disjoint from the test indices'
        x[index] = self.apply_keyed(x[index], rng.integers(2**31, 2**62, size=len(index)))
        if not self.clean_label:
            y[index] = self.target
        return PoisonedTrain(x, y, mask)

    def poison_test(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        index = np.flatnonzero(y != self.target)
        return self.apply_keyed(x[index], index), np.full(len(index), self.target, dtype=np.int64), index
