"""Is the committed ``dvc.lock`` stale against the code, gin files and params? A check that needs no data.

``python -m asd_repro.report.staleness`` (in the project root) exits 0 when every stage's git-tracked deps
(code, gin files, reference tables), params, command and declared outputs match ``dvc.lock`` and every stage's
recorded input hashes equal the output hashes its producers recorded, 1 naming the stages that ``dvc repro``
would re-run because of them (or the lock's entries for stages that ``dvc.yaml`` no longer defines, which DVC keeps
and never uses), 2 when DVC cannot tell. Deps that are other stages' outputs (the prepared data,
models, metrics) are absent on a fresh clone and not judged: they are what ``dvc repro`` rebuilds.
``dvc repro --dry`` cannot be this check on a fresh clone: it stops at the first stage whose data is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def outputs_by_stage(lock: dict) -> dict[str, set[str]]:
    """stage -> the output paths its entry in ``dvc.lock`` holds."""
    return {name: {o["path"].rstrip("/") for o in s.get("outs", [])} for name, s in lock.get("stages", {}).items()}


def stage_outputs(lock: dict) -> set[str]:
    """Every output path in ``dvc.lock``."""
    return set().union(*outputs_by_stage(lock).values())


def produced(path: str, outs: set[str]) -> bool:
    path = path.rstrip("/")
    return any(path == o or path.startswith(o + "/") or o.startswith(path + "/") for o in outs)


def stale_stages(status: dict, outs: set[str], lock_stages: set[str],
                 lock_outs: dict[str, set[str]] | None = None) -> dict[str, list[str]]:
    """stage -> why it would re-run, from ``dvc status --json``, ignoring deps that stages produce and outputs that
    are only missing (a fresh clone has none); an output that ``dvc.yaml`` declares and the lock's entry for the
    stage does not hold (``lock_outs``) is a changed stage definition."""
    stale: dict[str, list[str]] = {}
    for stage, items in status.items():
        name = stage.split(":")[-1]
        if name not in lock_stages:
            stale.setdefault(name, []).append("not in dvc.lock")
            continue
        for item in items:
            if isinstance(item, dict) and lock_outs is not None:
                for path in item.get("changed outs", {}):
                    if path.rstrip("/") not in lock_outs.get(name, set()):
                        stale.setdefault(name, []).append(f"{path} is a new output")
        for item in items:
            if isinstance(item, str):  # e.g. "changed command", "always changed"
                stale.setdefault(name, []).append(item)
                continue
            for kind, changes in item.items():
                if kind not in ("changed deps", "changed params"):
                    continue
                for path, why in changes.items():
                    if isinstance(why, dict):  # a params file: {key: why}
                        stale.setdefault(name, []).extend(f"{path}:{key} {w}" for key, w in why.items())
                    elif not produced(path, outs):
                        stale.setdefault(name, []).append(f"{path} {why}")
    return stale


def broken_links(lock: dict) -> dict[str, list[str]]:
    """stage -> its deps whose hash in ``dvc.lock`` differs from the hash the stage producing that path recorded.

    A consistent lock has every stage's input hash equal to its producer's output hash; a mismatch means the lock
    mixes runs: a producer re-ran (on another machine, or after a code change) and the stages that read its output
    did not, so ``dvc repro`` with the data would re-run them. Only deps that are exactly another stage's output are
    judged (a folder holding several outputs has a hash of its own)."""
    stages = lock.get("stages", {})
    made = {o["path"].rstrip("/"): o.get("md5") for s in stages.values() for o in s.get("outs", [])}
    broken: dict[str, list[str]] = {}
    for name, stage in stages.items():
        for dep in stage.get("deps", []):
            path = dep["path"].rstrip("/")
            if path in made and dep.get("md5") != made[path]:
                broken.setdefault(name, []).append(path)
    return broken


def main(argv: list[str] | None = None) -> int:
    import yaml

    root = Path(argv[0]) if argv else Path(".")
    lock_file = root / "dvc.lock"
    if not lock_file.is_file():
        print(f"{lock_file}: not found; run `dvc repro` and commit dvc.lock", file=sys.stderr)
        return 2
    lock = yaml.safe_load(lock_file.read_text()) or {}
    try:
        run = subprocess.run(["dvc", "status", "--json"], cwd=root, capture_output=True, text=True, timeout=300)
        status = json.loads(run.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        print(f"dvc status failed ({type(e).__name__}); install the project (pip install -e .) and run from its root",
              file=sys.stderr)
        return 2
    if run.returncode != 0:
        print(f"dvc status failed: {(run.stderr.strip().splitlines() or ['no message'])[-1]}", file=sys.stderr)
        return 2
    lock_outs = outputs_by_stage(lock)
    stale = stale_stages(status, set().union(*lock_outs.values()), set(lock_outs), lock_outs)
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=root, capture_output=True, text=True,
                            timeout=300)
    stages = set(listed.stdout.split()) if listed.returncode == 0 else set(lock.get("stages", {}))
    obsolete = sorted(set(lock.get("stages", {})) - stages)
    if obsolete:
        print(f"dvc.lock holds {len(obsolete)} stage(s) that dvc.yaml no longer defines (e.g. {', '.join(obsolete[:3])}); "
              "delete their entries from dvc.lock and commit it")
        return 1
    if stale:
        print(f"dvc.lock is stale: {len(stale)} stage(s) would re-run on `dvc repro` because code, gin files, "
              "params or commands changed:")
        for stage, why in sorted(stale.items()):
            print(f"  {stage}: {'; '.join(why[:3])}" + (f"; and {len(why) - 3} more" if len(why) > 3 else ""))
        print("Regenerate (dvc repro, from a clean clone) and commit dvc.lock with results/.")
        return 1
    broken = broken_links(lock)
    if broken:
        print(f"dvc.lock is inconsistent: {len(broken)} stage(s) record an input that differs from what the stage "
              "producing it recorded, so the lock mixes two runs:")
        for stage, paths in sorted(broken.items())[:10]:
            print(f"  {stage}: {', '.join(paths)}")
        if len(broken) > 10:
            print(f"  and {len(broken) - 10} more")
        print("Re-run those stages (dvc repro) in the workspace that produced the rest, and commit dvc.lock with "
              "results/.")
        return 1
    print(f"dvc.lock matches the code, gin files, params and commands of all {len(stages)} stages, and every "
          "stage's inputs are the outputs its producers recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
