"""Files: atomic stage outputs, checksummed uint8 arrays, JSON.

Every stage writes into a sibling ``<out>.partial`` folder and renames it into place only when
it has finished, so a failed or killed stage never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from asd_repro.core.errors import UserError


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch folder that replaces ``out`` only if the block finishes without error.

    The scratch folder is named after its writer (``.<out>.partial-<pid>@<host>-<random>``), so another process
    writing the same output keeps its folder; the previous ``out`` is moved aside and put back if the final rename
    fails, so a failure never loses it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed run (kill -9 skips the cleanup)
        if not _writer_alive(stale):  # another process still writing there keeps its folder
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}@{HOST}-", dir=out.parent))
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            old = tmp.with_name(tmp.name + ".old")
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)
                raise
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


HOST = "".join(c if c.isalnum() or c in "._" else "_" for c in socket.gethostname()) or "host"
STALE_ELSEWHERE_S = 86_400  # a scratch folder of another machine's writer (a shared file system) is kept a day


def _writer_alive(scratch: Path) -> bool:
    """Whether the writer named in a scratch folder's name (``.<out>.partial-<pid>@<host>-<random>``) still runs:
    a process of this machine is asked; another machine's folder counts as alive for a day after its last change."""
    rest = scratch.name.rpartition(".partial-")[2]
    pid, at, host = rest.partition("@")
    host = host.rsplit("-", 1)[0] if at else HOST
    pid = pid if at else rest.split("-")[0]
    if not pid.isdigit():
        return False
    if host != HOST:
        with contextlib.suppress(OSError):
            return time.time() - scratch.stat().st_mtime < STALE_ELSEWHERE_S
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


WRITE_ERRORS = {  # errno -> what to do, for a write that fails (one line naming the path, exit 2)
    errno.EROFS: "the file system is read-only; write the outputs somewhere writable",
    errno.EACCES: "fix the permissions of the file or its folder, or write elsewhere",
    errno.EPERM: "fix the permissions of the file or its folder, or write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder; move that file away",
    errno.EISDIR: "the path is a folder where a file belongs; move that folder away",
    errno.EEXIST: "a file stands where a folder is needed; move that file away",
}


def _errno_of(e: OSError) -> tuple[int | None, str | None, str | None]:
    """(errno, strerror, filename) of an OSError. gin re-raises an exception from inside a configurable as a proxy
    that keeps only its text (``[Errno 28] No space left on device: 'path'``), so they are read back from it."""
    if e.errno is not None:
        return e.errno, e.strerror, e.filename
    import re

    found = re.match(r"\[Errno (\d+)\] ([^:\n]+)(?:: '([^'\n]*)')?", str(e))
    return (int(found.group(1)), found.group(2), found.group(3)) if found else (None, None, None)


def write_error(e: OSError) -> UserError | None:
    """The one-line error for an OSError of a file (no space, read-only, permission, not a folder), else None."""
    code, strerror, filename = _errno_of(e)
    where = filename or "an output"
    if code in NO_SPACE:
        return no_space_error(where, strerror or str(e))
    if code in WRITE_ERRORS:
        verb = "cannot read or write" if code in (errno.EACCES, errno.EPERM) else "cannot write"
        return UserError(f"{where}: {verb} ({strerror}); {WRITE_ERRORS[code]}; the previous outputs are intact")
    return None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def no_space_error(path: str | os.PathLike, detail: str) -> UserError:
    return UserError(f"{path}: cannot write ({detail}); free disk space (or raise the file-size limit) and re-run; "
                     "the previous outputs and checkpoints are intact")


def save_torch(obj: Any, path: str | os.PathLike, what: str = "file") -> None:
    """``torch.save`` that turns a failed write (full disk, file-size limit) into one line and removes the rest.

    torch's zip writer reports a failed write as a RuntimeError (or an OSError): both mean the file could not be
    written. The file is saved under its own path (the archive inside takes its name), never through a buffer.
    """
    import torch

    try:
        torch.save(obj, path)
    except (OSError, RuntimeError) as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        if isinstance(e, OSError) and e.errno not in NO_SPACE:
            raise
        raise no_space_error(path, f"{what}: {str(e).splitlines()[0][:120]}") from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found; run the stage that produces it (dvc repro)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e}); delete it and re-run the stage that produces it") from None


def sha256_array(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).data).hexdigest()


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Save each array as ``<name>.npy``; return the manifest entries (shape, dtype, sha256)."""
    entries = {}
    for name, a in arrays.items():
        np.save(folder / f"{name}.npy", a, allow_pickle=False)
        entries[name] = {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": sha256_array(a)}
    return entries


def load_arrays(folder: str | os.PathLike, manifest: dict[str, Any], names: list[str] | None = None,
                producer: str = "the stage that wrote it") -> dict[str, np.ndarray]:
    """Load arrays listed in a manifest, verifying shape, dtype and checksum of each."""
    folder = Path(folder)
    files = manifest.get("files", {})
    out = {}
    for name in names or list(files):
        path = folder / f"{name}.npy"
        fix = f"delete {folder} and re-run {producer} (dvc repro -f)"
        if name not in files:
            raise UserError(f"{folder / 'manifest'}: no array {name!r} listed; {fix}")
        if not path.exists():
            raise UserError(f"{path}: missing cached array; {fix}")
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"{path}: corrupt cached array ({str(e).splitlines()[0]}); {fix}") from None
        want = files[name]
        if list(a.shape) != want["shape"] or str(a.dtype) != want["dtype"] or sha256_array(a) != want["sha256"]:
            raise UserError(f"{path}: corrupt cached array (checksum mismatch with its manifest); {fix}")
        out[name] = a
    return out
