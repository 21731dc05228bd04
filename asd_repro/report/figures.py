"""PNG figures of a table, drawn by the table stage (no browser, no network): a picture where people would rather
look than read.

- ``acc_vs_asr.png``: ACC against ASR, one panel per dataset and defense, every seed a point coloured by attack;
  a defense works where its points sit top left.
- ``asd_pool_purity.png``: how many truly poisoned samples sit in ASD's clean pool, epoch by epoch, every attack
  and seed (ground truth, logged for diagnostics only).
- ``curves.png``: test ACC and ASR over the epochs of every defense, every attack and seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from asd_repro.report.stats import Noise
from asd_repro.report.table import PAPER_ATTACKS, PAPER_DEFENSES, label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colours(attacks: list[str]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    order = PAPER_ATTACKS + sorted(set(attacks) - set(PAPER_ATTACKS))
    return {a: cmap(order.index(a) % 10) for a in attacks}


def read_curves(folder: Path | None, datasets: list[str], attacks: list[str], defenses: list[str],
                seeds: list[int]) -> dict[tuple[str, str, str, int], list[dict[str, Any]]]:
    """``curves/<profile>/<dataset>/<attack>/<defense>/s<seed>.json`` of the cells that have one."""
    found = {}
    if folder is None:
        return found
    for d in datasets:
        for a in attacks:
            for f in defenses:
                for s in seeds:
                    path = Path(folder) / d / a / f / f"s{s}.json"
                    if path.is_file():
                        found[(d, a, f, s)] = json.loads(path.read_text())
    return found


def acc_vs_asr(long: pd.DataFrame, out: Path, noise: Noise) -> None:
    plt = _pyplot()
    datasets = list(dict.fromkeys(long["dataset"]))
    defenses = [f for f in PAPER_DEFENSES if f in set(long["defense"])]
    colours = _colours(list(dict.fromkeys(long["attack"])))
    per_row = min(3, len(defenses))
    rows_each = -(-len(defenses) // per_row)
    fig, axes = plt.subplots(len(datasets) * rows_each, per_row, figsize=(3.4 * per_row, 2.9 * rows_each *
                             len(datasets)), squeeze=False, sharex=True, sharey=True)
    for ax in axes.flat:
        ax.set_visible(False)
    for i, d in enumerate(datasets):
        for j, f in enumerate(defenses):
            ax = axes[i * rows_each + j // per_row][j % per_row]
            ax.set_visible(True)
            part = long[(long["dataset"] == d) & (long["defense"] == f)]
            for a, g in part.groupby("attack", sort=False):
                broken = noise.collapsed_rows(g)
                ax.scatter(g["asr"], g["acc"], s=26, color=colours[a], label=label(a), alpha=0.85,
                           edgecolors=[(1, 0, 0, 1) if b else (0, 0, 0, 0) for b in broken], linewidths=1.5)
            ax.set_title(label(f) + (f" ({label(d)})" if len(datasets) > 1 else ""), fontsize=9)
            ax.set_xlim(-3, 103)
            ax.grid(alpha=0.3)
            ax.tick_params(labelbottom=True)
            ax.set_xlabel("ASR (%)")
            if j % per_row == 0:
                ax.set_ylabel("ACC (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("ACC against ASR, every seed a point (top left: the defense works; red edge: collapsed model)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None and r.get("epoch") is not None]
    return [p[0] for p in points], [p[1] for p in points]


def pool_purity(curves: dict, out: Path) -> None:
    plt = _pyplot()
    asd = {k: v for k, v in curves.items() if k[2] == "asd"}
    colours = _colours(list(dict.fromkeys(k[1] for k in asd)))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    shown = set()
    for (d, a, _, s), records in sorted(asd.items()):
        x, y = _series(records, "poisoned_in_clean_pool")
        ax.plot(x, y, color=colours[a], alpha=0.8, marker=".", label=None if a in shown else label(a))
        shown.add(a)
    ax.set_xlabel("epoch")
    ax.set_ylabel("poisoned samples in the clean pool")
    ax.set_title("ASD pool purity, every attack and seed (ground truth, diagnostics only)", fontsize=10)
    ax.grid(alpha=0.3)
    if shown:
        ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def test_curves(curves: dict, out: Path) -> None:
    plt = _pyplot()
    defenses = [f for f in PAPER_DEFENSES if any(k[2] == f for k in curves)]
    colours = _colours(list(dict.fromkeys(k[1] for k in curves)))
    fig, axes = plt.subplots(2, max(1, len(defenses)), figsize=(2.8 * max(1, len(defenses)), 5.2), squeeze=False,
                             sharey="row")
    shown = set()
    for j, f in enumerate(defenses):
        for (d, a, g, s), records in sorted(curves.items()):
            if g != f:
                continue
            for i, key in enumerate(("acc", "asr")):
                x, y = _series(records, key)
                axes[i][j].plot(x, y, color=colours[a], alpha=0.7, marker=".",
                                label=label(a) if (i, a) not in shown else None)
                shown.add((i, a))
        axes[0][j].set_title(label(f), fontsize=9)
        axes[1][j].set_xlabel("epoch")
        for i in range(2):
            axes[i][j].grid(alpha=0.3)
    axes[0][0].set_ylabel("test ACC (%)")
    axes[1][0].set_ylabel("test ASR (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=max(1, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Per-epoch test ACC and ASR, every attack and seed", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(out, dpi=100)
    plt.close(fig)


def draw_all(long: pd.DataFrame, curves_folder: Path | None, out: Path, noise: Noise, datasets: list[str],
             attacks: list[str], defenses: list[str], seeds: list[int]) -> list[str]:
    """Draw every figure into ``out``; returns the file names (no figure for an empty table)."""
    if long.empty:
        return []
    acc_vs_asr(long, out / "acc_vs_asr.png", noise)
    curves = read_curves(curves_folder, datasets, attacks, defenses, seeds)
    pool_purity(curves, out / "asd_pool_purity.png")
    test_curves(curves, out / "curves.png")
    return ["acc_vs_asr.png", "asd_pool_purity.png", "curves.png"]
