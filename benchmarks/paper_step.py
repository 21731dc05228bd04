"""What the paper profile costs on this device: the price of each unit of work, and the projected time of every cell.

Usage (from the project root; needs no data, synthetic CIFAR-shaped tensors):
    python benchmarks/paper_step.py [--device auto] [--autocast bf16] [--repeats 3] [--out FILE]

Four units of work are timed with the engine's own code on ResNet-18 (CIFAR stem, 32x32x3, channels-last), each the
median of ``--repeats`` rounds after a warm-up:
- ``mixmatch_iteration``: one MixMatch iteration at batch 64 (K = 2: two guess forwards, the mixed 192-image
  forward and backward), ``engine.mixmatch.mixmatch_epoch`` (ASD and DBD);
- ``sgd_step_128``: one SGD step of No Defense at batch 128 with the on-device augmentation, ``engine.loop``;
- ``split_loss_pass``: a split-loss pass (eval-mode inference at batch 1,024) over 50,000 images;
- ``virtual_epoch``: one epoch of ASD's virtual model (Adam on layer3, layer4 and the head, batch 128, 391 steps).
Then ``imagenet_ratio``: the per-image cost of an SGD step at 224x224 (standard stem) over that at 32x32.

The projection multiplies the units by each defense's paper budget (params/defenses/*.gin) for CIFAR-10 (50,000
training images), GTSRB (39,209) and ImageNet-30 (~39,000 at 224 px, every unit scaled by ``imagenet_ratio``), and
adds them up for the 108-cell table (3 datasets x 6 attacks x 6 defenses). Left out: the attacks' asset fits (IAB's
generator, CLB's proxy), the per-epoch test evaluations, data movement and start-up; FP's pruning search is counted
at its most (every one of layer4's 512 channels), which the accuracy threshold usually ends far sooner. Costs other
than the four units (FP's pruning search, NAD's teacher forward, SimCLR's two-view step) are expressed in them
(stated next to each formula below).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asd_repro.engine.augment import Augment, Normalize  # noqa: E402
from asd_repro.engine.loop import predict_logits, train_epoch  # noqa: E402
from asd_repro.engine.mixmatch import mixmatch_epoch  # noqa: E402
from asd_repro.models import create_model  # noqa: E402
from asd_repro.core.provenance import environment, summary  # noqa: E402

DATASETS = {"cifar10": 50_000, "gtsrb": 39_209, "imagenet30": 39_000}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels, allocator, autotuning)
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(device: torch.device, repeats: int, autocast: str | None) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    fmt = torch.channels_last
    model = create_model(num_classes=10, in_chans=3, image_size=32, arch="resnet18", stem="cifar").to(
        device, memory_format=fmt)
    norm = Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261), device, True)
    augment = Augment(crop_padding=4, padding_mode="reflect", hflip=True)
    n = 2048 if device.type == "cpu" else 8192
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen).to(device)
    y = torch.randint(0, 10, (n,), generator=gen).to(device)
    ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if autocast == "bf16" else contextlib.nullcontext())
    sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    adam = torch.optim.Adam(model.parameters(), lr=0.002)
    mm_iters = 2 if device.type == "cpu" else 20
    sgd_steps = 2 if device.type == "cpu" else 20
    pass_images = 4096 if device.type == "cpu" else 50_000
    half = torch.arange(n // 2)

    def mixmatch():
        with ctx:
            mixmatch_epoch(model, adam, x, y, half, half + n // 2, augment, norm, gen, 10, 0, iterations=mm_iters,
                           batch_size=64, desc="mixmatch")

    def sgd_epoch():
        with ctx:
            train_epoch(model, sgd, x[:128 * sgd_steps], y[:128 * sgd_steps], augment, norm, 128, gen)

    def loss_pass():
        reps = math.ceil(pass_images / n)
        with ctx:
            for _ in range(reps):
                predict_logits(model, x, norm, 1024, augment, gen)

    virtual_params = [p for name in ("layer3", "layer4", "fc") for p in getattr(model, name).parameters()]
    virtual_opt = torch.optim.Adam(virtual_params, lr=0.015)

    def virtual():
        model.requires_grad_(False)
        for p in virtual_params:
            p.requires_grad_(True)
        with ctx:
            train_epoch(model, virtual_opt, x[:128 * sgd_steps], y[:128 * sgd_steps], augment, norm, 128, gen,
                        desc="virtual")
        model.requires_grad_(True)

    units = {
        "mixmatch_iteration": timed(mixmatch, device, repeats) / mm_iters,
        "sgd_step_128": timed(sgd_epoch, device, repeats) / sgd_steps,
        "split_loss_pass": timed(loss_pass, device, repeats) * 50_000 / (math.ceil(pass_images / n) * n),
        "virtual_epoch": timed(virtual, device, repeats) / sgd_steps * math.ceil(50_000 / 128),
    }
    big = create_model(num_classes=30, in_chans=3, image_size=224, arch="resnet18", stem="auto").to(
        device, memory_format=fmt)
    b = 8 if device.type == "cpu" else 128
    xb = torch.randint(0, 256, (b, 3, 224, 224), dtype=torch.uint8, generator=gen).to(device)
    yb = torch.randint(0, 30, (b,), generator=gen).to(device)
    big_opt = torch.optim.SGD(big.parameters(), lr=0.01, momentum=0.9)
    aug224 = Augment(crop_padding=28, padding_mode="reflect", hflip=True)

    def big_step():
        with ctx:
            train_epoch(big, big_opt, xb, yb, aug224, norm, b, gen)

    small_b = x[:b], y[:b]

    def small_step():
        with ctx:
            train_epoch(model, sgd, small_b[0], small_b[1], augment, norm, b, gen)

    units["imagenet_ratio"] = timed(big_step, device, repeats) / timed(small_step, device, repeats)
    return units


def cell_seconds(u: dict[str, float], n: int) -> dict[str, float]:
    """Each defense's paper budget (params/defenses/*.gin) in the measured units, for n training images."""
    steps = lambda size, batch: math.ceil(size / batch)  # noqa: E731
    per_image_sgd = u["sgd_step_128"] / 128
    passes = u["split_loss_pass"] * n / 50_000
    virtual = u["virtual_epoch"] * n / 50_000
    clean = int(0.05 * n)  # FP's and NAD's defender data
    return {
        # 200 epochs of SGD at batch 128
        "none": 200 * steps(n, 128) * u["sgd_step_128"],
        # 100 fine-tuning epochs at batch 256 on 5%; the pruning search: up to 512 channels x a pass over the 5%
        "fp": 100 * steps(clean, 256) * 256 * per_image_sgd + 512 * passes * clean / n,
        # teacher 10 epochs, student 20 epochs at batch 64 on 5% (the student's step also runs the teacher
        # forward: ~1/3 of a training step more)
        "nad": (10 + 20 * 4 / 3) * steps(clean, 64) * 64 * per_image_sgd,
        # isolation 20 + fine-tuning 60 epochs at batch 64, unlearning 20 epochs on the isolated 1%, one loss pass
        "abl": (80 * steps(n, 64) * 64 + 20 * steps(int(0.01 * n), 64) * 64) * per_image_sgd + passes,
        # SimCLR 1,000 epochs at batch 512 with two views (1,024 images a step), 10 linear warm-up epochs (~ a pass
        # each), 190 MixMatch epochs of 1,024 iterations, each after a split-loss pass
        "dbd": 1000 * steps(n, 512) * 1024 * per_image_sgd + 10 * passes
        + 190 * (1024 * u["mixmatch_iteration"] + passes),
        # 120 epochs of 1,024 MixMatch iterations, each after a split-loss pass; stage 3 (30 epochs) adds a
        # virtual-model epoch and a second pass
        "asd": 120 * (1024 * u["mixmatch_iteration"] + passes) + 30 * (virtual + passes),
    }


def hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda[:i]")
    ap.add_argument("--autocast", choices=["bf16"], help="time under torch.autocast(bfloat16)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    units = measure(device, args.repeats, args.autocast)
    env = environment(device)
    print(f"# Paper profile cost on {device} ({summary(env)}), autocast {args.autocast or 'off'}\n")
    print("unit                      seconds")
    for name, value in units.items():
        print(f"{name:25s} {value:10.4f}" + ("  (x, per image)" if name == "imagenet_ratio" else ""))
    table, total = {}, 0.0
    for dataset, n in DATASETS.items():
        cells = cell_seconds(units, n)
        if dataset == "imagenet30":
            cells = {k: v * units["imagenet_ratio"] for k, v in cells.items()}
        table[dataset] = cells
        total += 6 * sum(cells.values())
    print("\nprojected seconds per cell (one attack, one seed; a lower bound, see the docstring)")
    print(f"{'defense':8s}" + "".join(f"{d:>14s}" for d in DATASETS))
    for defense in table["cifar10"]:
        print(f"{defense:8s}" + "".join(f"{hours(table[d][defense]):>14s}" for d in DATASETS))
    print(f"\n108-cell table (3 datasets x 6 attacks x 6 defenses, one seed): {hours(total)} on one {device.type} device")
    if args.out:
        args.out.write_text(json.dumps({"device": str(device), "autocast": args.autocast, "environment": env,
                                        "python": platform.python_version(), "units_s": units,
                                        "cell_s": table, "table_108_s": total}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
