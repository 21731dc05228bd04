"""Real faults: a `train` process killed with SIGKILL at three points (mid-epoch, while a checkpoint is being
written, while the output folder is being written), then re-run as DVC would re-run it, ends with a model.pt
byte-identical to an uninterrupted run's, the same curves, and no partial output inside the output folder.

The kill is injected into a real `asd-repro train` subprocess by a small wrapper script (the project's code is
unchanged): it patches the optimiser step or torch.save to SIGKILL its own process at the chosen moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, badnets_poisoned

GIN = ["params/base.gin", "params/attacks/badnets.gin", "params/defenses/none.gin", "params/profiles/smoke/common.gin",
       "params/profiles/smoke/none.gin"]
BINDINGS = ["defenses.NoDefense.epochs = 3", "defenses.NoDefense.batch_size = 16", "none/engine.Optimizer.schedule = 'cosine'",
            "stages.train.device = 'cpu'"]

KILLER = r"""
import os, signal, sys
point, args = sys.argv[1], sys.argv[2:]
import torch

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-epoch":  # the 12th optimiser step: 8 steps an epoch, so half-way through the second epoch
    step, count = torch.optim.SGD.step, [0]
    def killing_step(self, *a, **k):
        count[0] += 1
        if count[0] == 12:
            die()
        return step(self, *a, **k)
    torch.optim.SGD.step = killing_step
else:  # "checkpoint": the 2nd checkpoint file; "output": model.pt in the output folder; half written, then killed
    save, count = torch.save, [0]
    def killing_save(obj, f, *a, **k):
        name = os.path.basename(str(f))
        if (point == "checkpoint" and name.endswith(".tmp")) or (point == "output" and name == "model.pt"):
            count[0] += 1
            if count[0] == (2 if point == "checkpoint" else 1):
                save(obj, f, *a, **k)
                os.truncate(f, os.path.getsize(f) // 2)
                die()
        return save(obj, f, *a, **k)
    torch.save = killing_save

from asd_repro.cli import main
sys.exit(main(args))
"""


def _args(clean: Path, poisoned: Path, root: Path) -> list[str]:
    args = ["train", "none", "--clean", str(clean), "--poisoned", str(poisoned), "--out", str(root / "run"),
            "--curves", str(root / "curves.json"), "--checkpoints", str(root / "ckpt"), "--seed", "3", "--gin", *GIN]
    for b in BINDINGS:
        args += ["--bind", b]
    return args


def _run(args: list[str], point: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if point is None:
        cmd = [sys.executable, "-m", "asd_repro.cli", *args]
    else:
        cmd = [sys.executable, "-c", KILLER, point, *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _curves(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(path.read_text())]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    import gin

    try:
        clean, poisoned = badnets_poisoned(root, GIN)
    finally:
        gin.clear_config()
    straight = root / "straight"
    done = _run(_args(clean, poisoned, straight))
    assert done.returncode == 0, done.stderr
    return clean, poisoned, straight


@pytest.mark.parametrize("point", ["mid-epoch", "checkpoint", "output"])
def test_sigkill_then_rerun_ends_byte_identical(reference, tmp_path, point):
    clean, poisoned, straight = reference
    args = _args(clean, poisoned, tmp_path)
    killed = _run(args, point)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-2000:])
    assert not (tmp_path / "run").exists(), "a killed stage leaves no output folder"
    if point != "mid-epoch":
        assert any((tmp_path / "ckpt").rglob("*.pt")), "the last good checkpoint survives the kill"
    if point == "output":
        assert list(tmp_path.glob(".run.partial-*")), "kill -9 skips the clean-up of the scratch folder..."
    rerun = _run(args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert (tmp_path / "run" / "model.pt").read_bytes() == (straight / "run" / "model.pt").read_bytes()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in (straight / "run").iterdir())
    assert _curves(tmp_path / "curves.json") == _curves(straight / "curves.json")
    assert not any((tmp_path / "ckpt").rglob("*.pt")), "checkpoints are removed once the cell is done"
    assert not list(tmp_path.glob(".run.partial-*")), "...so the re-run removes it"
