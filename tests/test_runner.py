"""asd_repro.runner (`asd-repro repro -j N`): DVC's stages side by side, on a small DVC project of shell commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asd_repro.runner import stage_cost

# a -> b, a -> c, (b, c) -> d: b and c can run side by side; each writes when it started and ended
PIPELINE = {"stages": {
    "a": {"cmd": "python -c \"open('a.txt','w').write(open('src.txt').read())\"", "deps": ["src.txt"],
          "outs": ["a.txt"]},
    "b": {"cmd": "python stamp.py b", "deps": ["a.txt", "stamp.py"], "outs": ["b.txt"]},
    "c": {"cmd": "python stamp.py c", "deps": ["a.txt", "stamp.py"], "outs": ["c.txt"]},
    "d": {"cmd": "python -c \"open('d.txt','w').write(open('b.txt').read()+open('c.txt').read())\"",
          "deps": ["b.txt", "c.txt"], "outs": ["d.txt"]},
}}
STAMP = "import sys, time\nt0 = time.time(); time.sleep(1.5)\nopen(sys.argv[1] + '.txt', 'w').write(f'{t0} {time.time()}\\n')\n"


def _run(cmd, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    (tmp_path / "src.txt").write_text("one\n")
    (tmp_path / "stamp.py").write_text(STAMP)
    assert _run(["git", "init", "-q"], tmp_path).returncode == 0
    assert _run(["dvc", "init", "-q"], tmp_path).returncode == 0
    return tmp_path


@pytest.mark.slow
def test_independent_stages_run_side_by_side_and_dvc_records_them(project):
    first = _run(["asd-repro", "repro", "-j", "2"], project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "4 stage(s) to run, 2 at a time" in first.stdout and "[4/4] d done" in first.stdout
    (b0, b1), (c0, c1) = (map(float, (project / f"{s}.txt").read_text().split()) for s in "bc")
    assert b0 < c1 and c0 < b1, "b and c overlapped in time"
    assert _run(["dvc", "status", "-q"], project).returncode == 0, "dvc.lock records every stage"
    assert "up to date" in _run(["asd-repro", "repro"], project).stdout

    # a changed source re-runs what is downstream of it; DVC skips a stage whose deps came out unchanged
    (project / "stamp.py").write_text(STAMP + "# an edit\n")
    dry = _run(["asd-repro", "repro", "--dry"], project)
    assert dry.stdout.split() == ["b", "c", "d"] or dry.stdout.split() == ["c", "b", "d"], dry.stdout
    again = _run(["asd-repro", "repro", "-j", "2"], project)
    assert again.returncode == 0 and "3 stage(s) to run" in again.stdout, again.stdout + again.stderr
    assert _run(["dvc", "status", "-q"], project).returncode == 0


@pytest.mark.slow
def test_a_failing_stage_stops_the_run_and_names_its_log(project):
    pipeline = yaml.safe_load((project / "dvc.yaml").read_text())
    pipeline["stages"]["b"]["cmd"] = "python -c \"import sys; print('broken on purpose'); sys.exit(3)\""
    (project / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    run = _run(["asd-repro", "repro", "-j", "2"], project)
    assert run.returncode == 1
    assert "b FAILED" in run.stderr and "broken on purpose" in run.stderr and ".dvc/tmp/asd-repro/b.log" in run.stderr
    assert not (project / "d.txt").exists(), "nothing downstream of a failure starts"
    assert "1 stage(s) not started" in run.stderr


def test_bad_arguments_are_one_line_errors(project):
    zero = _run(["asd-repro", "repro", "-j", "0"], project)
    assert zero.returncode == 2 and zero.stderr.strip().splitlines() == [
        "asd-repro: error: -j 0: run at least one stage at a time"]
    unknown = _run(["asd-repro", "repro", "nosuchstage"], project)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "unknown stage 'nosuchstage'" in unknown.stderr


def test_the_longest_stages_start_first():
    assert stage_cost("train@mnist5k-badnets-asd-100") > stage_cost("train@mnist5k-badnets-abl-100")
    assert stage_cost("assets@mnist5k-iab-100") > stage_cost("assets@mnist5k-badnets-100")
    assert stage_cost("table") > stage_cost("check")


def test_a_thread_count_below_one_is_one_line(tmp_path):
    from asd_repro import stages
    from asd_repro.core import config
    from asd_repro.core.errors import UserError

    config.parse([], ["stages.torch_threads.threads = 0"])
    with pytest.raises(UserError, match=r"stages.torch_threads.threads = 0 is invalid"):
        stages.torch_threads()
    config.parse([], ["stages.torch_threads.threads = 1"])
    import torch

    before = torch.get_num_threads()
    try:
        stages.torch_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        config.parse([], [])


@pytest.mark.slow
def test_a_stage_run_by_the_fork_server_writes_the_same_bytes_and_status(tmp_path):
    from conftest import REPO, badnets_poisoned

    gin = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/none.gin",
           "params/profiles/smoke/common.gin", "params/profiles/smoke/none.gin"]
    clean, poisoned = badnets_poisoned(tmp_path, gin)

    def train(out: str, *extra: str) -> subprocess.CompletedProcess:
        return _run(["asd-repro", "train", "none", "--clean", str(clean), "--poisoned", str(poisoned), "--out",
                     str(tmp_path / out), "--curves", str(tmp_path / f"{out}.json"), "--gin", *gin, "--seed", "3",
                     "--bind", "defenses.NoDefense.epochs = 2", "--bind", "defenses.NoDefense.batch_size = 16",
                     *extra], REPO)

    direct = train("direct")
    assert direct.returncode == 0, direct.stderr
    socket_path = tmp_path / "server.sock"
    server = subprocess.Popen([sys.executable, "-m", "asd_repro", "--forkserver", str(socket_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        os.environ["ASD_REPRO_SERVER"] = str(socket_path)
        try:
            served = train("served")
            bad = train("bad", "--bind", "defenses.NoDefense.epochs = 'ten'")
        finally:
            del os.environ["ASD_REPRO_SERVER"]
    finally:
        server.terminate()
        log = server.communicate()[1]
    assert log.count("runs asd-repro train none") == 2, log  # both went through the server
    assert served.returncode == 0 and "trained toy/badnets/none" in served.stdout, served.stderr
    assert (tmp_path / "direct" / "model.pt").read_bytes() == (tmp_path / "served" / "model.pt").read_bytes()
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "asd-repro: error: defenses.NoDefense.epochs = 'ten' is invalid: expected an integer; fix the binding "
        "(its gin file, a bindings list in params.yaml or --bind)"]
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_with_a_link_cache_type_each_stage_output_shares_the_cache_copy(project):
    """`dvc repro` leaves a new output copied beside the cache's copy; with cache.type listing hardlink the runner
    relinks every stage that ran, so the disk holds each output once."""
    assert _run(["dvc", "config", "cache.type", "hardlink,copy"], project).returncode == 0
    run = _run(["asd-repro", "repro", "-j", "2"], project)
    assert run.returncode == 0, run.stdout + run.stderr
    for name in "abcd":
        assert os.stat(project / f"{name}.txt").st_nlink == 2, f"{name}.txt is linked to the cache"
    assert _run(["dvc", "status", "-q"], project).returncode == 0


@pytest.mark.slow
def test_with_the_default_cache_type_outputs_stay_copies(project):
    run = _run(["asd-repro", "repro", "-j", "2"], project)
    assert run.returncode == 0, run.stdout + run.stderr
    assert os.stat(project / "d.txt").st_nlink == 1
