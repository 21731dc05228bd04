"""The calibrated gate: is a cell's metric different between two groups of seeds, at a known false-alarm rate?

Used by ``asd-repro compare`` (a regenerated table against a committed one), by the table's diff against the paper
(our seeds against the paper's one run) and by the table's power section. Per cell and metric (ACC, ASR):

- **Two routes.** When the values of both groups together straddle the metric's mode boundary (ASR: the attack
  succeeded at >= ``Noise.asr_success``; ACC: a collapsed model at or below ``collapse_threshold``), the metric is
  bimodal there and a mean says nothing: the test is Fisher's exact test on how many seeds sit in each mode
  (``scipy.stats.fisher_exact``). Otherwise it is a two-sample t-test on the per-seed values with the pooled
  variance (``scipy.stats.ttest_ind_from_stats``), each group's std floored at the binomial measurement SD of
  one seed's value on its test images (Agresti-Coull, so that 0% and 100% still have one): a seed cannot be
  measured more precisely than its test set allows, so two groups that agree by chance do not make a tiny
  variance.
- **Many cells at once.** The p-values of all cell-metrics compared are corrected together (Holm by default,
  ``statsmodels.stats.multitest.multipletests``), so ``alpha`` is the chance that a comparison in which nothing
  changed reports any change at all (the family-wise false-alarm rate), not a per-cell rate.
- **Changed** needs a corrected p below ``alpha`` and a difference of at least ``min_effect`` points.
- **Power.** ``detectable`` is the smallest difference the t-route would call changed at these seeds and this
  spread (the Bonferroni bound of Holm's first step); a cell is **underpowered** when that exceeds ``readable``
  (3 ACC points, 20 ASR points by default) or, on the Fisher route, when even every seed changing mode could not
  reach significance. ``seeds_needed`` is the number of seeds a side that would make it readable (same spread).

Calibrated by experiment in ``benchmarks/gate_calibration.py`` (disjoint-seed splits of a committed run, and a
simulation of no-change regenerations drawn from each cell's measured spread).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from asd_repro.report.stats import Noise, binomial_se, collapse_threshold

MAX_SEEDS = 30  # seeds_needed beyond this is reported as "> MAX_SEEDS"


@dataclass(frozen=True)
class Gate:
    """The knobs of the calibrated comparison (``asd-repro compare`` options)."""

    alpha: float = 0.05  # family-wise false-alarm rate of one whole comparison
    correction: str = "holm"  # a statsmodels multipletests method: holm, bonferroni, fdr_bh, ...
    min_effect: float = 1.0  # points: a smaller difference is never "changed"
    readable_acc: float = 3.0  # points of ACC a readable cell can detect
    readable_asr: float = 20.0  # points of ASR a readable cell can detect

    def readable(self, metric: str) -> float:
        return self.readable_acc if metric == "acc" else self.readable_asr


def _clean(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(list(values), dtype=float)
    return v[~np.isnan(v)]


def mode_boundary(metric: str, num_classes: float | None, noise: Noise) -> float | None:
    """The value that splits a bimodal metric: attack succeeded (ASR), collapsed model (ACC)."""
    if metric == "asr":
        return noise.asr_success
    if num_classes is None or (isinstance(num_classes, float) and math.isnan(num_classes)) or not num_classes:
        return None
    return collapse_threshold(int(num_classes), noise.collapse_margin)


def upper_mode(values: np.ndarray, metric: str, boundary: float) -> np.ndarray:
    """Which values sit in the upper mode: the attack succeeded (ASR), the model is not collapsed (ACC)."""
    return values >= boundary if metric == "asr" else values > boundary


def _straddles(values: np.ndarray, metric: str, boundary: float | None) -> bool:
    """Whether ``values`` sit on both sides of the mode boundary (a bimodal metric there)."""
    if boundary is None:
        return False
    upper = upper_mode(values, metric, boundary)
    return bool(upper.any() and not upper.all())


def _blank() -> dict:
    """An assessment before any test: no route, no p, nothing detectable."""
    return {"route": "", "boundary": float("nan"), "p": float("nan"), "sd": float("nan"), "dof": 0,
            "detectable": float("inf"), "readable": False, "seeds_needed": float("inf")}


def measurement_sd(p: float, n_images: float | None) -> float:
    """SD (points) of one seed's percentage measured on ``n_images`` images (Agresti-Coull: never 0 at 0 or 100%)."""
    if not n_images or math.isnan(n_images) or math.isnan(p):
        return 0.0
    q = (min(max(p / 100.0, 0.0), 1.0) * n_images + 2.0) / (n_images + 4.0)  # two successes and two failures added
    return binomial_se(100.0 * q, n_images)


def _floored_sd(g: np.ndarray, floor: float) -> float:
    """A group's sample SD floored at ``floor``; 0 for a group of one, which has none (and no weight when pooled)."""
    return max(float(g.std(ddof=1)), floor) if len(g) >= 2 else 0.0


@lru_cache(maxsize=None)
def _fisher_min_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p of Fisher's exact test between groups of n_a and n_b (every seed in one mode each)."""
    from scipy.stats import fisher_exact

    if not n_a or not n_b:
        return 1.0
    return float(fisher_exact([[n_a, 0], [0, n_b]]).pvalue)


@lru_cache(maxsize=None)
def _critical_t(alpha_each: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.isf(alpha_each / 2.0, dof)) if dof > 0 else float("inf")


def seeds_needed(metric: str, route: str, sd: float, gate: Gate, m: int) -> float:
    """Seeds a side (both sides equal) at which the cell becomes readable with its spread; inf beyond MAX_SEEDS."""
    alpha_each = gate.alpha / max(m, 1)
    for n in range(2, MAX_SEEDS + 1):
        if route == "modes":
            if _fisher_min_p(n, n) <= alpha_each:
                return n
        elif not math.isnan(sd) and _critical_t(alpha_each, 2 * n - 2) * sd * math.sqrt(2.0 / n) <= gate.readable(metric):
            return n
    return float("inf")


def assess_against(a: Sequence[float], value: float, metric: str, n_images: float | None,
                   num_classes: float | None, noise: Noise, gate: Gate, m: int) -> dict:
    """One cell-metric against a reported number (the paper's): a one-sample t-test of our seeds, floored as above.

    Where our own seeds are bimodal a mean cannot be compared with one number: the route is "modes" and the cell is
    underpowered.
    """
    from scipy.stats import t

    a = _clean(a)
    out = _blank()
    if not len(a) or value is None or math.isnan(value):
        return out
    boundary = mode_boundary(metric, num_classes, noise)
    if _straddles(a, metric, boundary):
        out.update(route="modes", boundary=boundary)
        return out
    out["route"] = "t"
    if len(a) < 2:
        return out
    sd = _floored_sd(a, measurement_sd(float(a.mean()), n_images))
    dof, se = len(a) - 1, sd / math.sqrt(len(a))
    stat = (float(a.mean()) - value) / se
    out.update(sd=sd, dof=dof, p=float(2.0 * t.sf(abs(stat), dof)))
    out["detectable"] = max(_critical_t(gate.alpha / max(m, 1), dof) * se, gate.min_effect)
    out["readable"] = out["detectable"] <= gate.readable(metric)
    return out


def assess_cell(a: Sequence[float], b: Sequence[float], metric: str, n_images: float | None,
                num_classes: float | None, noise: Noise, gate: Gate, m: int, power: bool = True) -> dict:
    """One cell-metric: route, raw p, detectable difference, readable, seeds needed (``m``: cells tested at once).

    ``power=False`` skips ``seeds_needed`` (the calibration's simulation calls this many thousand times).
    """
    from scipy.stats import fisher_exact, ttest_ind_from_stats

    a, b = _clean(a), _clean(b)
    out = _blank()
    if not len(a) or not len(b):
        return out
    alpha_each = gate.alpha / max(m, 1)
    boundary = mode_boundary(metric, num_classes, noise)
    both = np.concatenate([a, b])
    if _straddles(both, metric, boundary):
        k_a, k_b = int(upper_mode(a, metric, boundary).sum()), int(upper_mode(b, metric, boundary).sum())
        out.update(route="modes", boundary=boundary, p=float(fisher_exact([[k_a, len(a) - k_a], [k_b, len(b) - k_b]]).pvalue))
        out["readable"] = _fisher_min_p(len(a), len(b)) <= alpha_each
        if power:
            out["seeds_needed"] = seeds_needed(metric, "modes", float("nan"), gate, m)
        return out
    floor = measurement_sd(float(both.mean()), n_images)
    dof = len(a) + len(b) - 2
    out.update(route="t", dof=dof)
    if dof == 0:
        if power:
            out["seeds_needed"] = seeds_needed(metric, "t", floor, gate, m)
        return out
    # the floored SDs enter scipy's pooled-variance t-test as each group's SD; their pooled SD sizes `detectable`
    sd_a, sd_b = _floored_sd(a, floor), _floored_sd(b, floor)
    sd = math.sqrt(((len(a) - 1) * sd_a ** 2 + (len(b) - 1) * sd_b ** 2) / dof)
    out["sd"] = sd
    scale = math.sqrt(1.0 / len(a) + 1.0 / len(b))
    res = ttest_ind_from_stats(a.mean(), sd_a, len(a), b.mean(), sd_b, len(b), equal_var=True)
    p = float(res.pvalue)
    out["p"] = 1.0 if math.isnan(p) else p  # equal means with zero spread: nothing to see
    out["detectable"] = max(_critical_t(alpha_each, dof) * sd * scale, gate.min_effect)
    out["readable"] = out["detectable"] <= gate.readable(metric)
    if power:
        out["seeds_needed"] = seeds_needed(metric, "t", sd, gate, m)
    return out


def judge(pairs: list[dict], noise: Noise, gate: Gate, power: bool = True) -> pd.DataFrame:
    """Test every cell-metric of ``pairs`` together.

    Each item: ``a`` and ``b`` (per-seed values; or ``a`` and ``value``, a reported number such as the paper's),
    ``metric``, ``n_images``, ``num_classes`` and any other keys, which are carried through. Adds the assessment's
    fields (route, boundary, p, sd, dof, detectable, readable, seeds_needed) and ``p_adj``, corrected over all items.
    """
    from statsmodels.stats.multitest import multipletests

    m = sum(1 for x in pairs if len(_clean(x["a"])) and ("value" in x or len(_clean(x["b"]))))
    rows = []
    for x in pairs:
        if "value" in x:
            res = assess_against(x["a"], x["value"], x["metric"], x.get("n_images"), x.get("num_classes"), noise,
                                 gate, m)
        else:
            res = assess_cell(x["a"], x["b"], x["metric"], x.get("n_images"), x.get("num_classes"), noise, gate, m,
                              power)
        rows.append({**{k: v for k, v in x.items() if k not in ("a", "b")}, **res})
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["p_adj"] = float("nan")
    tested = df["p"].notna()
    if tested.any():
        df.loc[tested, "p_adj"] = multipletests(df.loc[tested, "p"].to_numpy(float), alpha=gate.alpha,
                                                method=gate.correction)[1]
    return df


def significant(p_adj: float, diff: float, gate: Gate) -> bool:
    return not math.isnan(p_adj) and p_adj < gate.alpha and not math.isnan(diff) and abs(diff) >= gate.min_effect
