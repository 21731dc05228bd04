"""Table layout, seed statistics, averages, empty and collapsed cells, power, and paper diffs with the calibrated
gate's verdicts, on fixed metrics."""

import json
from pathlib import Path

import pandas as pd
import pytest

from asd_repro.report.stats import Noise, binomial_se, pooled_std
from asd_repro.report.table import assemble, collect_metrics, load_paper, read_long
from conftest import write_metrics

REPO = Path(__file__).resolve().parents[1]
@pytest.fixture
def metrics_dir(tmp_path):
    return write_metrics(tmp_path, {
        ("cifar10", "badnets", "none"): {1: (95.0, 99.0), 2: (94.0, 100.0), 3: (96.0, 98.0)},
        ("cifar10", "blend", "none"): {1: (93.0, 97.0), 2: (93.0, 97.0), 3: (93.0, 97.0)},
        ("cifar10", "badnets", "asd"): {1: (93.4, 1.2), 2: (93.0, 0.5), 3: (12.0, 0.0)},
    })


def _cells(md: str, row: str) -> list[str]:
    line = next(line for line in md.splitlines() if f"| {row}" in line)
    return [c.strip() for c in line.strip("|").split("|")]


def test_table_shows_seed_statistics_averages_and_paper_verdicts(metrics_dir):
    found = collect_metrics(metrics_dir, ["cifar10"], ["badnets", "blend"], ["none", "asd"], [1, 2, 3])
    assert len(found) == 9 and set(found["seed"]) == {1, 2, 3}
    files = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "test", ["cifar10"], {},
                     decimals=1, noise=Noise())
    md = files["table.md"]
    header = next(line for line in md.splitlines() if line.startswith("| Dataset"))
    assert header.split("|")[3].strip() == "No Defense ACC" and "ASD ASR" in header
    badnets = _cells(md, "BadNets")
    assert badnets[2:4] == ["95.0 ± 1.0 (3)", "99.0 [98.0–100.0] 3/3"]  # mean ± sample std (n); median [min–max] k/n
    assert badnets[-2] == "66.1 ± 46.9 (3) collapsed 1/3", "a collapsed seed is marked, never a success"
    blend = _cells(md, "Blend")
    assert blend[-2:] == ["", ""], "a cell that was not run is empty, never 0"
    assert all(c == "" for c in _cells(md, "WaNet")[2:])

    summary = pd.read_csv(pd.io.common.StringIO(files["summary.csv"]))
    none = summary[(summary.attack == "badnets") & (summary.defense == "none")].iloc[0]
    assert none.acc_paper == 94.9 and none.asr_paper == 100
    assert none.acc_diff == pytest.approx(0.1) and none.asr_diff == pytest.approx(-1.0)
    # three seeds of std 1.0 against one number: 0.1 points is no evidence, and 3 points could not have been seen
    assert none.acc_p > 0.05 and none.acc_verdict == "underpowered"
    asd = summary[(summary.attack == "badnets") & (summary.defense == "asd")].iloc[0]
    assert asd.collapsed == 1 and asd.acc_verdict == "underpowered"  # a collapsed seed: bimodal, no mean to compare
    # power: every cell says what it could detect, and how many seeds would make it readable
    assert none.acc_detectable > 3.0 and none.acc_seeds_needed > 3 and "## Power" in md
    avg = summary[(summary.attack == "average") & (summary.defense == "none")].iloc[0]
    assert avg.acc_mean == pytest.approx(94.0) and avg.asr_median == pytest.approx(98.0)
    assert avg.acc_paper == pytest.approx(94.5)  # the paper's average over the attacks that were run

    long = read_long(files["table.csv"], "table.csv")
    assert len(long) == 9 and list(long.sort_values("seed").query("defense == 'asd'").acc) == [93.4, 93.0, 12.0]


def test_a_failed_attack_is_marked_on_its_row(tmp_path):
    found = collect_metrics(write_metrics(tmp_path, {("cifar10", "wanet", "none"): {1: (95.0, 58.9), 2: (95.0, 96.0)},
                                                     ("cifar10", "wanet", "asd"): {1: (94.0, 0.5), 2: (94.0, 0.4)}}),
                            ["cifar10"], ["wanet"], ["none", "asd"])
    md = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "t", ["cifar10"], {})["table.md"]
    assert "**Attack failed**" in md and "WaNet (1/2 seeds)" in md


def test_paper_diff_beyond_its_noise_differs(tmp_path):
    seeds = {1: (80.0, 100.0), 2: (80.2, 100.0), 3: (79.8, 99.9), 4: (80.1, 100.0)}
    found = collect_metrics(write_metrics(tmp_path, {("cifar10", "badnets", "none"): seeds}),
                            ["cifar10"], ["badnets"], ["none"])
    files = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "t", ["cifar10"], {})
    row = pd.read_csv(pd.io.common.StringIO(files["summary.csv"])).iloc[0]
    # ACC 80.0 against the paper's 94.9: the seeds' std is floored at the binomial SD of 80% on 1,000 images
    assert row.acc_verdict == "differs" and row.acc_p < 0.05
    assert row.asr_verdict == "consistent"  # 99.975 against 100.0, and 20 points would have been seen
    assert "-14.9 **differs**" in files["table.md"]


def test_stand_in_dataset_is_labelled(tmp_path):
    found = collect_metrics(write_metrics(tmp_path, {("mnist5k", "badnets", "none"): {100: (98.0, 100.0)}}),
                            ["mnist5k"], ["badnets"], ["none"])
    files = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "mini", ["mnist5k"],
                     {"mnist5k": "cifar10"})
    assert "stand-in" in files["table.md"] and "98.0 (1)" in files["table.md"]
    row = pd.read_csv(pd.io.common.StringIO(files["summary.csv"])).iloc[0]
    assert row.paper_dataset == "cifar10" and row.acc_diff == pytest.approx(98.0 - 94.9)


def test_no_paper_row_means_no_diff(tmp_path):
    found = collect_metrics(write_metrics(tmp_path, {("fashion_mnist", "blend", "none"): {1: (90.0, 99.0)}}),
                            ["fashion_mnist"], ["blend"], ["none"])
    files = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "x", ["fashion_mnist"], {})
    assert "## Paper" not in files["table.md"] and "acc_diff" not in files["summary.csv"]


def test_metrics_without_seeds_are_a_clear_error(tmp_path):
    from asd_repro.core.errors import UserError

    p = tmp_path / "cifar10" / "badnets" / "none.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"acc": 95.0, "asr": 99.0}))
    with pytest.raises(UserError, match="no per-seed entries"):
        collect_metrics(tmp_path, ["cifar10"], ["badnets"], ["none"])


def test_noise_model_on_hand_computed_values():
    assert binomial_se(97.0, 1000) == pytest.approx(0.5394, abs=1e-4)  # ~0.5 points at 97% on 1,000 images
    assert pooled_std([1.0, 3.0], [2.0, 2.0, 2.0]) == pytest.approx((2.0 / 3.0) ** 0.5)
    noise = Noise(collapse_margin=0.1)
    assert noise.collapsed(19.0, 10) and not noise.collapsed(19.1, 10)  # 10 + 0.1 x 90
    assert noise.collapsed(55.0, 2) and not noise.collapsed(56.0, 2)  # 50 + 0.1 x 50


def test_seed_noise_per_defense_column(metrics_dir):
    from asd_repro.report.table import noise_by_defense

    found = collect_metrics(metrics_dir, ["cifar10"], ["badnets", "blend"], ["none", "asd"])
    noise = noise_by_defense(found).set_index("defense")
    # none: BadNets ACC 95/94/96 (std 1.0, 2 dof), Blend 93/93/93 (0, 2 dof): pooled sqrt(2 / 4)
    assert noise.loc["none", "acc_pooled_std"] == pytest.approx(0.5 ** 0.5)
    assert noise.loc["none", "acc_widest_std"] == pytest.approx(1.0)
    md = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "t", ["cifar10"], {})["table.md"]
    assert "## Seed noise" in md and "| CIFAR-10  | No Defense | 0.7" in md


def test_pattern_against_the_paper_separates_findings_from_seed_noise(tmp_path):
    from asd_repro.report.table import pattern

    # paper (CIFAR-10): FP fails on Blend (77.1), ASD stops Blend (1.6), NAD stops Blend (3.4)
    found = collect_metrics(write_metrics(tmp_path, {
        ("cifar10", "blend", "fp"): {1: (95.0, 20.0), 2: (95.0, 30.0), 3: (95.0, 10.0)},  # stops: disagrees
        ("cifar10", "blend", "asd"): {1: (95.0, 0.5), 2: (95.0, 90.0), 3: (95.0, 0.2)},   # 2 of 3: mixed
        ("cifar10", "blend", "nad"): {1: (10.0, 0.0), 2: (95.0, 1.0), 3: (95.0, 2.0)},    # a collapsed seed
    }), ["cifar10"], ["blend"], ["fp", "asd", "nad"])
    ref = load_paper(REPO / "reference" / "paper_table.csv")
    pat = pattern(found, ref[ref.dataset == "cifar10"], Noise()).set_index("defense")
    assert (pat.loc["fp", "paper"], pat.loc["fp", "stopped"], pat.loc["fp", "verdict"]) == ("fails", 3, "disagrees")
    assert (pat.loc["asd", "stopped"], pat.loc["asd", "verdict"]) == (2, "mixed")
    assert (pat.loc["nad", "stopped"], pat.loc["nad", "verdict"]) == (2, "mixed"), "a collapsed model stops nothing"
    md = assemble(found, ref, "t", ["cifar10"], {})["table.md"]
    assert "fails; ours 3/3: **disagrees**" in md and "stops; ours 2/3: **mixed**" in md
