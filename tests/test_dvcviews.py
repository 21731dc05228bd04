"""DVC's own views of the results: the compact metrics files the table stage writes for ``dvc metrics show/diff``
(ACC mean, ASR median, numbers only), and ``dvc.yaml``'s top-level plots (one titled plot per defense and metric,
the seeds and attacks as lines)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from asd_repro.report.dvcviews import PLOT_DIRS, cell_values, curve_records, view_texts, write_views
from asd_repro.report.table import LONG_COLUMNS

from conftest import REPO

ENV = {"torch": "2.14.1", "device": "cpu"}


def _long(cells: dict[tuple[str, str], dict[int, tuple[float, float]]], dataset: str = "mnist5k") -> pd.DataFrame:
    """(attack, defense) -> {seed: (acc, asr)} as the table stage's long per-seed table."""
    rows = [{"dataset": dataset, "attack": a, "defense": f, "seed": s, "acc": acc, "asr": asr, "n_clean": 1000,
             "n_asr": 900, "num_classes": 10, "environment": "torch 2.14.1 cpu"}
            for (a, f), seeds in cells.items() for s, (acc, asr) in seeds.items()]
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


# 2 defenses x 2 attacks x 2 seeds
SMALL = {("badnets", "none"): {100: (98.0, 99.0), 101: (97.0, 95.0)},
         ("badnets", "asd"): {100: (96.5, 1.0), 101: (95.5, 3.0)},
         ("blend", "none"): {100: (90.0, 80.0), 101: (92.0, 100.0)},
         ("blend", "asd"): {100: (91.0, 0.0), 101: (93.0, 1.0)}}


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    else:
        yield tree


def test_views_hold_acc_mean_and_asr_median_per_cell_and_nothing_but_numbers(tmp_path):
    out = tmp_path / "results" / "mini" / "metrics"
    (out / "stale").mkdir(parents=True)  # a folder from an earlier run is replaced whole
    written = write_views(_long(SMALL), out)

    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json")) == [
        "mnist5k/average.json", "mnist5k/badnets.json", "mnist5k/blend.json"]
    assert sorted(written) == sorted(out.rglob("*.json")) and not (out / "stale").exists()
    assert not list(tmp_path.rglob(".metrics.partial-*")), "no scratch folder is left behind"
    views = {p.stem: json.loads(p.read_text()) for p in (out / "mnist5k").iterdir()}
    assert views["badnets"] == {"none": {"acc": 97.5, "asr": 97.0}, "asd": {"acc": 96.0, "asr": 2.0}}
    assert views["blend"] == {"none": {"acc": 91.0, "asr": 90.0}, "asd": {"acc": 92.0, "asr": 0.5}}
    # Average: per seed the mean over the attacks, then ACC's mean and ASR's median over the seeds (as table.md)
    assert views["average"] == {"none": {"acc": 94.25, "asr": 93.5}, "asd": {"acc": 94.0, "asr": 1.25}}
    assert list(views["badnets"]) == ["none", "asd"], "the paper's column order"
    for view in views.values():
        leaves = list(_leaves(view))
        assert leaves and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in leaves), view
        assert len(leaves) <= 12, "at most 6 defenses x (ACC, ASR): a short row in `dvc metrics show`"


def test_asr_is_the_median_and_missing_values_are_left_out_not_zero():
    cells = {("badnets", "asd"): {100: (90.0, 1.0), 101: (93.0, 2.0), 102: (96.0, 60.0)},  # mean ASR 21, median 2
             ("badnets", "fp"): {100: (float("nan"), float("nan")), 101: (None, None)},
             ("badnets", "nad"): {100: (80.0, float("nan"))}}
    values = cell_values(_long(cells))["mnist5k"]
    assert values["badnets"]["asd"] == {"acc": 93.0, "asr": 2.0}
    assert "fp" not in values["badnets"], "a cell without values is not written (no 0, no NaN)"
    assert values["badnets"]["nad"] == {"acc": 80.0}
    assert "NaN" not in "".join(view_texts(_long(cells)).values())
    assert view_texts(_long(cells).iloc[0:0]) == {}


def test_an_average_row_in_the_input_is_recomputed_not_doubled():
    long = _long(SMALL)
    with_avg = pd.concat([long, long.assign(attack="average", acc=0.0, asr=0.0)], ignore_index=True)
    assert view_texts(with_avg) == view_texts(long)


def _dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def _profile() -> str:
    return yaml.safe_load((REPO / "params.yaml").read_text())["profile"]


def _curve_plots(dvc: dict) -> dict[str, dict]:
    plots = {}
    for entry in dvc.get("plots", []):
        if isinstance(entry, dict):
            (plot_id, definition), = entry.items()
            plots[plot_id] = definition
    return plots


def test_top_level_plots_have_titled_axes_one_field_each_and_name_the_gathered_folders():
    plots = _curve_plots(_dvc_yaml())
    assert len(plots) == len(PLOT_DIRS)
    for plot_id, p in plots.items():
        for key in ("title", "x_label", "y_label", "x", "y", "template"):
            assert p.get(key), f"plot {plot_id}: no {key}"
        assert p["y_label"] not in (p["y"], "y"), f"plot {plot_id}: its y axis names its unit"
        assert plot_id == f"results/${{profile}}/plots/{PLOT_DIRS[p['y']]}", "a folder of the table stage's output"
    assert (REPO / ".dvc" / "plots" / f"{plots[next(iter(plots))]['template']}.json").is_file()


def test_curves_are_gathered_one_file_per_defense_with_attack_and_seed_on_every_record(tmp_path):
    for a, seed, acc in (("badnets", 100, 90.0), ("badnets", 101, 91.0), ("blend", 100, 92.0)):
        path = tmp_path / "mnist5k" / a / "asd" / f"s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"epoch": 1, "acc": None, "asr": None, "poisoned_in_clean_pool": 3},
                                    {"epoch": 2, "acc": acc, "asr": 1.5, "poisoned_in_clean_pool": 2}]))
    records = curve_records(tmp_path, ["mnist5k"], ["badnets", "blend", "wanet"], ["asd", "none"], [100, 101])
    assert set(records) == {"acc/mnist5k_asd.json", "asr/mnist5k_asd.json", "pool/mnist5k_asd.json"}
    acc = records["acc/mnist5k_asd.json"]
    assert acc == [{"epoch": 2, "acc": 90.0, "attack": "badnets", "seed": "100"},
                   {"epoch": 2, "acc": 91.0, "attack": "badnets", "seed": "101"},
                   {"epoch": 2, "acc": 92.0, "attack": "blend", "seed": "100"}]  # unmeasured epochs left out
    assert len(records["pool/mnist5k_asd.json"]) == 6  # pool purity is logged every epoch


def test_plot_template_draws_attack_as_colour_and_seed_as_dash_with_dvcs_axis_titles():
    template = json.loads((REPO / ".dvc" / "plots" / "seeds.json").read_text())
    text = json.dumps(template)
    for anchor in ("DATA", "X", "Y", "TITLE", "X_LABEL", "Y_LABEL"):
        assert f"<DVC_METRIC_{anchor}>" in text
    assert template["encoding"]["x"]["title"] == "<DVC_METRIC_X_LABEL>"
    assert template["encoding"]["y"]["title"] == "<DVC_METRIC_Y_LABEL>"
    assert template["encoding"]["color"]["field"] == "attack"
    assert any(layer.get("encoding", {}).get("strokeDash", {}).get("field") == "seed" for layer in template["layer"])


def test_dvc_metrics_are_the_compact_views_not_the_per_seed_files():
    dvc = _dvc_yaml()
    assert dvc.get("metrics") == ["results/${profile}/metrics"]
    declared = [s for s, stage in dvc["stages"].items() if stage.get("metrics")]
    assert not declared, f"stages {declared} declare metrics: `dvc metrics show` would flatten them"
    evaluate_outs = [next(iter(o)) if isinstance(o, dict) else o for o in dvc["stages"]["evaluate"]["outs"]]
    assert evaluate_outs == ["metrics/${profile}/${item.dataset}/${item.attack}"], \
        "the per-seed files (environment, provenance) stay the evaluate stage's outputs"


@pytest.mark.slow
def test_dvc_metrics_show_fits_200_characters_a_row(tmp_path, dvc_on_path):
    """``dvc metrics show`` on the committed table's views, in a copy holding only dvc.yaml and params.yaml."""
    table = REPO / "results" / _profile() / "table.csv"
    if shutil.which("dvc") is None or not table.is_file():
        pytest.skip("needs dvc and the committed results/<profile>/table.csv")
    from asd_repro.report.table import read_long

    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, tmp_path / name)
    write_views(read_long(table), tmp_path / "results" / _profile() / "metrics")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env, timeout=60)
    run = subprocess.run(["dvc", "metrics", "show"], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    rows = run.stdout.splitlines()
    assert len(rows) > 1 and "acc" in rows[0], run.stdout + run.stderr
    assert max(map(len, rows)) <= 200, rows[0]
