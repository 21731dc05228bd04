"""``asd-repro repro`` as a good process citizen, on small DVC projects of shell commands: devices per stage,
SIGTERM like Ctrl-C, no stage outlives a ``kill -9``-ed runner, one runner a workspace, DVC's errors as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from asd_repro.runner import Plan, Slots, run

# Stage names follow the pipeline's families: check and table are CPU-only, train stages compute on a device.
STAMP = ("import os, sys, time; t0 = time.time(); time.sleep(float(sys.argv[2])); "
         "open(sys.argv[1], 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + f' {t0} {time.time()}')")
DEVICE_PIPELINE = {"stages": {
    "check": {"cmd": "python stamp.py check.txt 0", "deps": ["stamp.py"], "outs": ["check.txt"]},
    "train": {"matrix": {"seed": [1, 2, 3, 4]}, "cmd": "python stamp.py train${item.seed}.txt 1.5",
              "deps": ["check.txt", "stamp.py"], "outs": ["train${item.seed}.txt"]},
    "table": {"cmd": "python stamp.py table.txt 0", "deps": [f"train{s}.txt" for s in (1, 2, 3, 4)],
              "outs": ["table.txt"]},
}}
LONG_PIPELINE = {"stages": {
    "train": {"cmd": "python long.py", "deps": ["long.py"], "outs": ["done.txt"]},
}}
LONG = ("import os, time\nopen('pid.txt', 'w').write(str(os.getpid()))\ntime.sleep(float(os.environ.get('LONG', '60')))\n"
        "open('done.txt', 'w').write('done')\n")


def _env(**extra):
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                DVC_NO_ANALYTICS="1", **extra)


def _run(cmd, cwd, **extra):
    return subprocess.run(cmd, cwd=cwd, env=_env(**extra), capture_output=True, text=True, timeout=300)


def _project(root: Path, pipeline: dict, files: dict[str, str]) -> Path:
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline))
    for name, text in files.items():
        (root / name).write_text(text)
    assert _run(["git", "init", "-q"], root).returncode == 0
    assert _run(["dvc", "init", "-q"], root).returncode == 0
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purpose
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:  # reaped in between
        return False


def _wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def test_slots_give_each_device_stage_one_device_and_never_overfill_one(tmp_path, monkeypatch):
    """The scheduler alone, with a stand-in for dvc that records the device it was given and when it ran."""
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "fake-dvc"
    fake.write_text(f"#!{sys.executable}\nimport os, sys, time\nname = sys.argv[-1]\nt0 = time.time()\n"
                    "time.sleep(0.3 if name.startswith('train') else 0.05)\n"
                    "open(name + '.rec', 'w').write(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset') + "
                    "f' {t0} {time.time()}')\n")
    fake.chmod(0o755)
    trains = [f"train@s{i}" for i in range(6)]
    needs = {"check": set(), **{t: {"check"} for t in trains}, "table": set(trains)}
    devices: dict[str, str] = {}
    status, done = run(Plan(needs, {n: 1.0 for n in needs}), 4, False, dvc=str(fake), slots=Slots(["0", "1"], 1),
                       devices=devices)
    assert status == 0 and set(done) == set(needs)
    records = {n: (tmp_path / f"{n}.rec").read_text().split() for n in needs}
    assert all((tmp_path / f"{n}.rec").read_text().startswith(" ") for n in ("check", "table"))  # '' : no device
    assert devices["check"] == devices["table"] == ""
    assert all(devices[t] in ("0", "1") and records[t][0] == devices[t] for t in trains)
    for device in ("0", "1"):  # one stage a device at any moment
        spans = sorted((float(records[t][1]), float(records[t][2])) for t in trains if devices[t] == device)
        assert all(a[1] <= b[0] + 0.05 for a, b in zip(spans, spans[1:])), spans
    assert {devices[t] for t in trains} == {"0", "1"}, "both devices used"


@pytest.mark.slow
def test_repro_with_gpus_gives_training_stages_one_device_and_cpu_stages_none(tmp_path):
    root = _project(tmp_path, DEVICE_PIPELINE, {"stamp.py": STAMP})
    out = _run(["asd-repro", "repro", "-j", "4", "--gpus", "0,1", "--times", "times.json"], root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "on GPUs 0,1 (1 a GPU)" in out.stdout
    seen = {f.stem: f.read_text().split()[0] for f in root.glob("*.txt")}
    assert all(seen[f"train{s}"] in ("0", "1") for s in (1, 2, 3, 4))
    cpu = {n: (root / f"{n}.txt").read_text() for n in ("check", "table")}
    assert all(text.startswith(" ") for text in cpu.values()), cpu  # CUDA_VISIBLE_DEVICES='' (no device)
    devices = json.loads((root / "times.json").read_text())["devices"]
    assert devices["check"] == devices["table"] == "" and {devices[f"train@{i}"] for i in (1, 2, 3, 4)} == {"0", "1"}


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c_and_the_next_run_finishes(tmp_path):
    root = _project(tmp_path, LONG_PIPELINE, {"long.py": LONG})
    runner = subprocess.Popen(["asd-repro", "repro", "--no-forkserver"], cwd=root, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(root / "pid.txt")
    stage = int((root / "pid.txt").read_text())
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, out + err
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    time.sleep(0.5)
    assert not _alive(stage), "the stage was stopped with the runner"
    (root / "pid.txt").unlink()
    again = _run(["asd-repro", "repro", "--no-forkserver"], root, LONG="0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (root / "done.txt").read_text() == "done"


@pytest.mark.slow
def test_a_stage_that_ignores_sigint_is_stopped_after_the_grace_period(tmp_path):
    deaf = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + LONG
    root = _project(tmp_path, LONG_PIPELINE, {"long.py": deaf})
    runner = subprocess.Popen(["asd-repro", "repro", "--no-forkserver"], cwd=root, env=_env(ASD_REPRO_STOP_GRACE="2"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(root / "pid.txt")
    stage = int((root / "pid.txt").read_text())
    began = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    out, err = runner.communicate(timeout=40)
    assert runner.returncode == 128 + signal.SIGTERM and "stopped by SIGTERM" in err, out + err
    assert time.monotonic() - began < 20, "stopped after the 2 s grace, not when the stage ended by itself"
    assert not _alive(stage) and not (root / "done.txt").exists()


@pytest.mark.slow
def test_no_stage_outlives_a_killed_runner_and_the_next_run_finishes(tmp_path):
    root = _project(tmp_path, LONG_PIPELINE, {"long.py": LONG})
    runner = subprocess.Popen(["asd-repro", "repro"], cwd=root, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _wait_for(root / "pid.txt")
    stage = int((root / "pid.txt").read_text())
    runner.kill()  # SIGKILL: no clean-up in the runner itself
    runner.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(stage) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(stage), "the watchdog ended the orphaned stage"
    (root / "pid.txt").unlink()
    again = _run(["asd-repro", "repro"], root, LONG="0")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Traceback" not in again.stderr and (root / "done.txt").read_text() == "done"


@pytest.mark.slow
def test_a_second_runner_in_the_workspace_is_one_line(tmp_path):
    root = _project(tmp_path, LONG_PIPELINE, {"long.py": LONG})
    first = subprocess.Popen(["asd-repro", "repro", "--no-forkserver"], cwd=root, env=_env(LONG="20"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(root / "pid.txt")
        second = _run(["asd-repro", "repro"], root)
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.count("\n") == 1 and f"pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


@pytest.mark.parametrize("setup, words", [
    (lambda root: None, "dvc:"),  # no DVC project at all
    (lambda root: (_run(["git", "init", "-q"], root), _run(["dvc", "init", "-q"], root),
                   (root / "dvc.yaml").write_text("stages: [unclosed\n")), "dvc:"),
])
def test_dvc_errors_are_one_line(tmp_path, setup, words):
    setup(tmp_path)
    out = _run(["asd-repro", "repro"], tmp_path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith(f"asd-repro: error: {words}") and out.stderr.count("\n") == 1, out.stderr


def test_bad_gpu_lists_are_one_line(tmp_path):
    for value in ("a,b", "0,0", ","):
        out = _run(["asd-repro", "repro", "--gpus", value], tmp_path)
        assert out.returncode == 2 and "--gpus" in out.stderr and out.stderr.count("\n") == 1, out.stderr


# A deterministic pipeline (no times in its outputs), so that two ways of running it give the same dvc.lock; its
# middle stage counts to 20 and resumes from a checkpoint file kept outside DVC's outputs, as a training stage does.
COUNT = ("import os, sys, time\nckpt = 'count.ckpt'\nstart = int(open(ckpt).read()) if os.path.exists(ckpt) else 0\n"
         "open('count.pid', 'w').write(str(os.getpid()))\nprint('resumed from', start, flush=True)\n"
         "for i in range(start, 20):\n    time.sleep(float(os.environ.get('STEP', '0')))\n"
         "    open(ckpt + '.tmp', 'w').write(str(i + 1)); os.replace(ckpt + '.tmp', ckpt)\n"
         "open('b.txt', 'w').write(open('a.txt').read() * 2 + str(20))\nos.remove(ckpt)\n")
CHAIN = {"stages": {
    "check": {"cmd": "python -c \"open('a.txt','w').write(open('src.txt').read())\"", "deps": ["src.txt"],
              "outs": ["a.txt"]},
    "train": {"cmd": "python count.py", "deps": ["a.txt", "count.py"], "outs": ["b.txt"]},
    "table": {"cmd": "python -c \"open('c.txt','w').write(open('b.txt').read().upper())\"", "deps": ["b.txt"],
              "outs": ["c.txt"]},
}}


def _chain(root: Path) -> Path:
    root.mkdir()
    return _project(root, CHAIN, {"src.txt": "one\n", "count.py": COUNT})


@pytest.mark.slow
def test_the_cluster_executor_writes_the_dvc_lock_a_plain_dvc_repro_writes(tmp_path):
    plain, jobs = _chain(tmp_path / "plain"), _chain(tmp_path / "jobs")
    assert _run(["dvc", "repro"], plain).returncode == 0
    out = _run(["asd-repro", "repro", "--cluster", "local", "-j", "2"], jobs)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[3/3] table done" in out.stdout
    assert (jobs / "dvc.lock").read_text() == (plain / "dvc.lock").read_text()
    assert _run(["dvc", "status", "-q"], jobs).returncode == 0


@pytest.mark.slow
def test_a_job_killed_mid_stage_resumes_from_its_checkpoint_when_submitted_again(tmp_path):
    root = _chain(tmp_path / "jobs")
    runner = subprocess.Popen(["asd-repro", "repro", "--cluster", "local"], cwd=root, env=_env(STEP="0.3"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(root / "count.ckpt")
    while int((root / "count.ckpt").read_text() or 0) < 4:
        time.sleep(0.1)
    os.kill(int((root / "count.pid").read_text()), signal.SIGKILL)  # the job dies mid-stage (a node lost)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 1 and "train FAILED" in err, out + err
    done_before = int((root / "count.ckpt").read_text())
    assert 4 <= done_before < 20
    again = _run(["asd-repro", "repro", "--cluster", "local"], root, STEP="0")
    assert again.returncode == 0, again.stdout + again.stderr
    log = (root / ".dvc" / "tmp" / "asd-repro" / "train.log").read_text()
    assert f"resumed from {done_before}" in log
    assert (root / "c.txt").read_text() == "ONE\nONE\n20"


@pytest.mark.slow
def test_a_binding_typo_in_params_yaml_stops_the_run_before_any_stage(tmp_path):
    """DVC removes a stale stage's outputs before running it: a typo must stop the run before that happens."""
    root = _chain(tmp_path / "jobs")
    (root / "params.yaml").write_text("bindings:\n  train: ['defenses.ASD.gama = 0.3']\n  asd: []\n")
    out = _run(["asd-repro", "repro"], root)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("asd-repro: error: params.yaml:bindings.train: bad gin binding")
    assert "gama" in out.stderr and out.stderr.count("\n") == 1
    assert not (root / "dvc.lock").exists() and not (root / "a.txt").exists(), "no stage ran"


@pytest.mark.slow
def test_a_training_stage_of_a_killed_runner_resumes_to_the_same_weights(tmp_path):
    """kill -9 of `asd-repro repro` while a real training stage runs: the watchdog ends the stage, the next run
    resumes it from its last checkpoint, and its model.pt is byte-identical to an uninterrupted run's."""
    from conftest import REPO, badnets_poisoned

    gin = [str(REPO / "params" / f) for f in ("base.gin", "attacks/badnets.gin", "defenses/none.gin",
                                                "profiles/smoke/common.gin", "profiles/smoke/none.gin")]
    root = tmp_path / "project"
    root.mkdir()
    badnets_poisoned(root, gin)
    binds = ["defenses.NoDefense.epochs = 40", "defenses.NoDefense.batch_size = 16", "stages.train.device = 'cpu'",
             "stages.train.eval_every = 40", "stages.torch_threads.threads = 1"]  # the same sums in both runs
    train = ("asd-repro train none --clean prepared --poisoned poisoned --out {out} --curves {out}.json "
             "--checkpoints {ckpt} --seed 3 --gin " + " ".join(gin) + "".join(f' --bind "{b}"' for b in binds))
    pipeline = {"stages": {"train": {"cmd": train.format(out="run", ckpt="ckpt"), "deps": ["prepared", "poisoned"],
                                     "outs": ["run", {"run.json": {"cache": False}}]}}}
    _project(root, pipeline, {})
    runner = subprocess.Popen(["asd-repro", "repro"], cwd=root, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((root / "ckpt").rglob("last.pt")):
        assert time.monotonic() < deadline and runner.poll() is None, "no checkpoint before the run ended"
        time.sleep(0.1)
    time.sleep(1.0)  # a few epochs in
    runner.kill()
    runner.communicate(timeout=60)
    time.sleep(0.5)
    assert not (root / "run").exists(), "killed before the end"
    for _ in range(100):  # the watchdog ends the stage (SIGTERM, then SIGKILL)
        if not [p for p in Path("/proc").glob("[0-9]*") if _cwd_is(p, root)]:
            break
        time.sleep(0.2)
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cwd_is(p, root)], "no process of the run survives"
    assert list((root / "ckpt").rglob("last.pt")), "its checkpoint is kept for the resume"
    again = _run(["asd-repro", "repro"], root)
    assert again.returncode == 0, again.stdout + again.stderr
    straight = _run(train.format(out="straight", ckpt="ckpt_straight").replace('"', "").split(" --bind ")[0].split()
                    + sum((["--bind", b] for b in binds), []), root)
    assert straight.returncode == 0, straight.stderr
    assert (root / "run" / "model.pt").read_bytes() == (root / "straight" / "model.pt").read_bytes()


def _cwd_is(proc: Path, root: Path) -> bool:
    try:
        return Path(os.readlink(proc / "cwd")) == root and int(proc.name) != os.getpid()
    except OSError:
        return False
