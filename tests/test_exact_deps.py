"""The pipeline's code deps, on a copy of the project without any data: editing the shared plumbing (asd_repro/cli)
makes every stage stale, editing the report package only the table stage, and editing ASD's plug-in only the stages
that import it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from asd_repro.report.staleness import stage_outputs, stale_stages

from conftest import REPO


def _copy_project(dest: Path) -> Path:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("needs the project's git checkout (git ls-files)")
    for name in filter(None, listed.stdout.split("\0")):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def _stale(root: Path, lock: dict) -> set[str]:
    run = subprocess.run(["dvc", "status", "--json"], cwd=root, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return set(stale_stages(json.loads(run.stdout or "{}"), stage_outputs(lock), set(lock["stages"])))


def _stale_after_editing(tmp_path: Path, file: str) -> tuple[dict, set[str], set[str]]:
    """A project copy's lock, the stages that an edit (a comment) to ``file`` newly stales, and those stale before."""
    root = _copy_project(tmp_path / "project")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    before = _stale(root, lock)
    edited = root / file
    edited.write_text(edited.read_text() + "\n# an edit\n")
    return lock, _stale(root, lock) - before, before


@pytest.mark.slow
def test_editing_cli_stales_its_stages_and_editing_report_only_the_table(tmp_path, dvc_on_path):
    root = _copy_project(tmp_path / "project")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    runs_cli = {name for name, stage in lock["stages"].items()
                if any(d["path"] in ("asd_repro/cli", "asd_repro") for d in stage.get("deps", []))}
    assert runs_cli == set(lock["stages"]), "every stage runs the CLI and declares it"
    before = _stale(root, lock)  # empty on a clean checkout; whatever a work in progress made stale otherwise

    cli = root / "asd_repro" / "cli" / "__init__.py"
    text = cli.read_text()
    cli.write_text(text + "\n# an edit\n")
    assert _stale(root, lock) - before == runs_cli - before
    cli.write_text(text)

    table = root / "asd_repro" / "report" / "table.py"
    table.write_text(table.read_text() + "\n# an edit\n")
    # the table and the check stage parse gin with every configurable registered: both cheap, and check's output
    # (a marker) does not change, so nothing downstream of it re-runs
    assert _stale(root, lock) - before == {"table", "check"} - before


@pytest.mark.slow
def test_a_binding_for_one_defense_stales_only_that_defenses_stages(tmp_path, dvc_on_path):
    root = _copy_project(tmp_path / "project")
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    before = _stale(root, lock)
    params = root / "params.yaml"
    data = yaml.safe_load(params.read_text())
    data["bindings"]["asd"] = ["defenses.ASD.gamma = 0.3"]
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    asd = {name for name in lock["stages"] if name.startswith("train@") and "-asd-" in name}
    assert len(asd) == 18  # 6 attacks x 3 seeds
    # check parses every bindings list first; the table stage (cheap) depends on the whole of params.yaml too
    assert _stale(root, lock) - before == (asd | {"check", "table"}) - before


@pytest.mark.slow
def test_editing_one_defense_plug_in_stales_only_that_defenses_training_stages(tmp_path, dvc_on_path):
    lock, newly_stale, before = _stale_after_editing(tmp_path, "asd_repro/defenses/asd.py")
    trains = {name for name in lock["stages"] if name.startswith("train@") and "-asd-" in name}
    assert len(trains) == 18  # 6 attacks x 3 seeds
    # check reads every defense's declared family, and the table parses gin with every plug-in registered
    assert newly_stale == (trains | {"check", "table"}) - before


@pytest.mark.slow
def test_editing_one_attack_plug_in_stales_only_that_attacks_cells(tmp_path, dvc_on_path):
    lock, newly_stale, before = _stale_after_editing(tmp_path, "asd_repro/attacks/clb.py")
    cells = {name for name in lock["stages"] if "-clb-" in name or name.endswith("-clb")}
    assert {name.split("@")[0] for name in cells} >= {"assets", "poison", "train", "evaluate"}
    assert len([name for name in cells if name.startswith(("assets@", "poison@"))]) == 6  # 3 seeds each
    # editing an attack's file re-runs its assets; everything downstream of a changed output re-runs too, but DVC
    # reports only the stages whose own deps changed: the assets and poison stages, check and the table
    assert newly_stale == ({n for n in cells if n.startswith(("assets@", "poison@"))} | {"check", "table"}) - before
