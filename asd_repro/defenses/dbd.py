"""DBD: backdoor defense via decoupling the training process (Huang et al., ICLR 2022).

As the authors' code (SCLBD/DBD) runs it. The end-to-end training that lets a backdoor in is split into three
steps; the first, which never reads a label, is its own pipeline stage (``stages.pretrain`` runs
``simclr_pretrain``, declared at registration) whose model the ``dbd`` defense starts from:

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
- SimCLR's augmentation runs batched on the training device instead of through PIL (``engine.simclr``).
- lambda_u's ramp counts MixMatch epochs only, so it starts at 0; the reference passes its global epoch number,
  so its ramp starts at 10 / 190 of lambda_u after the ten warm-up epochs.
- Two bindings for small budgets, off by default: ``simclr_pretrain.symmetric`` (SimCLR's NT-Xent with both
  views as anchors; DBD's takes the first view's only) and ``DBD.linear_cached`` (the warm-up on features
  computed once, without augmentation).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from asd_repro.core.config import configurable
from asd_repro.core.errors import StepLosses, UserError, require
from asd_repro.defenses import Context, Defense, Timer, register_defense
from asd_repro.engine.augment import Normalize
from asd_repro.engine.checkpoint import Checkpointer
from asd_repro.engine.loop import index_batches, run_epochs, train_epoch
from asd_repro.engine.losses import SCE
from asd_repro.engine.mixmatch import MixMatch
from asd_repro.engine.optim import Optimizer, given
from asd_repro.engine.simclr import SimCLRAugment, features, head_parameter_names, projection_head, simclr_epoch
from asd_repro.engine.split import lowest_fraction, sce_split_loss

# --- 1. self-supervised pre-training (the pipeline's pretrain stage) ---------------------------------------------


@configurable(module="defenses")
def simclr_pretrain(x: torch.Tensor, new_model: Callable[[], nn.Module], generator: torch.Generator,
                    normalize: Normalize, dataset_hflip: bool, checkpointer: Checkpointer | None = None,
                    epochs: int = 1000, batch_size: int = 512, temperature: float = 0.5, symmetric: bool = False,
                    optimizer: Optimizer | None = None, proj_dim: int = 128, stop_after_epoch: int | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """DBD's step 1: the backbone f_b pre-trained with SimCLR on the poisoned images, labels unused; resumable.

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
        symmetric: see ``engine.simclr.nt_xent`` (DBD: False).
        optimizer: of the backbone and the head (DBD's: SGD, lr 0.4, momentum 0.9, weight decay 1e-4, cosine to zero
            over the epochs).
        proj_dim: output size of the projection head g (128).
        stop_after_epoch: tests only, raise ``Interrupted`` after that many epochs.

    Returns:
        The backbone's state dict (the model's without its head) and a record of the run: per-epoch mean
        loss, learning rate and seconds.
    """
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
    optimizer = optimizer or given("sgd", 0.4, weight_decay=1e-4, schedule="cosine")
    opt, sched = optimizer.build([*params, *head.parameters()], epochs)
    history: list[dict[str, Any]] = []

    def log(record: dict[str, Any], done: int) -> None:
        history.append(record)
        print(f"[simclr {done}/{epochs}] loss={record['loss']:.4f} lr={record['lr']:.4g} "
              f"seconds={record['seconds']:.1f}", flush=True)

    run_epochs("simclr", epochs, lambda epoch: simclr_epoch(
        model, head, opt, x, augment, normalize, batch_size, temperature, symmetric, generator,
        desc=f"simclr {epoch + 1}/{epochs}"), checkpointer=checkpointer or Checkpointer(None, ""),
        generator=generator, objects={"model": model, "head": head, "optimizer": opt, "schedule": sched},
        records=history, end_epoch=log, optimizer=opt, schedule=sched, stop_after_epoch=stop_after_epoch)
    head_names = head_parameter_names(model)
    backbone = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in head_names}
    info = {"epochs": epochs, "history": history, "seconds": round(sum(r["seconds"] for r in history), 2),
            "final_loss": history[-1]["loss"]}
    return backbone, info


# --- 2, 3. the defense: linear warm-up, then MixMatch on a loss-guided split ----------------------------------------


def train_linear_head(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: Context, batch_size: int,
                      sce: SCE, desc: str) -> dict[str, float]:
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
                           ctx.generator, loss_fn=sce, desc=desc)
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
                             sce: SCE, desc: str = "linear head") -> dict[str, float]:
    """One epoch of SCE training of the head f_c on precomputed backbone features."""
    head = model.get_classifier()
    total, correct = torch.zeros((), device=feats.device), torch.zeros((), device=feats.device)
    losses = StepLosses(desc)
    for idx in index_batches(len(y), batch_size, generator, device=feats.device):
        logits = head(feats[idx])
        loss = sce(logits, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(idx)
        losses.add(loss)
        correct += (logits.argmax(1) == y[idx]).sum()
    losses.check()
    return {"loss": total.item() / max(len(y), 1), "train_acc": 100.0 * correct.item() / max(len(y), 1)}


@register_defense("dbd", family="selfsup", pretrain=simclr_pretrain)
@configurable(module="defenses")
class DBD(Defense):
    """DBD's linear warm-up and semi-supervised fine-tuning, from the pre-trained backbone (``--upstream``, the
    folder ``stages.pretrain`` writes); the defaults are the reference's CIFAR-10 values.

    Args:
        linear_epochs: epochs of SCE training of the linear head on the frozen backbone (10).
        linear_batch_size: the warm-up's batch size (128).
        linear_cached: train the head on the frozen backbone's features of the un-augmented images, computed once
            in eval mode, instead of on augmented images with the backbone in train mode (False, the reference's).
            An epoch then costs a fraction of a forward pass, so small profiles afford the reference's thousands
            of head updates; augmentation and the batch-norm drift of the warm-up are dropped.
        epsilon: fraction of the training set kept with its labels, lowest SCE first (0.5).
        epochs: MixMatch fine-tuning epochs (190).
        sce: symmetric cross entropy, the warm-up's loss and the split's (``engine.SCE``; CE weight alpha = 0.1,
            RCE weight beta = 1.0).
        mixmatch: the semi-supervised epoch (``engine.MixMatch``; 1,024 iterations of 64 + 64, rampup = epochs).
        optimizer: one optimiser serves both phases, as in the reference (Adam, lr 0.002, no weight decay,
            constant).
        loss_batch_size: batch size of the inference passes that compute the split's SCE (speed only).
    """

    def __init__(self, linear_epochs: int = 10, linear_batch_size: int = 128, linear_cached: bool = False,
                 epsilon: float = 0.5, epochs: int = 190, sce: SCE | None = None, mixmatch: MixMatch | None = None,
                 optimizer: Optimizer | None = None, loss_batch_size: int = 1024):
        problems = [msg for ok, msg in (
            (linear_epochs >= 0 and epochs >= 0, f"need linear_epochs >= 0 and epochs >= 0 (got {linear_epochs}, "
                                                 f"{epochs})"),
            (0 < epsilon < 1, f"epsilon is the labelled fraction, in (0, 1) (got {epsilon})"),
            (linear_batch_size >= 1 and loss_batch_size >= 1, "linear_batch_size and loss_batch_size must be positive"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.DBD: {'; '.join(problems)}; fix the binding")
        self.linear_epochs, self.linear_batch_size, self.linear_cached = linear_epochs, linear_batch_size, linear_cached
        self.epsilon, self.epochs = epsilon, epochs
        self.sce = sce or SCE(ce_weight=0.1, rce_weight=1.0, prob_min=1e-7, onehot_min=1e-4)
        self.mixmatch = mixmatch or MixMatch(iterations=1024, batch_size=64, K=2, T=0.5, alpha=0.75, lambda_u=15.0,
                                             rampup=epochs)
        self.optimizer = optimizer or given("adam", 0.002)
        self.loss_batch_size = loss_batch_size
        self.run_info: dict = {}

    def split_loss(self, model: nn.Module, ctx: Context) -> np.ndarray:
        """SCE of every training sample: eval mode, train-augmented images, the dataset's labels."""
        return sce_split_loss(model, ctx.train_x, ctx.train_y, ctx.normalize, self.loss_batch_size, ctx.augment,
                              ctx.generator, self.sce)

    def run(self, ctx: Context) -> nn.Module:
        n = len(ctx.train_y)
        labelled = int(n * self.epsilon)
        if min(labelled, n - labelled) < self.mixmatch.batch_size:
            raise UserError(f"defenses.DBD: epsilon = {self.epsilon} of {n} samples leaves a pool smaller than "
                            f"batch_size = {self.mixmatch.batch_size}; lower batch_size or move epsilon to 0.5")
        model = ctx.upstream_model()  # f_b from the SimCLR stage, f_c untrained
        require("dbd/engine.Optimizer.schedule", self.optimizer.schedule, self.optimizer.schedule == "constant",
                "'constant' (one optimiser spans both phases without a schedule, as in the reference)")
        optimizer = self.optimizer.make(model.parameters())
        total = self.linear_epochs + self.epochs

        # 2. linear warm-up of f_c on the frozen f_b
        cached: list[torch.Tensor] = []  # f_b's features, computed once when first needed (not on a finished phase)

        def linear(epoch: int) -> dict:
            desc = f"dbd linear {epoch + 1}/{self.linear_epochs}"
            if not self.linear_cached:
                return train_linear_head(model, optimizer, ctx, self.linear_batch_size, self.sce, desc=desc)
            if not cached:
                cached.append(frozen_features(model, ctx.train_x, ctx.normalize, self.loss_batch_size))
            return train_linear_head_cached(model, optimizer, cached[0], ctx.train_y, self.linear_batch_size,
                                            ctx.generator, self.sce, desc=desc)

        ctx.run_phase("linear", self.linear_epochs, linear, model, optimizer, checkpoint="linear", total=total)

        # 3. MixMatch on the loss-guided split, split anew every epoch
        def mixmatch(epoch: int) -> dict:
            timer = Timer()
            clean = lowest_fraction(self.split_loss(model, ctx), self.epsilon)  # the labelled pool
            polluted = np.setdiff1d(np.arange(n), clean)  # the unlabelled pool
            loss_seconds = timer.lap()
            stats = self.mixmatch.epoch(model, optimizer, ctx.train_x, ctx.train_y, torch.from_numpy(clean),
                                        torch.from_numpy(polluted), ctx.augment, ctx.normalize, ctx.generator,
                                        ctx.num_classes, epoch, desc=f"dbd mixmatch {epoch + 1}/{self.epochs}")
            return {"clean_pool": len(clean), "poisoned_in_clean_pool": int(ctx.poison[clean].sum()), **stats,
                    "loss_pass_seconds": loss_seconds, "mixmatch_seconds": timer.lap()}

        ctx.run_phase("mixmatch", self.epochs, mixmatch, model, optimizer, checkpoint="mixmatch",
                      first_epoch=self.linear_epochs, total=total)

        splits = [r for r in ctx.curves if r.get("phase") == "mixmatch"]
        self.run_info = {"dbd_epsilon": self.epsilon,
                         "dbd_poisoned_in_labelled_pool": [r["poisoned_in_clean_pool"] for r in splits]}
        return model
