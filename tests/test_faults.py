"""Faults during training, each through the `asd-repro train` command DVC runs: a wrong-typed binding, a
diverging loss, a full disk, a second process on the same checkpoint folder, an unreadable or foreign checkpoint.
Each ends with one line (an error: exit 2; a warning: the run carries on) and no half-written output."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asd_repro.cli import main

from conftest import REPO, badnets_poisoned
from test_kill import _run as run_killed

GIN = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/none.gin", "params/profiles/smoke/common.gin",
       "params/profiles/smoke/none.gin"]
BASE = ["defenses.NoDefense.epochs = 2", "defenses.NoDefense.batch_size = 16", "stages.train.device = 'cpu'"]


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return badnets_poisoned(root, ["params/base.gin", "params/attacks/badnets.gin"])
    finally:
        os.chdir(cwd)


def _args(cell, root: Path, *bindings: str, checkpoints: bool = True) -> list[str]:
    clean, poisoned = cell
    args = ["train", "none", "--clean", clean, "--poisoned", poisoned, "--out", root / "run", "--curves",
            root / "curves.json", "--seed", "3", "--gin", *GIN]
    if checkpoints:
        args += ["--checkpoints", root / "ckpt"]
    for b in (*BASE, *bindings):
        args += ["--bind", b]
    return [str(a) for a in args]


def _error_line(err: str) -> str:
    """The command's own last line (progress bars share stderr); there must be no traceback."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def _no_outputs(root: Path) -> None:
    assert not (root / "run").exists() and not (root / "curves.json").exists()
    assert not list(root.glob(".run.partial-*"))


def test_a_wrong_typed_epochs_binding_is_one_line(cell, tmp_path, capsys, repo_cwd):
    rc = main(_args(cell, tmp_path, "defenses.NoDefense.epochs = 'ten'"))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == [
        "asd-repro: error: defenses.NoDefense.epochs = 'ten' is invalid: expected an integer; fix the binding "
        "(its gin file, a bindings list in params.yaml or --bind)"]
    _no_outputs(tmp_path)


@pytest.mark.parametrize("binding, expected", [
    ("defenses.NoDefense.batch_size = 0", "defenses.NoDefense.batch_size = 0 is invalid: expected an integer >= 1"),
    ("none/engine.Optimizer.lr = -0.1", "none/engine.Optimizer.lr = -0.1 is invalid: expected a learning rate > 0"),
    ("none/engine.Optimizer.name = 'adamw'", "none/engine.Optimizer.name = 'adamw' is invalid: expected one of sgd"),
    ("none/engine.Optimizer.schedule = 'linear'", "none/engine.Optimizer.schedule = 'linear' is invalid"),
    ("engine.Augment.padding_mode = 'zeros'", "engine.Augment.padding_mode = 'zeros' is invalid"),
    ("models.create_model.arch = 'resnet50'", "models.create_model.arch = 'resnet50' is invalid"),
    ("none/engine.Optimizer.momentum = 'high'", "none/engine.Optimizer.momentum = 'high' is invalid: expected a number"),
])
def test_engine_and_model_bindings_are_checked(cell, tmp_path, capsys, repo_cwd, binding, expected):
    rc = main(_args(cell, tmp_path, binding))
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert expected in err
    _no_outputs(tmp_path)


def test_a_diverging_loss_stops_with_one_line_and_writes_no_model(cell, tmp_path, capsys, repo_cwd):
    rc = main(_args(cell, tmp_path, "none/engine.Optimizer.lr = 1e9"))
    line = _error_line(capsys.readouterr().err)
    assert rc == 2
    assert line.startswith(f"asd-repro: error: {tmp_path / 'run'}: train 1/2: the training loss is ")
    assert "at step" in line and "lower the learning rate" in line, line
    _no_outputs(tmp_path)


def test_divergence_keeps_the_last_good_checkpoint(cell, tmp_path, capsys, repo_cwd):
    # epoch 1 at the smoke lr, then the lr is multiplied by 1e12: epoch 2 diverges
    rc = main(_args(cell, tmp_path, "none/engine.Optimizer.schedule = 'multistep'", "none/engine.Optimizer.milestones = (0.5,)",
                    "none/engine.Optimizer.gamma = 1e12"))
    line = _error_line(capsys.readouterr().err)
    assert rc == 2 and ": train 2/2: the training loss is " in line, line
    _no_outputs(tmp_path)
    (ckpt,) = (tmp_path / "ckpt").glob("*/last.pt")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


def _subprocess(args: list[str], fsize: int | None = None) -> subprocess.CompletedProcess:
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "asd_repro.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit if fsize else None)


def test_disk_full_while_writing_the_output_keeps_the_previous_output(cell, tmp_path, repo_cwd):
    args = _args(cell, tmp_path, checkpoints=False)
    assert _subprocess(args).returncode == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    curves = (tmp_path / "curves.json").read_bytes()
    r = _subprocess(_args(cell, tmp_path, "defenses.NoDefense.batch_size = 20", checkpoints=False),
                    fsize=len(before["model.pt"]) // 2)
    line = _error_line(r.stderr)
    assert r.returncode == 2 and line.startswith("asd-repro: error: ") and "model.pt: cannot write" in line, line
    assert "free disk space" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert (tmp_path / "curves.json").read_bytes() == curves
    assert not list(tmp_path.glob(".run.partial-*"))


def test_disk_full_while_writing_a_checkpoint_keeps_the_last_one(cell, tmp_path, repo_cwd):
    r = _subprocess(_args(cell, tmp_path, "stages.train.stop_after_epoch = 1"))
    assert r.returncode == 130, r.stderr
    (ckpt,) = (tmp_path / "ckpt").glob("*/last.pt")
    saved = ckpt.read_bytes()
    r = _subprocess(_args(cell, tmp_path), fsize=len(saved) // 2)
    line = _error_line(r.stderr)
    assert r.returncode == 2 and "cannot write (checkpoint" in line and "free disk space" in line, line
    assert ckpt.read_bytes() == saved and not list(ckpt.parent.glob("*.tmp"))
    _no_outputs(tmp_path)


HOLDER = r"""
import sys, time
from asd_repro.engine.checkpoint import Checkpointer
with Checkpointer(sys.argv[1], "k").lock():
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_process_on_the_same_checkpoint_folder_stops(cell, tmp_path, capsys, repo_cwd):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "ckpt")], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(_args(cell, tmp_path))
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{tmp_path / 'ckpt'}: checkpoint folder in use by asd-repro process {holder.pid}" in err
        _no_outputs(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert main(_args(cell, tmp_path)) == 0  # the lock goes with the process, even a killed one


@pytest.mark.parametrize("content", [b"not a checkpoint", "foreign"])
def test_an_unreadable_or_foreign_checkpoint_warns_and_starts_over(cell, tmp_path, capsys, repo_cwd, content):
    reference = tmp_path / "reference"
    assert main(_args(cell, reference, checkpoints=False)) == 0
    capsys.readouterr()
    killed = run_killed(_args(cell, tmp_path), "mid-epoch")
    assert killed.returncode == -signal.SIGKILL  # in epoch 2, after the epoch-1 checkpoint
    (ckpt,) = (tmp_path / "ckpt").glob("*/last.pt")
    if content == "foreign":  # a loadable checkpoint of another layout (another phase's objects)
        torch.save({"objects": {"head": {}}, "rng": {}, "epoch": 1, "curves": []}, ckpt)
    else:
        ckpt.write_bytes(content)
    assert main(_args(cell, tmp_path)) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("asd-repro: warning: ")]
    assert len(warnings) == 1 and f"checkpoint {ckpt}" in warnings[0] and "from epoch 0" in warnings[0], err
    assert (tmp_path / "run" / "model.pt").read_bytes() == (reference / "run" / "model.pt").read_bytes()
