"""How often does `asd-repro compare` cry wolf, and does it still see real changes? Measured, not assumed.

Usage (from the project root; needs only a committed per-seed table):
    python benchmarks/gate_calibration.py [--table results/mini/table.csv] [--runs 2000] [--seeds 3]
                                          [--rng 0] [--out FILE]

Four experiments on the table's per-seed values, each judged exactly as `asd-repro compare` judges (same code):
1. **Disjoint-seed splits**: every split of the committed seeds into two groups (with 3 seeds: 100+101 vs 102,
   100+102 vs 101, 101+102 vs 100), compared as if one were a regeneration of the other. Nothing changed
   between them, so every "changed" is a false alarm.
2. **No-change simulation**: ``--runs`` pairs of regenerated tables of ``--seeds`` seeds a side, each seed's value
   drawn from its cell's measured spread: a smoothed bootstrap (a committed seed's value picked at random, plus
   Gaussian jitter of Silverman's bandwidth for the cell's spread, clipped to [0, 100] and rounded to the test
   set's resolution), so a cell whose ASR is bimodal stays bimodal. The family-wise false-alarm rate is the share
   of pairs with at least one "changed"; the target is at most the gate's alpha (5%). Also run with the jitter
   off (a plain bootstrap: ties between seeds make the spread look smaller than it is, a harsher case).
3. **Planted effects on the committed table**: ASD's ASR raised by 40 points in every seed and cell (the size of
   an attack getting through, as in the paper's baselines) and No Defense's ACC lowered by 8 points, each against
   the committed table itself: every planted cell must be "changed" and nothing else.
4. **Power in the simulation**: the same planted effects on top of the no-change draws: how often each planted
   cell is detected at ``--seeds`` seeds a side.
Prints one summary; exit 1 when the false-alarm rate of (2) is above alpha or a split of (1) or a planted effect
of (3) fails its expectation.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from asd_repro.report.compare import compare, verdict_of
from asd_repro.report.gate import Gate, judge
from asd_repro.report.stats import Noise
from asd_repro.report.table import KEY, read_long

PLANTED = {("asd", "asr"): +40.0, ("none", "acc"): -8.0}  # (defense, metric) -> points added to every seed


def splits(long: pd.DataFrame, gate: Gate) -> list[tuple[str, dict[str, int]]]:
    seeds = sorted(long["seed"].unique())
    out = []
    for k in range(1, len(seeds) // 2 + 1):
        for group in itertools.combinations(seeds, k):
            if 2 * k == len(seeds) and seeds[0] not in group:
                continue  # the same split seen from the other side
            a, b = long[~long["seed"].isin(group)], long[long["seed"].isin(group)]
            res = compare(a, b.assign(environment="regenerated"), gate=gate, power=False)
            name = f"{'+'.join(map(str, sorted(set(seeds) - set(group))))} vs {'+'.join(map(str, group))}"
            out.append((name, res["verdict"].value_counts().to_dict()))
    return out


def _cells(long: pd.DataFrame) -> list[dict]:
    """Per cell-metric: its key, the committed per-seed values, the test-set size and the class count."""
    out = []
    for key, g in long.groupby(KEY, sort=False):
        for m, size in (("acc", "n_clean"), ("asr", "n_asr")):
            images = float(g[size].iloc[0]) if not math.isnan(g[size].iloc[0]) else 1000.0
            out.append({**dict(zip(KEY, key)), "metric": m, "values": g[m].to_numpy(float), "n_images": images,
                        "num_classes": float(g["num_classes"].iloc[0])})
    return out


def _draw(cell: dict, n: int, rng: np.random.Generator, smooth: bool) -> np.ndarray:
    """``n`` seeds of one regenerated cell-metric, each from the cell's measured spread."""
    v = cell["values"]
    h = v.std(ddof=1) * (4.0 / (3.0 * len(v))) ** 0.2 if smooth and len(v) >= 2 else 0.0
    x = rng.choice(v, size=n) + (rng.normal(0.0, h, size=n) if h > 0 else 0.0)
    return np.round(np.clip(x, 0.0, 100.0) * cell["n_images"] / 100.0) * 100.0 / cell["n_images"]


def plant(long: pd.DataFrame) -> pd.DataFrame:
    out = long.copy()
    for (defense, metric), delta in PLANTED.items():
        rows = out["defense"] == defense
        out.loc[rows, metric] = (out.loc[rows, metric] + delta).clip(0.0, 100.0)
    return out


def planted_cells(res: pd.DataFrame) -> pd.Series:
    return pd.Series([(d, m) in PLANTED for d, m in zip(res["defense"], res["metric"])], index=res.index)


def simulate(long: pd.DataFrame, gate: Gate, runs: int, n: int, rng: np.random.Generator, smooth: bool,
             planted: bool = False) -> dict:
    """``runs`` no-change comparisons of ``n`` vs ``n`` seeds drawn from each cell's spread, judged as `compare`
    judges them (``gate.judge`` and ``compare.verdict_of``); with ``planted`` the new side carries ``PLANTED``."""
    cells = _cells(long)
    is_planted = np.array([(c["defense"], c["metric"]) in PLANTED for c in cells])
    alarms, false_counts, detected, culprits = 0, [], np.zeros(int(is_planted.sum())), {}
    for _ in range(runs):
        pairs = []
        for c in cells:
            a, b = _draw(c, n, rng, smooth), _draw(c, n, rng, smooth)
            if planted and (c["defense"], c["metric"]) in PLANTED:
                b = np.clip(b + PLANTED[(c["defense"], c["metric"])], 0.0, 100.0)
            pairs.append({**{k: c[k] for k in KEY + ["metric", "n_images", "num_classes"]}, "a": a, "b": b})
        judged = judge(pairs, Noise(), gate, power=False)
        changed = np.array([verdict_of(r, float(p["b"].mean() - p["a"].mean()), False, False, gate) == "changed"
                            for r, p in zip(judged.to_dict("records"), pairs)])
        false = changed & ~is_planted
        alarms += bool(false.any())
        false_counts.append(int(false.sum()))
        for c in np.flatnonzero(false):
            name = f"{cells[c]['attack']}/{cells[c]['defense']} {cells[c]['metric'].upper()}"
            culprits[name] = culprits.get(name, 0) + 1
        detected += changed[is_planted]
    out = {"fwer": alarms / runs, "mean_false": float(np.mean(false_counts)),
           "culprits": sorted(culprits.items(), key=lambda kv: -kv[1])[:5]}
    if planted:
        out["detected"] = detected / runs
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", type=Path, default=Path("results/mini/table.csv"), help="a committed per-seed table")
    ap.add_argument("--runs", type=int, default=2000, help="simulated no-change comparisons (default %(default)s)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3], help="seeds a side in the simulation")
    ap.add_argument("--rng", type=int, default=0, help="the simulation's random seed")
    ap.add_argument("--out", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    gate, rng, t0 = Gate(), np.random.default_rng(args.rng), time.time()
    long = read_long(args.table)
    m = long.groupby(KEY).ngroups * 2
    lines = [f"# Gate calibration on `{args.table}`", "",
             f"{m} cell-metrics, {long['seed'].nunique()} seeds; gate: alpha {gate.alpha:g}, {gate.correction} "
             f"correction, min effect {gate.min_effect:g} points.", ""]
    ok = True

    lines += ["## 1. Disjoint-seed splits (nothing changed)", ""]
    for name, counts in splits(long, gate):
        lines.append(f"- {name}: " + ", ".join(f"{v} {c}" for v, c in sorted(counts.items())))
        ok &= counts.get("changed", 0) == 0

    for n in args.seeds:
        lines += ["", f"## 2. No-change simulation, {n} vs {n} seeds, {args.runs} comparisons", ""]
        for smooth, what in ((True, "smoothed bootstrap"), (False, "plain bootstrap (ties)")):
            r = simulate(long, gate, args.runs, n, rng, smooth)
            se = math.sqrt(max(r["fwer"] * (1 - r["fwer"]), 1e-12) / args.runs)
            lines.append(f"- {what}: family-wise false-alarm rate {100 * r['fwer']:.2f}% (± {100 * se:.2f}), "
                         f"mean false 'changed' a comparison {r['mean_false']:.4f}" + (
                             "; most often: " + ", ".join(f"{c} ({k})" for c, k in r["culprits"])
                             if r["culprits"] else ""))
            if smooth:
                ok &= r["fwer"] <= gate.alpha

    lines += ["", "## 3. Planted effects on the committed table", ""]
    res = compare(long, plant(long).assign(environment="planted"), gate=gate)
    is_planted = planted_cells(res)
    hits = res[is_planted]
    for r in hits.itertuples():
        lines.append(f"- {r.attack}/{r.defense} {r.metric.upper()}: {r.base:.1f} -> {r.new:.1f}, {r.verdict}")
    others = res[~is_planted & (res["verdict"] == "changed")]
    lines.append(f"- planted cells changed: {int((hits['verdict'] == 'changed').sum())} of {len(hits)}; other cells "
                 f"changed: {len(others)}")
    ok &= bool((hits["verdict"] == "changed").all()) and others.empty

    for n in args.seeds:
        runs = max(args.runs // 4, 1)
        r = simulate(long, gate, runs, n, rng, True, planted=True)
        lines += ["", f"## 4. Power: planted effects on no-change draws, {n} vs {n} seeds, {runs} comparisons", "",
                  f"- detected per planted cell: min {100 * r['detected'].min():.1f}%, mean "
                  f"{100 * r['detected'].mean():.1f}%; false alarms elsewhere in {100 * r['fwer']:.2f}% of comparisons"]

    lines += ["", f"Result: {'PASS' if ok else 'FAIL'} ({time.time() - t0:.0f} s)"]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
