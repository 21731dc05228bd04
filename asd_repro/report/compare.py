"""``asd-repro compare BASE NEW``: the gate for regenerated tables, cell by cell, at a known false-alarm rate.

BASE and NEW are each a per-seed ``table.csv``, a metrics folder (``metrics/<profile>``), or ``REV:path`` of either
in git (``HEAD~1:results/mini/table.csv``). Every cell's ACC and ASR is tested on its per-seed values, all cells
together (``report/gate.py``: a t-test with the test set's measurement floor, Fisher's exact test on the modes of a
bimodal metric, Holm's correction over the whole table), and gets a verdict:
- identical: every seed's value equal, and the cell's seeds on both sides from one recorded environment;
- changed: the corrected p is below alpha and the difference is at least the minimal effect;
- underpowered: not changed, but at these seeds and this spread the cell could not have detected a change of the
  readable size (3 ACC, 20 ASR points by default): it cannot be judged, which is not "within noise";
- within noise: not changed, and the cell could have detected a change of the readable size;
- missing: in BASE only; new: in NEW only.
Exit status 1 when a cell changed or went missing, 0 otherwise, 2 on bad input. A comparison in which nothing
changed but the seeds or the machine exits 1 with probability at most alpha (5%), measured by
``benchmarks/gate_calibration.py``. ``--exact`` makes any difference of any seed's value a change (same machine,
same environment: runs are bit-identical there).
"""

from __future__ import annotations

import argparse
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from asd_repro.core.errors import UserError
from asd_repro.report.gate import MAX_SEEDS, Gate, judge, significant, upper_mode
from asd_repro.report.stats import Noise
from asd_repro.report.table import KEY, LONG_COLUMNS, label, metrics_rows, read_long

VERDICTS = ("identical", "within noise", "underpowered", "changed", "missing", "new")
FAILING = {"changed", "missing"}
COLUMNS = KEY + ["metric", "stat", "base", "new", "diff", "p_adj", "detectable", "seeds_needed", "verdict"]


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


def verdict_of(judged: dict, diff: float, identical: bool, exact: bool, gate: Gate) -> str:
    """One cell-metric's verdict from the gate's row (``judge``) and the difference of the two sides' statistic."""
    if exact or identical:
        return "identical" if identical else "changed"
    if significant(judged["p_adj"], diff if judged["route"] == "t" else float("inf"), gate):
        return "changed"
    return "within noise" if judged["readable"] else "underpowered"


def compare(base: pd.DataFrame, new: pd.DataFrame, noise: Noise | None = None, gate: Gate | None = None,
            exact: bool = False, power: bool = True) -> pd.DataFrame:
    """One row per cell and metric: the two sides' statistic, their difference, corrected p, power and verdict."""
    noise, gate = noise or Noise(), gate or Gate()
    cells_b = {k: g for k, g in base.sort_values("seed", kind="stable").groupby(KEY, sort=False)}
    cells_n = {k: g for k, g in new.sort_values("seed", kind="stable").groupby(KEY, sort=False)}
    pairs, absent = [], []
    for key in list(cells_b) + [k for k in cells_n if k not in cells_b]:
        b, n = cells_b.get(key), cells_n.get(key)
        for m in ("acc", "asr"):
            row = dict(zip(KEY, key), metric=m)
            if n is None or b is None:
                g = b if b is not None else n
                absent.append({**row, "stat": "mean", "base": g[m].mean() if b is not None else float("nan"),
                               "new": g[m].mean() if n is not None else float("nan"),
                               "verdict": "missing" if n is None else "new"})
                continue
            vb, vn = b[m].to_numpy(float), n[m].to_numpy(float)
            equal = len(vb) == len(vn) and bool((b["seed"].to_numpy() == n["seed"].to_numpy()).all()) and bool(
                (np.round(vb, 6) == np.round(vn, 6)).all())
            size = pd.concat([b["n_clean" if m == "acc" else "n_asr"], n["n_clean" if m == "acc" else "n_asr"]])
            classes = pd.concat([b["num_classes"], n["num_classes"]]).dropna()
            envs = set(b["environment"]) | set(n["environment"])  # the cell's seeds, both sides: one recorded env
            same_env = len(envs) == 1 and "" not in envs
            pairs.append({**row, "a": vb, "b": vn, "equal": equal, "same_env": same_env,
                          "n_images": float(size.dropna().mean()) if size.notna().any() else float("nan"),
                          "num_classes": float(classes.iloc[0]) if len(classes) else float("nan")})
    judged = judge(pairs, noise, gate, power) if pairs else pd.DataFrame()
    rows = []
    for pair, r in zip(pairs, judged.to_dict("records")):
        a, b = pair["a"], pair["b"]
        if r["route"] == "modes":  # the share of seeds in the upper mode, in %
            stat = f"% seeds ASR >= {noise.asr_success:g}" if r["metric"] == "asr" else "% seeds not collapsed"
            vb, vn = (100.0 * float(upper_mode(v[~np.isnan(v)], r["metric"], r["boundary"]).mean()) for v in (a, b))
        else:
            stat, vb, vn = "mean", float(np.nanmean(a)), float(np.nanmean(b))
        diff = vn - vb
        verdict = verdict_of(r, diff, r["equal"] and (exact or r["same_env"]), exact, gate)
        rows.append({**{k: r[k] for k in KEY + ["metric"]}, "stat": stat, "base": vb, "new": vn, "diff": diff,
                     "p_adj": r["p_adj"], "detectable": r["detectable"], "seeds_needed": r["seeds_needed"],
                     "verdict": verdict})
    rows += absent
    return pd.DataFrame(rows, columns=COLUMNS).reindex(columns=COLUMNS)


def report(result: pd.DataFrame, base_label: str, new_label: str, base: pd.DataFrame, new: pd.DataFrame,
           gate: Gate, exact: bool, decimals: int = 2) -> str:
    from tabulate import tabulate

    envs_b, envs_n = sorted(set(base["environment"]) - {""}), sorted(set(new["environment"]) - {""})
    counts = result["verdict"].value_counts()
    tested = result[result["verdict"].isin({"within noise", "underpowered", "changed", "identical"})]
    lines = [f"# Compare `{base_label}` -> `{new_label}`", ""]
    if exact:
        lines += ["Mode: --exact (any difference of any seed's value is a change).", ""]
    else:
        lines += [f"Test: per cell and metric on the per-seed values (t-test with the test set's measurement floor; "
                  f"Fisher's exact test on the seeds' modes where a metric is bimodal), {gate.correction} correction "
                  f"over the {len(tested)} cell-metrics: a comparison in which nothing changed fails with probability "
                  f"at most {gate.alpha:g}. Changed also needs a difference of at least {gate.min_effect:g} point(s).",
                  ""]
    if envs_b != envs_n:
        lines += ["Environments differ: only a cell whose seeds come from one environment on both sides can be "
                  "'identical':",
                  f"- base: {'; '.join(envs_b) or 'unrecorded'}", f"- new: {'; '.join(envs_n) or 'unrecorded'}", ""]
    else:
        lines += [f"Environment (both): {'; '.join(envs_b) or 'unrecorded'}", ""]
    lines += ["Verdicts: " + ", ".join(f"{v} {int(counts.get(v, 0))}" for v in VERDICTS), ""]
    under = result[result["verdict"] == "underpowered"]
    if len(under) and not exact:
        need = under["seeds_needed"]
        finite = need[need != float("inf")]
        lines += [f"Underpowered: {len(under)} of {len(tested)} cell-metrics cannot detect a change of "
                  f"{gate.readable_acc:g} ACC or {gate.readable_asr:g} ASR points at their seeds and spread; "
                  + (f"{len(finite)} of them become readable with " + (
                      f"{int(finite.min())}" if finite.min() == finite.max() else
                      f"{int(finite.min())}-{int(finite.max())}") + " seeds a side (column Seeds)"
                     if len(finite) else "none becomes readable with more seeds alone")
                  + (f", {len(need) - len(finite)} not even with {MAX_SEEDS} (a bimodal or very wide cell)"
                     if len(need) > len(finite) else "") + ".", ""]

    def num(x: float, signed: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return ""
        if x == float("inf"):
            return "-"
        return f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"

    def pval(x: float) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:.3g}" if x >= 1e-4 else "<1e-4")

    def seeds(x: float) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else (">30" if x == float("inf")
                                                                                 else str(int(x)))

    body = [[label(r.dataset), label(r.attack), label(r.defense), f"{r.metric.upper()} ({r.stat})", num(r.base),
             num(r.new), num(r.diff, True), pval(r.p_adj), num(r.detectable), seeds(r.seeds_needed),
             f"**{r.verdict}**" if r.verdict in FAILING else r.verdict]
            for r in result.itertuples()]
    lines.append(tabulate(body, headers=["Dataset", "Attack", "Defense", "Metric", "Base", "New", "Diff", "p (corr.)",
                                         "Detects >=", "Seeds", "Verdict"], tablefmt="pipe", disable_numparse=True))
    lines += ["", "Detects >=: the smallest difference this cell would call changed at its seeds (- : none, the "
              "modes test); Seeds: seeds a side that would make it readable."]
    failing = result[result["verdict"].isin(FAILING)]
    lines += ["", "Result: " + ("FAIL: " + ", ".join(f"{r.dataset}/{r.attack}/{r.defense} {r.metric.upper()} "
                                                      f"{r.verdict}" for r in failing.itertuples())
                                if len(failing) else "PASS")]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="asd-repro compare", description=__doc__.splitlines()[0])
    ap.add_argument("base", help="table.csv, metrics folder, or REV:path")
    ap.add_argument("new", help="table.csv, metrics folder, or REV:path")
    ap.add_argument("--alpha", type=float, default=Gate.alpha,
                    help="family-wise false-alarm rate of the whole comparison (default %(default)s)")
    ap.add_argument("--correction", default=Gate.correction,
                    choices=("holm", "bonferroni", "hommel", "fdr_bh", "fdr_by"),
                    help="multiple-comparison correction over all cell-metrics (statsmodels; default %(default)s)")
    ap.add_argument("--min-effect", type=float, default=Gate.min_effect,
                    help="a smaller difference (points) is never 'changed' (default %(default)s)")
    ap.add_argument("--readable-acc", type=float, default=Gate.readable_acc,
                    help="ACC points a cell must be able to detect, else it is underpowered (default %(default)s)")
    ap.add_argument("--readable-asr", type=float, default=Gate.readable_asr,
                    help="ASR points a cell must be able to detect, else it is underpowered (default %(default)s)")
    ap.add_argument("--exact", action="store_true", help="any difference of any seed's value is a change")
    ap.add_argument("--out", type=Path, help="also write the markdown report here")
    args = ap.parse_args(argv)
    if not 0 < args.alpha < 1:
        raise UserError(f"--alpha {args.alpha:g}: must be between 0 and 1 (e.g. 0.05)")
    if min(args.min_effect, args.readable_acc, args.readable_asr) < 0:
        raise UserError("--min-effect, --readable-acc and --readable-asr must be >= 0 (points)")
    gate = Gate(alpha=args.alpha, correction=args.correction, min_effect=args.min_effect,
                readable_acc=args.readable_acc, readable_asr=args.readable_asr)
    base, base_label = load_table(args.base)
    new, new_label = load_table(args.new)
    result = compare(base, new, Noise(), gate, args.exact)
    text = report(result, base_label, new_label, base, new, gate, args.exact)
    print(text, end="")
    if args.out:
        from asd_repro.core.io import write_text_atomic
        write_text_atomic(args.out, text)
    return 1 if result["verdict"].isin(FAILING).any() else 0
