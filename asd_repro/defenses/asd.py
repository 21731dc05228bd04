"""ASD: backdoor defense via adaptively splitting the poisoned dataset (Gao et al., CVPR 2023).

As the authors' code (KuofengGao/ASD) runs it. The poisoned training set D is split anew at every epoch e into
a clean pool D_C, which keeps its labels, and a polluted pool D_P = D minus D_C, whose labels are dropped; the
model f is then trained for one epoch of MixMatch on (D_C, D_P). The split is driven by the per-sample loss
L1 = symmetric cross entropy, recomputed every epoch on the whole of D (eval mode, train augmentation, the
labels as handed over):

    D_S = seeds_per_class known-clean samples of every class (the defender's seed samples)
    for e in 0 .. epochs - 1:
        L1 = SCE(f(aug(x)), y) for every x in D
        stage 1, e < stage2_epoch   class-aware loss-guided split:
            D_C = D_S + the k lowest-L1 non-seed samples of every class, k = n * floor(e / t)
        stage 2, e < stage3_epoch   class-agnostic loss-guided split:
            D_C = the alpha fraction of D with the lowest L1
        stage 3                     meta-split:
            f' = copy of f; train f' for virtual_epochs of CE on D, Adam at lr beta, only virtual_layers updated
            D_C = the gamma fraction of D with the smallest reduction L1(f) - L1(f'); f' is discarded
        D_P = D minus D_C
        MixMatch epoch of f on (D_C with labels, D_P without)

Differences from the reference code, all deliberate:
- Stage 1's k is computed from the epoch, so a resumed run continues the schedule (the reference's counter
  restarts at 0 on resume), and a resumed run starts at the next epoch (the reference repeats the last one).
- Every random draw (shuffles, augmentations, MixUp's Beta draws and permutations) comes from one checkpointed
  generator instead of the global RNGs and data-loader workers, so runs repeat exactly on CPU.
- The virtual model's frozen layers are marked as needing no gradient: the same updates, less backward work.
- Seed samples are drawn with ``numpy.random.default_rng(seed)``, not the global numpy RNG.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.defenses import Context, Defense, Timer, register_defense
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.loop import train_epoch
from asd_repro.engine.losses import SCE
from asd_repro.engine.mixmatch import MixMatch
from asd_repro.engine.optim import Optimizer, given
from asd_repro.engine.split import lowest_fraction, sce_split_loss


def stage1_k(epoch: int, n: int, t: int) -> int:
    """Samples per class added to the seeds in stage 1: n more every t epochs, none in the first t."""
    return n * (epoch // t)


def class_aware_split(loss: np.ndarray, labels: np.ndarray, seeds: np.ndarray, k: int,
                      num_classes: int) -> np.ndarray:
    """The seeds plus, for every class (by the dataset's labels), its k lowest-loss non-seed samples; sorted."""
    candidate = np.ones(len(loss), dtype=bool)
    candidate[seeds] = False
    picks = [seeds]
    for c in range(num_classes):
        idx = np.flatnonzero(candidate & (labels == c))
        picks.append(idx[np.argsort(loss[idx], kind="stable")[:k]])
    return np.sort(np.concatenate(picks))


def train_virtual_model(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, layers: tuple[str, ...],
                        optimizer: Optimizer, epochs: int, batch_size: int, augment: Augment, normalize: Normalize,
                        generator: torch.Generator, desc: str = "virtual model") -> torch.nn.Module:
    """A copy of ``model`` trained with cross entropy on (x, y), ``optimizer`` (the reference's: Adam at lr beta)
    updating only ``layers``; ``model`` untouched.

    The copy trains in train mode, so the batch-norm statistics of every layer move, as in the reference.
    """
    virtual = copy.deepcopy(model)
    missing = [name for name in layers if not hasattr(virtual, name)]
    if missing:
        known = ", ".join(name for name, _ in virtual.named_children())
        raise UserError(f"defenses.ASD.virtual_layers: the model has no {', '.join(missing)}; known: {known}")
    trained = [p for name in layers for p in getattr(virtual, name).parameters()]
    virtual.requires_grad_(False)
    for p in trained:
        p.requires_grad_(True)
    optim = optimizer.make(trained)
    for epoch in range(epochs):
        train_epoch(virtual, optim, x, y, augment, normalize, batch_size, generator,
                    desc=f"{desc} {epoch + 1}/{epochs}")
    return virtual


@register_defense("asd")
@configurable(module="defenses")
class ASD(Defense):
    """ASD; the defaults are the reference's CIFAR-10 values.

    Args:
        epochs: total epochs (120).
        stage2_epoch: first epoch (0-based) of stage 2, class-agnostic split (60).
        stage3_epoch: first epoch of stage 3, meta-split (90).
        seeds_per_class: known-clean seed samples per class (10).
        n: stage 1 adds n samples per class to the clean pool ...
        t: ... every t epochs (10 and 5).
        alpha: stage 2's clean-pool fraction of the dataset (0.5).
        gamma: stage 3's clean-pool fraction of the dataset (0.5).
        virtual_optimizer: the virtual model's optimiser (the reference: Adam at lr beta = 0.015, constant).
        virtual_epochs: epochs of training of the virtual model (1).
        virtual_layers: top-level modules of the model the virtual model's optimiser updates.
        virtual_batch_size: the virtual model's CE batch size (128).
        sce: the split loss L1, symmetric cross entropy (``engine.SCE``; CE weight 0.1, RCE weight 1.0).
        mixmatch: the semi-supervised epoch (``engine.MixMatch``; 1,024 iterations of 64 + 64, rampup = epochs).
        optimizer: the model's optimiser (Adam, lr 0.002, no weight decay, constant).
        loss_batch_size: batch size of the inference passes that compute L1 (any value gives the same losses).
    """

    def __init__(self, epochs: int = 120, stage2_epoch: int = 60, stage3_epoch: int = 90, seeds_per_class: int = 10,
                 n: int = 10, t: int = 5, alpha: float = 0.5, gamma: float = 0.5,
                 virtual_optimizer: Optimizer | None = None, virtual_epochs: int = 1,
                 virtual_layers: tuple[str, ...] = ("layer3", "layer4", "fc"), virtual_batch_size: int = 128,
                 sce: SCE | None = None, mixmatch: MixMatch | None = None, optimizer: Optimizer | None = None,
                 loss_batch_size: int = 1024):
        problems = [msg for ok, msg in (
            (0 <= stage2_epoch <= stage3_epoch <= epochs,
             f"need 0 <= stage2_epoch ({stage2_epoch}) <= stage3_epoch ({stage3_epoch}) <= epochs ({epochs})"),
            (t >= 1 and n >= 0, f"need t >= 1 and n >= 0 (got t = {t}, n = {n})"),
            (0 < alpha <= 1 and 0 < gamma <= 1, f"alpha and gamma are fractions in (0, 1] (got {alpha}, {gamma})"),
            (len(virtual_layers) > 0, "virtual_layers is empty"),
            (seeds_per_class >= 1, f"seeds_per_class must be positive (got {seeds_per_class})"),
            (virtual_epochs >= 0 and virtual_batch_size >= 1 and loss_batch_size >= 1,
             "virtual_epochs must be >= 0, virtual_batch_size and loss_batch_size positive"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.ASD: {'; '.join(problems)}; fix the binding")
        self.epochs, self.stage2_epoch, self.stage3_epoch = epochs, stage2_epoch, stage3_epoch
        self.seeds_per_class, self.n, self.t = seeds_per_class, n, t
        self.alpha, self.gamma = alpha, gamma
        self.virtual_optimizer = virtual_optimizer or given("adam", 0.015)
        self.virtual_epochs, self.virtual_layers = virtual_epochs, tuple(virtual_layers)
        self.virtual_batch_size = virtual_batch_size
        self.sce = sce or SCE(ce_weight=0.1, rce_weight=1.0, prob_min=1e-7, onehot_min=1e-4)
        self.mixmatch = mixmatch or MixMatch(iterations=1024, batch_size=64, K=2, T=0.5, alpha=0.75, lambda_u=15.0,
                                             rampup=epochs)
        self.optimizer = optimizer or given("adam", 0.002)
        self.loss_batch_size = loss_batch_size
        self.run_info: dict = {}

    def stage(self, epoch: int) -> int:
        """Which split (1, 2 or 3) the 0-based ``epoch`` uses."""
        return 1 if epoch < self.stage2_epoch else 2 if epoch < self.stage3_epoch else 3

    def split_loss(self, model: torch.nn.Module, ctx: Context) -> np.ndarray:
        """L1 of every training sample: SCE in eval mode on train-augmented images, the dataset's labels."""
        return sce_split_loss(model, ctx.train_x, ctx.train_y, ctx.normalize, self.loss_batch_size, ctx.augment,
                              ctx.generator, self.sce)

    def meta_split(self, model: torch.nn.Module, ctx: Context, loss: np.ndarray, desc: str = "asd") -> np.ndarray:
        """The gamma fraction of samples whose L1 a virtual model f' reduces the least; f' is then discarded."""
        virtual = train_virtual_model(model, ctx.train_x, ctx.train_y, self.virtual_layers, self.virtual_optimizer,
                                      self.virtual_epochs, self.virtual_batch_size, ctx.augment, ctx.normalize,
                                      ctx.generator, desc=f"{desc}: virtual model")
        return lowest_fraction(loss - self.split_loss(virtual, ctx), self.gamma)

    def run(self, ctx: Context) -> torch.nn.Module:
        model = ctx.new_model()
        optimizer, schedule = self.optimizer.build(model.parameters(), self.epochs)
        seeds = ctx.clean_indices(self.seeds_per_class, np.random.default_rng(ctx.seed), "defenses.ASD.seeds_per_class")  # D_S
        self.run_info = {"asd_seed_indices": seeds.tolist()}
        labels = ctx.train_y.cpu().numpy()

        def epoch(e: int) -> dict:
            timer = Timer()
            loss = self.split_loss(model, ctx)  # L1(f)
            loss_seconds = timer.lap()
            stage = self.stage(e)
            if stage == 1:
                clean = class_aware_split(loss, labels, seeds, stage1_k(e, self.n, self.t), ctx.num_classes)
            elif stage == 2:
                clean = lowest_fraction(loss, self.alpha)
            else:
                clean = self.meta_split(model, ctx, loss, desc=f"asd {e + 1}/{self.epochs}")
            meta_seconds = timer.lap()
            polluted = np.setdiff1d(np.arange(len(loss)), clean)  # D_P
            stats = self.mixmatch.epoch(model, optimizer, ctx.train_x, ctx.train_y, torch.from_numpy(clean),
                                        torch.from_numpy(polluted), ctx.augment, ctx.normalize, ctx.generator,
                                        ctx.num_classes, e, desc=f"asd {e + 1}/{self.epochs}")
            return {"stage": stage, "clean_pool": len(clean), "poisoned_in_clean_pool": int(ctx.poison[clean].sum()),
                    **stats, "loss_pass_seconds": loss_seconds, "meta_split_seconds": meta_seconds,
                    "mixmatch_seconds": timer.lap()}

        ctx.run_phase("asd", self.epochs, epoch, model, optimizer, schedule)
        return model
