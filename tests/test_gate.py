"""The calibrated gate (report/gate.py): false alarms and misses, on hand-made cells and on the committed table."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from asd_repro.report.compare import compare
from asd_repro.report.gate import Gate, assess_against, assess_cell, judge, measurement_sd
from asd_repro.report.stats import Noise
from asd_repro.report.table import read_long
from test_compare import long_table

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "results" / "mini" / "table.csv"
sys.path.insert(0, str(REPO / "benchmarks"))
import gate_calibration  # noqa: E402  (the committed calibration script, run here at a smaller size)


def cell(a, b, metric="asr", m=1, **kw):
    return assess_cell(a, b, metric, 900, 10, Noise(), Gate(**kw), m)


def test_measurement_floor_is_never_zero_and_matches_the_binomial_sd():
    assert measurement_sd(97.0, 1000) == pytest.approx(100 * ((972 / 1004) * (32 / 1004) / 1000) ** 0.5)
    assert 0.1 < measurement_sd(0.0, 900) < 0.2 and 0.1 < measurement_sd(100.0, 900) < 0.2
    # two groups that agree by chance to the last digit are not infinitely precise
    r = cell([0.0, 0.0, 0.0], [0.1, 0.1, 0.1])
    assert r["route"] == "t" and r["sd"] == pytest.approx(measurement_sd(0.05, 900)) and r["p"] > 0.05


def test_a_bimodal_cell_is_judged_by_its_modes_and_a_flip_at_three_seeds_is_not_a_change():
    # every base seed failed, every new seed implanted: at 3 vs 3 Fisher's exact p is 0.1 at best
    r = cell([5.0, 4.0, 6.0], [95.0, 96.0, 94.0])
    assert r["route"] == "modes" and r["p"] == pytest.approx(0.1) and not r["readable"]
    assert r["seeds_needed"] == 4  # 2 / C(8, 4) = 0.029 <= 0.05
    assert cell([5.0, 4.0, 6.0], [95.0, 96.0, 94.0], m=72)["seeds_needed"] == 7  # 2 / C(14, 7) <= 0.05 / 72
    # the same numbers below the boundary are a level shift, which the t-test sees
    assert cell([1.0, 2.0, 1.5], [41.0, 42.0, 41.5])["route"] == "t"


def test_holm_correction_keeps_many_moderate_differences_from_all_failing():
    # 40 cells each moved by about 2.6 seed stds: every raw p is below 0.05, none survives the correction
    cells = {(f"a{i}", "asd"): {1: (90.0, 1.0), 2: (91.0, 1.0), 3: (92.0, 1.0)} for i in range(40)}
    moved = {k: {s: (acc + 2.6, asr) for s, (acc, asr) in v.items()} for k, v in cells.items()}
    res = compare(long_table(cells), long_table(moved, env="other"))
    raw = judge([{"a": [90.0, 91.0, 92.0], "b": [92.6, 93.6, 94.6], "metric": "acc", "n_images": 1000,
                  "num_classes": 10}], Noise(), Gate())
    assert raw["p"].iloc[0] < 0.05
    assert (res["verdict"] != "changed").all()


def test_against_the_paper_one_number_is_a_one_sample_test():
    tight = assess_against([0.2, 0.4, 0.3], 99.4, "asr", 900, 10, Noise(), Gate(), 84)
    assert tight["route"] == "t" and tight["p"] < 1e-4 and tight["readable"]
    mixed = assess_against([2.0, 95.0, 3.0], 90.0, "asr", 900, 10, Noise(), Gate(), 84)
    assert mixed["route"] == "modes" and not mixed["readable"]


@pytest.fixture(scope="module")
def committed():
    return read_long(COMMITTED)


def test_disjoint_seed_splits_of_the_committed_run_give_no_change(committed):
    results = gate_calibration.splits(committed, Gate())
    assert len(results) == 3
    assert all(counts.get("changed", 0) == 0 for _, counts in results)


def test_planted_effects_of_the_papers_size_are_changed_and_nothing_else(committed):
    res = compare(committed, gate_calibration.plant(committed).assign(environment="planted"))
    planted = gate_calibration.planted_cells(res)
    verdicts = res[planted]["verdict"]
    # a planted effect is never passed as noise: it is called changed, or the cell is too noisy at its seeds to
    # read (underpowered: a cell whose seeds spread wider than the planted effect, as a row that implants in only
    # some seeds does)
    assert planted.sum() == 12 and verdicts.isin(["changed", "underpowered"]).all()
    assert (verdicts == "changed").sum() >= 11, verdicts.value_counts()
    assert (res[~planted]["verdict"] != "changed").all()


def test_simulated_no_change_regenerations_rarely_fail(committed):
    # the committed script's simulation at a tenth of its size (fixed draw); the full run prints the rate
    r = gate_calibration.simulate(committed, Gate(), 120, 3, np.random.default_rng(1), smooth=True)
    assert r["fwer"] <= 0.05
