"""``asd-repro repro``: ``dvc repro`` with independent stages run side by side, ``-j`` at a time.

DVC runs a pipeline's stages one after another, and each stage here is one process bound to a fixed number of CPU
threads (``stages.torch_threads``; the mini profile's 1 makes a stage's weights independent of how it is run). On a
machine with more cores than a stage uses, the independent stages (other attacks, defenses and seeds) can run at
the same time. This runner asks DVC for the pipeline's graph and for what is stale, then runs every stale stage
(and everything downstream of one) as ``dvc repro --single-item <stage>`` once its upstream stages are done, at most
``jobs`` at a time, the longest chains of work first. DVC itself decides again whether each stage changed, runs its
command, and records it in ``dvc.lock`` (it holds its repository lock only while it reads and records, and
``--wait-for-lock`` lets the processes take turns), so the outputs and the lock file are what ``dvc repro`` makes.

Each stage's own output goes to ``.dvc/tmp/asd-repro/<stage>.log``; the terminal gets one line per started and
finished stage. The first failing stage stops the run (the running ones finish) with its log's last lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

LOGS = Path(".dvc/tmp/asd-repro")

# Rough relative cost of a stage of each family (mini profile, seconds on the sizing machine): only the order in
# which ready stages start depends on it (the longest remaining chain of work first), never what runs.
COST = {"check": 1, "prepare": 5, "assets": 20, "poison": 6, "train": 60, "repair": 25, "pretrain": 40,
        "finetune": 45, "evaluate": 20, "table": 20}
COST_OF_DEFENSE = {"asd": 110, "none": 75, "abl": 40}
COST_OF_ATTACK = {"iab": 60, "clb": 45}


def stage_cost(name: str) -> float:
    family, _, item = name.partition("@")
    parts = item.split("-")
    if family == "train":
        return COST_OF_DEFENSE.get(parts[2] if len(parts) > 2 else "", COST["train"])
    if family == "assets":
        return COST_OF_ATTACK.get(parts[1] if len(parts) > 1 else "", COST["assets"])
    return COST.get(family, 30)


@dataclass
class Plan:
    """The stages to run and, for each, the stages of the plan it waits for."""

    needs: dict[str, set[str]]
    order: dict[str, float] = field(default_factory=dict)  # priority: the work on the longest chain from it


def plan(targets: list[str], force: bool) -> Plan:
    """Ask DVC for the graph and the stale stages; the plan holds those and everything downstream of them."""
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # an edge points from a stage to a stage it depends on
        names = {stage: stage.addressing for stage in graph.nodes}
        upstream = {names[s]: {names[d] for d in graph.successors(s)} for s in graph.nodes}
        selected = set(upstream)
        if targets:
            unknown = [t for t in targets if t not in upstream]
            if unknown:
                from asd_repro.core.errors import UserError

                raise UserError(f"unknown stage {unknown[0]!r}; `dvc stage list` names them")
            selected, todo = set(), list(targets)
            while todo:  # the targets and everything they depend on
                name = todo.pop()
                if name not in selected:
                    selected.add(name)
                    todo += upstream[name]
        stale = set(selected) if force else set(repo.status()) & selected
    downstream: dict[str, set[str]] = {name: set() for name in upstream}
    for name, deps in upstream.items():
        for dep in deps:
            downstream[dep].add(name)
    run, todo = set(), list(stale)
    while todo:  # a stage downstream of one that runs may change too: DVC decides when its turn comes
        name = todo.pop()
        if name in selected and name not in run:
            run.add(name)
            todo += downstream[name]
    needs = {name: upstream[name] & run for name in run}
    order: dict[str, float] = {}

    def chain(name: str) -> float:
        if name not in order:
            order[name] = stage_cost(name) + max((chain(d) for d in downstream[name] if d in run), default=0.0)
        return order[name]

    for name in run:
        chain(name)
    return Plan(needs, order)


def stage_env(jobs: int) -> dict[str, str]:
    """The environment of the stages' processes. A profile that leaves ``stages.torch_threads`` unbound gets torch's
    default, which follows OMP_NUM_THREADS: the cores are shared between the stages that run side by side instead
    of each taking all of them (oversubscribed)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


def log_path(name: str) -> Path:
    return LOGS / f"{name.replace('@', '_')}.log"


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(plan_: Plan, jobs: int, force: bool, dvc: str = "dvc") -> tuple[int, dict[str, float]]:
    """Run the plan; return the exit status (0, or the first failure's) and every finished stage's seconds."""
    LOGS.mkdir(parents=True, exist_ok=True)
    env = stage_env(jobs)
    waiting = dict(plan_.needs)
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    done: dict[str, float] = {}
    failed: tuple[str, int] | None = None
    total, start = len(waiting), time.perf_counter()
    try:
        while waiting or running:
            if failed is None:
                ready = sorted((n for n, deps in waiting.items() if not deps), key=lambda n: -plan_.order[n])
                for name in ready[:max(0, jobs - len(running))]:
                    del waiting[name]
                    log = open(log_path(name), "w")
                    argv = [dvc, "--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), name]
                    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
                    running[name] = (proc, time.perf_counter(), log)
                    print(f"[{len(done) + len(running)}/{total}] {name} started", flush=True)
            elif not running:
                break
            time.sleep(0.2)
            for name, (proc, began, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                log.close()
                seconds = time.perf_counter() - began
                if proc.returncode != 0:
                    failed = failed or (name, proc.returncode)
                    print(f"{name} FAILED (exit {proc.returncode}) after {seconds:.0f} s; the end of "
                          f"{log_path(name)}:\n{tail(log_path(name))}", file=sys.stderr, flush=True)
                    continue
                done[name] = seconds
                for deps in waiting.values():
                    deps.discard(name)
                elapsed = time.perf_counter() - start
                ran = "Running stage" in log_path(name).read_text(errors="replace")  # else DVC found it unchanged
                print(f"[{len(done)}/{total}] {name} {'done' if ran else 'unchanged, skipped'} in {seconds:.0f} s "
                      f"({elapsed / 60:.1f} min in)", flush=True)
    except KeyboardInterrupt:
        for proc, _, _ in running.values():
            os.killpg(proc.pid, signal.SIGINT)
        for proc, _, _ in running.values():
            proc.wait()
        print("asd-repro: interrupted; run it again to resume (finished stages are recorded, a training stage "
              "resumes from its last epoch)", file=sys.stderr)
        return 130, done
    if failed is not None:
        left = len(waiting)
        print(f"asd-repro: stage {failed[0]} failed; {left} stage(s) not started. Fix it and run again: finished "
              "stages are kept", file=sys.stderr)
        return 1, done
    return 0, done


@contextlib.contextmanager
def forkserver(jobs: int) -> Iterator[None]:
    """Run ``asd_repro.forkserver`` for the stages' ``asd-repro`` commands (set in ``ASD_REPRO_SERVER``), so that
    none of them pays the libraries' imports again; without it (it failed to start) each imports them itself."""
    from asd_repro.forkserver import ENV

    LOGS.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="asd-repro-")) / "server.sock"
    env = stage_env(jobs)
    log = open(LOGS / "forkserver.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "asd_repro", "--forkserver", str(path)], stdout=subprocess.PIPE,
                              stderr=log, env=env, text=True, start_new_session=True)
    ready = server.stdout.readline().strip() == "ready"
    previous = os.environ.get(ENV)
    if ready:
        os.environ[ENV] = str(path)
    else:
        print(f"asd-repro: the fork server did not start (see {LOGS / 'forkserver.log'}); every stage imports the "
              "libraries itself", file=sys.stderr, flush=True)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # the server and any stage it still runs
        server.wait()
        log.close()
        shutil.rmtree(path.parent, ignore_errors=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="asd-repro repro", description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help="stages to bring up to date (default: the whole pipeline)")
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                    help="stages at a time (default: the CPU cores; use 1 with one GPU)")
    ap.add_argument("-f", "--force", action="store_true", help="re-run every selected stage, changed or not")
    ap.add_argument("--dry", action="store_true", help="print the stages that would run, run nothing")
    ap.add_argument("--times", type=Path, help="write every finished stage's wall seconds here (JSON)")
    args = ap.parse_args(argv)
    from asd_repro.core.errors import UserError

    if args.jobs < 1:
        raise UserError(f"-j {args.jobs}: run at least one stage at a time")
    start = time.perf_counter()
    plan_ = plan(args.targets, args.force)
    if not plan_.needs:
        print("Data and pipelines are up to date.")
        return 0
    if args.dry:
        for name in sorted(plan_.needs, key=lambda n: -plan_.order[n]):
            print(name)
        return 0
    print(f"{len(plan_.needs)} stage(s) to run, {args.jobs} at a time; logs in {LOGS}/", flush=True)
    with forkserver(args.jobs):
        status, done = run(plan_, args.jobs, args.force)
    wall = time.perf_counter() - start
    families: dict[str, float] = {}
    for name, seconds in done.items():
        families[name.split("@")[0]] = families.get(name.split("@")[0], 0.0) + seconds
    print(f"{len(done)} stage(s) in {wall / 60:.1f} min wall; stage seconds by family: "
          + ", ".join(f"{k} {v:.0f}" for k, v in families.items()))
    if args.times:
        args.times.write_text(json.dumps({"jobs": args.jobs, "wall_seconds": wall, "stages": done,
                                          "families": families, "returncode": status}, indent=2) + "\n")
    return status
