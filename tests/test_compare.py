"""`asd-repro compare`: verdicts and exit codes on fixed tables, inputs as files, metrics folders and git revisions."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from asd_repro.cli import main
from asd_repro.report.compare import compare, load_table
from asd_repro.report.stats import Noise
from asd_repro.report.table import LONG_COLUMNS
from conftest import write_metrics

ENV = "torch 2.0, numpy 1.0, cpu X, 2 threads, device cpu"


def long_table(cells: dict, env: str = ENV) -> pd.DataFrame:
    """``cells``: (attack, defense) -> {seed: (acc, asr)} on cifar10, 1,000 clean and 900 ASR images."""
    rows = [{"dataset": "cifar10", "attack": a, "defense": f, "seed": s, "acc": acc, "asr": asr, "n_clean": 1000,
             "n_asr": 900, "num_classes": 10, "environment": env}
            for (a, f), seeds in cells.items() for s, (acc, asr) in seeds.items()]
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


BASE = {("badnets", "none"): {1: (95.0, 99.0), 2: (94.0, 100.0), 3: (96.0, 98.0)},
        ("badnets", "asd"): {1: (93.0, 1.0), 2: (93.5, 0.5), 3: (92.5, 1.5)}}


def _write(tmp_path, name: str, cells: dict, env: str = ENV):
    path = tmp_path / f"{name}.csv"
    long_table(cells, env).to_csv(path, index=False)
    return path


def _verdicts(result: pd.DataFrame) -> dict:
    return {(r.defense, r.metric): r.verdict for r in result.itertuples()}


def test_identical_tables_pass(tmp_path, capsys):
    base, new = _write(tmp_path, "base", BASE), _write(tmp_path, "new", BASE)
    assert main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "identical 4" in out and "Result: PASS" in out


def test_a_cell_moved_beyond_its_noise_fails_and_is_named(tmp_path, capsys):
    moved = {**BASE, ("badnets", "asd"): {1: (93.0, 41.0), 2: (93.5, 40.5), 3: (92.5, 41.5)}}
    assert main(["compare", str(_write(tmp_path, "base", BASE)), str(_write(tmp_path, "new", moved))]) == 1
    out = capsys.readouterr().out
    assert "FAIL: cifar10/badnets/asd ASR changed" in out and "changed 1" in out


def test_a_move_inside_the_seed_spread_is_not_a_change(tmp_path, capsys):
    # ACC mean 95.0 -> 96.0 with a seed std of 1.0 on each side: t = 1.22 on 4 dof, p = 0.29 before correction
    shifted = {**BASE, ("badnets", "none"): {1: (96.0, 99.0), 2: (95.0, 100.0), 3: (97.0, 98.0)}}
    assert main(["compare", str(_write(tmp_path, "base", BASE)), str(_write(tmp_path, "new", shifted))]) == 0
    result = compare(long_table(BASE), long_table(shifted), Noise())
    row = result[(result.defense == "none") & (result.metric == "acc")].iloc[0]
    assert row["diff"] == pytest.approx(1.0) and row.p_adj > 0.05
    # at this spread and 3 seeds a side it could not have seen 3 points: underpowered, never "within noise"
    assert row.verdict == "underpowered" and row.detectable > 3.0 and row.seeds_needed > 3
    assert "underpowered" in capsys.readouterr().out


def test_a_missing_cell_fails_and_a_new_one_does_not(tmp_path, capsys):
    fewer = {("badnets", "none"): BASE[("badnets", "none")]}
    assert main(["compare", str(_write(tmp_path, "base", BASE)), str(_write(tmp_path, "new", fewer))]) == 1
    assert "cifar10/badnets/asd ACC missing" in capsys.readouterr().out
    assert _verdicts(compare(long_table(fewer), long_table(BASE), Noise()))[("asd", "acc")] == "new"
    assert main(["compare", str(_write(tmp_path, "b2", fewer)), str(_write(tmp_path, "n2", BASE))]) == 0


def test_exact_catches_a_tenth_of_a_point(tmp_path):
    nudged = {**BASE, ("badnets", "none"): {1: (95.1, 99.0), 2: (94.0, 100.0), 3: (96.0, 98.0)}}
    base, new = _write(tmp_path, "base", BASE), _write(tmp_path, "new", nudged)
    assert main(["compare", str(base), str(new)]) == 0  # 0.03 points of the mean: noise
    assert main(["compare", str(base), str(new), "--exact"]) == 1


def test_other_environments_get_only_tolerance_verdicts(tmp_path, capsys):
    other = _write(tmp_path, "new", BASE, env="torch 2.1, numpy 1.0, cpu Y, 2 threads, device cpu")
    assert main(["compare", str(_write(tmp_path, "base", BASE)), str(other)]) == 0
    out = capsys.readouterr().out
    assert "Environments differ" in out and "identical 0" in out and "changed 0" in out


def test_metrics_folders_and_git_revisions_are_inputs(tmp_path, monkeypatch):
    folder = write_metrics(tmp_path / "metrics", {("cifar10", "badnets", "none"): {1: (95.0, 99.0), 2: (94.0, 99.5)}})
    long, _ = load_table(str(folder))
    assert sorted(long["seed"]) == [1, 2] and set(long["defense"]) == {"none"}

    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], check=True)
    long_table(BASE).to_csv("table.csv", index=False)
    subprocess.run(git + ["add", "table.csv"], check=True)
    subprocess.run(git + ["commit", "-qm", "base"], check=True)
    moved = {**BASE, ("badnets", "none"): {1: (75.0, 99.0), 2: (74.0, 100.0), 3: (76.0, 98.0)}}
    long_table(moved).to_csv("table.csv", index=False)
    assert main(["compare", "HEAD:table.csv", "table.csv"]) == 1
    assert main(["compare", "HEAD:table.csv", "HEAD:table.csv"]) == 0
    assert main(["compare", "HEAD~5:table.csv", "table.csv"]) == 2  # a revision that does not exist: bad input


def test_a_table_from_before_seeds_compares_as_one_unrecorded_seed(tmp_path, capsys):
    (tmp_path / "old.csv").write_text("dataset,attack,defense,acc,asr\ncifar10,badnets,none,95,99\n"
                                      "cifar10,average,none,95,99\n")
    assert main(["compare", str(tmp_path / "old.csv"), str(_write(tmp_path, "new", BASE))]) == 0
    out = capsys.readouterr().out
    # one seed against three (2 dof): ACC (std 1.0) cannot see 3 points, ASR can see 20; the Average row is dropped
    assert "Environments differ" in out and "new 2" in out and "underpowered 1" in out and "within noise 1" in out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "odd.csv").write_text("name,value\nx,1\n")
    assert main(["compare", str(tmp_path / "odd.csv"), str(tmp_path / "odd.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a per-seed table.csv" in err
    assert main(["compare", str(tmp_path / "nothing"), str(tmp_path / "odd.csv")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_gate_options_are_settable_and_checked(tmp_path):
    shifted = {**BASE, ("badnets", "none"): {1: (97.0, 99.0), 2: (96.0, 100.0), 3: (98.0, 98.0)}}  # ACC +2.0
    base, new = _write(tmp_path, "base", BASE), _write(tmp_path, "new", shifted)
    assert main(["compare", str(base), str(new)]) == 0  # t = 2.45 on 4 dof: p = 0.07, not a change at alpha 0.05
    assert main(["compare", str(base), str(new), "--alpha", "0.5"]) == 1  # Holm over 4: 0.07 x 4 < 0.5
    assert main(["compare", str(base), str(new), "--alpha", "0.5", "--min-effect", "2.5"]) == 0  # 2 points < 2.5
    assert main(["compare", str(base), str(new), "--alpha", "0"]) == 2
    assert main(["compare", str(base), str(new), "--readable-acc", "-1"]) == 2


def test_a_partly_regenerated_table_keeps_identical_for_the_cells_it_did_not_touch():
    other = "torch 2.1, numpy 1.0, cpu Y, 2 threads, device cpu"
    base = long_table(BASE)
    new = base.copy()
    asd = new["defense"] == "asd"
    new.loc[asd, "environment"] = other  # ASD's cell re-ran on another machine, to the same values
    verdicts = _verdicts(compare(base, new, Noise()))
    assert verdicts[("none", "acc")] == verdicts[("none", "asr")] == "identical"
    assert verdicts[("asd", "acc")] != "identical" and verdicts[("asd", "asr")] != "identical"
    assert _verdicts(compare(base, new, Noise(), exact=True))[("asd", "acc")] == "identical"  # --exact: values only
