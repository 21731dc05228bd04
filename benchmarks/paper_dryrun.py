"""The paper profile over every cell of its table, on tiny data in each dataset's real on-disk format.

Usage (from the project root):
    python benchmarks/paper_dryrun.py [-j N] [--work DIR] [--datasets ...] [--attacks ...] [--out FILE]

Builds a throw-away DVC project (a copy of the code, params and dvc.yaml) whose ``data/raw`` holds tiny CIFAR-10
pickles, GTSRB folders of .ppm photos and ImageNet class folders of JPEGs (the tests' writers,
``tests/realformat.py``), sets ``profile: paper`` with one seed and every budget bound to its minimum
(``BINDINGS``: one epoch, one step, the smallest pools), and runs ``asd-repro repro`` through the table stage.
Every other setting is the paper profile's: ResNet-18, 224 px ImageNet-30, the paper's batch sizes where the
tiny sets hold a batch. It then reports:

- each cell's status (its metrics written by the evaluate stage, or the stage that failed);
- the wall time of the run and of the slowest stages, and the peak host memory every training stage recorded;
- the disk the paper's table needs at the real datasets' sizes, projected from what this run wrote: every
  output array whose first axis counts training or test images is scaled to the real counts, models and
  fixed-size assets are taken as they are; DVC's cache holds a second copy of every cached output unless
  ``cache.type`` lists a link type, with which ``asd-repro repro`` relinks every stage's outputs
  (``docs/pipeline.md``). Three seeds are projected as three times one (the prepared sets are shared, so a bit
  less).

Exit status 0 when every stage ran and every cell has metrics, 1 otherwise. The 108 cells take about 40 minutes on
2 CPU cores (``docs/speed.md``; ``--datasets cifar10`` alone about 7); the work folder is removed unless ``--work``
names one.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

DATASETS = ("cifar10", "gtsrb", "imagenet30")
ATTACKS = ("badnets", "blend", "wanet", "iab", "refool", "clb")
DEFENSES = {"scratch": ["none", "abl", "asd"], "repair": ["fp", "nad"], "selfsup": ["dbd"]}
COLUMNS = [d for group in DEFENSES.values() for d in group]

# The real datasets' image counts (train, test): the disk projection scales the tiny run's arrays to these.
REAL = {"cifar10": (50_000, 10_000), "gtsrb": (39_209, 12_630), "imagenet30": (39_000, 3_000)}

# Tiny sets: images a class (train, test). ASD's stage 1 needs seeds_per_class clean images a class.
PER_CLASS = {"cifar10": (6, 2), "gtsrb": (3, 1), "imagenet30": (3, 1)}

# Every budget at its minimum, and pools that the tiny sets can fill (one clean image a class at least); the paper
# profile's settings otherwise.
BINDINGS = {
    "poison": [
        "attacks.IAB.mask_epochs = 1", "attacks.IAB.epochs = 1", "attacks.IAB.batch_size = 16",
        "attacks.CLB.epochs = 1", "attacks.CLB.adv_steps = 1", "attacks.CLB.steps = 1",
        "attacks.Refool.n_reflections = 4",
    ],
    "pretrain": ["defenses.simclr_pretrain.epochs = 1", "defenses.simclr_pretrain.batch_size = 16"],
    "train": ["stages.train.eval_every = 1"],
    "none": ["defenses.NoDefense.epochs = 1", "defenses.NoDefense.batch_size = 16"],
    "abl": ["defenses.ABL.isolation_epochs = 1", "defenses.ABL.finetune_epochs = 1",
            "defenses.ABL.unlearning_epochs = 1", "defenses.ABL.isolation_ratio = 0.05"],
    "asd": ["defenses.ASD.epochs = 3", "defenses.ASD.stage2_epoch = 1", "defenses.ASD.stage3_epoch = 2",
            "asd/engine.MixMatch.rampup = 3", "asd/engine.MixMatch.iterations = 1", "asd/engine.MixMatch.batch_size = 4",
            "defenses.ASD.seeds_per_class = 1", "defenses.ASD.n = 1", "defenses.ASD.virtual_batch_size = 16"],
    "fp": ["defenses.FP.finetune_epochs = 1", "defenses.FP.batch_size = 16", "defenses.FP.clean_fraction = 0.34"],
    "nad": ["defenses.NAD.teacher_epochs = 1", "defenses.NAD.epochs = 1", "defenses.NAD.batch_size = 16",
            "defenses.NAD.clean_fraction = 0.34"],
    "dbd": ["defenses.DBD.epochs = 1", "defenses.DBD.linear_epochs = 1", "dbd/engine.MixMatch.rampup = 1",
            "dbd/engine.MixMatch.iterations = 1", "dbd/engine.MixMatch.batch_size = 16"],
    "prepare": [],
    "evaluate": [],
}


def write_raw(raw: Path, datasets: list[str]) -> None:
    """Tiny datasets in their real on-disk formats (the tests' writers)."""
    from realformat import write_cifar10, write_gtsrb, write_imagenet

    from asd_repro.data import imagenet30

    if "cifar10" in datasets:
        write_cifar10(raw, *PER_CLASS["cifar10"])
    if "gtsrb" in datasets:
        train, test = PER_CLASS["gtsrb"]
        write_gtsrb(raw, n_train_per_class=train, n_test=43 * test)
    if "imagenet30" in datasets:
        write_imagenet(raw, imagenet30.class_wnids(), *PER_CLASS["imagenet30"], sizes=((300, 260), (240, 320)))


def make_project(work: Path, datasets: list[str], attacks: list[str], seed: int, cache_type: str) -> None:
    from test_pipeline import copy_repo  # the files a pipeline run needs, as the pipeline tests copy them

    copy_repo(work)
    write_raw(work / "data" / "raw", datasets)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params.update(profile="paper", seeds=[seed], datasets=datasets, attacks=attacks, defenses=DEFENSES,
                  bindings=BINDINGS)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "cache.type", cache_type]):
        subprocess.run(cmd, cwd=work, env=_env(work), check=True)


def _env(work: Path) -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1", PYTHONPATH=str(work))


def run_pipeline(work: Path, jobs: int) -> tuple[int, float, dict, str]:
    """``asd-repro repro -j jobs`` in ``work``: exit status, wall seconds, per-stage seconds, and the log."""
    times = work / "stage_times.json"
    start = time.perf_counter()
    with open(work / "repro.log", "w") as log:
        rc = subprocess.run(["asd-repro", "repro", "-j", str(jobs), "--times", str(times)], cwd=work, env=_env(work),
                            stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    stages = json.loads(times.read_text())["stages"] if times.is_file() and times.read_text() else {}
    return rc, wall, stages, (work / "repro.log").read_text()


def cell_status(work: Path, datasets: list[str], attacks: list[str], seed: int) -> dict[tuple[str, str, str], str]:
    """'ok ACC/ASR' for every cell whose metrics the evaluate stage wrote, else 'missing'."""
    out = {}
    for dataset in datasets:
        for attack in attacks:
            for defense in COLUMNS:
                path = work / "metrics" / "paper" / dataset / attack / f"{defense}.json"
                if path.is_file():
                    s = json.loads(path.read_text())["seeds"][str(seed)]
                    out[dataset, attack, defense] = f"ok {s['acc']:.0f}/{s['asr']:.0f}"
                else:
                    out[dataset, attack, defense] = "missing"
    return out


def peak_memory(work: Path) -> list[tuple[float, str]]:
    """(host peak MiB, folder) of every run and pre-training folder that recorded it, largest first."""
    found = []
    for name in ("run.json", "pretrain.json"):
        for path in work.glob(f"*/paper/**/{name}"):
            memory = json.loads(path.read_text()).get("memory") or {}
            if "host_peak_mib" in memory:
                found.append((memory["host_peak_mib"], str(path.parent.relative_to(work))))
    return sorted(found, reverse=True)


def _npy_rows(path: Path) -> int | None:
    """The first axis of a .npy file's array (None for a 0-d array or another file)."""
    if path.suffix != ".npy":
        return None
    shape = np.load(path, mmap_mode="r").shape
    return shape[0] if shape else None


def project_disk(work: Path, datasets: list[str]) -> dict[str, float]:
    """Projected bytes of every DVC output per dataset at the real image counts (one seed, without the cache)."""
    projected = {}
    for dataset in datasets:
        manifest = json.loads((work / "data" / "prepared" / dataset / "manifest.json").read_text())
        n_train, n_test = manifest["counts"]["train"], manifest["counts"]["test"]
        target = json.loads(next((work / "data" / "poisoned" / dataset).rglob("meta.json")).read_text())["target"]
        real_train, real_test = REAL[dataset]
        # an array's first axis -> the factor to the real counts: the training set and the target class's training
        # images (CLB's perturbed images), the test set and the ASR set (test images outside the target class)
        scale = {manifest["train_per_class"][target]: real_train / n_train, n_train: real_train / n_train,
                 n_test - manifest["test_per_class"][target]: real_test / n_test, n_test: real_test / n_test}
        total = 0.0
        roots = [work / "data" / sub / dataset for sub in ("prepared", "assets", "poisoned")]
        roots += [work / sub / "paper" / dataset for sub in ("runs", "pretrained", "metrics")]
        for root in roots:
            for path in (p for p in root.rglob("*") if p.is_file()):
                total += path.stat().st_size * scale.get(_npy_rows(path), 1.0)
        projected[dataset] = total
    return projected


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=2, help="stages side by side (default 2)")
    ap.add_argument("--work", type=Path, help="build the project here and keep it (default: a temporary folder)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("--cache-type", default="reflink,hardlink,copy",
                    help="DVC's cache.type in the project (default: the project's own, links where the disk can)")
    ap.add_argument("--out", type=Path, help="write the report as JSON here")
    args = ap.parse_args()

    keep = args.work is not None
    work = args.work or Path(tempfile.mkdtemp(prefix="paper-dryrun-")) / "project"
    if keep and work.exists():
        print(f"paper_dryrun: {work} exists; name a new folder", file=sys.stderr)
        return 2
    try:
        make_project(work, args.datasets, args.attacks, args.seed, args.cache_type)
        print(f"project in {work}: {len(args.datasets)} datasets x {len(args.attacks)} attacks x 6 defenses, "
              f"seed {args.seed}, -j {args.jobs}", flush=True)
        rc, wall, stages, log = run_pipeline(work, args.jobs)
        cells = cell_status(work, args.datasets, args.attacks, args.seed)
        memory = peak_memory(work)
        disk = project_disk(work, args.datasets) if rc == 0 else {}
        table = (work / "results" / "paper" / "table.md").is_file()

        print(f"\n{'dataset':11s} {'attack':8s} " + " ".join(f"{d:>10s}" for d in COLUMNS))
        for dataset in args.datasets:
            for attack in args.attacks:
                row = [cells[dataset, attack, d] for d in COLUMNS]
                print(f"{dataset:11s} {attack:8s} " + " ".join(f"{c:>10s}" for c in row))
        ok = sum(v.startswith("ok") for v in cells.values())
        print(f"\ncells with metrics: {ok} of {len(cells)}; table stage {'wrote' if table else 'did not write'} "
              f"results/paper/table.md; asd-repro repro exit status {rc}; {wall:.0f} s wall at -j {args.jobs}")
        if rc != 0:
            failed = re.findall(r"stage (\S+) failed", log)
            print(f"failed stage(s): {', '.join(failed) or 'see the log'}; the log's tail:\n{log[-3000:]}")
        print("\nslowest stages (s): " + ", ".join(f"{k} {v:.0f}" for k, v in
                                                sorted(stages.items(), key=lambda kv: -kv[1])[:8]))
        print("peak host memory (MiB): " + ", ".join(f"{m:.0f} {where}" for m, where in memory[:6]))
        if disk:
            one = sum(disk.values()) / 1e9
            print("\nprojected disk at the real datasets' sizes, one seed (GB): "
                  + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in disk.items()) + f"; all {one:.1f}")
            for label, copies in (("cache linked (a link cache.type: the runner relinks each stage)", 1),
                                  ("cache copying (DVC's default)", 2)):
                print(f"  with the {label}: one seed {copies * one:.1f} GB, three seeds {3 * copies * one:.1f} GB; "
                      f"a 64 GB disk holds {'one seed' if copies * one <= 64 else 'not one seed'}")
        if args.out:
            args.out.write_text(json.dumps({
                "returncode": rc, "wall_s": wall, "jobs": args.jobs, "cells": {"/".join(k): v for k, v in cells.items()},
                "stages_s": stages, "peak_host_mib": memory, "projected_bytes_one_seed": disk}, indent=2) + "\n")
        return 0 if rc == 0 and ok == len(cells) and table else 1
    finally:
        if not keep:
            shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
