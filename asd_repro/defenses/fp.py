"""FP, Fine-Pruning (Liu, Dolan-Gavitt and Garg, RAID 2018): prune the channels that clean data leaves dormant, then
fine-tune on clean data.

A backdoor tends to live in neurons that clean inputs barely activate. Starting from the backdoored model f (the
No-defense model of the same cell) and the defender's clean data D_c (a fraction of the training set):

    a_k = mean activation of channel k of the last convolutional stage (layer4's output, after the residual add
          and ReLU) over D_c, eval mode, no augmentation
    prune channels in increasing order of a_k, prune_step at a time, while the accuracy on D_c stays within
        acc_drop of the unpruned model's and at most max_prune_ratio of the channels are pruned; the step that
        would cross the threshold is not taken
    fine-tune the pruned model (the channels stay masked) on D_c with SGD and augmentation

A pruned channel is masked to zero at layer4's output. Its only consumer is the average pool before the linear
head, so the search evaluates candidate masks on the pooled clean features without re-running the network, and
the final model carries the mask as zero columns of the head's weight: the saved model is a plain ResNet whose
output does not depend on the pruned channels.

Differences from the references, all deliberate:
- The accuracy threshold is an absolute drop, measured on the defender's clean data; BackdoorBench's FP uses a
  relative drop (acc_ratio) measured on the clean test set, which a defender does not have.
- Steps of ``prune_step`` channels (1 by default, as the original) rather than BackdoorBench's 1% of the channels.
"""

from __future__ import annotations

import numpy as np
import torch

from asd_repro.core.config import configurable
from asd_repro.core.errors import UserError
from asd_repro.defenses import Context, Defense, register_defense
from asd_repro.defenses._posttraining import clean_epoch, defender_clean_data, training_phase
from asd_repro.engine.optim import Optimizer, given
from asd_repro.engine.augment import Normalize


@torch.inference_mode()
def pooled_features(model: torch.nn.Module, x: torch.Tensor, normalize: Normalize,
                    batch_size: int = 1024) -> torch.Tensor:
    """The head's input for every image: layer4's output averaged over positions (N, channels), eval mode."""
    model.eval()
    out = [model.forward_head(model.forward_features(normalize(x[i:i + batch_size])), pre_logits=True).float()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def pruning_schedule(channels: int, step: int, max_ratio: float) -> list[int]:
    """Candidate numbers of pruned channels: every ``step`` up to the cap int(max_ratio * channels), the cap last."""
    cap = int(max_ratio * channels)
    return [n for n in range(step, cap, step)] + ([cap] if cap > 0 else [])


def prune_search(features: torch.Tensor, labels: torch.Tensor, head: torch.nn.Linear, acc_drop: float,
                 max_ratio: float, step: int) -> tuple[torch.Tensor, int, list[dict[str, float]]]:
    """Channels in pruning order, how many to prune, and the accuracy at each step tried.

    Channels are ordered by increasing mean activation (ties by index). Pruning grows while the accuracy (a
    fraction) on (features, labels) stays at least the unpruned accuracy minus ``acc_drop``; the first candidate
    that falls lower is rejected and ends the search.
    """
    order = torch.from_numpy(np.argsort(features.mean(0).cpu().numpy(), kind="stable"))
    labels = labels.to(features.device)

    @torch.inference_mode()
    def correct(n: int) -> int:
        keep = torch.ones(features.shape[1], device=features.device)
        keep[order[:n].to(features.device)] = 0.0
        return int((head(features * keep).argmax(1) == labels).sum().item())

    total, base = len(labels), correct(0)
    pruned, trace = 0, [{"pruned": 0, "clean_acc": base / total}]
    for n in pruning_schedule(features.shape[1], step, max_ratio):
        c = correct(n)
        trace.append({"pruned": n, "clean_acc": c / total})
        if base - c > acc_drop * total + 1e-9:  # in samples, so that a drop of exactly acc_drop is kept
            break
        pruned = n
    return order, pruned, trace


class ChannelMask:
    """Zeroes chosen channels of a stage's output through a forward hook, then folds that into the linear head."""

    def __init__(self, model: torch.nn.Module, stage: str, pruned: torch.Tensor):
        channels = model.fc.in_features
        self.keep = torch.ones(channels, device=model.fc.weight.device)
        self.keep[pruned.to(self.keep.device)] = 0.0
        self.handle = getattr(model, stage).register_forward_hook(
            lambda module, inputs, output: output * self.keep.view(1, -1, 1, 1).to(output.dtype))

    def fold_into_head(self, model: torch.nn.Module) -> torch.nn.Module:
        """Remove the hook and zero the head's weights of the pruned channels: the same function, a plain model."""
        self.handle.remove()
        with torch.no_grad():
            model.fc.weight.mul_(self.keep.to(model.fc.weight.dtype))
        return model


@register_defense("fp", family="repair")
@configurable(module="defenses")
class FP(Defense):
    """Fine-Pruning; the defaults are BackdoorBench's CIFAR-10 values (config/defense/fp), see defenses/fp.gin.

    Args:
        clean_fraction: the defender's clean data, as a fraction of the training set (0.05).
        acc_drop: largest tolerated drop of the clean-data accuracy while pruning, a fraction (0.1 = 10 points).
        max_prune_ratio: at most this fraction of layer4's channels is pruned (1.0: no cap).
        prune_step: channels pruned per step of the search (1).
        finetune_epochs: epochs of fine-tuning of the pruned model on the clean data (100).
        batch_size: fine-tuning batch size (256).
        optimizer: of the fine-tuning (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, cosine).
    """

    stage = "layer4"  # the last convolutional stage, whose only consumer is the pooled linear head

    def __init__(self, clean_fraction: float = 0.05, acc_drop: float = 0.1, max_prune_ratio: float = 1.0,
                 prune_step: int = 1, finetune_epochs: int = 100, batch_size: int = 256,
                 optimizer: Optimizer | None = None):
        problems = [msg for ok, msg in (
            (0 < clean_fraction <= 1, f"clean_fraction must be in (0, 1], got {clean_fraction}"),
            (0 <= acc_drop <= 1, f"acc_drop is a fraction in [0, 1] (0.1 = 10 points), got {acc_drop}"),
            (0 <= max_prune_ratio <= 1, f"max_prune_ratio must be in [0, 1], got {max_prune_ratio}"),
            (prune_step >= 1, f"prune_step must be a positive number of channels, got {prune_step}"),
            (finetune_epochs >= 0 and batch_size >= 1, "finetune_epochs must be >= 0 and batch_size >= 1"),
        ) if not ok]
        if problems:
            raise UserError(f"defenses.FP: {'; '.join(problems)}; fix the binding")
        self.clean_fraction, self.acc_drop, self.max_prune_ratio = clean_fraction, acc_drop, max_prune_ratio
        self.prune_step, self.finetune_epochs, self.batch_size = prune_step, finetune_epochs, batch_size
        self.optimizer = optimizer or given("sgd", 0.01, weight_decay=5e-4, schedule="cosine")
        self.run_info: dict = {}

    def run(self, ctx: Context) -> torch.nn.Module:
        model = ctx.upstream_model()  # f, backdoored
        clean = defender_clean_data(ctx, self.clean_fraction, "defenses.FP.clean_fraction")  # D_c
        # The search is deterministic (eval mode, no augmentation), so a resumed run repeats it on the upstream model.
        features = pooled_features(model, clean.x, ctx.normalize)
        order, pruned, trace = prune_search(features, clean.y, model.fc, self.acc_drop, self.max_prune_ratio,
                                            self.prune_step)
        mask = ChannelMask(model, self.stage, order[:pruned])
        clean_acc = {t["pruned"]: t["clean_acc"] for t in trace}
        after = ctx.evaluate(model)  # diagnostics only
        self.run_info = {"defender_clean": clean.info, "channels": len(order), "pruned_channels": pruned,
                         "pruned": order[:pruned].tolist(), "prune_trace": trace, "after_pruning": after}
        print(f"pruned {pruned}/{len(order)} channels of {self.stage}: clean-data accuracy {clean_acc[0]:.3f} -> "
              f"{clean_acc[pruned]:.3f}; test ACC {after['acc']:.2f} ASR {after['asr']:.2f}", flush=True)
        training_phase(ctx, "finetune", model, self.optimizer, self.finetune_epochs, clean,
                       clean_epoch(ctx, model, clean, self.batch_size, "fp finetune"))
        return mask.fold_into_head(model)
