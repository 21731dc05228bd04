"""How fast is this machine, in the units our wall times depend on? Run it beside `stage_times.py`.

Usage (from the project root; needs no data):
    python benchmarks/machine_speed.py [--seconds 20] [--out FILE]

Three figures, each the median of a few timed rounds after a warm-up:
- ``resnet18_32px_img_per_s``: ResNet-18 with the CIFAR stem, 32x32x3, batch 128, SGD, training images per
  second, default memory format. This is the yardstick the project's sizing was done against (about
  51 img/s on the 2-core machine where the mini profile was sized), so a default-run time measured
  elsewhere can be put on the same footing: ``time_here * speed_here / 51``.
- ``mini_model_img_per_s``: the mini profile's slim ResNet on 28x28x1 at batch 64, the model that does
  nearly all of the default run's work.
- ``process_start_s``: a fresh Python process importing torch, torchvision and timm, which every DVC stage
  pays once.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time

import torch
from throughput import step  # this folder's throughput benchmark: one SGD step on a batch

from asd_repro.models import create_model

REFERENCE_IMG_PER_S = 51.0  # ResNet-18, 32x32, 2 cores: the machine the mini profile was sized on


def train_rate(model: torch.nn.Module, shape: tuple[int, ...], batch: int, seconds: float, rounds: int = 3,
               memory_format: torch.memory_format = torch.contiguous_format) -> float:
    """Median training images/s of ``model`` on random inputs of ``shape`` (one round lasts ~seconds/rounds)."""
    torch.manual_seed(0)
    model = model.to(memory_format=memory_format).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, *shape).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (batch,))
    step(model, opt, x, y)  # warm-up: allocations and kernel selection
    rates = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            step(model, opt, x, y)
            n += batch
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def process_start(rounds: int = 3) -> float:
    """Median wall time of a fresh interpreter that imports torch, torchvision and timm."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, torchvision, timm"], check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per model")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()

    resnet18 = create_model(10, 3, 32, arch="resnet18", stem="cifar")
    slim = create_model(10, 1, 28, arch="slim_resnet", stem="cifar")
    result = {
        "machine": platform.machine(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "resnet18_32px_img_per_s": round(train_rate(resnet18, (3, 32, 32), 128, args.seconds), 1),
        "mini_model_img_per_s": round(train_rate(slim, (1, 28, 28), 64, args.seconds,
                                                 memory_format=torch.channels_last), 1),  # as the engine runs it
        "process_start_s": round(process_start(), 2),
    }
    result["speed_vs_sizing_machine"] = round(result["resnet18_32px_img_per_s"] / REFERENCE_IMG_PER_S, 2)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
