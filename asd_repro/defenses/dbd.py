"""DBD: backdoor defense via decoupling the training process (Huang et al., ICLR 2022).

As the authors' code (SCLBD/DBD) runs it. The end-to-end training that lets a backdoor in is split into three
steps; the first, which never reads a label, is its own pipeline stage (``pretrain_stage``) whose model the
``dbd`` defense starts from:

    self-supervised pre-training, on the poisoned images x alone:
        backbone f_b + projection head g; two SimCLR augmentations v1, v2 of every image;
        NT-Xent loss of (g(f_b(v1)), g(f_b(v2))) at temperature tau, for the SimCLR epochs
    linear warm-up (``DBD.run``), starting from f_b with an untrained linear head f_c:
        f_c trained with the symmetric cross entropy SCE on (aug(x), y), f_b frozen, for linear_epochs
    semi-supervised fine-tuning of f = f_c . f_b, every one of its epochs:
        L = SCE(f(aug(x)), y) for every sample (eval mode, the labels as handed over)
        labelled pool = the epsilon fraction of D with the lowest L; the rest is the unlabelled pool
        MixMatch epoch of the whole of f on (labelled pool, unlabelled pool without labels)

Backdoored samples carry the target label but, with self-supervised features, look like their true class:
their SCE is high, so they land in the unlabelled pool and their poisoned labels never reach training.

Differences from the reference code, all deliberate:
- Every random draw (shuffles, the augmentations of both stages, MixUp) comes from one checkpointed generator
  instead of the global RNGs and data-loader workers, so runs repeat exactly on CPU and resume bit-identically.
- SimCLR's augmentation runs batched on the training device instead of through PIL: the image is rounded to
  uint8 once at the end instead of after every step, and the Gaussian blur is a separable kernel cut at 3 sigma
  with edge replication (PIL's ``GaussianBlur`` approximates it with box blurs).
- Grey images: saturation, hue and greyscale leave a 1-channel image unchanged, as in torchvision.
- lambda_u's ramp counts MixMatch epochs only, so it starts at 0; the reference passes its global epoch number,
  so its ramp starts at 10 / 190 of lambda_u after the ten warm-up epochs.
- Two bindings for small budgets, off by default: ``simclr_pretrain.symmetric`` (SimCLR's NT-Xent with both
  views as anchors; DBD's takes the first view's only) and ``DBD.linear_cached`` (the warm-up on features
  computed once, without augmentation).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import gin
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from asd_repro.defenses import Context, Defense, Interrupted, Timer, register_defense
from asd_repro.defenses.asd import lowest_fraction
from asd_repro.engine.augment import Normalize
from asd_repro.engine.checkpoint import Checkpointer
from asd_repro.engine.loop import Resumable, index_batches, predict_logits, train_epoch
from asd_repro.engine.losses import sce, sce_per_sample
from asd_repro.engine.mixmatch import mixmatch_epoch
from asd_repro.engine.optim import make_optimizer, make_schedule
from asd_repro.errors import StepLosses, UserError, check_types

# --- SimCLR: loss, augmentation, pre-training ---------------------------------------------------------------------


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


@gin.configurable(module="defenses")
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
        check_types("defenses.SimCLRAugment", type(self).__init__, locals())
        problems = [msg for ok, msg in (
            (0 < crop_scale[0] <= crop_scale[1] <= 1, f"crop_scale needs 0 < low <= high <= 1, got {crop_scale}"),
            (0 < crop_ratio[0] <= crop_ratio[1], f"crop_ratio needs 0 < low <= high, got {crop_ratio}"),
            (interpolation in ("bicubic", "bilinear"), f"interpolation: 'bicubic' or 'bilinear', got {interpolation!r}"),
            (all(0 <= p <= 1 for p in (jitter_p, grayscale_p, blur_p)), "probabilities must lie in [0, 1]"),
            (0 <= hue <= 0.5 and min(brightness, contrast, saturation) >= 0, "jitter strengths need >= 0, hue <= 0.5"),
            (0 < blur_sigma[0] <= blur_sigma[1], f"blur_sigma needs 0 < low <= high, got {blur_sigma}"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.SimCLRAugment: {'; '.join(problems)}; fix the binding")
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


@gin.configurable(module="defenses")
def simclr_pretrain(x: torch.Tensor, new_model: Callable[[], nn.Module], generator: torch.Generator,
                    normalize: Normalize, dataset_hflip: bool, checkpointer: Checkpointer | None = None,
                    epochs: int = 1000, batch_size: int = 512, temperature: float = 0.5, symmetric: bool = False,
                    optimizer: str = "sgd", lr: float = 0.4, momentum: float = 0.9, weight_decay: float = 1e-4,
                    schedule: str = "cosine", proj_dim: int = 128, stop_after_epoch: int | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Self-supervised pre-training of the backbone f_b with SimCLR on unlabelled images; resumable per epoch.

    Args:
        x: uint8 (N, C, H, W) training images on the training device (their labels are never needed).
        new_model: builds the classifier whose backbone is trained (its head f_c is not used).
        generator: every random draw (shuffles, augmentations); checkpointed with the rest.
        normalize: the dataset's normalisation of the augmented uint8 views.
        dataset_hflip: whether the dataset allows horizontal flips (``SimCLRAugment.hflip = None`` follows it).
        checkpointer: per-epoch checkpoints; None trains without.
        epochs: SimCLR epochs (1,000 in DBD's config).
        batch_size: images per batch, two views each (512); the last, smaller batch is kept, as in DBD.
        temperature: NT-Xent's tau (0.5).
        symmetric: see ``nt_xent`` (DBD: False).
        optimizer: 'sgd' (DBD's, momentum 0.9) or 'adam'.
        lr: learning rate (0.4).
        momentum: SGD momentum (0.9).
        weight_decay: (1e-4).
        schedule: learning-rate schedule over the epochs, see ``engine.make_schedule`` ('cosine', to zero).
        proj_dim: output size of the projection head g (128).
        stop_after_epoch: tests only, raise ``Interrupted`` after that many epochs.

    Returns:
        The backbone's state dict (the model's without its head) and a record of the run: per-epoch mean
        loss, learning rate and seconds.
    """
    check_types("defenses.simclr_pretrain", simclr_pretrain, locals())
    problems = [msg for ok, msg in (
        (epochs >= 1, f"epochs must be >= 1, got {epochs}"),
        (batch_size >= 2, f"batch_size must be >= 2 (negatives come from the batch), got {batch_size}"),
        (temperature > 0, f"temperature must be > 0, got {temperature}"),
        (proj_dim >= 1, f"proj_dim must be >= 1, got {proj_dim}"),
    ) if not ok]
    if problems:
        raise UserError(f"defenses.simclr_pretrain: {'; '.join(problems)}; fix the binding")
    augment = SimCLRAugment().resolved(dataset_hflip)
    model = new_model()
    head = projection_head(model.get_classifier().in_features, proj_dim).to(x.device)
    params = [p for name, p in model.named_parameters() if name not in head_parameter_names(model)]
    opt = make_optimizer([*params, *head.parameters()], name=optimizer, lr=lr, momentum=momentum,
                         weight_decay=weight_decay, nesterov=False)
    sched = make_schedule(opt, epochs, name=schedule)
    state = Resumable(checkpointer or Checkpointer(None, ""), generator, model=model, head=head, optimizer=opt,
                      schedule=sched)
    restored = state.restore(needs=("history",))
    history: list[dict[str, float]] = restored["history"] if restored else []
    if restored:
        print(f"resuming SimCLR from epoch {len(history)}/{epochs}", flush=True)
    model.train()
    head.train()
    for epoch in range(len(history), epochs):
        timer = Timer()
        lr_now = opt.param_groups[0]["lr"]
        total, seen = torch.zeros((), device=x.device), 0
        losses = StepLosses(f"simclr {epoch + 1}/{epochs}")
        for idx in index_batches(len(x), batch_size, generator, device=x.device):
            if len(idx) < 2:  # a lone image has no negative
                continue
            views = torch.cat([augment(x[idx], generator), augment(x[idx], generator)])
            z = head(features(model, normalize(views)))
            loss = nt_xent(z[:len(idx)], z[len(idx):], temperature, symmetric)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
            losses.add(loss)
            seen += len(idx)
        losses.check()
        sched.step()
        history.append({"epoch": epoch + 1, "loss": total.item() / max(seen, 1), "lr": lr_now,
                        "seconds": timer.lap()})
        print(f"[simclr {epoch + 1}/{epochs}] loss={history[-1]['loss']:.4f} lr={lr_now:.4g} "
              f"seconds={history[-1]['seconds']:.1f}", flush=True)
        state.save(history=history)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch:
            raise Interrupted(f"stopped after SimCLR epoch {epoch + 1} (test hook)")
    head_names = head_parameter_names(model)
    backbone = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in head_names}
    info = {"epochs": epochs, "history": history, "seconds": round(sum(r["seconds"] for r in history), 2),
            "final_loss": history[-1]["loss"]}
    return backbone, info


def pretrain_stage(clean: Path, poisoned: Path, out: Path, checkpoints: Path | None = None, *, seed: int,
                   device: str = "auto", channels_last: bool = True, asked_config: str = "",
                   stop_after_epoch: int | None = None) -> dict[str, Any]:
    """DBD's self-supervised stage: SimCLR on the poisoned training images, written as a model folder.

    ``out/model.pt`` has the format ``stages.train`` writes (so ``stages.train(upstream=out)`` loads it): the
    trained backbone with the model's freshly initialised linear head. ``out/pretrain.json`` records the losses
    and times. Resumable per epoch from ``checkpoints``, keyed like ``stages.train``'s.

    Args:
        clean: the prepared dataset (normalisation, flips, number of classes).
        poisoned: the poisoned set; only its training images are read.
        seed: seeds the model's initialisation and the generator of every random draw.
        device: 'auto' (CUDA when available), 'cpu' or 'cuda[:i]'.
        channels_last: channels-last memory format for the model and its inputs (faster convolutions).
        asked_config: the configuration as asked, written to ``out/config.gin`` and part of the checkpoint key.
        stop_after_epoch: tests only, simulates a kill after that many epochs.
    """
    import platform

    from asd_repro.io import atomic_dir
    from asd_repro.models import create_model
    from asd_repro.provenance import environment
    from asd_repro.stages import open_cell, stopped_if_diverged, to_nchw, write_run_folder

    cell = open_cell(clean, poisoned, seed, device, channels_last)
    data, dev = cell.data, cell.device
    checkpointer = Checkpointer(checkpoints, cell.fingerprint(asked_config, "dbd-simclr"))
    x = to_nchw(cell.arrays["train_x"], dev)
    model = create_model(**cell.model_kwargs)  # its head f_c stays as initialised here, right after seeding
    start = time.perf_counter()
    with checkpointer.lock(), stopped_if_diverged(out):
        backbone, info = simclr_pretrain(x, cell.new_model, cell.generator, cell.normalize(), data.info.hflip,
                                         checkpointer, stop_after_epoch=stop_after_epoch)
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert not unexpected and set(missing) == head_parameter_names(model), (missing, unexpected)
    record = {"dataset": data.info.name, "attack": cell.meta["attack"], "seed": seed, "device": str(dev),
              "torch": torch.__version__, "python": platform.python_version(),
              "wall_seconds": round(time.perf_counter() - start, 2), "model": cell.model_kwargs,
              "environment": environment(dev), **info}
    with atomic_dir(out) as tmp:
        write_run_folder(tmp, asked_config, model, cell.model_kwargs, "pretrain.json", record)
    checkpointer.clear()
    print(f"pre-trained the DBD backbone of {data.info.name}/{cell.meta['attack']} with SimCLR in "
          f"{info['seconds']:.1f}s on {dev}: final loss {info['final_loss']:.4f} -> {out}")
    return record


# --- the defense: linear warm-up, then MixMatch on a loss-guided split ----------------------------------------------


def train_linear_head(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: Context, batch_size: int,
                      sce_kwargs: dict[str, float], desc: str) -> dict[str, float]:
    """One epoch of SCE training of the head f_c alone on augmented images; the backbone's weights stay fixed.

    The model is in train mode, as in DBD's ``poison_linear_train``: the backbone's batch-norm statistics follow
    the training images although its weights do not move.
    """
    head = head_parameter_names(model)
    frozen = [p for name, p in model.named_parameters() if name not in head]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return train_epoch(model, optimizer, ctx.train_x, ctx.train_y, ctx.augment, ctx.normalize, batch_size,
                           ctx.generator, loss_fn=lambda logits, y: sce(logits, y, **sce_kwargs), desc=desc)
    finally:
        for p in frozen:
            p.requires_grad_(True)


@torch.no_grad()
def frozen_features(model: nn.Module, x: torch.Tensor, normalize: Normalize, batch_size: int) -> torch.Tensor:
    """f_b(x) of every image, eval mode, no augmentation (not inference mode: the head trains on them)."""
    model.eval()
    return torch.cat([features(model, normalize(x[i:i + batch_size])).float() for i in range(0, len(x), batch_size)])


def train_linear_head_cached(model: nn.Module, optimizer: torch.optim.Optimizer, feats: torch.Tensor,
                             y: torch.Tensor, batch_size: int, generator: torch.Generator,
                             sce_kwargs: dict[str, float], desc: str = "linear head") -> dict[str, float]:
    """One epoch of SCE training of the head f_c on precomputed backbone features."""
    head = model.get_classifier()
    total, correct = torch.zeros((), device=feats.device), torch.zeros((), device=feats.device)
    losses = StepLosses(desc)
    for idx in index_batches(len(y), batch_size, generator, device=feats.device):
        logits = head(feats[idx])
        loss = sce(logits, y[idx], **sce_kwargs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        losses.add(loss)
        correct += (logits.argmax(1) == y[idx]).sum()
    losses.check()
    return {"loss": total.item() / max(len(y), 1), "train_acc": 100.0 * correct.item() / max(len(y), 1)}


@register_defense("dbd")
@gin.configurable(module="defenses")
class DBD(Defense):
    """DBD's linear warm-up and semi-supervised fine-tuning, from the pre-trained backbone (``--upstream``, the
    folder ``pretrain_stage`` writes); the defaults are the reference's CIFAR-10 values.

    Args:
        linear_epochs: epochs of SCE training of the linear head on the frozen backbone (10).
        linear_batch_size: the warm-up's batch size (128).
        linear_cached: train the head on the frozen backbone's features of the un-augmented images, computed once
            in eval mode, instead of on augmented images with the backbone in train mode (False, the reference's).
            An epoch then costs a fraction of a forward pass, so small profiles afford the reference's thousands
            of head updates; augmentation and the batch-norm drift of the warm-up are dropped.
        epsilon: fraction of the training set kept with its labels, lowest SCE first (0.5).
        epochs: MixMatch fine-tuning epochs (190).
        sce_ce_weight: weight of CE in SCE, the warm-up's loss and the split's (alpha, 0.1).
        sce_rce_weight: weight of reverse CE (beta, 1.0).
        sce_prob_min: clamp of the probabilities in reverse CE (1e-7).
        sce_onehot_min: clamp of the one-hot labels in reverse CE (1e-4).
        T: MixMatch's sharpening temperature (0.5).
        K: augmentations per unlabelled sample (2).
        mixup_alpha: MixUp's Beta(alpha, alpha) parameter (0.75).
        lambda_u: final weight of the unlabelled loss (15).
        rampup: MixMatch epochs of lambda_u's linear ramp from 0 (190).
        iterations: MixMatch iterations per epoch (1024).
        batch_size: labelled and unlabelled MixMatch batch size (64 each).
        optimizer: 'adam' or 'sgd'; one optimiser serves both phases, as in the reference (adam).
        lr: its learning rate, constant (0.002).
        weight_decay: its weight decay (0).
        loss_batch_size: batch size of the inference passes that compute the split's SCE (speed only).
    """

    def __init__(self, linear_epochs: int = 10, linear_batch_size: int = 128, linear_cached: bool = False,
                 epsilon: float = 0.5, epochs: int = 190,
                 sce_ce_weight: float = 0.1, sce_rce_weight: float = 1.0, sce_prob_min: float = 1e-7,
                 sce_onehot_min: float = 1e-4, T: float = 0.5, K: int = 2, mixup_alpha: float = 0.75,
                 lambda_u: float = 15.0, rampup: float = 190, iterations: int = 1024, batch_size: int = 64,
                 optimizer: str = "adam", lr: float = 0.002, weight_decay: float = 0.0, loss_batch_size: int = 1024):
        check_types("defenses.DBD", type(self).__init__, locals())
        problems = [msg for ok, msg in (
            (linear_epochs >= 0 and epochs >= 0, f"need linear_epochs >= 0 and epochs >= 0 (got {linear_epochs}, "
                                                 f"{epochs})"),
            (0 < epsilon < 1, f"epsilon is the labelled fraction, in (0, 1) (got {epsilon})"),
            (K >= 1 and iterations >= 1 and batch_size >= 1 and linear_batch_size >= 1,
             "K, iterations, batch_size and linear_batch_size must be positive"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.DBD: {'; '.join(problems)}; fix the binding")
        self.linear_epochs, self.linear_batch_size, self.linear_cached = linear_epochs, linear_batch_size, linear_cached
        self.epsilon, self.epochs = epsilon, epochs
        self.sce = {"ce_weight": sce_ce_weight, "rce_weight": sce_rce_weight, "prob_min": sce_prob_min,
                    "onehot_min": sce_onehot_min}
        self.mixmatch = {"iterations": iterations, "batch_size": batch_size, "K": K, "T": T, "alpha": mixup_alpha,
                         "lambda_u": lambda_u, "rampup": rampup}
        self.optimizer, self.lr, self.weight_decay = optimizer, lr, weight_decay
        self.loss_batch_size = loss_batch_size
        self.run_info: dict = {}

    def split_loss(self, model: nn.Module, ctx: Context) -> np.ndarray:
        """SCE of every training sample: eval mode, train-augmented images, the dataset's labels."""
        logits = predict_logits(model, ctx.train_x, ctx.normalize, self.loss_batch_size, ctx.augment, ctx.generator)
        return sce_per_sample(logits, ctx.train_y, **self.sce).cpu().numpy()

    def run(self, ctx: Context) -> nn.Module:
        n = len(ctx.train_y)
        labelled = int(n * self.epsilon)
        if min(labelled, n - labelled) < self.mixmatch["batch_size"]:
            raise UserError(f"defenses.DBD: epsilon = {self.epsilon} of {n} samples leaves a pool smaller than "
                            f"batch_size = {self.mixmatch['batch_size']}; lower batch_size or move epsilon to 0.5")
        model = ctx.upstream_model()  # f_b from the SimCLR stage, f_c untrained
        optimizer = make_optimizer(model.parameters(), name=self.optimizer, lr=self.lr, weight_decay=self.weight_decay)

        state = ctx.resumable("linear", model=model, optimizer=optimizer)
        start = ctx.resume(state, "linear", self.linear_epochs)
        feats, timer = None, Timer()
        if self.linear_cached and start < self.linear_epochs:
            feats = frozen_features(model, ctx.train_x, ctx.normalize, self.loss_batch_size)
        for epoch in range(start, self.linear_epochs):
            if feats is not None:
                stats = train_linear_head_cached(model, optimizer, feats, ctx.train_y, self.linear_batch_size,
                                                 ctx.generator, self.sce,
                                                 desc=f"dbd linear {epoch + 1}/{self.linear_epochs}")
            else:
                stats = train_linear_head(model, optimizer, ctx, self.linear_batch_size, self.sce,
                                          desc=f"dbd linear {epoch + 1}/{self.linear_epochs}")
            ctx.end_epoch({"epoch": epoch + 1, "phase": "linear", "lr": optimizer.param_groups[0]["lr"], **stats,
                           "seconds": timer.lap()}, model, epoch + 1, self.linear_epochs + self.epochs)
            state.save(epoch=epoch + 1, curves=ctx.curves)
            ctx.maybe_interrupt(epoch + 1)
            timer.lap()  # the evaluation and the checkpoint are not training time

        state = ctx.resumable("mixmatch", model=model, optimizer=optimizer)
        start = ctx.resume(state, "mixmatch", self.epochs)
        for epoch in range(start, self.epochs):
            timer = Timer()
            loss = self.split_loss(model, ctx)
            clean = lowest_fraction(loss, self.epsilon)  # the labelled pool
            polluted = np.setdiff1d(np.arange(n), clean)  # the unlabelled pool
            loss_seconds = timer.lap()
            global_epoch = self.linear_epochs + epoch
            stats = mixmatch_epoch(model, optimizer, ctx.train_x, ctx.train_y, torch.from_numpy(clean),
                                   torch.from_numpy(polluted), ctx.augment, ctx.normalize, ctx.generator,
                                   ctx.num_classes, epoch, desc=f"dbd mixmatch {epoch + 1}/{self.epochs}",
                                   **self.mixmatch)
            mixmatch_seconds = timer.lap()
            record = {"epoch": global_epoch + 1, "phase": "mixmatch", "clean_pool": len(clean),
                      "poisoned_in_clean_pool": int(ctx.poison[clean].sum()), "lr": optimizer.param_groups[0]["lr"],
                      **stats, "seconds": loss_seconds + mixmatch_seconds, "loss_pass_seconds": loss_seconds,
                      "mixmatch_seconds": mixmatch_seconds}
            ctx.end_epoch(record, model, global_epoch + 1, self.linear_epochs + self.epochs)
            state.save(epoch=epoch + 1, curves=ctx.curves)
            ctx.maybe_interrupt(global_epoch + 1)

        splits = [r for r in ctx.curves if r.get("phase") == "mixmatch"]
        self.run_info = {"dbd_epsilon": self.epsilon,
                         "dbd_poisoned_in_labelled_pool": [r["poisoned_in_clean_pool"] for r in splits]}
        return model
