"""Per-epoch checkpoints that let a killed training stage resume where it stopped.

A checkpoint is keyed by a fingerprint of everything the run depends on (its gin configuration
and the checksums of its input arrays), so a stale checkpoint from a different configuration is
never resumed. It holds every RNG state, so a resumed run ends with the same metrics as an
uninterrupted one (CPU, same seed).

Checkpoints hold only tensors and plain Python values (the numpy RNG state is stored as a list), so they
load with ``torch.load(weights_only=True)``: a checkpoint file never runs code. One that cannot be read
(cut off, foreign, of another layout) gets a one-line warning and the phase starts over from epoch 0.
A lock file in the checkpoint folder keeps a second process from training into the same folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import random
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from asd_repro.core.errors import UserError
from asd_repro.core.io import save_torch


def fingerprint(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
            "python": random.getstate(), "generator": generator.get_state()}


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    generator.set_state(state["generator"])


class Checkpointer:
    """Saves and restores ``state`` dicts under ``folder/<fingerprint>/last.pt`` atomically."""

    def __init__(self, folder: str | os.PathLike | None, key: str):
        self.root = Path(folder) if folder else None
        self.key = key

    @property
    def path(self) -> Path | None:
        if self.root is None:
            return None
        return self.root / self.key / (f"{self.sub}.pt" if self.sub else "last.pt")

    def phase(self, name: str) -> "Checkpointer":
        """The checkpointer of one phase of a multi-phase defense (its own file; ``clear`` removes them all)."""
        child = Checkpointer(self.root, self.key)
        child.sub = name
        return child

    sub = ""

    def load(self) -> dict[str, Any] | None:
        if self.path is None or not self.path.exists():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # cut off mid-write, or not one of ours: start over rather than fail
            self.discard(f"cannot be read ({str(e).splitlines()[0][:120]})")
            return None

    def discard(self, why: str) -> None:
        """Warn (one line) that the checkpoint is unusable and remove it: its phase starts over from epoch 0."""
        print(f"asd-repro: warning: checkpoint {self.path} {why}; starting this phase over from epoch 0",
              file=sys.stderr, flush=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def save(self, state: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        save_torch(state, tmp, what="checkpoint")  # on a full disk: one line, the previous checkpoint intact
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``folder/.lock`` while training; a second process on the same folder stops with one line.

        The lock is the kernel's (``flock``): it is released when the process ends, even by ``kill -9``.
        """
        if self.root is None:
            yield
            return
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise UserError(f"{self.root}: checkpoint folder in use by {holder} (lock {path}); wait for it "
                                f"to finish or stop it, or pass another --checkpoints folder") from None
            f.seek(0)
            f.truncate()
            f.write(f"asd-repro process {os.getpid()}\n")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def clear(self) -> None:
        if self.root is not None:
            shutil.rmtree(self.root / self.key, ignore_errors=True)
