"""Seed statistics of a table: per-cell summaries, collapsed models, the binomial SE of a test-set metric.

A cell is one (dataset, attack, defense) over its seeds. ACC is summarised as mean +- sample std (n); ASR, which
is bimodal (a defense works or it does not), as median [min-max] with the number of seeds in which the attack
succeeded. Whether two groups of seeds differ is decided by the calibrated test in ``report/gate.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# the metric each cell reports, and which statistic stands for it
CENTRE = {"acc": "mean", "asr": "median"}


@dataclass(frozen=True)
class Noise:
    """What a seed's value means: a collapsed model, a succeeded attack (``stages.table.*`` options)."""

    collapse_margin: float = 0.1  # ACC <= chance + this x (100 - chance) is a collapsed model (19% of 10 classes)
    asr_success: float = 50.0  # a seed's attack succeeded at ASR >= this (%)

    def collapsed(self, acc: float | None, num_classes: int | None) -> bool:
        if acc is None or not num_classes or (isinstance(acc, float) and math.isnan(acc)):
            return False
        return acc <= collapse_threshold(num_classes, self.collapse_margin)

    def collapsed_rows(self, rows: Any) -> list[bool]:
        """Which rows of a long table (columns ``acc``, ``num_classes``) hold a collapsed model."""
        return [self.collapsed(a, None if c is None or c != c else int(c)) for a, c in zip(rows["acc"],
                                                                                        rows["num_classes"])]


def collapse_threshold(num_classes: int, margin: float) -> float:
    """The clean ACC (%) at or below which a model is collapsed: ``margin`` of the way from chance to 100%."""
    chance = 100.0 / num_classes
    return chance + margin * (100.0 - chance)


def binomial_se(p: float, n: float) -> float:
    """Standard error (points) of a percentage ``p`` measured on ``n`` samples."""
    q = min(max(p / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(q * (1 - q) / n) if n else float("nan")


def sample_std(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    return float(v.std(ddof=1)) if len(v) >= 2 else float("nan")


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """The pooled sample std of two groups of seeds (nan when neither has two values)."""
    groups = [np.asarray(g, dtype=float) for g in (a, b)]
    dof = sum(len(g) - 1 for g in groups if len(g) >= 2)
    if dof == 0:
        return float("nan")
    return float(math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups if len(g) >= 2) / dof))


def centre(metric: str, values: Sequence[float]) -> float:
    v = np.asarray(values, dtype=float)
    if not len(v):
        return float("nan")
    return float(np.median(v) if CENTRE[metric] == "median" else v.mean())


def summarise(values: Sequence[float], metric: str) -> dict[str, Any]:
    """n, centre (mean for ACC, median for ASR), std, min and max of one cell's per-seed values."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    return {"n": len(v), "centre": centre(metric, v), "mean": float(np.mean(v)) if v else float("nan"),
            "median": float(np.median(v)) if v else float("nan"), "std": sample_std(v),
            "min": min(v) if v else float("nan"), "max": max(v) if v else float("nan")}


def fmt_acc(s: dict[str, Any], decimals: int = 1) -> str:
    if not s["n"]:
        return ""
    std = "" if math.isnan(s["std"]) else f" ± {s['std']:.{decimals}f}"
    return f"{s['mean']:.{decimals}f}{std} ({s['n']})"


def fmt_asr(s: dict[str, Any], succeeded: int | None, decimals: int = 1) -> str:
    """``median [min–max] k/n``: k of the n seeds in which the attack succeeded (omitted when ``succeeded`` is None)."""
    if not s["n"]:
        return ""
    spread = "" if s["n"] < 2 else f" [{s['min']:.{decimals}f}–{s['max']:.{decimals}f}]"
    count = "" if succeeded is None else f" {succeeded}/{s['n']}"
    return f"{s['median']:.{decimals}f}{spread}{count}"
