"""A process that has imported torch, timm and every plug-in once, and forks a copy of itself for each stage.

Every DVC stage is one ``asd-repro`` process, and importing the libraries costs ~5 s of CPU before a stage does any
work (``benchmarks/startup.py``): over the default's 171 stages, as much as several stages' training. While
``asd-repro repro`` runs, it starts this server and sets ``ASD_REPRO_SERVER`` to its socket; an ``asd-repro``
command that finds the variable sends its arguments, working folder and environment, with its standard input,
output and error, to the server, which forks a child that runs the command as the process itself would have and
reports its exit status. The child starts from the server's imported modules only: no gin configuration, no RNG
state and no thread pool of the server's is used (the server computes nothing, so torch's threads are created in
the child, after ``stages.torch_threads``); a stage's outputs are byte-identical either way (tested). Without the
variable, or when the server cannot be reached, the command runs in its own process as always.

Protocol, over a Unix socket: the client sends one JSON line (argv, cwd, env) with its three standard streams as
SCM_RIGHTS file descriptors; the child answers ``pid <n>`` (so that the client can forward SIGINT and SIGTERM to it)
and, when done, ``exit <status>``.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Callable

ENV = "ASD_REPRO_SERVER"


def _send_fds(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _recv_fds(sock: socket.socket, size: int, count: int) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(size, socket.CMSG_LEN(count * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def delegate(argv: list[str]) -> int | None:
    """Run ``asd-repro argv`` in a child of the server named by ``ASD_REPRO_SERVER``; its exit status, or None
    when there is no server to run it (the caller then runs the command itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
    _send_fds(sock, request, [0, 1, 2])
    reader = sock.makefile("r")
    child: list[int] = []

    def forward(signum, _frame):
        if child:
            os.kill(child[0], signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, forward)
    for line in reader:
        word, _, value = line.strip().partition(" ")
        if word == "pid":
            child.append(int(value))
        elif word == "exit":
            return int(value)
    return 1  # the child died without a status (killed): a failure, as the process itself would have been


def _serve_one(conn: socket.socket, entry: Callable[[list[str]], int]) -> None:
    """In the forked child: become the client's process and run its command."""
    data, fds = _recv_fds(conn, 1 << 20, 3)
    while not data.endswith(b"\n"):
        more = conn.recv(1 << 20)
        if not more:
            os._exit(1)
        data += more
    request = json.loads(data)
    print(f"forkserver: process {os.getpid()} runs asd-repro {' '.join(request['argv'][:2])} in {request['cwd']}",
          file=sys.stderr, flush=True)  # the server's log, before the streams become the client's
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # as Python sets them up
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.pop(ENV, None)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    conn.sendall(f"pid {os.getpid()}\n".encode())
    sys.argv = ["asd-repro", *request["argv"]]
    try:
        status = entry(request["argv"])
    except SystemExit as e:  # argparse
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except BaseException:  # noqa: BLE001 - reported as the process itself would have: a traceback, status 1
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    conn.sendall(f"exit {status}\n".encode())
    os._exit(status)


def serve(path: str, entry: Callable[[list[str]], int], preload: Callable[[], None]) -> None:
    """Run ``preload`` (import everything a stage imports), listen on ``path`` and fork a child per command, which
    runs ``entry(argv)`` (the command line's ``main``), until terminated. Started by ``python -m asd_repro
    --forkserver PATH`` (``asd_repro/__main__.py``), which passes both, so this module imports nothing above it."""
    preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; their clients get the status
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(16)
    print("ready", flush=True)
    try:
        while True:
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                try:
                    _serve_one(conn, entry)
                finally:
                    os._exit(1)
            conn.close()
    finally:
        server.close()
        Path(path).unlink(missing_ok=True)
