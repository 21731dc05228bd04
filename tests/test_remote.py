"""Results shared through a DVC remote: a table built on one machine comes back on a fresh clone with `dvc pull`,
up to date and identical, with nothing recomputed (a local-directory remote stands in for S3, SSH or a lab share)."""

import pytest
import yaml

from test_pipeline import _repro, _run, copy_repo

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]


@pytest.mark.slow
def test_push_then_pull_into_a_fresh_clone_gives_the_same_table_and_a_clean_status(tmp_path):
    built, remote = copy_repo(tmp_path / "built"), tmp_path / "remote"
    params = yaml.safe_load((built / "params.yaml").read_text())
    params.update(profile="smoke", datasets=["mnist5k"], attacks=["badnets"], seeds=[100],
                  defenses={"scratch": ["none"], "repair": [], "selfsup": []})
    (built / "params.yaml").write_text(yaml.safe_dump(params))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "remote", "add", "-d", "shared", str(remote)]):
        assert _run(cmd, built).returncode == 0
    _repro(built)
    push = _run(["dvc", "push"], built)
    assert push.returncode == 0, push.stdout[-2000:] + push.stderr[-2000:]
    assert _run(["git", "add", "-A"], built).returncode == 0
    assert _run([*GIT, "commit", "-qm", "table"], built).returncode == 0

    clone = tmp_path / "clone"
    assert _run(["git", "clone", "-q", str(built), str(clone)], tmp_path).returncode == 0
    assert not (clone / "runs" / "smoke" / "mnist5k" / "badnets" / "none" / "s100").exists()  # only git's files
    pull = _run(["dvc", "pull"], clone)
    assert pull.returncode == 0, pull.stdout[-2000:] + pull.stderr[-2000:]
    assert (clone / "runs" / "smoke" / "mnist5k" / "badnets" / "none" / "s100" / "model.pt").read_bytes() == (
        built / "runs" / "smoke" / "mnist5k" / "badnets" / "none" / "s100" / "model.pt").read_bytes()
    status = _run(["dvc", "status"], clone)
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout + status.stderr
    table = "results/smoke/table.csv"
    same = _run(["asd-repro", "compare", str(built / table), str(clone / table), "--exact"], clone)
    assert same.returncode == 0 and "changed 0" in same.stdout, same.stdout[-2000:] + same.stderr[-2000:]
    assert "up to date" in _run(["asd-repro", "repro"], clone).stdout  # nothing to recompute
