"""Wall-clock time of every stage of a pipeline run, and of the run, with the machine's yardstick beside them.

Usage (from the project root):
    python benchmarks/stage_times.py [-j N] [-f] [--out FILE] [targets ...]

Runs `asd-repro repro` (DVC's stages, N side by side; `-j 1` is the order of a plain `dvc repro`) and prints one
line per stage and the total per stage family (check, prepare, assets, poison, train, repair, pretrain, finetune,
evaluate, table). Times include each stage's process start-up (Python + torch imports) and DVC's own work, which are
part of what a user waits for. `benchmarks/machine_speed.py` runs before and after, so the figures can be put on
the sizing machine's footing (ResNet-18 at 32 px, ~51 img/s on 2 cores). `--out FILE` writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


def machine_speed() -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        subprocess.run([sys.executable, str(HERE / "machine_speed.py"), "--seconds", "10", "--out", f.name],
                       check=True, capture_output=True)
        return json.loads(Path(f.name).read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=2, help="stages side by side (default 2)")
    ap.add_argument("-f", "--force", action="store_true", help="re-run every stage")
    ap.add_argument("--out", help="write the timings as JSON here")
    ap.add_argument("targets", nargs="*")
    args = ap.parse_args()
    before = machine_speed()
    print(f"machine before: {before}", flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as times_file:
        start = time.perf_counter()
        rc = subprocess.run(["asd-repro", "repro", "-j", str(args.jobs), *(["-f"] if args.force else []),
                             "--times", times_file.name, *args.targets]).returncode
        total = time.perf_counter() - start
        text = Path(times_file.name).read_text()
        times = json.loads(text)["stages"] if text else {}
    after = machine_speed()
    families: dict[str, float] = defaultdict(float)
    print("\nstage times (s):")
    for name, seconds in sorted(times.items()):
        families[name.split("@")[0]] += seconds
        print(f"  {name:45s} {seconds:8.1f}")
    print("per stage family (s, summed over stages): " + ", ".join(f"{k} {v:.1f}" for k, v in families.items()))
    print(f"total {total:.1f} s wall with -j {args.jobs}, exit status {rc}; machine after: {after}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"jobs": args.jobs, "stages": times, "families": families, "total": total, "returncode": rc,
                       "machine_before": before, "machine_after": after}, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
