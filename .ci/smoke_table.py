"""Regenerate the smoke table (a small matrix of the smoke profile, two seeds) in a scratch copy of this checkout.

Usage: python .ci/smoke_table.py OUT_DIR     (from the project root, with the project installed)
Copies the git-tracked files to a temporary folder, sets the smoke matrix in its params.yaml, runs `dvc repro` and
copies results/smoke/ to OUT_DIR. CI compares OUT_DIR/table.csv with the committed reference/smoke/table.csv
(`asd-repro compare`); after a change that is meant to move the smoke numbers, refresh the reference with
`python .ci/smoke_table.py reference/smoke` and commit it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

MATRIX = {"profile": "smoke", "seeds": [100, 101], "datasets": ["mnist5k"], "attacks": ["badnets", "wanet"],
          "defenses": {"scratch": ["none", "asd"], "repair": ["fp"], "selfsup": []}}


def main(out: Path) -> int:
    root = Path(__file__).resolve().parents[1]
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="asd-smoke-") as tmp:
        work = Path(tmp)
        for name in filter(None, files.split("\0")):
            if name.startswith(("results/", "metrics/", "curves/", "checks/")) or name == "dvc.lock":
                continue  # the scratch copy regenerates these
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, work / name)
        params = yaml.safe_load((work / "params.yaml").read_text())
        params.update(MATRIX)
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = dict(os.environ, DVC_NO_ANALYTICS="1")
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q", "-f"], ["dvc", "repro"]):
            run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            if run.returncode != 0:
                sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
                print(f"smoke table: `{' '.join(cmd)}` failed with exit status {run.returncode}", file=sys.stderr)
                return 1
        out.mkdir(parents=True, exist_ok=True)
        for f in (work / "results" / "smoke").iterdir():  # the tables, figures and DVC's metrics and plots views
            if f.is_dir():
                shutil.copytree(f, out / f.name, dirs_exist_ok=True)
            else:
                shutil.copy2(f, out / f.name)
    print(f"smoke table ({len(MATRIX['attacks'])} attacks x 3 defenses x {len(MATRIX['seeds'])} seeds) -> {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
