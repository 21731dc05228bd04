"""examples/github-workflow.yml: actionlint passes it, and its jobs do what the README and the file say (the pull
request's job regenerates only the smoke table; the mini job keeps a DVC cache and runs the parallel runner;
every repo file a step names exists). examples/compare-tables.sh stays in step with it."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "examples" / "github-workflow.yml"
SCRIPT = REPO / "examples" / "compare-tables.sh"
FILE_SUFFIXES = {".py", ".sh", ".csv", ".txt", ".toml", ".yml", ".yaml", ".json", ".gin", ".lock"}


def actionlint() -> str:
    """The actionlint binary of this environment (the dev extra installs it), else the one on PATH."""
    here = Path(sys.executable).parent / "actionlint"
    found = str(here) if here.exists() else shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint not found: install the dev extra (pip install -e '.[dev]')")
    return found


def lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def triggers(wf: dict) -> dict:
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as True
    return {name: None for name in on} if isinstance(on, list) else dict(on)


def runs(job: dict) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def commands(job: dict) -> list[list[str]]:
    """Every shell command line of the job's run steps, split into words (comments dropped)."""
    out = []
    for script in runs(job):
        for line in script.splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(words)
    return out


def uses(job: dict, action: str) -> list[dict]:
    return [step for step in job["steps"] if step.get("uses", "").split("@")[0] == action]


def test_actionlint_passes_the_workflow():
    result = lint(WORKFLOW)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_actionlint_fails_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: pull_request\n"
        "jobs:\n"
        "  smoke:\n"
        "    runs-on: ubuntu-latest\n"
        "    needs: build\n"  # no such job
        "    steps:\n"
        "      - uses: actions/checkout@v5\n"
        "        with:\n"
        "          fetch-dept: 0\n"  # no such input
        "      - run: echo ${{ github.event.pull_request.title }}\n"  # script injection
    )
    result = lint(broken)
    assert result.returncode != 0
    for problem in ('"build"', '"fetch-dept"', "potentially untrusted"):
        assert problem in result.stdout, result.stdout


def test_the_pull_request_job_regenerates_only_the_smoke_table():
    wf = workflow()
    assert "pull_request" in triggers(wf)
    on_pr = {name: job for name, job in wf["jobs"].items() if "!= 'pull_request'" not in job.get("if", "")}
    assert list(on_pr) == ["smoke"], "exactly one job runs on a pull request"
    job = on_pr["smoke"]
    assert job["timeout-minutes"] <= 30
    text = "\n".join(runs(job))
    for heavy in ("dvc repro", "asd-repro repro", "compare-tables.sh", "asd-repro claims"):
        assert heavy not in text, f"the pull request's job runs {heavy!r}"
    cmds = commands(job)
    smoke = [c for c in cmds if c[:2] == ["python", ".ci/smoke_table.py"]]
    compare = [c for c in cmds if c[:2] == ["asd-repro", "compare"]]
    assert len(smoke) == 1 and len(compare) == 1
    out_dir = smoke[0][2]
    assert compare[0][2:4] == ["reference/smoke/table.csv", f"{out_dir}/table.csv"]
    assert compare[0][4:6] == ["--out", "compare.md"]
    install = [c for c in cmds if c[:2] == ["pip", "install"]]
    assert install and install[0][2:4] == ["-e", ".[dev]"]
    [upload] = uses(job, "actions/upload-artifact")
    assert upload["if"] == "always()"
    assert {"compare.md", f"{out_dir}/"} <= set(upload["with"]["path"].split())


def test_the_mini_job_keeps_a_dvc_cache_and_runs_the_parallel_runner():
    wf = workflow()
    on = triggers(wf)
    assert {"schedule", "workflow_dispatch", "push"} <= set(on)
    assert on["push"]["branches"] == ["main"]
    job = wf["jobs"]["mini"]
    assert job["if"] == "github.event_name != 'pull_request'"
    assert job["timeout-minutes"] >= 150, "the mini profile with nothing cached takes about 136 min on 2 cores"
    [restore] = uses(job, "actions/cache/restore") + uses(job, "actions/cache")
    # the state of the last run: DVC's cache, and the dvc.lock and uncached outputs that go with it
    state = {".dvc/cache", "dvc.lock", "curves/mini", "metrics/mini", "results/mini"}
    assert set(restore["with"]["path"].split()) == state
    assert "dvc.lock" in restore["with"]["key"] and "restore-keys" in restore["with"]
    [save] = uses(job, "actions/cache/save")
    assert set(save["with"]["path"].split()) == state and save["if"].startswith("always()")
    assert save["with"]["key"] == "${{ steps.restore.outputs.cache-primary-key }}"
    steps = job["steps"]
    checkout = next(i for i, s in enumerate(steps) if "dvc checkout --allow-missing" in s.get("run", ""))
    repro = next(i for i, s in enumerate(steps) if re.search(r"asd-repro repro -j \d", s.get("run", "")))
    assert steps.index(restore) < checkout < repro < steps.index(save)
    assert steps[repro]["timeout-minutes"] < job["timeout-minutes"], "time is left to save the cache"
    cmds = commands(job)
    assert not any(c[:2] == ["dvc", "repro"] for c in cmds)
    [compare] = [c for c in cmds if c[:2] == ["asd-repro", "compare"]]
    assert compare[2].endswith(":results/mini/table.csv") and compare[3] == "results/mini/table.csv"
    [claims] = [s for s in steps if "asd-repro claims results/mini/table.csv" in s.get("run", "")]
    assert not claims.get("continue-on-error"), "the claims are a gate"
    assert "|" not in claims["run"] or claims.get("shell") == "bash", "a pipe keeps the exit status with pipefail"


def repo_paths(words: list[str]) -> list[str]:
    """The words of a command that name a file of this repo: a path with a file suffix whose first part is in the
    repo root (a REV:path names its path), so outputs such as compare.md or OUT/table.csv are left out."""
    found = []
    for word in words:
        if ":" in word:
            word = word.rsplit(":", 1)[1]
        if "$" in word or word.startswith("-") or Path(word).suffix not in FILE_SUFFIXES:
            continue
        if (REPO / Path(word).parts[0]).exists() and len(Path(word).parts) > 1:
            found.append(word)
    return found


def test_every_repo_file_the_steps_name_exists():
    wf = workflow()
    named = set()
    for job in wf["jobs"].values():
        for words in commands(job):
            named.update(repo_paths(words))
    assert {".ci/smoke_table.py", "reference/smoke/table.csv", "constraints/committed-run.txt",
            "results/mini/table.csv"} <= named
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, f"steps name files that do not exist: {missing}"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True).stdout.split()
    for pattern in re.findall(r"hashFiles\(([^)]*)\)", WORKFLOW.read_text()):
        for glob in re.findall(r"'([^']+)'", pattern):
            regex = re.escape(glob).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
            assert any(re.fullmatch(regex, f) for f in tracked), f"hashFiles('{glob}') matches no file"


def test_compare_tables_script_runs_the_parallel_runner():
    code = [line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#")]
    assert not any(re.search(r"\bdvc repro\b", line) for line in code)
    assert any("asd-repro repro -j" in line for line in code)
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
