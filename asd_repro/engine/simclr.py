"""SimCLR (Chen et al., ICML 2020), the self-supervised pre-training DBD starts from: NT-Xent, its augmentation
batched on the training device, the backbone's features, the projection head, and one epoch of training.

Two augmented views of every image go through the backbone f_b and the projection head g; NT-Xent pulls the two
views of an image together and pushes them away from every other view of the batch. No label is read.

The augmentation runs batched on the training device instead of through PIL: the image is rounded to uint8 once at
the end instead of after every step, and the Gaussian blur is a separable kernel cut at 3 sigma with edge
replication (PIL's ``GaussianBlur`` approximates it with box blurs). Grey images: saturation, hue and greyscale leave
a 1-channel image unchanged, as in torchvision.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from asd_repro.core.config import configurable
from asd_repro.core.errors import StepLosses, UserError
from asd_repro.engine.augment import Normalize
from asd_repro.engine.loop import index_batches


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, symmetric: bool = False) -> torch.Tensor:
    """NT-Xent of a batch of view pairs (row i of ``z1`` and of ``z2`` come from the same image).

    Embeddings are compared by cosine similarity over tau: each anchor's positive is its pair's other view, its
    negatives are the other 2N - 2 views of the batch; the loss is the cross entropy of picking the positive.

    Args:
        temperature: tau (0.5 in DBD).
        symmetric: average over both views as anchors (SimCLR's paper); False takes the anchors of ``z1`` only,
            as DBD's ``SimCLRLoss`` does.
    """
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))  # not its own negative
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    loss = F.cross_entropy(sim, positive, reduction="none")
    return loss.mean() if symmetric else loss[:n].mean()


def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator,
             device: torch.device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)).to(device)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (torchvision's ``rgb_to_grayscale``) of float (N, 3, H, W); grey images pass through."""
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp(0, 1)


def _shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of float RGB images in [0, 1] by ``shift`` turns (torchvision's ``adjust_hue``)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(dim=1)
    chroma = v - x.min(dim=1).values
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    h = torch.where(v == r, (g - b) / safe, torch.where(v == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    h = torch.where(chroma > 0, h / 6, torch.zeros_like(h))
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    s = torch.where(v > 0, chroma / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    # HSV -> RGB: channel n is v - v s clamp(min(k, 4 - k), 0, 1) with k = (n + 6h) mod 6, n = 5, 3, 1 for R, G, B
    out = [v - v * s * torch.clamp(torch.minimum(k, 4 - k), 0, 1)
           for k in (torch.remainder(n + 6 * h, 6) for n in (5, 3, 1))]
    return torch.stack(out, dim=1)


@configurable(module="engine")
class SimCLRAugment:
    """SimCLR's augmentation as DBD configures it, on batches of uint8 NCHW tensors on their device.

    Random resized crop, horizontal flip, colour jitter (its four operations in a random order per image, as
    torchvision's ``ColorJitter``), greyscale, Gaussian blur; the result is uint8 again.

    Args:
        crop_scale: range of the crop's area as a fraction of the image's ((0.2, 1.0)).
        crop_ratio: range of the crop's aspect ratio, sampled log-uniformly ((3/4, 4/3), torchvision's).
        interpolation: resampling of the crop to full size, 'bicubic' (DBD's) or 'bilinear'.
        hflip: flip half of the views; None takes the dataset's own default (no flips for digits, signs).
        jitter_p: probability that a view is colour-jittered (0.8).
        brightness: brightness factor drawn from [1 - b, 1 + b] (0.4).
        contrast: contrast factor from [1 - c, 1 + c] (0.4).
        saturation: saturation factor from [1 - s, 1 + s] (0.4); colour images only.
        hue: hue shift in turns from [-h, h] (0.1); colour images only.
        grayscale_p: probability that a colour view turns grey (0.2).
        blur_p: probability of a Gaussian blur (0.5).
        blur_sigma: range of the blur's standard deviation in pixels ((0.1, 2.0)).
    """

    def __init__(self, crop_scale: tuple[float, float] = (0.2, 1.0), crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 interpolation: str = "bicubic", hflip: bool | None = None, jitter_p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1,
                 grayscale_p: float = 0.2, blur_p: float = 0.5, blur_sigma: tuple[float, float] = (0.1, 2.0)):
        problems = [msg for ok, msg in (
            (0 < crop_scale[0] <= crop_scale[1] <= 1, f"crop_scale needs 0 < low <= high <= 1, got {crop_scale}"),
            (0 < crop_ratio[0] <= crop_ratio[1], f"crop_ratio needs 0 < low <= high, got {crop_ratio}"),
            (interpolation in ("bicubic", "bilinear"), f"interpolation: 'bicubic' or 'bilinear', got {interpolation!r}"),
            (all(0 <= p <= 1 for p in (jitter_p, grayscale_p, blur_p)), "probabilities must lie in [0, 1]"),
            (0 <= hue <= 0.5 and min(brightness, contrast, saturation) >= 0, "jitter strengths need >= 0, hue <= 0.5"),
            (0 < blur_sigma[0] <= blur_sigma[1], f"blur_sigma needs 0 < low <= high, got {blur_sigma}"),
        ) if not ok]
        if problems:
            raise UserError(f"engine.SimCLRAugment: {'; '.join(problems)}; fix the binding")
        self.crop_scale, self.crop_ratio, self.interpolation = tuple(crop_scale), tuple(crop_ratio), interpolation
        self.hflip = hflip
        self.jitter_p, self.brightness, self.contrast = jitter_p, brightness, contrast
        self.saturation, self.hue = saturation, hue
        self.grayscale_p, self.blur_p, self.blur_sigma = grayscale_p, blur_p, tuple(blur_sigma)

    def resolved(self, dataset_hflip: bool) -> "SimCLRAugment":
        """A copy whose ``hflip`` is the dataset's default unless the binding set it."""
        out = copy.copy(self)
        out.hflip = dataset_hflip if self.hflip is None else self.hflip
        return out

    def crop_boxes(self, n: int, h: int, w: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """(top, left, height, width) of n crops, float: torchvision's ``RandomResizedCrop.get_params``, batched.

        Ten attempts per image draw an area and an aspect ratio; the first that fits is used, with a uniform
        position; if none fits, the central crop of the largest allowed aspect ratio.
        """
        attempts = 10
        area = h * w * _uniform((n, attempts), *self.crop_scale, generator, torch.device("cpu"))
        log_ratio = _uniform((n, attempts), math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1]), generator,
                             torch.device("cpu"))
        cw = torch.round(torch.sqrt(area * torch.exp(log_ratio)))
        ch = torch.round(torch.sqrt(area / torch.exp(log_ratio)))
        fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = fits.float().argmax(dim=1, keepdim=True)
        cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
        if w / h < self.crop_ratio[0]:
            fw, fh = w, round(w / self.crop_ratio[0])
        elif w / h > self.crop_ratio[1]:
            fw, fh = round(h * self.crop_ratio[1]), h
        else:
            fw, fh = w, h
        found = fits.any(dim=1)
        cw, ch = torch.where(found, cw, float(fw)), torch.where(found, ch, float(fh))
        u = torch.rand((2, n), generator=generator, device=generator.device).cpu()
        top = torch.where(found, torch.floor(u[0] * (h - ch + 1)), torch.floor((h - ch) / 2))
        left = torch.where(found, torch.floor(u[1] * (w - cw + 1)), torch.floor((w - cw) / 2))
        return top, left, ch, cw

    def resized_crop(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Crop + resize to full size (+ flip) of float images as one affine resampling."""
        n, c, h, w = x.shape
        top, left, ch, cw = self.crop_boxes(n, h, w, generator)
        sx = cw / w
        if self.hflip:
            flip = torch.rand(n, generator=generator, device=generator.device).cpu() < 0.5
            sx = torch.where(flip, -sx, sx)  # reading the crop's columns right to left
        # output x in [-1, 1] (pixel edges) maps onto the crop's edges in the input's normalised coordinates
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * left + cw) / w - 1
        theta[:, 1, 1], theta[:, 1, 2] = ch / h, (2 * top + ch) / h - 1
        grid = F.affine_grid(theta.to(x.device), [n, c, h, w], align_corners=False)
        return F.grid_sample(x, grid, mode=self.interpolation, padding_mode="border", align_corners=False)

    def jitter(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """ColorJitter applied with probability jitter_p, its operations in a random order per image."""
        n, c = x.shape[:2]
        dev = x.device
        applied = _uniform((n,), 0, 1, generator, dev) < self.jitter_p
        factors = [_uniform((n,), 1 - s, 1 + s, generator, dev) for s in (self.brightness, self.contrast,
                                                                           self.saturation)]
        factors.append(_uniform((n,), -self.hue, self.hue, generator, dev))
        order = torch.rand((n, 4), generator=generator, device=generator.device).argsort(dim=1).to(dev)
        ops: list[tuple[int, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = []
        if self.brightness > 0:
            ops.append((0, lambda v, f: (v * f.view(-1, 1, 1, 1)).clamp(0, 1)))
        if self.contrast > 0:
            ops.append((1, lambda v, f: _blend(v, _grey(v).mean(dim=(1, 2, 3), keepdim=True), f)))
        if c == 3 and self.saturation > 0:
            ops.append((2, lambda v, f: _blend(v, _grey(v), f)))
        if c == 3 and self.hue > 0:
            ops.append((3, _shift_hue))
        x = x.clone()
        for step in range(4):
            for op_id, op in ops:
                idx = torch.nonzero(applied & (order[:, step] == op_id)).squeeze(1)
                if len(idx):
                    x[idx] = op(x[idx], factors[op_id][idx])
        return x

    def blur(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Gaussian blur with probability blur_p and a uniform sigma, as per-image separable kernels."""
        n, c, h, w = x.shape
        dev = x.device
        applied = _uniform((n,), 0, 1, generator, dev) < self.blur_p
        sigma = _uniform((n,), *self.blur_sigma, generator, dev)
        radius = math.ceil(3 * self.blur_sigma[1])
        t = torch.arange(-radius, radius + 1, device=dev, dtype=x.dtype)
        kernel = torch.exp(-t ** 2 / (2 * sigma.view(-1, 1) ** 2))
        kernel = torch.where(applied.view(-1, 1), kernel / kernel.sum(dim=1, keepdim=True), (t == 0).to(x.dtype))
        kernel = kernel.repeat_interleave(c, dim=0)  # one kernel per (image, channel) plane
        planes = F.pad(x, (radius, radius, radius, radius), mode="replicate").reshape(1, n * c, h + 2 * radius,
                                                                                      w + 2 * radius)
        planes = F.conv2d(planes, kernel.view(n * c, 1, -1, 1), groups=n * c)
        planes = F.conv2d(planes, kernel.view(n * c, 1, 1, -1), groups=n * c)
        return planes.view(n, c, h, w)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c = x.shape[:2]
        v = self.resized_crop(x.float() / 255.0, generator).clamp(0, 1)
        if self.jitter_p > 0:
            v = self.jitter(v, generator)
        if c == 3 and self.grayscale_p > 0:
            grey = _uniform((n,), 0, 1, generator, x.device) < self.grayscale_p
            v = torch.where(grey.view(-1, 1, 1, 1), _grey(v).expand_as(v), v)
        if self.blur_p > 0:
            v = self.blur(v, generator)
        return (v * 255.0).round().clamp(0, 255).to(torch.uint8).contiguous(memory_format=torch.contiguous_format)


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The backbone's pooled features f_b(x): the timm model up to, not including, its linear head."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def projection_head(dim: int, proj_dim: int) -> nn.Module:
    """g: DBD's MLP projection head (Linear, BatchNorm, ReLU, Linear)."""
    return nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True), nn.Linear(dim, proj_dim))


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names (in ``model.state_dict()``) of the linear head f_c's parameters."""
    head = {id(p) for p in model.get_classifier().parameters()}
    return {name for name, p in model.named_parameters() if id(p) in head}


def simclr_epoch(model: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 augment: SimCLRAugment, normalize: Normalize, batch_size: int, temperature: float, symmetric: bool,
                 generator: torch.Generator, desc: str = "simclr") -> dict[str, float]:
    """One epoch of SimCLR on the unlabelled images ``x`` (uint8 NCHW on the training device); the mean loss.

    Batches are shuffled; the last, smaller batch is kept (as in DBD) unless it holds a lone image, which has no
    negative.
    """
    model.train()
    head.train()
    total, seen = torch.zeros((), device=x.device), 0
    losses = StepLosses(desc)
    for idx in index_batches(len(x), batch_size, generator, device=x.device):
        if len(idx) < 2:
            continue
        views = torch.cat([augment(x[idx], generator), augment(x[idx], generator)])
        z = head(features(model, normalize(views)))
        loss = nt_xent(z[:len(idx)], z[len(idx):], temperature, symmetric)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        losses.add(loss)
        seen += len(idx)
    losses.check()
    return {"loss": total.item() / max(seen, 1)}
