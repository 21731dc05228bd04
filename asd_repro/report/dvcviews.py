"""Compact views of the results for DVC's own commands: ``dvc metrics show/diff`` and ``dvc plots show``.

The evaluate stage's per-seed files (``metrics/<profile>/<dataset>/<attack>/<defense>.json``) keep every seed,
its environment and provenance; flattened by ``dvc metrics show`` they make ~40 columns. The table stage writes,
next to ``table.md``, one small numbers-only file per dataset and attack row of the paper's table:

    results/<profile>/metrics/<dataset>/<attack>.json   {"<defense>": {"acc": mean, "asr": median}, ...}

plus ``<dataset>/average.json`` for the Average row (per seed the mean over the attacks that were run, then
summarised), which ``dvc.yaml`` declares as the top-level ``metrics``. ACC is the mean over seeds and ASR the
median, the centres of ``table.md`` (``stats.summarise``), rounded to ``DECIMALS``; a value no seed has is left out,
never written as 0 or NaN.

The per-epoch curves are gathered the same way, one file per dataset and defense for each curve field:

    results/<profile>/plots/<field>/<dataset>_<defense>.json   [{"epoch", <field>, "attack", "seed"}, ...]

so that ``dvc.yaml``'s top-level ``plots`` declare three folders (test ACC, ASR, ASD's pool purity) and ``dvc plots
show`` draws one plot per defense and field, every attack (colour) and seed (dash) a line, through the custom
template ``.dvc/plots/seeds.json`` (DVC's built-in templates colour by revision only).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

VIEWS = "metrics"  # the folder under results/<profile>/
DECIMALS = 2
METRICS = ("acc", "asr")
PLOTS = "plots"  # the folder under results/<profile>/ of the gathered curves
PLOT_DIRS = {"acc": "acc", "asr": "asr", "poisoned_in_clean_pool": "pool"}
# Per-epoch curve fields: (y label, which defenses log it meaningfully). The pool count is ASD's pool purity;
# No Defense's is the whole poisoned set at every epoch, and the others log a constant or 0.
CURVES = {"acc": ("test ACC (%)", None), "asr": ("ASR (%)", None),
          "poisoned_in_clean_pool": ("poisoned samples in the clean pool (count)", ("asd",))}


def _number(x: Any, decimals: int) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else round(v, decimals)


def cell_values(long: pd.DataFrame, decimals: int = DECIMALS) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """dataset -> attack (and 'average') -> defense -> {"acc": mean, "asr": median} from the long per-seed table
    (``table.LONG_COLUMNS``: one row a seed; rows whose attack is 'average' are ignored and recomputed)."""
    from asd_repro.report.stats import summarise
    from asd_repro.report.table import PAPER_ATTACKS, PAPER_DEFENSES, with_average_seeds

    long = long[long["attack"] != "average"]
    if long.empty:
        return {}
    long = with_average_seeds(long.reset_index(drop=True))
    order_a = {a: i for i, a in enumerate(PAPER_ATTACKS + sorted(set(long["attack"]) - set(PAPER_ATTACKS)))}
    order_a["average"] = len(order_a)
    order_f = {f: i for i, f in enumerate(PAPER_DEFENSES + sorted(set(long["defense"]) - set(PAPER_DEFENSES)))}
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (d, a, f), g in sorted(long.groupby(["dataset", "attack", "defense"], sort=False),
                               key=lambda kv: (str(kv[0][0]), order_a[kv[0][1]], order_f[kv[0][2]])):
        values = {}
        for m in METRICS:
            v = _number(summarise(list(g[m]), m)["centre"], decimals)
            if v is not None:
                values[m] = v
        if values:
            out.setdefault(str(d), {}).setdefault(str(a), {})[str(f)] = values
    return out


def view_texts(long: pd.DataFrame, decimals: int = DECIMALS) -> dict[str, str]:
    """``<dataset>/<attack>.json`` (and ``<dataset>/average.json``) -> its JSON text."""
    return {f"{d}/{a}.json": json.dumps(cells, indent=2, allow_nan=False) + "\n"
            for d, rows in cell_values(long, decimals).items() for a, cells in rows.items()}


def write_views(long: pd.DataFrame, out: Path | str, decimals: int = DECIMALS) -> list[Path]:
    """Replace the folder ``out`` (``results/<profile>/metrics``) with the views of ``long``, atomically: a reader
    sees the old folder or the new one, never a half-written one. Returns the files written."""
    from asd_repro.core.io import atomic_dir

    texts = view_texts(long, decimals)
    with atomic_dir(out) as tmp:
        for name, text in texts.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)
    return [Path(out) / name for name in texts]


def curve_records(curves: Path, datasets: list[str], attacks: list[str], defenses: list[str],
                  seeds: list[int]) -> dict[str, list[dict[str, Any]]]:
    """``<field>/<dataset>_<defense>.json`` -> its records, from the per-seed curve files
    ``<curves>/<dataset>/<attack>/<defense>/s<seed>.json`` (epochs whose field was not measured are left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in datasets:
        for f in defenses:
            for field, (_, only) in CURVES.items():
                if only is not None and f not in only:
                    continue
                rows = []
                for a in attacks:
                    for seed in seeds:
                        path = Path(curves) / d / a / f / f"s{seed}.json"
                        if not path.is_file():
                            continue
                        for epoch in json.loads(path.read_text()):
                            v = _number(epoch.get(field), 4)
                            if v is not None and "epoch" in epoch:
                                rows.append({"epoch": epoch["epoch"], field: v, "attack": a, "seed": str(seed)})
                if rows:
                    out[f"{PLOT_DIRS[field]}/{d}_{f}.json"] = rows
    return out


def write_curves(curves: Path, out: Path, datasets: list[str], attacks: list[str], defenses: list[str],
                 seeds: list[int]) -> list[Path]:
    """Write ``curve_records`` under ``out`` (``results/<profile>/plots``, inside the table stage's atomic folder)."""
    records = curve_records(curves, datasets, attacks, defenses, seeds)
    for name, rows in records.items():
        (Path(out) / name).parent.mkdir(parents=True, exist_ok=True)
        (Path(out) / name).write_text(json.dumps(rows, allow_nan=False) + "\n")
    return [Path(out) / name for name in records]


def main(argv: list[str] | None = None) -> int:
    """``python -m asd_repro.report.dvcviews results/<profile>/table.csv results/<profile>/metrics``: write the
    metrics views from a table.csv (the table stage writes them itself)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m asd_repro.report.dvcviews", description=main.__doc__)
    ap.add_argument("table", type=Path, help="a per-seed table.csv")
    ap.add_argument("out", type=Path, help="the folder to write (replaced)")
    args = ap.parse_args(argv)
    from asd_repro.report.table import read_long

    written = write_views(read_long(args.table), args.out)
    print(f"{len(written)} metrics views -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
