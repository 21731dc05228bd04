"""``asd-repro repro --cluster slurm``: every stale stage one cluster job, through submitit (a maintained library;
no scheduler of our own).

The runner stays the orchestrator: it submits a stage once its upstream stages are done, at most ``-j`` jobs at a
time, and polls them. Each job runs ``dvc --wait-for-lock repro --single-item <stage>`` in the project folder (a
shared file system), so DVC decides whether the stage changed, runs its command and records it in ``dvc.lock``:
the lock file is the one a local ``dvc repro`` writes. A job that reaches its time limit is requeued by submitit
(``Checkpointable``); the stage's command resumes from its per-epoch checkpoints. ``--cluster local`` runs the same
jobs as local processes (submitit's ``LocalExecutor``), for trying a set-up and for the tests.

Resources per stage family (``RESOURCES``) are sized for the paper profile on one GPU: ``benchmarks/paper_step.py``
prices the training stages; scale the hours with ``--hours-scale`` for a slower or faster card.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# family -> (GPUs, CPUs, memory in GB, hours). DBD's SimCLR pre-training (1,000 epochs) is the longest stage; a
# stage that outlives its limit is requeued and resumes from its last epoch.
RESOURCES: dict[str, tuple[int, int, int, float]] = {
    "check": (0, 1, 4, 0.25), "prepare": (0, 4, 24, 2.0), "assets": (1, 8, 32, 8.0), "poison": (1, 8, 32, 2.0),
    "train": (1, 8, 32, 24.0), "repair": (1, 8, 32, 12.0), "pretrain": (1, 8, 48, 24.0),
    "finetune": (1, 8, 32, 24.0), "evaluate": (1, 8, 32, 1.0), "table": (0, 2, 8, 0.5),
}


try:  # submitit is an optional dependency (the cluster extra); without it --cluster says how to install it
    from submitit.helpers import Checkpointable as _Requeued
except ImportError:  # pragma: no cover - the dev and cluster extras install it
    _Requeued = object


class StageJob(_Requeued):
    """One stage as a job: a picklable callable that submitit requeues with the same arguments on a time-out."""

    def __init__(self, root: str, name: str, force: bool, dvc: str = "dvc"):
        self.root, self.name, self.force, self.dvc = root, name, force, dvc

    def __call__(self) -> str:
        argv = [self.dvc, "--wait-for-lock", "repro", "--single-item", *(["--force"] if self.force else []),
                self.name]
        run = subprocess.run(argv, cwd=self.root)  # its output goes live to the job's log
        if run.returncode != 0:
            raise RuntimeError(f"{self.name}: dvc exited {run.returncode}")
        return self.name


@dataclass
class Cluster:
    """Submit stages as jobs: ``kind`` 'slurm' (submitit's AutoExecutor) or 'local' (LocalExecutor)."""

    kind: str
    folder: Path
    partition: str | None = None
    hours_scale: float = 1.0

    def __post_init__(self) -> None:
        from asd_repro.core.errors import UserError

        try:
            import submitit
        except ImportError:
            raise UserError("--cluster needs submitit: pip install -e '.[cluster]'") from None
        if self.kind not in ("slurm", "local"):
            raise UserError(f"--cluster {self.kind}: 'slurm' or 'local'")
        if not self.hours_scale > 0:
            raise UserError(f"--hours-scale {self.hours_scale}: a positive factor")
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "local":
            self.executor = submitit.LocalExecutor(folder=str(self.folder))
        else:
            self.executor = submitit.AutoExecutor(folder=str(self.folder), cluster="slurm")

    def parameters(self, name: str) -> dict[str, Any]:
        gpus, cpus, mem, hours = RESOURCES.get(name.split("@")[0], RESOURCES["train"])
        minutes = max(5, round(hours * self.hours_scale * 60))
        if self.kind == "local":
            return {"timeout_min": minutes}
        params = {"timeout_min": minutes, "gpus_per_node": gpus, "cpus_per_task": cpus, "mem_gb": mem,
                  "name": name, "slurm_signal_delay_s": 120}
        if self.partition:
            params["slurm_partition"] = self.partition
        return params

    def submit(self, name: str, force: bool, dvc: str = "dvc") -> "ClusterProcess":
        self.executor.update_parameters(**self.parameters(name))
        job = self.executor.submit(StageJob(str(Path.cwd()), name, force, dvc))
        return ClusterProcess(job)


class ClusterProcess:
    """A submitted job behind ``subprocess.Popen``'s ``poll()``/``returncode``/``wait()``, for the runner's loop."""

    def __init__(self, job: Any):
        self.job = job
        self.returncode: int | None = None
        self.pid = int(job.job_id) if str(job.job_id).isdigit() else os.getpid()

    def poll(self) -> int | None:
        if self.returncode is None and self.job.done():
            self.returncode = 0 if self.job.exception() is None else 1
        return self.returncode

    def wait(self) -> int:
        self.job.wait()
        return self.poll() or 0

    def log(self) -> str:
        parts = []
        for read in (self.job.stdout, self.job.stderr):
            try:
                parts.append(read() or "")
            except Exception:  # noqa: BLE001 - a job's log that is not there (yet)
                continue
        return "".join(parts)

    def cancel(self) -> None:
        self.job.cancel(check=False)
