"""Wall-clock time of every stage of a `dvc repro`, from the moments DVC starts each stage.

Usage (from the project root):
    python benchmarks/stage_times.py            # dvc repro (only what changed)
    python benchmarks/stage_times.py -f         # dvc repro -f (every stage), any dvc repro flags pass through

Prints one line per stage and the total per stage family (check, prepare, assets, poison, train,
evaluate, table); ``--out FILE`` also writes them as JSON. Times include each stage's process start-up
(Python + torch imports), which is part of what a user waits for.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import defaultdict


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the timings as JSON here")
    args, dvc_args = ap.parse_known_args()
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", *dvc_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    times: dict[str, float] = {}
    current, since = None, start
    for line in proc.stdout:
        sys.stdout.write(line)
        m = re.match(r"Running stage '([^']+)'", line)
        if m:
            now = time.perf_counter()
            if current:
                times[current] = now - since
            current, since = m.group(1), now
    rc = proc.wait()
    if current:
        times[current] = time.perf_counter() - since
    total = time.perf_counter() - start
    families: dict[str, float] = defaultdict(float)
    print("\nstage times (s):")
    for name, seconds in times.items():
        families[name.split("@")[0]] += seconds
        print(f"  {name:45s} {seconds:8.1f}")
    print("per stage family (s): " + ", ".join(f"{k} {v:.1f}" for k, v in families.items()))
    print(f"total {total:.1f} s, dvc exit status {rc}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"stages": times, "families": families, "total": total, "returncode": rc}, f, indent=2)
    return rc


if __name__ == "__main__":
    sys.exit(main())
