"""Table layout, averages, empty cells and diffs against the paper on fixed metrics."""

import json
from pathlib import Path

import pandas as pd
import pytest

from asd_repro.report.table import assemble, collect_metrics, load_paper

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def metrics_dir(tmp_path):
    cells = {("cifar10", "badnets", "none"): (95.0, 99.0), ("cifar10", "blend", "none"): (93.0, 97.0),
             ("cifar10", "badnets", "asd"): (93.4, 1.2)}
    for (d, a, f), (acc, asr) in cells.items():
        p = tmp_path / d / a / f"{f}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({"acc": acc, "asr": asr}))
    return tmp_path


def test_table_layout_averages_and_diffs(metrics_dir):
    found = collect_metrics(metrics_dir, ["cifar10"], ["badnets", "blend"], ["none", "asd"])
    paper = load_paper(REPO / "reference" / "paper_table.csv")
    files = assemble(found, paper, "test", ["cifar10"], {}, decimals=1)
    csv = pd.read_csv(pd.io.common.StringIO(files["table.csv"]))
    row = csv[(csv.attack == "badnets") & (csv.defense == "none")].iloc[0]
    assert row.acc_paper == 94.9 and row.asr_paper == 100
    assert row.acc_diff == pytest.approx(0.1) and row.asr_diff == pytest.approx(-1.0)
    avg = csv[(csv.attack == "average") & (csv.defense == "none")].iloc[0]
    assert avg.acc == pytest.approx(94.0) and avg.asr == pytest.approx(98.0)
    # the paper's average over the same attacks that were run (BadNets, Blend): (94.9 + 94.1) / 2
    assert avg.acc_paper == pytest.approx(94.5)
    md = files["table.md"]
    header = next(line for line in md.splitlines() if line.startswith("| Dataset"))
    assert header.split("|")[3].strip() == "No Defense ACC" and "ASD ASR" in header
    blend = next(line for line in md.splitlines() if "| Blend" in line)
    cells = [c.strip() for c in blend.strip("|").split("|")]
    assert cells[2:4] == ["93.0", "97.0"]
    assert cells[-2:] == ["", ""], "a cell that was not run is empty, never 0"
    wanet = next(line for line in md.splitlines() if "| WaNet" in line)
    assert all(c.strip() == "" for c in wanet.strip("|").split("|")[2:])
    assert "| +0.1 " in md or "| +0.1|" in md


def test_stand_in_dataset_is_labelled(tmp_path):
    p = tmp_path / "mnist5k" / "badnets" / "none.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"acc": 98.0, "asr": 100.0}))
    found = collect_metrics(tmp_path, ["mnist5k"], ["badnets"], ["none"])
    files = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "mini", ["mnist5k"],
                     {"mnist5k": "cifar10"})
    assert "stand-in" in files["table.md"]
    csv = pd.read_csv(pd.io.common.StringIO(files["table.csv"]))
    assert csv.iloc[0].paper_dataset == "cifar10" and csv.iloc[0].acc_diff == pytest.approx(98.0 - 94.9)


def test_no_paper_row_means_no_diff(tmp_path):
    p = tmp_path / "fashion_mnist" / "blend" / "none.json"
    p.parent.mkdir(parents=True)
    p.write_text(json.dumps({"acc": 90.0, "asr": 99.0}))
    found = collect_metrics(tmp_path, ["fashion_mnist"], ["blend"], ["none"])
    files = assemble(found, load_paper(REPO / "reference" / "paper_table.csv"), "x", ["fashion_mnist"], {})
    assert "## Paper" not in files["table.md"]
    csv = pd.read_csv(pd.io.common.StringIO(files["table.csv"]))
    assert csv.acc_diff.isna().all()
