"""ABL: anti-backdoor learning, training clean models on poisoned data (Li et al., NeurIPS 2021).

As the authors' code (bboylyg/ABL: backdoor_isolation.py, backdoor_unlearning.py) runs it. Backdoor samples
are learned much faster than clean ones, so a model whose training loss is held near a floor gamma fits them
first and leaves them with the lowest loss; ABL isolates those, trains on, then unlearns them:

    f = a model from scratch, D = the poisoned training set
    1. isolation, isolation_epochs (T_te) epochs on D, no augmentation, with the local-gradient-ascent loss
           L_LGA = sign(L - gamma) * L,  L = the mini-batch's mean cross entropy
       (descent while the batch loss is above gamma, ascent below it: the loss hovers at gamma)
    2. L(x, y) = cross entropy of every sample of D (eval mode, no augmentation)
       D_b = the int(p * |D|) samples with the lowest loss (p = isolation_ratio), D_c = D minus D_b
    3. training on, finetune_epochs of cross entropy on D_c, augmented, lr decayed by 10x at 2/3
    4. unlearning, unlearning_epochs of gradient ascent on D_b: minimise -L, no augmentation, a small lr

Differences from the reference code, all deliberate:
- The isolation loader shuffles (the reference's get_backdoor_loader does not): the same epochs, in random order.
- Phase 3's augmentation is the harness's crop (and flip where the dataset allows one) without Cutout(1, 3).
- Unlearning starts a fresh SGD with the same settings; the reference carries phase 3's momentum buffer over.
- The reference's unlearning loop only evaluates in its first epoch (unlearning_epochs - 1 epochs of ascent);
  here every one of unlearning_epochs epochs ascends.
- Every random draw comes from the context's checkpointed generator, so a resumed run ends bit-identical.
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.defenses import Context, Defense, register_defense
from asd_repro.engine.augment import Augment
from asd_repro.engine.loop import predict_logits, train_epoch
from asd_repro.engine.optim import Optimizer, given
from asd_repro.engine.split import lowest_fraction


def lga_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Local gradient ascent: the batch-mean cross entropy L, descended above gamma and ascended below it."""
    loss = F.cross_entropy(logits, targets)
    return torch.sign(loss - gamma) * loss


def negated_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Minimising -L is gradient ascent on the cross entropy L (the unlearning objective)."""
    return -F.cross_entropy(logits, targets)


def isolate(loss: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(D_b, D_c): the int(ratio * N) lowest-loss indices and the rest, both sorted."""
    isolated = lowest_fraction(loss, ratio)
    return isolated, np.setdiff1d(np.arange(len(loss)), isolated)


@register_defense("abl")
@configurable(module="defenses")
class ABL(Defense):
    """ABL; the defaults are the paper's CIFAR-10 values (T = 100 epochs: 20 + 60 + 20).

    Args:
        isolation_epochs: T_te, epochs of LGA training before the isolation (20).
        gamma: the LGA loss floor (0.5).
        isolation_ratio: p, fraction of the training set isolated as backdoor samples (0.01).
        finetune_epochs: epochs of cross entropy on the non-isolated samples (60).
        unlearning_epochs: epochs of gradient ascent on the isolated samples (20).
        batch_size: mini-batch size of every phase (64).
        isolation_optimizer: phase 1's (the reference: SGD, lr 0.1 constant, momentum 0.9, Nesterov, wd 1e-4).
        finetune_optimizer: phase 3's (the same SGD, lr 0.1 x0.1 at epoch 40 of 60: milestones (2/3,)).
        unlearning_optimizer: phase 4's (the same SGD at a constant lr 0.0005).
        isolation_augment: augment phase 1's batches (the reference: no).
        finetune_augment: augment phase 3's batches (the reference: crop, flip, Cutout).
        unlearning_augment: augment phase 4's batches (the reference: no).
        loss_batch_size: inference batch of the isolation loss pass (any value gives the same losses).
    """

    def __init__(self, isolation_epochs: int = 20, gamma: float = 0.5, isolation_ratio: float = 0.01,
                 finetune_epochs: int = 60, unlearning_epochs: int = 20, batch_size: int = 64,
                 isolation_optimizer: Optimizer | None = None, finetune_optimizer: Optimizer | None = None,
                 unlearning_optimizer: Optimizer | None = None, isolation_augment: bool = False,
                 finetune_augment: bool = True, unlearning_augment: bool = False, loss_batch_size: int = 1024):
        problems = [msg for ok, msg in (
            (isolation_epochs >= 1, f"isolation_epochs must be >= 1 to isolate anything (got {isolation_epochs})"),
            (finetune_epochs >= 0 and unlearning_epochs >= 0,
             f"finetune_epochs and unlearning_epochs must be >= 0 (got {finetune_epochs}, {unlearning_epochs})"),
            (0 < isolation_ratio < 1, f"isolation_ratio is a fraction in (0, 1) (got {isolation_ratio})"),
            (gamma >= 0, f"gamma is a loss floor, >= 0 (got {gamma})"),
            (batch_size >= 1 and loss_batch_size >= 1, "batch_size and loss_batch_size must be positive"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.ABL: {'; '.join(problems)}; fix the binding")
        self.isolation_epochs, self.gamma, self.isolation_ratio = isolation_epochs, gamma, isolation_ratio
        self.finetune_epochs, self.unlearning_epochs = finetune_epochs, unlearning_epochs
        self.batch_size, self.loss_batch_size = batch_size, loss_batch_size
        sgd = {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
        self.optimizers = {"isolation": isolation_optimizer or given("sgd", 0.1, **sgd),
                           "finetune": finetune_optimizer or given("sgd", 0.1, schedule="multistep",
                                                                   milestones=(2 / 3,), **sgd),
                           "unlearning": unlearning_optimizer or given("sgd", 5e-4, **sgd)}
        self.augment = {"isolation": isolation_augment, "finetune": finetune_augment,
                        "unlearning": unlearning_augment}
        self.run_info: dict = {}

    @property
    def total_epochs(self) -> int:
        return self.isolation_epochs + self.finetune_epochs + self.unlearning_epochs

    def isolation_loss(self, model: torch.nn.Module, ctx: Context) -> np.ndarray:
        """Cross entropy of every training sample: eval mode, no augmentation, the labels as handed over."""
        logits = predict_logits(model, ctx.train_x, ctx.normalize, self.loss_batch_size)
        return F.cross_entropy(logits, ctx.train_y, reduction="none").cpu().numpy()

    def train_phase(self, ctx: Context, phase: str, model: torch.nn.Module, epochs: int, offset: int,
                    indices: np.ndarray | None, loss_fn: Callable, pools: dict) -> None:
        """``epochs`` resumable epochs of the phase's optimiser on ``loss_fn`` over the samples ``indices`` (None: all).

        Epochs are numbered globally (``offset`` + 1 ...) in the curves and for the interrupt hook; the recorded
        ``loss`` is the phase's objective (LGA, CE, or -CE while unlearning); ``pools`` are added to every record.
        """
        optimizer, lr_schedule = self.optimizers[phase].build(model.parameters(), epochs)
        x, y = ctx.train_x, ctx.train_y
        if indices is not None:
            idx = torch.from_numpy(indices).to(ctx.device)
            x, y = x[idx], y[idx]
        augment = ctx.augment if self.augment[phase] else Augment(crop_padding=0, hflip=False)
        ctx.run_phase(phase, epochs, lambda epoch: {
            **train_epoch(model, optimizer, x, y, augment, ctx.normalize, self.batch_size, ctx.generator,
                          loss_fn=loss_fn, desc=f"abl {phase} {epoch + 1}/{epochs}"), **pools},
            model, optimizer, lr_schedule, checkpoint=phase, first_epoch=offset, total=self.total_epochs)

    def run(self, ctx: Context) -> torch.nn.Module:
        model = ctx.new_model()
        # 1. isolation: LGA holds the batch loss near gamma, so the fast-learned backdoor ends up lowest.
        self.train_phase(ctx, "isolation", model, self.isolation_epochs, 0, None,
                         functools.partial(lga_loss, gamma=self.gamma), {})
        # 2. D_b = the p fraction of lowest loss (deterministic: recomputed, not checkpointed, on resume).
        isolated, remaining = isolate(self.isolation_loss(model, ctx), self.isolation_ratio)
        if len(isolated) == 0:
            raise UserError(f"defenses.ABL.isolation_ratio = {self.isolation_ratio} isolates no sample of "
                            f"{len(remaining)}; raise it to at least {1 / len(remaining):.2g}")
        poisoned_isolated = int(ctx.poison[isolated].sum())  # ground truth: logging only
        self.run_info = {"abl_isolated": len(isolated), "abl_isolated_poisoned": poisoned_isolated,
                         "abl_isolated_indices": isolated.tolist()}
        pools = {"clean_pool": len(remaining), "poisoned_in_clean_pool": int(ctx.poison[remaining].sum()),
                 "isolated": len(isolated), "poisoned_in_isolated": poisoned_isolated}
        print(f"abl: isolated {len(isolated)} samples, {poisoned_isolated} of them poisoned", flush=True)
        # 3. training on D_c.
        self.train_phase(ctx, "finetune", model, self.finetune_epochs,
                         self.isolation_epochs, remaining, F.cross_entropy, pools)
        # 4. unlearning: gradient ascent on D_b.
        self.train_phase(ctx, "unlearning", model, self.unlearning_epochs,
                         self.isolation_epochs + self.finetune_epochs, isolated, negated_ce, pools)
        return model
