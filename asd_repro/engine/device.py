"""Where the work runs: the device a binding names, and the CPU threads of a block."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from asd_repro.core.errors import UserError


def resolve_device(device: str, binding: str = "stages.train.device") -> torch.device:
    """The torch device ``device`` names: 'auto' (CUDA when available, else the CPU), 'cpu' or 'cuda[:i]'.

    A name torch does not know, or CUDA on a machine without it, is a one-line error naming ``binding``.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"{binding} = {device!r} is not a device: 'auto', 'cpu' or 'cuda[:i]'; fix the binding") \
            from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{binding} = {device!r}, but this machine has no CUDA device; bind 'auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"{binding} = {device!r}: only 'cpu' and 'cuda' devices are supported; fix the binding")
    return dev


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Run a block on ``n`` CPU threads (None: leave torch's setting), restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)
