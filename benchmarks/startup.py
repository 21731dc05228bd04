"""What a stage's process pays before it does any work: the import cost of each library and of the CLI's path.

Usage (from the project root):
    python benchmarks/startup.py            # 5 fresh processes per row, median seconds
    python benchmarks/startup.py --repeat 9 --top 15

Every row is a fresh ``python -c`` process, so the times include interpreter start-up and are what each DVC
stage pays. ``--top`` also lists the slowest modules (cumulative, ``python -X importtime``) of a full
``train`` start-up: the plug-in registries load every attack, dataset and defense, and the models module timm.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

LOAD = "import asd_repro.stages; from asd_repro.cli.plugins import load_all; load_all()"
TRAIN = LOAD + "; from asd_repro.models import create_model; create_model(10, 1, 28, arch='slim_resnet', stem='cifar')"
ROWS = [
    ("python (nothing imported)", "pass"),
    ("numpy", "import numpy"),
    ("torch", "import torch"),
    ("torch + torchvision", "import torch, torchvision"),
    ("torch + timm", "import torch, timm"),
    ("gin", "import gin"),
    ("pandas", "import pandas"),
    ("asd_repro.cli (argument parsing only)", "import asd_repro.cli"),
    ("stages + every plug-in (what load_all imports)", LOAD),
    ("... + building the mini model (timm)", TRAIN),
]


def timed(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def slowest_modules(code: str, top: int) -> list[tuple[float, str]]:
    run = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True)
    rows = []
    for line in run.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(2)) <= 4:  # the script's imports and theirs (torch under asd_repro.defenses, ...)
            rows.append((int(m.group(1)) / 1e6, m.group(3)))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--top", type=int, default=10)
    args = ap.parse_args()
    print(f"{'process':52s} {'median s':>9s} {'min s':>7s}")
    for name, code in ROWS:
        times = [timed(code) for _ in range(args.repeat)]
        print(f"{name:52s} {statistics.median(times):9.2f} {min(times):7.2f}")
    print("\nslowest top-level imports of a train stage (cumulative s, one run of python -X importtime):")
    for seconds, module in slowest_modules(TRAIN, args.top):
        print(f"  {module:40s} {seconds:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
