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

A good process citizen: SIGTERM and SIGHUP (a CI cancel, a closed terminal) stop it as Ctrl-C does (the running
stages are interrupted and resume on the next run); a watchdog process kills every stage's process group when
the runner dies without cleaning up (``kill -9``); one runner at a time holds the workspace. With ``--gpus`` each
stage that trains or evaluates gets one device (``CUDA_VISIBLE_DEVICES``, at most ``--per-gpu`` stages a device)
and the CPU-only stages none.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
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
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:
    from asd_repro.cluster import Cluster

# seconds a stage has to end after SIGINT (Ctrl-C, SIGTERM to the runner) before the runner sends it SIGTERM
STOP_GRACE = float(os.environ.get("ASD_REPRO_STOP_GRACE", "20"))

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


# Families whose stages compute on a device (torch); the others (check, prepare, table) are CPU-only.
DEVICE_FAMILIES = ("assets", "poison", "train", "repair", "pretrain", "finetune", "evaluate")


class Slots:
    """Devices for the stages that run side by side: each device stage takes the least-busy device with room (at
    most ``per_device`` stages on one device); a CPU-only stage gets no device. Without devices, no stage is
    given any (CUDA_VISIBLE_DEVICES stays as it was)."""

    def __init__(self, devices: list[str], per_device: int = 1):
        self.devices, self.per_device = list(devices), per_device
        self.busy: dict[str, int] = {d: 0 for d in self.devices}
        self.held: dict[str, str] = {}

    @property
    def capacity(self) -> int | None:
        return len(self.devices) * self.per_device if self.devices else None

    def can_start(self, name: str) -> bool:
        return not self.devices or not _on_device(name) or any(n < self.per_device for n in self.busy.values())

    def take(self, name: str) -> str | None:
        """The CUDA_VISIBLE_DEVICES value of stage ``name`` ('' for none), or None when no devices were given."""
        if not self.devices:
            return None
        if not _on_device(name):
            return ""
        device = min((d for d in self.devices if self.busy[d] < self.per_device), key=lambda d: self.busy[d])
        self.busy[device] += 1
        self.held[name] = device
        return device

    def give_back(self, name: str) -> None:
        if name in self.held:
            self.busy[self.held.pop(name)] -= 1


def _on_device(name: str) -> bool:
    return name.split("@")[0] in DEVICE_FAMILIES


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


class Stopped(BaseException):  # not an Exception: no `except Exception` may swallow it
    """SIGTERM or SIGHUP reached the runner: stop as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def _lock_entries(path: Path = Path("dvc.lock"), require: str | None = None, tries: int = 100) -> dict[str, str]:
    """Each stage's dvc.lock entry as text: a stage ran when DVC rewrote its entry, and was skipped when not.

    DVC rewrites dvc.lock in place while other stages run, so a read can catch it half-written: a read counts only
    when it parses, holds ``require`` (a stage that just succeeded always has its entry) and is the same 50 ms later.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for _ in range(tries):
        try:
            text = path.read_text()
            stages = (yaml.load(text, Loader=loader) or {}).get("stages") or {}
            time.sleep(0.05)
            if path.read_text() == text and (require is None or require in stages):
                return {name: json.dumps(entry, sort_keys=True) for name, entry in stages.items()}
        except FileNotFoundError:
            if require is None:
                return {}
        except (OSError, yaml.YAMLError, AttributeError):
            pass
        time.sleep(0.05)
    return {}


def links_cache(dvc: str = "dvc") -> bool:
    """Whether the project's ``cache.type`` lists a link type: then a stage's outputs can share the cache's copy.

    ``dvc repro`` copies a stage's new outputs into the cache and leaves the workspace's copies as they are, so every
    output sits on the disk twice until ``dvc checkout --relink`` (the paper table's poisoned sets: ~40 GB more)."""
    out = subprocess.run([dvc, "config", "cache.type"], capture_output=True, text=True)
    return out.returncode == 0 and bool({t.strip() for t in out.stdout.split(",")} & {"reflink", "hardlink", "symlink"})


def run(plan_: Plan, jobs: int, force: bool, dvc: str = "dvc", slots: Slots | None = None,
        watch: "Watchdog | None" = None, devices: dict[str, str] | None = None,
        cluster: "Cluster | None" = None) -> tuple[int, dict[str, float]]:
    """Run the plan; return the exit status (0, or the first failure's) and every finished stage's seconds.
    ``devices`` (if given) receives each started stage's CUDA_VISIBLE_DEVICES ('' for none); with ``cluster``
    every stage is a cluster job (``asd_repro.cluster``) instead of a local process."""
    LOGS.mkdir(parents=True, exist_ok=True)
    env = stage_env(jobs)
    slots = slots or Slots([])
    waiting = dict(plan_.needs)
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    done: dict[str, float] = {}
    failed: tuple[str, int] | None = None
    total, start = len(waiting), time.perf_counter()
    before: dict[str, str | None] = {}  # each stage's dvc.lock entry when it started
    relink = links_cache(dvc)
    try:
        while waiting or running:
            if failed is None:
                ready = sorted((n for n, deps in waiting.items() if not deps), key=lambda n: -plan_.order[n])
                for name in ready:
                    if len(running) >= jobs:
                        break
                    if not slots.can_start(name):
                        continue
                    del waiting[name]
                    log = open(log_path(name), "w")
                    argv = [dvc, "--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), name]
                    device = slots.take(name)
                    stage = env if device is None else dict(env, CUDA_VISIBLE_DEVICES=device)
                    if cluster is not None:
                        proc = cluster.submit(name, force, dvc)
                    else:
                        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=stage,
                                                start_new_session=True)
                        if watch is not None:
                            watch.add(proc.pid)
                    if devices is not None:
                        devices[name] = "" if device is None else device
                    before[name] = _lock_entries().get(name)
                    running[name] = (proc, time.perf_counter(), log)
                    on = "" if not device else f" on device {device}"
                    print(f"[{len(done) + len(running)}/{total}] {name} started{on}", flush=True)
            elif not running:
                break
            time.sleep(0.2)
            for name, (proc, began, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[name]
                slots.give_back(name)
                if cluster is not None:
                    log.write(proc.log())
                elif watch is not None:
                    watch.done(proc.pid)
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
                ran = force or _lock_entries(require=name).get(name) != before[name]  # DVC rewrote its entry
                if ran and relink:  # one copy of the stage's outputs on the disk, shared with the cache
                    linked = subprocess.run([dvc, "--wait-for-lock", "checkout", "--relink", "-q", name],
                                            capture_output=True, text=True, env=env)
                    if linked.returncode != 0:
                        print(f"asd-repro: warning: dvc checkout --relink {name} failed, its outputs stay copied: "
                              f"{' '.join(linked.stderr.split())[:200]}", file=sys.stderr, flush=True)
                print(f"[{len(done)}/{total}] {name} {'done' if ran else 'unchanged, skipped'} in {seconds:.0f} s "
                      f"({elapsed / 60:.1f} min in)", flush=True)
    except BaseException as e:
        for proc, _, _ in running.values():
            if cluster is not None:
                proc.cancel()  # the job's stage resumes from its last epoch when submitted again
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
        if cluster is None:
            _stop_groups([proc for proc, _, _ in running.values()])
        for proc, _, _ in running.values():
            proc.wait()
        if not isinstance(e, (KeyboardInterrupt, Stopped)):
            raise  # anything else (a closed output pipe, a failed submission): the stages stopped, then the error
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"stopped by {e}"
        print(f"asd-repro: {why}; run it again to resume (finished stages are recorded, a training stage "
              "resumes from its last epoch)", file=sys.stderr)
        return (130 if isinstance(e, KeyboardInterrupt) else 128 + e.signum), done
    if failed is not None:
        left = len(waiting)
        print(f"asd-repro: stage {failed[0]} failed; {left} stage(s) not started. Fix it and run again: finished "
              "stages are kept", file=sys.stderr)
        return 1, done
    return 0, done


def _escalate(groups: list[int], alive: Callable[[int], bool], steps: tuple[tuple[int | None, float], ...]) -> None:
    """For each (signal, seconds) step: send the signal (None: none) to the process groups still alive, then wait up
    to the seconds for all of them to end."""
    for sig, seconds in steps:
        left = [g for g in groups if alive(g)]
        if not left:
            return
        for group in left if sig is not None else ():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(alive(g) for g in groups):
            time.sleep(0.1)


def _stop_groups(procs: list[subprocess.Popen], grace: float = STOP_GRACE) -> None:
    """Wait up to ``grace`` seconds for stages sent SIGINT to end (a training stage checkpoints first); a stage whose
    process group is still there then gets SIGTERM, and SIGKILL after another few seconds, so a stop never waits on
    a stage that ignores SIGINT."""
    leaders = {proc.pid: proc for proc in procs}

    def alive(group: int) -> bool:  # the leader (poll reaps it) or any other process of its group
        return leaders[group].poll() is None or _group_alive(group)

    _escalate(list(leaders), alive, ((None, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)))


class Watchdog:
    """A process that outlives the runner: the runner tells it every process group it starts and ends; if the
    runner dies without saying goodbye (``kill -9``: its end of the pipe closes), the watchdog ends those groups
    (SIGTERM, then SIGKILL after a grace period), so no stage keeps training unseen."""

    def __init__(self, keep_fds: tuple[int, ...] = ()) -> None:
        """``keep_fds``: file descriptors the watchdog holds until it is done (the workspace lock: a new runner
        cannot start while the stages of a killed one are still being ended)."""
        self.proc = subprocess.Popen([sys.executable, "-c", "from asd_repro.runner import watch; watch()"],
                                     stdin=subprocess.PIPE, text=True, start_new_session=True, pass_fds=keep_fds)

    def _say(self, line: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def add(self, pgid: int) -> None:
        self._say(f"add {pgid}")

    def done(self, pgid: int) -> None:
        self._say(f"done {pgid}")

    def close(self, stop_stages: bool = False) -> None:
        """Let the watchdog go; with ``stop_stages`` (the runner is failing) it ends the groups it knows first."""
        if not stop_stages:
            self._say("exit")
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        self.proc.wait()


def watch(grace: float = 10.0) -> None:
    """The watchdog's loop (see ``Watchdog``): read ``add``/``done``/``exit`` lines until the pipe ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    groups: set[int] = set()
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "exit":
            return
        (groups.add if command == "add" else groups.discard)(int(arg))
    _escalate(sorted(groups), _group_alive, ((signal.SIGTERM, grace), (signal.SIGKILL, grace)))


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


@contextlib.contextmanager
def workspace_lock() -> Iterator[int]:
    """One runner a workspace: a second one stops with one line naming the first's pid. Yields the lock's file
    descriptor (the watchdog holds it too)."""
    from asd_repro.core.errors import UserError

    LOGS.mkdir(parents=True, exist_ok=True)
    path = LOGS / "runner.lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise UserError(f"{path}: another asd-repro repro (pid {holder}) runs in this workspace; wait for it to "
                        "finish or stop it, then run again") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield handle.fileno()
    finally:
        handle.close()


@contextlib.contextmanager
def forkserver(jobs: int, watch: Watchdog | None = None) -> Iterator[None]:
    """Run ``asd_repro.forkserver`` for the stages' ``asd-repro`` commands (set in ``ASD_REPRO_SERVER``), so that
    none of them pays the libraries' imports again; without it (it failed to start) each imports them itself."""
    from asd_repro.forkserver import ENV

    LOGS.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="asd-repro-")) / "server.sock"
    env = stage_env(jobs)
    log = open(LOGS / "forkserver.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "asd_repro", "--forkserver", str(path)], stdout=subprocess.PIPE,
                              stderr=log, env=env, text=True, start_new_session=True)
    if watch is not None:
        watch.add(server.pid)
    previous = os.environ.get(ENV)
    try:
        if server.stdout.readline().strip() == "ready":
            os.environ[ENV] = str(path)
        else:
            print(f"asd-repro: the fork server did not start (see {LOGS / 'forkserver.log'}); every stage imports "
                  "the libraries itself", file=sys.stderr, flush=True)
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


def _plan(targets: list[str], force: bool) -> Plan:
    """``plan``, with DVC's own errors (no DVC project, a malformed dvc.yaml, params.yaml or dvc.lock, a lock
    another DVC process holds) as one line."""
    from asd_repro.core.errors import UserError

    try:
        return plan(targets, force)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - DVC's exceptions have no common importable base across versions
        if type(e).__module__.split(".")[0] not in ("dvc", "dvc_objects", "dvc_data", "ruamel", "yaml", "funcy"):
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        raise UserError(f"dvc: {text[:300]}; fix that and run again (plain `dvc repro` says the same)") from None


def preflight(params_file: Path = Path("params.yaml")) -> None:
    """Parse every gin bindings list of ``params.yaml`` before any stage runs (``checkbindings.parse_lists``, what
    the check stage runs too): a typo stops the run with one line naming its list, never inside a stage after DVC
    has removed that stage's previous outputs."""
    if not params_file.is_file():
        return
    from asd_repro.checkbindings import parse_lists
    from asd_repro.core.matrix import read_params

    lists = (read_params(params_file) or {}).get("bindings")
    if isinstance(lists, dict):  # otherwise the check stage names the problem
        parse_lists(params_file, list(lists))


def _project_root() -> Path:
    """The DVC project this folder belongs to (one line when there is none: nothing is created)."""
    from asd_repro.core.errors import UserError

    try:
        from dvc.repo import Repo

        return Path(Repo.find_root())
    except Exception as e:  # noqa: BLE001 - DVC's NotDvcRepoError and its relatives
        if type(e).__module__.split(".")[0] != "dvc":
            raise
        raise UserError(f"dvc: {' '.join(str(e).split())}; run `dvc init` first, or run from inside a DVC "
                        "project") from None


def _devices(text: str | None) -> list[str]:
    from asd_repro.core.errors import UserError

    if text is None:
        return []
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices) or len(set(devices)) != len(devices):
        raise UserError(f"--gpus {text}: give device indices, e.g. --gpus 0,1")
    return devices


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="asd-repro repro", description=__doc__.splitlines()[0])
    ap.add_argument("targets", nargs="*", help="stages to bring up to date (default: the whole pipeline)")
    ap.add_argument("-j", "--jobs", type=int,
                    help="stages at a time (default: the CPU cores; with --gpus, the devices x --per-gpu)")
    ap.add_argument("-f", "--force", action="store_true", help="re-run every selected stage, changed or not")
    ap.add_argument("--dry", action="store_true", help="print the stages that would run, run nothing")
    ap.add_argument("--times", type=Path, help="write every finished stage's wall seconds here (JSON)")
    ap.add_argument("--gpus", metavar="LIST",
                    help="GPU indices, e.g. 0,1: each stage that trains or evaluates gets one (CUDA_VISIBLE_DEVICES), "
                         "the CPU-only stages none; the fork server stays off")
    ap.add_argument("--per-gpu", type=int, default=1, metavar="K", help="stages at a time on one GPU (default 1)")
    ap.add_argument("--no-forkserver", action="store_true",
                    help="every stage imports the libraries itself (no shared process that has imported them)")
    ap.add_argument("--cluster", choices=("slurm", "local"),
                    help="run every stage as a job through submitit: 'slurm', or 'local' processes (to try it)")
    ap.add_argument("--partition", help="the SLURM partition of the jobs (default: the cluster's)")
    ap.add_argument("--hours-scale", type=float, default=1.0, metavar="F",
                    help="scale every stage family's time limit (asd_repro/cluster.py RESOURCES) by F")
    args = ap.parse_args(argv)
    from asd_repro.core.errors import UserError

    slots = Slots(_devices(args.gpus), args.per_gpu)
    if args.per_gpu < 1:
        raise UserError(f"--per-gpu {args.per_gpu}: run at least one stage a device")
    jobs = args.jobs if args.jobs is not None else (slots.capacity or os.cpu_count() or 1)
    if jobs < 1:
        raise UserError(f"-j {jobs}: run at least one stage at a time")
    if slots.devices and args.cluster:
        raise UserError("--gpus and --cluster: a cluster job gets its GPUs from the scheduler; give one of them")
    os.chdir(_project_root())  # the logs, the lock and the stage names are the project's, from any folder in it
    start = time.perf_counter()
    with workspace_lock() as lock_fd:
        plan_ = _plan(args.targets, args.force)
        if not plan_.needs:
            print("Data and pipelines are up to date.")
            return 0
        if args.dry:
            for name in sorted(plan_.needs, key=lambda n: -plan_.order[n]):
                print(name)
            return 0
        preflight()
        on = f" on GPUs {','.join(slots.devices)} ({args.per_gpu} a GPU)" if slots.devices else ""
        print(f"{len(plan_.needs)} stage(s) to run, {jobs} at a time{on}; logs in {LOGS}/", flush=True)
        cluster = None
        if args.cluster:
            from asd_repro.cluster import Cluster

            cluster = Cluster(args.cluster, LOGS / "jobs", args.partition, args.hours_scale)
        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
        watch = Watchdog(keep_fds=(lock_fd,))
        devices: dict[str, str] = {}
        clean = False
        try:
            local = not (args.no_forkserver or slots.devices or cluster)
            with forkserver(jobs, watch) if local else contextlib.nullcontext():
                status, done = run(plan_, jobs, args.force, slots=slots, watch=watch, devices=devices,
                                   cluster=cluster)
            clean = True
        except Stopped as e:  # a signal between the stages' loop and the fork server's clean-up
            status, done, clean = 128 + e.signum, {}, True
        finally:
            watch.close(stop_stages=not clean)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    wall = time.perf_counter() - start
    families: dict[str, float] = {}
    for name, seconds in done.items():
        families[name.split("@")[0]] = families.get(name.split("@")[0], 0.0) + seconds
    print(f"{len(done)} stage(s) in {wall / 60:.1f} min wall; stage seconds by family: "
          + ", ".join(f"{k} {v:.0f}" for k, v in families.items()))
    if args.times:
        args.times.write_text(json.dumps({"jobs": jobs, "wall_seconds": wall, "stages": done, "families": families,
                                          "devices": devices, "returncode": status}, indent=2) + "\n")
    return status
