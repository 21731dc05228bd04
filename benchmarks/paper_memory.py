"""Projected GPU memory of every stage family of the paper profile at ImageNet-30's 224 px, measured on the CPU.

Usage (from the project root; no data, no GPU):
    python benchmarks/paper_memory.py [--budget-gib 24] [--out FILE]

A training step keeps, per image of its batch, the activations that the backward pass needs; that part grows
linearly with the batch and is the same on a CPU and a GPU (fp32, the same layers). So each kind of step is run in a
fresh process at two small batches, and the growth of the process's peak resident memory between them gives the
MiB per image:
- ``resnet18``: an SGD step of ResNet-18 (standard stem, 30 classes) at 224x224, forward and backward;
- ``iab``: a step of IAB's joint phase: the trigger generator and mask networks (the paper's colour sizes, width 32,
  depth 3) on the batch, then ResNet-18 on the triggered images, forward and backward through both.

A stage family's projection at the paper's batch (``params/defenses/*.gin``, ``params/attacks/*.gin``) is
``images a step x MiB per image`` plus the weights, gradients and optimiser state (fp32), plus the training set
that the stages hold on the device as uint8 (39,000 images at 224 px: 5.5 GiB), plus 1 GiB for the CUDA context and
cuDNN's workspaces (an allowance, not a measurement). It is a projection: ``benchmarks/paper_step.py`` on a GPU
prints the measured peak, and every ``run.json`` records the peak device memory of its stage. CIFAR-10 and GTSRB at
32 px need about 1/49 of the per-image part.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE, CLASSES, TRAIN_IMAGES = 224, 30, 39_000
GIB = 1024 ** 3
BATCHES = (2, 6)

# family: (the step's kind, images a step at the paper's batch, optimiser slots a parameter, models held, the
# binding that lowers it, images a step per unit of that binding, why that many images)
FAMILIES = {
    "train none": ("resnet18", 128, 1, 1, "defenses.NoDefense.batch_size", 1, "batch 128"),
    "train abl": ("resnet18", 64, 1, 1, "defenses.ABL.batch_size", 1, "batch 64"),
    "train asd": ("resnet18", 192, 2, 2, "asd/engine.MixMatch.batch_size", 3,
                  "MixMatch batch 64: 64 labelled + 2 x 64 unlabelled mixed; Adam; the virtual model's copy"),
    "repair fp": ("resnet18", 256, 1, 1, "defenses.FP.batch_size", 1, "batch 256"),
    "repair nad": ("resnet18", 64, 1, 2, "defenses.NAD.batch_size", 1, "batch 64, the teacher held beside it"),
    "pretrain dbd": ("resnet18", 1024, 1, 1, "defenses.simclr_pretrain.batch_size", 2,
                     "SimCLR batch 512, two views each"),
    "finetune dbd": ("resnet18", 192, 2, 1, "dbd/engine.MixMatch.batch_size", 3, "MixMatch batch 64, as ASD"),
    "assets clb": ("resnet18", 256, 1, 1, "attacks.CLB.attack_batch_size", 1,
                   "PGD on 256 target images at a time (the proxy trains at 128)"),
    "assets iab": ("iab", 128, 1, 1, "attacks.IAB.batch_size", 1,
                   "batch 128 through generator, mask and classifier (the mask phase: the mask network on 2 x 128)"),
}


def measure(kind: str, batch: int) -> dict:
    """Peak resident MiB of this process after two steps of ``kind`` at ``batch``, and the parameter count."""
    import torch
    import torch.nn.functional as F

    from asd_repro.models import create_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model(num_classes=CLASSES, in_chans=3, image_size=SIZE, arch="resnet18", stem="auto")
    params = list(model.parameters())
    nets = []
    if kind == "iab":
        from asd_repro.attacks.iab import IAB

        attack = IAB(target=3, ratio=0.1, device="cpu")
        attack._build(3, 32, 3)
        nets = [attack.g, attack.m]
        params += [p for net in nets for p in net.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, 3, SIZE, SIZE), torch.randint(0, CLASSES, (batch,))
    for _ in range(2):
        inputs = x
        if nets:
            pattern, mask = nets[0](x), nets[1](x)
            inputs = x + mask * (pattern - x)
        loss = F.cross_entropy(model(inputs), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "resnet18_params": sum(p.numel() for p in model.parameters())}


def per_image_mib(kind: str) -> tuple[float, int]:
    """MiB per image of a ``kind`` step (the peak's growth between the two batches), and ResNet-18's parameters."""
    results = [json.loads(subprocess.run([sys.executable, __file__, "--measure", kind, str(batch)], capture_output=True,
                                         text=True, check=True, cwd=ROOT).stdout) for batch in BATCHES]
    slope = (results[1]["peak_mib"] - results[0]["peak_mib"]) / (BATCHES[1] - BATCHES[0])
    return slope, results[0]["resnet18_params"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-gib", type=float, default=24.0, help="the card's memory (default 24)")
    ap.add_argument("--out", type=Path, help="write the projection as JSON here")
    ap.add_argument("--measure", nargs=2, metavar=("KIND", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]))))
        return 0

    measured = {kind: per_image_mib(kind) for kind in ("resnet18", "iab")}
    slopes, params = {kind: m[0] for kind, m in measured.items()}, measured["resnet18"][1]
    print("MiB per image of a step at 224 px: " + ", ".join(f"{k} {v:.1f}" for k, v in slopes.items()))
    dataset = TRAIN_IMAGES * SIZE * SIZE * 3 / GIB
    rows = {}
    for family, (kind, images, slots, models, binding, unit, why) in FAMILIES.items():
        state = params * 4 * (models + 1 + slots) / GIB  # weights of every model, gradients, optimiser slots
        total = images * slopes[kind] / 1024 + state + dataset + 1.0
        fits = total <= args.budget_gib
        # the binding's largest power of two that fits: its images a step scale the activations' part
        room = (args.budget_gib - state - dataset - 1.0) * 1024 / slopes[kind]
        value = 2 ** int(math.log2(room / unit)) if room >= unit else 0
        rows[family] = {"gib": round(total, 1), "images_a_step": images, "fits": fits, "binding": binding,
                        "why": why, "fitting_value": value}
        print(f"{family:13s} {total:5.1f} GiB  ({why})" +
              ("" if fits else f"  > {args.budget_gib:g} GiB: {binding} = {value} fits"))
    print(f"(each: the step's activations + fp32 weights, gradients and optimiser state + the training set on the "
          f"device, {dataset:.1f} GiB + 1 GiB CUDA allowance)")
    print("Left out: CLB's and IAB's normalisation statistics are computed on a float32 copy of the whole training "
          f"set ({4 * dataset:.0f} GiB at 224 px) on the device, once, before their fits.")
    if args.out:
        args.out.write_text(json.dumps({"per_image_mib": slopes, "budget_gib": args.budget_gib, "families": rows},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
