"""Re-run some pipeline stages with this checkout's code and compare their weights and arrays, byte for byte,
with the outputs of another checkout (one where `dvc repro` ran): the proof that a refactor changed nothing.

Usage (from the project root of the checkout with the new code):
    python benchmarks/bytecheck.py --reference ../other-clone train@mnist5k-badnets-asd-100 'repair@*-nad-100'

Each stage's command is taken from the reference's dvc.lock (the command that made its outputs); its inputs
(`data/`, `runs/`, `pretrained/`) are read from the reference, its outputs are written under --scratch, and every
`.pt` and `.npy` file of the stage's output folder is compared with the reference's. Exit status 1 when a file
differs or a stage fails. Stage names take shell patterns (`*`, `?`).
"""

from __future__ import annotations

import argparse
import fnmatch
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

INPUTS = ("data/", "runs/", "pretrained/")


def stage_argv(cmd: str, reference: Path, scratch: Path, name: str) -> tuple[list[str], str]:
    """The stage's command with inputs in the reference and outputs in the scratch folder; its output folder."""
    args = shlex.split(cmd)
    out = args[args.index("--out") + 1]
    argv = [str(reference / a) if a.startswith(INPUTS) else a for a in args]
    argv[args.index("--out") + 1] = str(scratch / out)
    for flag in ("--curves", "--checkpoints"):
        if flag in args:
            argv[args.index(flag) + 1] = str(scratch / "aux" / name.replace("@", "_") / flag.strip("-"))
    return argv, out


def compare(a: Path, b: Path) -> tuple[int, list[str]]:
    """(files compared, the differing ones) over the weights and arrays of two output folders."""
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.suffix in (".pt", ".npy"))
    differ = [str(f) for f in files if not (b / f).is_file() or (a / f).read_bytes() != (b / f).read_bytes()]
    return len(files), differ


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="a checkout whose outputs dvc.lock describes")
    ap.add_argument("--scratch", type=Path, help="where the re-run stages write (default: a temporary folder)")
    ap.add_argument("stages", nargs="+", help="stage names or patterns, e.g. 'train@*-asd-100'")
    args = ap.parse_args()
    reference = args.reference.resolve()
    lock = yaml.safe_load((reference / "dvc.lock").read_text())["stages"]
    names = [n for n in lock if any(fnmatch.fnmatchcase(n, p) for p in args.stages)]
    if not names:
        print(f"no stage of {reference / 'dvc.lock'} matches {args.stages}", file=sys.stderr)
        return 2
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bytecheck-"))
    bad = 0
    for name in names:
        argv, out = stage_argv(lock[name]["cmd"], reference, scratch, name)
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "asd_repro.cli", *argv[1:]], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if run.returncode:
            bad += 1
            print(f"{name}: FAILED ({run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode})")
            continue
        n, differ = compare(reference / out, scratch / out)
        bad += bool(differ) or n == 0
        verdict = "no weights or arrays to compare" if n == 0 else \
            f"{n} files identical" if not differ else f"DIFFERENT: {', '.join(differ[:5])}"
        print(f"{name}: {verdict} ({seconds:.0f} s)", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
