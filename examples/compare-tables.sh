#!/usr/bin/env bash
# Compare a regenerated table with the committed one: the gate to put in your CI (offline; needs git and the
# project installed, e.g. `pip install -e .` or with constraints/committed-run.txt to rebuild our environment).
#
#   bash examples/compare-tables.sh [BASE_REV]      # BASE_REV: the revision to compare with (default HEAD)
#
# 1. `dvc repro` regenerates results/<profile>/ (the default mini profile: tens of minutes on 2 CPU cores).
# 2. `asd-repro compare` judges every cell against the committed table with the seed noise model: exit 1 when a
#    cell changed beyond its tolerance or went missing (add --exact on the machine that made the base table).
# 3. `asd-repro claims` checks the paper's claims (reference/claims.yaml, or your own file) on the new table.
# 4. `dvc metrics diff --md` prints every changed metric: informational only (it always exits 0).
set -euo pipefail
base=${1:-HEAD}
profile=$(python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['profile'])")
dvc repro
status=0
asd-repro compare "$base:results/$profile/table.csv" "results/$profile/table.csv" --out compare.md || status=1
asd-repro claims "results/$profile/table.csv" || status=1
dvc metrics diff "$base" --md --precision 2 || true
exit $status
