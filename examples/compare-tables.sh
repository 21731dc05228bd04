#!/usr/bin/env bash
# Regenerate the table and compare it with a committed one: the mini job of examples/github-workflow.yml, to run by
# hand (offline; needs git and the project installed, e.g. `pip install -e ".[dev]" -c constraints/committed-run.txt`).
#
#   bash examples/compare-tables.sh [BASE_REV]      # BASE_REV: the revision to compare with (default HEAD)
#   JOBS=4 bash examples/compare-tables.sh          # stages at a time (default: the CPU cores)
#
# 1. `asd-repro repro -j JOBS` brings results/<profile>/ up to date: only the stale stages run, side by side (the
#    default mini profile with nothing cached: about 136 min on 2 CPU cores at -j 2).
# 2. `asd-repro compare` judges every cell against the committed table with the seed noise model: exit 1 when a
#    cell changed or went missing (add --exact on the machine that made the base table).
# 3. `asd-repro claims` checks the paper's claims on the new table (reference/claims.yaml, which declares the
#    failures expected at a profile's scale): exit 1 when one fails.
# 4. `dvc metrics diff --md` prints every changed metric: informational only (it always exits 0).
# A pull request's quick gate is the smoke table instead (the workflow's smoke job, minutes):
#   python .ci/smoke_table.py OUT && asd-repro compare reference/smoke/table.csv OUT/table.csv
set -euo pipefail
base=${1:-HEAD}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
profile=$(python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['profile'])")
asd-repro repro -j "$jobs"
status=0
asd-repro compare "$base:results/$profile/table.csv" "results/$profile/table.csv" --out compare.md || status=1
asd-repro claims "results/$profile/table.csv" || status=1
dvc metrics diff "$base" --md --precision 2 || true
exit $status
