"""``asd-repro compare BASE NEW``: the gate for regenerated tables, cell by cell, with the noise model.

BASE and NEW are each a per-seed ``table.csv``, a metrics folder (``metrics/<profile>``), or ``REV:path`` of either
in git (``HEAD~1:results/mini/table.csv``). Per cell and metric (ACC mean, ASR median over seeds) the report gives
base, new, difference, tolerance and a verdict:
- identical: every seed's value equal, and both tables from the same environment;
- within noise: the difference is within ``max(k x pooled seed std, z x binomial SE x sqrt(2), abs floor)``;
- changed: beyond it; missing: in BASE only; new: in NEW only.
Exit status 1 when a cell changed or went missing, 0 otherwise, 2 on bad input. ``--exact`` makes any difference
of any seed's value a change (same machine, same environment: runs are bit-identical there). Tables from different
environments (library versions, CPU, threads, device) never get "identical", only tolerance verdicts.
"""

from __future__ import annotations

import argparse
import math
import subprocess
from pathlib import Path

import pandas as pd

from asd_repro.errors import UserError
from asd_repro.report.stats import CENTRE, Noise, centre, pooled_std
from asd_repro.report.table import KEY, LONG_COLUMNS, label, metrics_rows, read_long

VERDICTS = ("identical", "within noise", "changed", "missing", "new")
FAILING = {"changed", "missing"}


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise UserError("git not found; pass files or folders instead of REV:path") from None
    if out.returncode != 0:
        raise UserError(f"git {' '.join(args)}: {out.stderr.strip().splitlines()[0] if out.stderr.strip() else 'failed'}"
                        "; check the revision and the path")
    return out.stdout


def _metrics_from_files(files: dict[str, str], source: str) -> pd.DataFrame:
    """Long rows from ``{relative path <dataset>/<attack>/<defense>.json: text}`` (a metrics folder's files)."""
    rows = []
    for rel, text in sorted(files.items()):
        parts = Path(rel).parts
        if len(parts) == 3 and rel.endswith(".json"):
            rows += metrics_rows(text, f"{source}/{rel}", parts[0], parts[1], parts[2][:-len(".json")])
    if not rows:
        raise UserError(f"{source}: no <dataset>/<attack>/<defense>.json metrics inside; pass a metrics folder "
                        "such as metrics/mini, or a table.csv")
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def load_table(spec: str) -> tuple[pd.DataFrame, str]:
    """A long per-seed table from a table.csv, a metrics folder, or REV:path of either; and a label for it."""
    path = Path(spec)
    if path.is_file():
        return read_long(path), spec
    if path.is_dir():
        files = {str(p.relative_to(path)): p.read_text() for p in path.rglob("*.json")}
        return _metrics_from_files(files, spec), spec
    if ":" in spec:
        rev, _, rel = spec.partition(":")
        kind = _git("cat-file", "-t", f"{rev}:{rel}").strip()
        if kind == "blob":
            return read_long(_git("show", f"{rev}:{rel}"), spec), spec
        listing = _git("ls-tree", "-r", "--name-only", f"{rev}:{rel}").split()
        files = {name: _git("show", f"{rev}:{rel.rstrip('/')}/{name}") for name in listing if name.endswith(".json")}
        return _metrics_from_files(files, spec), spec
    raise UserError(f"{spec}: not found; pass a table.csv, a metrics folder, or REV:path (e.g. "
                    "HEAD~1:results/mini/table.csv)")


def compare(base: pd.DataFrame, new: pd.DataFrame, noise: Noise, exact: bool = False) -> pd.DataFrame:
    """One row per cell and metric: base, new, diff, tolerance, verdict."""
    same_env = set(base["environment"]) == set(new["environment"]) and len(set(base["environment"])) == 1 \
        and "" not in set(base["environment"])
    cells_b = {k: g for k, g in base.groupby(KEY, sort=False)}
    cells_n = {k: g for k, g in new.groupby(KEY, sort=False)}
    rows = []
    for key in list(cells_b) + [k for k in cells_n if k not in cells_b]:
        b, n = cells_b.get(key), cells_n.get(key)
        for m in ("acc", "asr"):
            row = dict(zip(KEY, key), metric=m, stat=CENTRE[m])
            if n is None or b is None:
                row.update(base=centre(m, b[m]) if b is not None else float("nan"),
                           new=centre(m, n[m]) if n is not None else float("nan"), diff=float("nan"),
                           tolerance=float("nan"), verdict="missing" if n is None else "new")
                rows.append(row)
                continue
            vb, vn = centre(m, b[m]), centre(m, n[m])
            seeds_b = b.set_index("seed")[m].sort_index()
            seeds_n = n.set_index("seed")[m].sort_index()
            equal = seeds_b.index.equals(seeds_n.index) and bool((seeds_b.round(6) == seeds_n.round(6)).all())
            count = "n_clean" if m == "acc" else "n_asr"
            size = pd.concat([b[count], n[count]]).dropna()
            tol = 0.0 if exact else noise.tolerance(m, pooled_std(b[m], n[m]), (vb + vn) / 2,
                                                    float(size.mean()) if len(size) else 0.0)
            diff = vn - vb
            if exact:
                verdict = "identical" if equal else "changed"
            elif equal and same_env:
                verdict = "identical"
            else:
                verdict = "within noise" if abs(diff) <= tol or (math.isnan(diff) and equal) else "changed"
            row.update(base=vb, new=vn, diff=diff, tolerance=tol, verdict=verdict)
            rows.append(row)
    return pd.DataFrame(rows, columns=KEY + ["metric", "stat", "base", "new", "diff", "tolerance", "verdict"])


def report(result: pd.DataFrame, base_label: str, new_label: str, base: pd.DataFrame, new: pd.DataFrame,
           noise: Noise, exact: bool, decimals: int = 2) -> str:
    from tabulate import tabulate

    envs_b, envs_n = sorted(set(base["environment"]) - {""}), sorted(set(new["environment"]) - {""})
    counts = result["verdict"].value_counts()
    lines = [f"# Compare `{base_label}` -> `{new_label}`", "",
             ("Mode: --exact (any difference of any seed's value is a change)." if exact else
              f"Tolerance: max({noise.k:g} x pooled seed std, {noise.z:g} x binomial SE x sqrt(2), "
              f"{noise.abs_floor:g} points)."), ""]
    if envs_b != envs_n:
        lines += ["Environments differ, so no cell can be 'identical', only within noise or changed:",
                  f"- base: {'; '.join(envs_b) or 'unrecorded'}", f"- new: {'; '.join(envs_n) or 'unrecorded'}", ""]
    else:
        lines += [f"Environment (both): {'; '.join(envs_b) or 'unrecorded'}", ""]
    lines += ["Verdicts: " + ", ".join(f"{v} {int(counts.get(v, 0))}" for v in VERDICTS), ""]

    def num(x: float, signed: bool = False) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (
            f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}")

    body = [[label(r.dataset), label(r.attack), label(r.defense), f"{r.metric.upper()} ({r.stat})", num(r.base),
             num(r.new), num(r.diff, True), num(r.tolerance), f"**{r.verdict}**" if r.verdict in FAILING else r.verdict]
            for r in result.itertuples()]
    lines.append(tabulate(body, headers=["Dataset", "Attack", "Defense", "Metric", "Base", "New", "Diff", "Tolerance",
                                         "Verdict"], tablefmt="pipe", disable_numparse=True))
    failing = result[result["verdict"].isin(FAILING)]
    lines += ["", "Result: " + ("FAIL: " + ", ".join(f"{r.dataset}/{r.attack}/{r.defense} {r.metric.upper()} "
                                                      f"{r.verdict}" for r in failing.itertuples())
                                if len(failing) else "PASS")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="asd-repro compare", description=__doc__.splitlines()[0])
    ap.add_argument("base", help="table.csv, metrics folder, or REV:path")
    ap.add_argument("new", help="table.csv, metrics folder, or REV:path")
    ap.add_argument("--k", type=float, default=Noise.k, help="multiples of the pooled seed std")
    ap.add_argument("--binomial-z", type=float, default=Noise.z,
                    help="multiples of the binomial SE of the test-set measurement (the binomial floor)")
    ap.add_argument("--abs-floor", type=float, default=Noise.abs_floor, help="smallest tolerance (points)")
    ap.add_argument("--exact", action="store_true", help="any difference of any seed's value is a change")
    ap.add_argument("--out", type=Path, help="also write the markdown report here")
    args = ap.parse_args(argv)
    if min(args.k, args.binomial_z, args.abs_floor) < 0:
        raise UserError("--k, --binomial-z and --abs-floor must be >= 0")
    noise = Noise(k=args.k, z=args.binomial_z, abs_floor=args.abs_floor)
    base, base_label = load_table(args.base)
    new, new_label = load_table(args.new)
    result = compare(base, new, noise, args.exact)
    text = report(result, base_label, new_label, base, new, noise, args.exact)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 1 if result["verdict"].isin(FAILING).any() else 0
