"""A real run of the smoke pipeline in a temporary copy of the repo (`asd-repro repro -j 2`, DVC's stages side by
side), then DVC experiments and gin changes that re-run exactly the stages they touch."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COPY = ["asd_repro", "params", "reference", "dvc.yaml", "params.yaml", "pyproject.toml", ".dvcignore", ".gitignore"]


def _run(cmd, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1", PYTHONPATH=str(cwd))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _repro(work):
    """`asd-repro repro -j 2` in ``work``: the result and the stages DVC ran (not those it found unchanged)."""
    run = _run(["asd-repro", "repro", "-j", "2"], work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run, set(re.findall(r"\] (\S+) done in", run.stdout))


def _planned(work) -> set[str]:
    """The stages `asd-repro repro` would run in ``work`` (``--dry``: runs nothing)."""
    run = _run(["asd-repro", "repro", "--dry"], work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return set(run.stdout.split())


def copy_repo(work: Path) -> Path:
    """The files a pipeline run needs (``COPY``), copied into a new folder ``work``."""
    work.mkdir()
    for name in COPY:
        src = REPO / name
        (shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, work / name))
    return work


@pytest.mark.slow
def test_dvc_repro_smoke_profile_end_to_end(tmp_path):
    work = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params.update(profile="smoke", datasets=["mnist5k"], attacks=["badnets", "blend"], seeds=[100],
                  defenses={"scratch": ["none", "asd"], "repair": ["fp"], "selfsup": ["dbd"]})
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    assert _run(["git", "init", "-q"], work).returncode == 0
    assert _run(["dvc", "init", "-q"], work).returncode == 0

    first, ran = _repro(work)
    assert "19 stage(s) to run, 2 at a time" in first.stdout and len(ran) == 19, first.stdout
    assert _run(["dvc", "status", "-q"], work).returncode == 0, "dvc.lock records every stage the runner ran"
    assert "up to date" in _run(["asd-repro", "repro"], work).stdout
    table = (work / "results" / "smoke" / "table.md").read_text()
    assert re.search(r"\| mnist5k\s+\| BadNets\s+\| \d+\.\d", table) and "| Blend" in table
    for attack in ("badnets", "blend"):
        for defense in ("none", "fp", "dbd"):
            assert (work / "metrics" / "smoke" / "mnist5k" / attack / f"{defense}.json").exists()
        assert (work / "pretrained" / "smoke" / "mnist5k" / attack / "dbd" / "s100" / "model.pt").exists()
        assert (work / "runs" / "smoke" / "mnist5k" / attack / "none" / "s100" / "operative_config.gin").exists()
    assert (work / "data" / "poisoned" / "mnist5k" / "badnets" / "s100" / "config.gin").exists()
    for figure in ("acc_vs_asr.png", "asd_pool_purity.png", "curves.png"):
        assert (work / "results" / "smoke" / figure).read_bytes().startswith(b"\x89PNG")

    # A DVC experiment on one defense's binding re-runs that defense's training stages only (and evaluate, table).
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    assert _run(["git", "add", "-A"], work).returncode == 0 and _run([*git, "commit", "-qm", "run"], work).returncode == 0
    exp = _run(["dvc", "exp", "run", "-S", 'bindings.asd=["defenses.ASD.gamma = 0.3"]'], work)
    assert exp.returncode == 0, exp.stdout[-3000:] + exp.stderr[-3000:]
    ran = set(re.findall(r"Running stage '([^']+)'", exp.stdout))
    # check parses every bindings list first (seconds; its marker output does not change)
    assert ran - {"table", "check"} == {"train@mnist5k-badnets-asd-100", "train@mnist5k-blend-asd-100",
                               "evaluate@mnist5k-badnets", "evaluate@mnist5k-blend"}, ran
    assert "ASD.gamma = 0.3" in (work / "runs" / "smoke" / "mnist5k" / "blend" / "asd" / "s100" / "config.gin").read_text()

    # A changed train-only gin value (what `dvc exp run -S bindings.train=[...]` does) re-runs only train and after.
    params["bindings"]["train"] = ["none/engine.Optimizer.lr = 0.02"]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    second, ran = _repro(work)
    cells = {f"{family}@mnist5k-{a}-{f}-100" for a in ("badnets", "blend")
             for family, f in (("train", "none"), ("train", "asd"), ("repair", "fp"), ("finetune", "dbd"))}
    assert ran - {"check"} == cells | {"evaluate@mnist5k-badnets", "evaluate@mnist5k-blend", "table"}, ran  # no pretrain
    assert "Optimizer.lr = 0.02" in (
        work / "runs" / "smoke" / "mnist5k" / "badnets" / "none" / "s100" / "operative_config.gin").read_text()

    # Editing one attack's gin file re-runs that attack's branch only. The runner's plan (`repro --dry`: the stale
    # stages and everything downstream of them) says so without training; each edit is undone after its check.
    blend = work / "params" / "attacks" / "blend.gin"
    text = blend.read_text()
    blend.write_text(text.replace("attacks.Blend.alpha = 0.1", "attacks.Blend.alpha = 0.2"))
    assert _planned(work) == {"assets@mnist5k-blend-100", "poison@mnist5k-blend-100", "train@mnist5k-blend-none-100",
                              "train@mnist5k-blend-asd-100", "repair@mnist5k-blend-fp-100",
                              "pretrain@mnist5k-blend-dbd-100", "finetune@mnist5k-blend-dbd-100",
                              "evaluate@mnist5k-blend", "table"}
    blend.write_text(text)

    # Editing a defense's gin file re-runs no attack stage (assets and poisoned sets are cached).
    none = work / "params" / "defenses" / "none.gin"
    text = none.read_text()
    none.write_text(text + "defenses.NoDefense.batch_size = 200\n")
    # FP repairs the No-defense model, so it re-runs too
    assert _planned(work) == {"train@mnist5k-badnets-none-100", "train@mnist5k-blend-none-100",
                              "repair@mnist5k-badnets-fp-100", "repair@mnist5k-blend-fp-100",
                              "evaluate@mnist5k-badnets", "evaluate@mnist5k-blend", "table"}
    none.write_text(text)
    assert "up to date" in _run(["asd-repro", "repro", "--dry"], work).stdout

    # A second seed runs only that seed's stages (and evaluate, table): seeds are an axis of the matrix.
    params["seeds"] = [100, 101]
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    fifth, ran = _repro(work)
    assert ran - {"check", "table", "evaluate@mnist5k-badnets", "evaluate@mnist5k-blend"} == {
        f"{family}@mnist5k-{a}{f}-101" for a in ("badnets", "blend")
        for family, f in (("assets", ""), ("poison", ""), ("train", "-none"), ("train", "-asd"), ("repair", "-fp"),
                          ("pretrain", "-dbd"), ("finetune", "-dbd"))}, ran
    long = (work / "results" / "smoke" / "table.csv").read_text().splitlines()
    assert len(long) == 1 + 2 * 4 * 2, "one row per attack, defense and seed"
    assert "± " in (work / "results" / "smoke" / "table.md").read_text()
