"""NAD, neural attention distillation (Li et al., ICLR 2021): erase a backdoor by making the backdoored model attend
like a copy of itself fine-tuned on clean data.

As the authors' code (bboylyg/NAD) runs it. Starting from the backdoored model f (the No-defense model of the same
cell) and the defender's clean data D_c (5% of the training set):

    teacher T = copy of f fine-tuned on D_c with cross entropy for teacher_epochs (augmentation on)
    student S = f trained on D_c for epochs with
        L = CE(S(x), y) + sum_k beta_k * AT(S_k(x), T_k(x)),   T frozen in eval mode
    where S_k, T_k are the outputs of the residual stages k (layer2, layer3, layer4, after the residual add and ReLU)
    and AT(F_s, F_t) = mean squared difference of the attention maps
        A(F) = sum over channels of |F|^p, divided by its L2 norm over the positions (+ 1e-6)

Differences from the reference code, all deliberate:
- The reference distils the three groups of a WRN-16-1; here the stages of a ResNet, with BackdoorBench's ResNet
  weights (defenses/nad.gin). A stage with beta_k = 0 is not computed (the reference multiplies it by 0).
- The lr drop is a gin-bound schedule (reference: 0.1 for 2 epochs, then 0.01; the same here by default).
- Every random draw (shuffles, augmentation) comes from one checkpointed generator, so runs repeat exactly on CPU.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from asd_repro.core.config import configurable
from asd_repro.core.errors import StepLosses, UserError
from asd_repro.defenses import Context, Defense, register_defense
from asd_repro.defenses._posttraining import clean_epoch, defender_clean_data, training_phase
from asd_repro.engine.optim import Optimizer, given
from asd_repro.engine.augment import Augment, Normalize
from asd_repro.engine.loop import index_batches


def attention_map(features: torch.Tensor, p: float = 2.0, eps: float = 1e-6) -> torch.Tensor:
    """A(F): channel-summed |F|^p of (N, C, H, W) features, L2-normalised over the H x W positions; (N, 1, H, W)."""
    am = features.abs().pow(p).sum(1, keepdim=True)
    return am / (torch.linalg.vector_norm(am, dim=(2, 3), keepdim=True) + eps)


def at_loss(student: torch.Tensor, teacher: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Attention-transfer loss: mean squared difference of the two attention maps (the teacher's gets no gradient)."""
    return F.mse_loss(attention_map(student, p), attention_map(teacher.detach(), p))


@contextlib.contextmanager
def stage_outputs(model: torch.nn.Module, stages: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """A dict that every forward pass of ``model`` fills with the outputs of the named top-level stages."""
    outputs: dict[str, torch.Tensor] = {}
    handles = [getattr(model, name).register_forward_hook(
        lambda module, inputs, output, name=name: outputs.__setitem__(name, output)) for name in stages]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def distill_epoch(student: torch.nn.Module, teacher: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  x: torch.Tensor, y: torch.Tensor, betas: dict[str, float], p: float, augment: Augment,
                  normalize: Normalize, batch_size: int, generator: torch.Generator,
                  desc: str = "nad student") -> dict[str, float]:
    """One epoch of CE + sum_k beta_k AT(student_k, teacher_k); the teacher stays in eval mode and is never updated.

    Batches and augmentations are drawn exactly as ``engine.loop.train_epoch`` draws them, so with every beta 0
    this is plain cross-entropy fine-tuning.
    """
    student.train()
    teacher.eval()
    stages = tuple(name for name, beta in betas.items() if beta != 0)
    # float64 sums on the device: the same additions, in the same order, as summing .item() on the host
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)  # loss, ce, at
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    seen = 0
    losses = StepLosses(desc)
    with stage_outputs(student, stages) as s_feats, stage_outputs(teacher, stages) as t_feats:
        bar = tqdm(list(index_batches(len(y), batch_size, generator, device=x.device)), desc=desc, leave=False,
                   mininterval=1.0)
        for idx in bar:
            inputs, targets = normalize(augment(x[idx], generator)), y[idx]
            logits = student(inputs)
            ce = F.cross_entropy(logits, targets)
            at = torch.zeros((), device=logits.device)
            if stages:
                with torch.no_grad():
                    teacher(inputs)
                for name in stages:
                    at = at + betas[name] * at_loss(s_feats[name], t_feats[name], p)
            loss = ce + at if stages else ce
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.add(loss)
            sums += torch.stack([loss.detach(), ce.detach(), at.detach()]).double() * len(idx)
            correct += (logits.argmax(1) == targets).sum()
            seen += len(idx)
    losses.check()
    loss, ce, at = (sums / max(seen, 1)).tolist()
    return {"loss": loss, "ce": ce, "at": at, "train_acc": 100.0 * correct.item() / max(seen, 1)}


@register_defense("nad", family="repair")
@configurable(module="defenses")
class NAD(Defense):
    """NAD; the defaults are the authors' CIFAR-10 values (bboylyg/NAD config.py, utils/util.py), the betas
    BackdoorBench's for ResNets; see defenses/nad.gin.

    Args:
        clean_fraction: the defender's clean data, as a fraction of the training set (0.05).
        teacher_epochs: epochs of CE fine-tuning of the teacher (10).
        epochs: epochs of distillation into the student (20).
        betas: beta_k, the attention-transfer weight of each stage's output; 0 leaves a stage out
            ({'layer2': 500, 'layer3': 1000, 'layer4': 1000}).
        p: the power of |F| in the attention map (2).
        batch_size: batch size of both phases (64).
        optimizer: of both phases, each built anew (SGD, lr 0.1, momentum 0.9, Nesterov, weight decay 1e-4, x0.1
            after epoch 2 of each phase: drop_epochs (2,)).
    """

    def __init__(self, clean_fraction: float = 0.05, teacher_epochs: int = 10, epochs: int = 20,
                 betas: dict[str, float] | None = None, p: float = 2.0, batch_size: int = 64,
                 optimizer: Optimizer | None = None):
        betas = {"layer2": 500.0, "layer3": 1000.0, "layer4": 1000.0} if betas is None else dict(betas)
        problems = [msg for ok, msg in (
            (0 < clean_fraction <= 1, f"clean_fraction must be in (0, 1], got {clean_fraction}"),
            (teacher_epochs >= 1 and epochs >= 1, f"teacher_epochs and epochs must be >= 1, got {teacher_epochs} "
                                                  f"and {epochs}"),
            (all(b >= 0 for b in betas.values()), f"betas must be >= 0, got {betas}"),
            (p > 0 and batch_size >= 1, f"p must be > 0 and batch_size >= 1, got {p} and {batch_size}"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.NAD: {'; '.join(problems)}; fix the binding")
        self.clean_fraction, self.teacher_epochs, self.epochs = clean_fraction, teacher_epochs, epochs
        self.betas, self.p, self.batch_size = betas, p, batch_size
        self.optimizer = optimizer or given("sgd", 0.1, weight_decay=1e-4, nesterov=True, schedule="multistep",
                                            drop_epochs=(2,))
        self.run_info: dict = {}

    def run(self, ctx: Context) -> torch.nn.Module:
        student = ctx.upstream_model()  # S starts as the backdoored f
        missing = [name for name in self.betas if not isinstance(getattr(student, name, None), torch.nn.Module)]
        if missing:
            known = ", ".join(name for name, _ in student.named_children())
            raise UserError(f"defenses.NAD.betas: the model has no stage {', '.join(missing)}; known: {known}")
        clean = defender_clean_data(ctx, self.clean_fraction, "defenses.NAD.clean_fraction")  # D_c
        self.run_info = {"defender_clean": clean.info}
        total = self.teacher_epochs + self.epochs

        teacher = ctx.upstream_model()
        training_phase(ctx, "teacher", teacher, self.optimizer, self.teacher_epochs, clean,
                       clean_epoch(ctx, teacher, clean, self.batch_size, "nad teacher"), total_epochs=total)
        teacher.requires_grad_(False)
        teacher.eval()

        training_phase(ctx, "student", student, self.optimizer, self.epochs, clean,
                       lambda optimizer: distill_epoch(student, teacher, optimizer, clean.x, clean.y, self.betas,
                                                       self.p, ctx.augment, ctx.normalize, self.batch_size,
                                                       ctx.generator),
                       first_epoch=self.teacher_epochs, total_epochs=total)
        return student
