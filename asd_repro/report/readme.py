"""The README's results table, generated from a committed ``summary.csv``, never typed.

``results_block(summary_csv)`` renders one compact markdown table: a row per attack (and the average), a column per
defense, each cell "ACC / ASR" (ACC mean and ASR median over seeds, one decimal). ``python -m
asd_repro.report.readme`` rewrites the block between the markers ``<!-- results:begin -->`` and
``<!-- results:end -->`` in README.md; with ``--check`` it changes nothing and exits 1 when the block is stale.

Only these columns of ``summary.csv`` are read: profile, dataset, attack, defense, seeds, acc_n, acc_mean,
asr_median, collapsed, attack_succeeded. Other columns may come and go.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from asd_repro.report.table import label

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
ATTACKS = ("badnets", "blend", "wanet", "iab", "refool", "clb", "average")
DEFENSES = ("none", "fp", "nad", "abl", "dbd", "asd")
README = Path("README.md")
SUMMARY = Path("results/mini/summary.csv")


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    value = float(text)
    return None if math.isnan(value) else value


def _ordered(names: list[str], order: tuple[str, ...]) -> list[str]:
    """``names`` in ``order``, then any other name in the order it first appears."""
    seen = list(dict.fromkeys(names))
    return [n for n in order if n in seen] + [n for n in seen if n not in order]


def _cell(row: dict[str, str] | None, n_seeds: int) -> str:
    if row is None:
        return ""  # not run: empty, never 0
    acc, asr = _number(row.get("acc_mean")), _number(row.get("asr_median"))
    text = " / ".join("" if v is None else f"{v:.1f}" for v in (acc, asr)).strip()
    n = _number(row.get("acc_n"))
    if n is not None and int(n) < n_seeds:
        text += f" ({int(n)} seeds)"
    collapsed = _number(row.get("collapsed"))
    if collapsed:
        text += f" (collapsed {int(collapsed)}/{int(n) if n is not None else n_seeds})"
    return text


def results_block(summary_csv: Path) -> str:
    """The README's results table (markdown, ending in a newline) from one profile's ``summary.csv``."""
    with open(summary_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{summary_csv}: no rows")
    profile = rows[0].get("profile") or "mini"
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    attacks = _ordered([r["attack"] for r in rows], ATTACKS)
    defenses = _ordered([r["defense"] for r in rows], DEFENSES)
    cells = {(r["dataset"], r["attack"], r["defense"]): r for r in rows}
    n_seeds = max(int(_number(r.get("acc_n")) or 0) for r in rows)
    seeds = sorted({s for r in rows for s in (r.get("seeds") or "").split()}, key=lambda s: (len(s), s))

    failed = []  # rows whose attack did not implant (No-Defense ASR >= 50) in every seed
    table = []
    head = (["Dataset"] if len(datasets) > 1 else []) + ["Attack"] + [label(d) for d in defenses]
    table.append("| " + " | ".join(head) + " |")
    table.append("|" + "---|" * len(head))
    for dataset in datasets:
        for i, attack in enumerate(a for a in attacks if any((dataset, a, d) in cells for d in defenses)):
            name = label(attack)
            none = cells.get((dataset, attack, "none"))
            if none is not None and attack != "average":
                k, n = _number(none.get("attack_succeeded")), _number(none.get("acc_n"))
                if k is not None and n is not None and k < n:
                    name += " †"
                    failed.append(f"{label(attack)} {int(k)}/{int(n)}")
            first = ([label(dataset) if i == 0 else ""] if len(datasets) > 1 else [])
            table.append("| " + " | ".join(first + [name] + [_cell(cells.get((dataset, attack, d)), n_seeds)
                                                             for d in defenses]) + " |")

    where = ", ".join(label(d) for d in datasets)
    lines = [f"ACC mean / ASR median (%) over seeds {', '.join(seeds)} (profile `{profile}`, {where}), from "
             f"`results/{profile}/summary.csv`.", "", *table, ""]
    if failed:
        lines += [f"† The attack implanted (No-Defense ASR >= 50) in fewer than all seeds ({', '.join(failed)}): a "
                  "low ASR on that row is no defense's success.", ""]
    lines.append(f"Seeds, spreads, power, claims and the diff against the paper: "
                 f"[results/{profile}/table.md](results/{profile}/table.md).")
    return "\n".join(lines) + "\n"


def current_block(text: str, where: str = "README.md") -> str:
    """What stands between the markers in ``text``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{where}: no {BEGIN} ... {END} block")
    return text[start + len(BEGIN):end].lstrip("\n")


def replace_block(text: str, block: str, where: str = "README.md") -> str:
    """``text`` with the block between the markers replaced by ``block``."""
    current_block(text, where)  # raises when the markers are missing
    start, end = text.find(BEGIN), text.find(END)
    return text[:start + len(BEGIN)] + "\n" + block + text[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m asd_repro.report.readme", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when the block is stale")
    ap.add_argument("--readme", type=Path, default=README, help="the README to rewrite (default: %(default)s)")
    ap.add_argument("--summary", type=Path, default=SUMMARY, help="the summary.csv (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        text = args.readme.read_text()
        new = replace_block(text, results_block(args.summary), str(args.readme))
    except (OSError, ValueError, KeyError) as e:
        print(f"asd-repro: error: {e}", file=sys.stderr)
        return 2
    if new == text:
        print(f"{args.readme}: the results block is up to date")
        return 0
    if args.check:
        print(f"{args.readme}: the results block is stale against {args.summary}; run "
              "python -m asd_repro.report.readme", file=sys.stderr)
        return 1
    args.readme.write_text(new)
    print(f"{args.readme}: the results block rewritten from {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
