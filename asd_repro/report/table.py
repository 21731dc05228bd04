"""Join per-seed metrics with the paper's table and render it in the paper's layout, with seed statistics.

Rows are dataset x attack plus an Average row per dataset; columns are defense x {ACC, ASR}. A cell that was not
run is empty, never 0. A cell shows ACC as mean ± sample std (n seeds) and ASR as median [min–max] with the number
of seeds in which the attack succeeded; a collapsed model (ACC near chance) is marked and never read as a defense
that worked. The diff against the paper and the power section use the calibrated test of ``report/gate.py``
(the same one as ``asd-repro compare``). Averages are over the attacks that were run (per seed, then summarised).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from asd_repro.core.errors import UserError
from asd_repro.report.gate import MAX_SEEDS, Gate, judge, significant
from asd_repro.report.stats import Noise, fmt_acc, fmt_asr, summarise

PAPER_ATTACKS = ["badnets", "blend", "wanet", "iab", "refool", "clb"]
PAPER_DEFENSES = ["none", "fp", "nad", "abl", "dbd", "asd"]
LABELS = {"none": "No Defense", "fp": "FP", "nad": "NAD", "abl": "ABL", "dbd": "DBD", "asd": "ASD",
          "badnets": "BadNets", "blend": "Blend", "wanet": "WaNet", "iab": "IAB", "refool": "Refool", "clb": "CLB",
          "average": "Average", "cifar10": "CIFAR-10", "gtsrb": "GTSRB", "imagenet30": "ImageNet-30",
          "mnist5k": "mnist5k", "fashion_mnist": "Fashion-MNIST"}
METRICS = ("acc", "asr")
LONG_COLUMNS = ["dataset", "attack", "defense", "seed", "acc", "asr", "n_clean", "n_asr", "num_classes",
                "environment"]
KEY = ["dataset", "attack", "defense"]


def label(name: str) -> str:
    return LABELS.get(name, name)


def metrics_rows(text: str, path: Path | str, dataset: str, attack: str, defense: str) -> list[dict[str, Any]]:
    """The per-seed rows of one ``<defense>.json`` written by the evaluate stage (its ``text``, read from ``path``)."""
    from asd_repro.core.provenance import summary

    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); re-run its evaluate stage (dvc repro -f)") from None
    if not isinstance(m, dict) or not isinstance(m.get("seeds"), dict):
        raise UserError(f"{path}: no per-seed entries ('seeds'); it predates seeds as an axis: re-run its "
                        "evaluate stage (dvc repro)")
    rows = []
    for seed, s in m["seeds"].items():
        env = s.get("environment") or {}
        rows.append({"dataset": dataset, "attack": attack, "defense": defense, "seed": int(seed),
                     "acc": s.get("acc"), "asr": s.get("asr"), "n_clean": s.get("n_clean"), "n_asr": s.get("n_asr"),
                     "num_classes": m.get("num_classes"), "environment": summary(env) if env else ""})
    return rows


def collect_metrics(folder: Path, datasets: list[str], attacks: list[str], defenses: list[str],
                    seeds: list[int] | None = None) -> pd.DataFrame:
    """Read ``<folder>/<dataset>/<attack>/<defense>.json`` for the requested cells that exist: one row a seed
    (only ``seeds`` when given)."""
    rows = []
    for d in datasets:
        for a in attacks:
            for f in defenses:
                path = Path(folder) / d / a / f"{f}.json"
                if path.exists():
                    rows += [r for r in metrics_rows(path.read_text(), path, d, a, f)
                             if seeds is None or r["seed"] in seeds]
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


def load_paper(path: Path) -> pd.DataFrame:
    try:
        paper = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: cannot read the paper's table ({type(e).__name__}); restore it from git") from None
    missing = {"dataset", "attack", "defense", "acc", "asr"} - set(paper.columns)
    if missing:
        raise UserError(f"{path}: missing columns {sorted(missing)}; restore it from git")
    return paper[paper["attack"] != "average"]


def with_average_seeds(long: pd.DataFrame) -> pd.DataFrame:
    """Append, per dataset, defense and seed, the mean over the attacks that have a value (attack 'average')."""
    if long.empty:
        return long
    avg = long.groupby(["dataset", "defense", "seed"], as_index=False).agg(
        acc=("acc", "mean"), asr=("asr", "mean"), n_clean=("n_clean", "sum"), n_asr=("n_asr", "sum"),
        num_classes=("num_classes", "first"), environment=("environment", "first"))
    avg["attack"] = "average"
    return pd.concat([long, avg[long.columns]], ignore_index=True)


def summary_table(long: pd.DataFrame, noise: Noise) -> pd.DataFrame:
    """One row a cell: the seed statistics of ACC and ASR, collapsed and attack-succeeded counts."""
    rows = []
    for key, g in long.groupby(KEY, sort=False):
        acc, asr = summarise(g["acc"], "acc"), summarise(g["asr"], "asr")
        collapsed = sum(noise.collapsed_rows(g))
        row = dict(zip(KEY, key))
        row.update({f"acc_{k}": v for k, v in acc.items()})
        row.update({f"asr_{k}": v for k, v in asr.items() if k != "n"})
        row.update(seeds=" ".join(str(s) for s in sorted(g["seed"])), collapsed=int(collapsed),
                   attack_succeeded=int((g["asr"] >= noise.asr_success).sum()),
                   n_clean=float(g["n_clean"].mean()) if g["n_clean"].notna().any() else float("nan"),
                   n_asr=float(g["n_asr"].mean()) if g["n_asr"].notna().any() else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def paper_reference(paper: pd.DataFrame, datasets: list[str], paper_dataset: dict[str, str]) -> tuple[
        pd.DataFrame, dict[str, str | None]]:
    """The paper's rows for our datasets (renamed to ours), and which paper dataset each of ours is compared with."""
    compared = {d: (d if d in set(paper["dataset"]) else paper_dataset.get(d)) for d in datasets}
    parts = []
    for d, ref in compared.items():
        if ref is not None:
            part = paper[paper["dataset"] == ref].copy()
            part["dataset"] = d
            parts.append(part)
    return (pd.concat(parts, ignore_index=True) if parts else paper.iloc[0:0]), compared


def _pairs(long: pd.DataFrame, other: dict[tuple, dict[str, float]] | None, cells: list[tuple]) -> list[dict]:
    """The gate's input for ``cells``: our per-seed values against ``other``'s numbers (None: against themselves)."""
    groups = {k: g for k, g in long.groupby(KEY, sort=False)}
    pairs = []
    for key in cells:
        g = groups[key]
        for m, size in (("acc", "n_clean"), ("asr", "n_asr")):
            ours = g[m].to_numpy(float)
            pairs.append({**dict(zip(KEY, key)), "metric": m, "a": ours,
                          **({"b": ours} if other is None else {"value": other[key][m]}),
                          "n_images": float(g[size].mean()) if g[size].notna().any() else float("nan"),
                          "num_classes": float(g["num_classes"].dropna().iloc[0]) if g["num_classes"].notna().any()
                          else float("nan")})
    return pairs


def paper_diff(long: pd.DataFrame, ref: pd.DataFrame, noise: Noise, gate: Gate) -> pd.DataFrame:
    """Ours minus the paper per cell (ACC and ASR means), judged by the calibrated gate.

    Our seeds are tested against the paper's number (a one-sample t-test with the gate's measurement floor, all
    cells together with the gate's correction): **differs** (significant), **consistent** (not significant, and
    the cell could have seen a difference of the readable size), **underpowered** (it could not, or our seeds are
    bimodal there). The Average row compares the same attacks.
    """
    ours = long[KEY].drop_duplicates()
    ran = ref.merge(ours[ours["attack"] != "average"], on=KEY)
    if ran.empty:
        return pd.DataFrame()
    avg = ran.groupby(["dataset", "defense"], as_index=False)[list(METRICS)].mean()
    avg["attack"] = "average"
    ref_all = pd.concat([ran, avg[ran.columns]], ignore_index=True)
    paper = {tuple(r[k] for k in KEY): {m: float(r[m]) for m in METRICS} for r in ref_all.to_dict("records")}
    cells = [k for k in ours.itertuples(index=False, name=None) if k in paper]
    judged = judge(_pairs(long, paper, cells), noise, gate, power=False)
    means = long.groupby(KEY)[list(METRICS)].mean()
    rows = {}
    for r in judged.to_dict("records"):
        key, m = tuple(r[k] for k in KEY), r["metric"]
        diff = float(means.loc[key, m]) - paper[key][m]
        verdict = ("differs" if significant(r["p_adj"], diff if r["route"] == "t" else float("inf"), gate)
                   else ("consistent" if r["readable"] else "underpowered"))
        row = rows.setdefault(key, dict(zip(KEY, key)))
        row.update({f"{m}_paper": paper[key][m], f"{m}_diff": diff, f"{m}_p": r["p_adj"],
                    f"{m}_verdict": verdict})
    return pd.DataFrame(list(rows.values()))


def power(long: pd.DataFrame, noise: Noise, gate: Gate) -> pd.DataFrame:
    """Per cell and metric: the smallest change a regeneration with as many seeds could be called changed for
    (``detectable``), whether that is within the readable size, and the seeds a side that would make it so."""
    cells = [k for k in long[KEY].drop_duplicates().itertuples(index=False, name=None) if k[1] != "average"]
    if not cells:
        return pd.DataFrame()
    judged = judge(_pairs(long, None, cells), noise, gate)
    return judged[KEY + ["metric", "route", "detectable", "readable", "seeds_needed"]]


def _grid(values: dict[tuple[str, str, str], tuple[str, str]], datasets: list[str], attacks: list[str]) -> str:
    """A pipe table in the paper's layout from ``(dataset, attack, defense) -> (ACC text, ASR text)``."""
    from tabulate import tabulate

    header = ["Dataset", "Attack"] + [f"{label(f)} {m.upper()}" for f in PAPER_DEFENSES for m in METRICS]
    body = []
    for d in datasets:
        for i, a in enumerate(attacks + ["average"]):
            cells = []
            for f in PAPER_DEFENSES:
                cells += list(values.get((d, a, f), ("", "")))
            body.append([label(d) if i == 0 else "", label(a)] + cells)
    return tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True)


def noise_by_defense(long: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and defense column: the pooled seed std of ACC and of ASR over its attacks (the RMS of the
    cells' sample stds, weighted by their degrees of freedom), and the widest single cell."""
    rows = []
    for (d, f), part in long[long["attack"] != "average"].groupby(["dataset", "defense"], sort=False):
        row = {"dataset": d, "defense": f}
        for m in METRICS:
            ss, dof, widest = 0.0, 0, float("nan")
            for _, g in part.groupby("attack", sort=False):
                v = g[m].dropna().to_numpy(float)
                if len(v) >= 2:
                    ss += float(((v - v.mean()) ** 2).sum())
                    dof += len(v) - 1
                    std = float(v.std(ddof=1))
                    widest = std if math.isnan(widest) else max(widest, std)
            row[f"{m}_pooled_std"] = math.sqrt(ss / dof) if dof else float("nan")
            row[f"{m}_widest_std"] = widest
        rows.append(row)
    return pd.DataFrame(rows)


def pattern(found: pd.DataFrame, ref: pd.DataFrame, noise: Noise) -> pd.DataFrame:
    """Which defenses stop which attacks, ours against the paper's, seed by seed.

    A seed's defense stops an attack when its ASR is below ``noise.asr_success`` and its model is not collapsed;
    the paper's cell likewise. Per
    cell: the paper's outcome, in how many of our seeds the defense stopped the attack, and whether we agree with
    the paper in every seed, in none, or in some (then the disagreement is seed noise, not a finding).
    """
    rows = []
    cells = found.merge(ref[KEY + ["asr"]].rename(columns={"asr": "asr_paper"}), on=KEY)
    for key, g in cells.groupby(KEY, sort=False):
        if key[2] == "none":
            continue
        paper_stops = bool(g["asr_paper"].iloc[0] < noise.asr_success)
        broken = noise.collapsed_rows(g)
        stopped = int(sum(asr < noise.asr_success and not b for asr, b in zip(g["asr"], broken)))
        agree = stopped if paper_stops else len(g) - stopped
        verdict = "agrees" if agree == len(g) else ("disagrees" if agree == 0 else "mixed")
        rows.append(dict(zip(KEY, key), paper="stops" if paper_stops else "fails", stopped=stopped, n=len(g),
                         verdict=verdict))
    return pd.DataFrame(rows, columns=KEY + ["paper", "stopped", "n", "verdict"])


def _pattern_grid(values: dict[tuple[str, str, str], str], datasets: list[str], attacks: list[str]) -> str:
    from tabulate import tabulate

    defenses = [f for f in PAPER_DEFENSES if f != "none"]
    body = [[label(d) if i == 0 else "", label(a)] + [values.get((d, a, f), "") for f in defenses]
            for d in datasets for i, a in enumerate(attacks)]
    return tabulate(body, headers=["Dataset", "Attack"] + [f"{label(f)}: paper; ours stopped" for f in defenses],
                    tablefmt="pipe", disable_numparse=True)


def failed_attacks(long: pd.DataFrame, implant: float = 90.0) -> dict[tuple[str, str], tuple[int, int]]:
    """(dataset, attack) -> (seeds whose No-Defense ASR < ``implant``, seeds), for the attacks that failed somewhere.

    A defense's low ASR against an attack that did not implant is not a success; the table says so on the row.
    """
    out = {}
    rows = long[(long["defense"] == "none") & (long["attack"] != "average")]
    for (d, a), g in rows.groupby(["dataset", "attack"], sort=False):
        failed = int((g["asr"] < implant).sum())
        if failed:
            out[(d, a)] = (failed, len(g))
    return out


def _power_section(powers: pd.DataFrame, found: pd.DataFrame, gate: Gate, datasets: list[str], attacks: list[str],
                   decimals: int) -> list[str]:
    """The table's power: per cell, the smallest change a regeneration with as many seeds could detect."""
    def cell(r: Any) -> str:
        need = ">" + str(MAX_SEEDS) if r.seeds_needed == float("inf") else str(int(r.seeds_needed))
        seen = "modes" if r.route == "modes" else (
            "-" if r.detectable == float("inf") else f"{r.detectable:.{decimals}f}")
        return seen + ("" if r.readable else f" **({need})**")

    by_cell: dict[tuple, dict[str, str]] = {}
    for r in powers.itertuples():
        by_cell.setdefault((r.dataset, r.attack, r.defense), {})[r.metric] = cell(r)
    grid = {k: (v.get("acc", ""), v.get("asr", "")) for k, v in by_cell.items()}
    n_seeds = int(found.groupby(KEY)["seed"].nunique().median())
    under = powers[~powers["readable"]]
    lines = ["## Power", "",
             f"The smallest change (points) that `asd-repro compare` would call changed between this table and a "
             f"regeneration with as many seeds ({n_seeds} a cell), at each cell's spread ({gate.correction} over "
             f"{len(powers)} cell-metrics, alpha {gate.alpha:g}). 'modes': a bimodal metric (some seeds on each "
             "side of the ASR or collapse boundary), judged by how many seeds change mode. A cell that cannot "
             f"detect {gate.readable_acc:g} ACC or {gate.readable_asr:g} ASR points is **underpowered**: its "
             "verdicts say nothing; in bold, the seeds a side that would make it readable at the same spread.", ""]
    counts = []
    for k in range(n_seeds, n_seeds + 4):
        counts.append(f"{int((powers['seeds_needed'] <= k).sum())} at {k} seeds")
    lines += [f"Readable cell-metrics: {len(powers) - len(under)} of {len(powers)} at {n_seeds} seeds "
              f"(ACC {int((powers[powers.metric == 'acc']['readable']).sum())}, ASR "
              f"{int((powers[powers.metric == 'asr']['readable']).sum())}); with more seeds at the same spread: " +
              ", ".join(counts[1:]) + ".", "", _grid(grid, datasets, attacks), ""]
    return lines


def assemble(found: pd.DataFrame, paper: pd.DataFrame, profile: str, datasets: list[str],
             paper_dataset: dict[str, str], decimals: int = 1, noise: Noise | None = None,
             claims: str = "", implant: float = 90.0, gate: Gate | None = None) -> dict[str, str]:
    """The output files' texts: table.md, table.csv (every seed, long) and summary.csv (one row a cell).

    ``claims``: the claims checklist, already rendered (``claims.checklist``), or "" for none.
    """
    from tabulate import tabulate

    noise, gate = noise or Noise(), gate or Gate()
    attacks = PAPER_ATTACKS + sorted(set(found["attack"]) - set(PAPER_ATTACKS))
    long = with_average_seeds(found)
    summary = summary_table(long, noise)
    ref, compared = paper_reference(paper, datasets, paper_dataset)
    diff = paper_diff(long, ref, noise, gate) if len(ref) else pd.DataFrame()
    powers = power(found, noise, gate) if len(found) else pd.DataFrame()

    ours = {}
    for r in summary.to_dict("records"):
        acc = fmt_acc({k[4:]: v for k, v in r.items() if k.startswith("acc_")}, decimals)
        asr = fmt_asr({"n": r["acc_n"], **{k[4:]: v for k, v in r.items() if k.startswith("asr_")}},
                      None if r["attack"] == "average" else r["attack_succeeded"], decimals)
        if r["collapsed"]:
            acc += f" collapsed {r['collapsed']}/{r['acc_n']}"
        ours[(r["dataset"], r["attack"], r["defense"])] = (acc, asr)
    seeds = sorted(found["seed"].unique().tolist()) if len(found) else []
    envs = sorted(e for e in found["environment"].unique() if e) if len(found) else []

    lines = [f"# ASD reproduction: profile `{profile}`", "",
             f"Seeds: {', '.join(map(str, seeds)) or 'none'} ({len(seeds)}), each a full replicate (attack assets, "
             "poisoned draw, initialisation, data order). Made in " +
             ("; ".join(f"`{e}`" for e in envs) if envs else "an unrecorded environment") + ".", "",
             "ACC: clean test accuracy (%), mean ± sample std (seeds). ASR: attack success rate (%) on triggered test "
             "images whose true class is not the target, median [min–max] over seeds, then in how many seeds the "
             f"attack succeeded (ASR >= {noise.asr_success:g}). Final-epoch models (no test-set checkpoint "
             "selection). 'collapsed k/n': k seeds whose ACC is near chance (at most chance + "
             f"{noise.collapse_margin:g} x (100 - chance)), a broken model "
             "and never a defense's success. Empty cells were not run. Averages are over the attacks that were "
             "run. Our choices that differ from the original papers are listed in "
             "[DEVIATIONS.md](../../DEVIATIONS.md); every seed's value is in `table.csv`.", "",
             "## Ours", "", _grid(ours, datasets, attacks), ""]
    failed = failed_attacks(found, implant)
    if failed:
        lines += [f"**Attack failed** (No-Defense ASR below {implant:g}) in some seeds, so a defense's low ASR on "
                  "that row is not a success there: " +
                  ", ".join(f"{label(d)} {label(a)} ({k}/{n} seeds)" for (d, a), (k, n) in failed.items()) + ".", ""]
    noise_rows = noise_by_defense(found)
    if len(noise_rows) and noise_rows["acc_pooled_std"].notna().any():
        from tabulate import tabulate

        body = [[label(r.dataset), label(r.defense)] + [
            "" if math.isnan(getattr(r, c)) else f"{getattr(r, c):.{decimals}f}"
            for c in ("acc_pooled_std", "acc_widest_std", "asr_pooled_std", "asr_widest_std")]
            for r in noise_rows.sort_values(["dataset", "defense"], key=lambda c: c.map(
                {f: i for i, f in enumerate(PAPER_DEFENSES)}) if c.name == "defense" else c).itertuples()]
        lines += ["## Seed noise", "",
                  "How much a cell moves from seed to seed (points): the pooled sample std over the attacks of each "
                  "column, and its widest cell. Differences smaller than about twice these are noise.", "",
                  tabulate(body, headers=["Dataset", "Defense", "ACC pooled std", "ACC widest", "ASR pooled std",
                                          "ASR widest"], tablefmt="pipe", disable_numparse=True), ""]
    if len(powers):
        lines += _power_section(powers, found, gate, datasets, attacks, decimals)
    if claims:
        lines += ["## Claims", "", claims, ""]
    if len(diff):
        stand_ins = {d: r for d, r in compared.items() if r is not None and r != d}
        note = "; ".join(f"our {label(d)} is compared with the paper's {label(r)}" for d, r in stand_ins.items())
        paper_cells = {(r.dataset, r.attack, r.defense): (f"{r.acc_paper:.{decimals}f}", f"{r.asr_paper:.{decimals}f}")
                       for r in diff.itertuples()}
        diff_cells = {}
        mark = {"differs": " **differs**", "underpowered": " (?)", "consistent": ""}
        for r in diff.itertuples():
            diff_cells[(r.dataset, r.attack, r.defense)] = tuple(
                f"{getattr(r, f'{m}_diff'):+.{decimals}f}" + mark[getattr(r, f"{m}_verdict")] for m in METRICS)
        counts = {v: int(sum((diff[f"{m}_verdict"] == v).sum() for m in METRICS))
                  for v in ("differs", "consistent", "underpowered")}
        pat = pattern(found, ref, noise)
        pat_cells = {(r.dataset, r.attack, r.defense): f"{r.paper}; ours {r.stopped}/{r.n}: " + (
            f"**{r.verdict}**" if r.verdict != "agrees" else r.verdict) for r in pat.itertuples()}
        lines += ["## Paper", "", "The paper's values for the same cells" + (f" ({note}: a stand-in, not the same "
                  "dataset)" if note else "") + ".", "", _grid(paper_cells, datasets, attacks), "",
                  "## Ours minus paper", "",
                  "Our mean minus the paper's value, judged by the calibrated statistics of `asd-repro compare` (our "
                  f"seeds against the paper's number, {gate.correction} correction over all "
                  f"{2 * len(diff)} values, alpha {gate.alpha:g}): **differs**; (?): underpowered, our seeds could not "
                  f"detect {gate.readable_acc:g} ACC or {gate.readable_asr:g} ASR points there, so agreement means "
                  "nothing; otherwise consistent. Counts: " + ", ".join(f"{v} {c}" for v, c in counts.items()) +
                  ". Only cells that were run; the Average row compares the same attacks." + (
                      " Against a stand-in dataset the ACC verdicts compare two datasets and are expected to differ; "
                      "the ASR verdicts and the pattern below carry over." if note else ""), "",
                  _grid(diff_cells, datasets, attacks), "",
                  "## Pattern against the paper", "",
                  f"Which defenses stop which attacks (ASR below {noise.asr_success:g}): the paper's outcome, and in "
                  "how many of our seeds the defense stopped the attack. **disagrees**: in every seed (a finding "
                  "at this scale); **mixed**: in some seeds only (seed noise, not a finding). A collapsed model "
                  "never stops an attack; on a row whose attack failed to implant (above) a stop means nothing. "
                  "Counts: " +
                  ", ".join(f"{v} {int((pat['verdict'] == v).sum())}" for v in ("agrees", "disagrees", "mixed")) +
                  ".", "", _pattern_grid(pat_cells, datasets, attacks), ""]

    order_a = {a: i for i, a in enumerate(attacks + ["average"])}
    order_f = {f: i for i, f in enumerate(PAPER_DEFENSES)}

    def ordered(df: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
        return df.sort_values(KEY + extra, key=lambda s: s.map(order_a) if s.name == "attack" else
                              (s.map(order_f) if s.name == "defense" else s)).reset_index(drop=True)

    out_summary = summary
    if len(powers):
        wide = powers.pivot_table(index=KEY, columns="metric", values=["detectable", "seeds_needed"], aggfunc="first")
        wide.columns = [f"{m}_{stat}" for stat, m in wide.columns]
        out_summary = out_summary.merge(wide.reset_index(), on=KEY, how="left")
    if len(diff):
        out_summary = out_summary.merge(
            diff[KEY + [c for c in diff.columns if c.endswith(("_paper", "_diff", "_p", "_verdict"))]], on=KEY,
            how="left")
    out_summary.insert(0, "profile", profile)
    out_summary.insert(1, "paper_dataset", out_summary["dataset"].map(compared))
    return {"table.md": "\n".join(lines),
            "table.csv": ordered(found.assign(profile=profile), ["seed"])[["profile"] + LONG_COLUMNS].to_csv(
                index=False, float_format="%.10g"),
            "summary.csv": ordered(out_summary, []).round(4).to_csv(index=False)}


def read_long(path_or_text: Path | str, source: str = "") -> pd.DataFrame:
    """A long per-seed table (``table.csv``) from a file or its text; a one-line error when it is not one.

    A table written before seeds were an axis (one row a cell, no ``seed`` column) reads as one seed (-1) whose
    environment is unrecorded, so it can still be compared, with tolerance verdicts only.
    """
    import io

    text = Path(path_or_text).read_text() if isinstance(path_or_text, Path) else path_or_text
    try:
        df = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise UserError(f"{source or path_or_text}: not a table.csv ({type(e).__name__}); pass a table.csv, a "
                        "metrics folder or REV:path") from None
    if "seed" not in df.columns and {"dataset", "attack", "defense", "acc", "asr"} <= set(df.columns):
        df["seed"] = -1  # a table from before seeds were an axis: one unnamed seed, its environment unrecorded
    missing = {"dataset", "attack", "defense", "seed", "acc", "asr"} - set(df.columns)
    if missing:
        raise UserError(f"{source or path_or_text}: not a per-seed table.csv (missing {', '.join(sorted(missing))}); "
                        "pass the table.csv that `asd-repro table` writes, a metrics folder or REV:path")
    for col in ("n_clean", "n_asr", "num_classes", "environment"):
        if col not in df.columns:
            df[col] = float("nan") if col != "environment" else ""
    df["environment"] = df["environment"].fillna("")
    return df[df["attack"] != "average"][LONG_COLUMNS].reset_index(drop=True)
