"""Join per-cell metrics with the paper's table and render it in the paper's layout.

Rows are dataset x attack plus an Average row per dataset; columns are defense x {ACC, ASR}. A cell
that was not run is empty, never 0. Averages are over the attacks that were run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from asd_repro.errors import UserError

PAPER_ATTACKS = ["badnets", "blend", "wanet", "iab", "refool", "clb"]
PAPER_DEFENSES = ["none", "fp", "nad", "abl", "dbd", "asd"]
LABELS = {"none": "No Defense", "fp": "FP", "nad": "NAD", "abl": "ABL", "dbd": "DBD", "asd": "ASD",
          "badnets": "BadNets", "blend": "Blend", "wanet": "WaNet", "iab": "IAB", "refool": "Refool", "clb": "CLB",
          "average": "Average", "cifar10": "CIFAR-10", "gtsrb": "GTSRB", "imagenet30": "ImageNet-30",
          "mnist5k": "mnist5k", "fashion_mnist": "Fashion-MNIST"}
METRICS = ("acc", "asr")


def collect_metrics(folder: Path, datasets: list[str], attacks: list[str], defenses: list[str]) -> pd.DataFrame:
    """Read ``<folder>/<dataset>/<attack>/<defense>.json`` for the requested cells that exist."""
    rows = []
    for d in datasets:
        for a in attacks:
            for f in defenses:
                path = folder / d / a / f"{f}.json"
                if not path.exists():
                    continue
                try:
                    m = json.loads(path.read_text())
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}: not valid JSON ({e}); re-run its evaluate stage (dvc repro -f)") from None
                rows.append({"dataset": d, "attack": a, "defense": f, "acc": m.get("acc"), "asr": m.get("asr")})
    return pd.DataFrame(rows, columns=["dataset", "attack", "defense", "acc", "asr"])


def load_paper(path: Path) -> pd.DataFrame:
    try:
        paper = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: cannot read the paper's table ({type(e).__name__}); restore it from git") from None
    missing = {"dataset", "attack", "defense", "acc", "asr"} - set(paper.columns)
    if missing:
        raise UserError(f"{path}: missing columns {sorted(missing)}; restore it from git")
    return paper[paper["attack"] != "average"]


def with_averages(long: pd.DataFrame) -> pd.DataFrame:
    """Append, per dataset and defense, the mean over the attacks that have a value."""
    if long.empty:
        return long
    avg = long.groupby(["dataset", "defense"], as_index=False)[list(METRICS)].mean()
    avg["attack"] = "average"
    return pd.concat([long, avg[long.columns]], ignore_index=True)


def wide(long: pd.DataFrame, datasets: list[str], attacks: list[str]) -> pd.DataFrame:
    """Paper layout: index (dataset, attack) incl. Average, columns (defense, ACC/ASR); empty when not run."""
    rows = pd.MultiIndex.from_tuples([(d, a) for d in datasets for a in attacks + ["average"]],
                                     names=["dataset", "attack"])
    cols = pd.MultiIndex.from_tuples([(f, m) for f in PAPER_DEFENSES for m in METRICS])
    table = pd.DataFrame(index=rows, columns=cols, dtype=float)
    for r in long.itertuples():
        if (r.dataset, r.attack) in table.index and r.defense in PAPER_DEFENSES:
            for m in METRICS:
                table.loc[(r.dataset, r.attack), (r.defense, m)] = getattr(r, m)
    return table


def _markdown(table: pd.DataFrame, decimals: int, signed: bool = False) -> str:
    header = ["Dataset", "Attack"] + [f"{LABELS.get(f, f)} {m.upper()}" for f, m in table.columns]
    body = []
    last = None
    for (d, a), values in table.iterrows():
        cells = ["" if pd.isna(v) else (f"{v:+.{decimals}f}" if signed else f"{v:.{decimals}f}") for v in values]
        body.append([LABELS.get(d, d) if d != last else "", LABELS.get(a, a)] + cells)
        last = d
    from tabulate import tabulate

    return tabulate(body, headers=header, tablefmt="pipe", disable_numparse=True)


def assemble(found: pd.DataFrame, paper: pd.DataFrame, profile: str, datasets: list[str],
             paper_dataset: dict[str, str], decimals: int = 1) -> dict[str, str]:
    """Return the output files' texts: table.md (ours, paper, diff) and table.csv (long, with paper and diff)."""
    attacks = PAPER_ATTACKS + sorted(set(found["attack"]) - set(PAPER_ATTACKS))
    ours = with_averages(found)
    compared = {d: (d if d in set(paper["dataset"]) else paper_dataset.get(d)) for d in datasets}
    ref_rows = []
    for d, ref in compared.items():
        if ref is None:
            continue
        part = paper[paper["dataset"] == ref].copy()
        part["dataset"] = d
        ref_rows.append(part)
    ref = pd.concat(ref_rows, ignore_index=True) if ref_rows else paper.iloc[0:0]
    ref_ran = ref.merge(found[["dataset", "attack", "defense"]], on=["dataset", "attack", "defense"])
    merged = ours.merge(with_averages(ref_ran[["dataset", "attack", "defense", *METRICS]]),
                        on=["dataset", "attack", "defense"], how="left", suffixes=("", "_paper"))
    for m in METRICS:
        merged[f"{m}_diff"] = merged[m] - merged[f"{m}_paper"]
    merged.insert(0, "paper_dataset", merged["dataset"].map(compared))
    merged.insert(0, "profile", profile)

    lines = [f"# ASD reproduction: profile `{profile}`", "",
             "ACC: clean test accuracy (%). ASR: attack success rate (%) on triggered test images whose true class "
             "is not the target. Final-epoch models (no test-set checkpoint selection). Empty cells were not run. "
             "Averages are over the attacks that were run. Our choices that differ from the original papers are "
             "listed in [DEVIATIONS.md](../../DEVIATIONS.md).", "",
             "## Ours", "", _markdown(wide(ours, datasets, attacks), decimals), ""]
    if len(ref):
        stand_ins = {d: r for d, r in compared.items() if r is not None and r != d}
        note = "; ".join(f"our {LABELS.get(d, d)} is compared with the paper's {LABELS.get(r, r)}"
                         for d, r in stand_ins.items())
        lines += ["## Paper", "", "The paper's values for the same cells" + (f" ({note}: a stand-in, not the same "
                  "dataset)" if note else "") + ".", "",
                  _markdown(wide(with_averages(ref), datasets, attacks), decimals), "",
                  "## Ours minus paper", "", "Only cells that were run; the Average row compares the same attacks.",
                  "", _markdown(wide(merged.assign(acc=merged["acc_diff"], asr=merged["asr_diff"]),
                                     datasets, attacks), decimals, signed=True), ""]
    order = {a: i for i, a in enumerate(attacks + ["average"])}
    merged = merged.sort_values(["dataset", "attack", "defense"],
                                key=lambda s: s.map(order) if s.name == "attack" else
                                (s.map({f: i for i, f in enumerate(PAPER_DEFENSES)}) if s.name == "defense" else s))
    return {"table.md": "\n".join(lines), "table.csv": merged.round(4).to_csv(index=False)}
