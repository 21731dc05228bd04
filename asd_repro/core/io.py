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
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from asd_repro.core.errors import UserError


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch folder that replaces ``out`` only if the block finishes without error."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed run (kill -9 skips the cleanup)
        if not _writer_alive(stale):  # another process still writing there keeps its folder
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)


def _writer_alive(scratch: Path) -> bool:
    """Whether the process named in a scratch folder's name (``.<out>.partial-<pid>-<random>``) still runs."""
    pid = scratch.name.rpartition(".partial-")[2].split("-")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
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
    errno.EACCES: "permission denied; fix the folder's permissions or write elsewhere",
    errno.EPERM: "not permitted; fix the folder's permissions or write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder; move that file away",
    errno.EISDIR: "the path is a folder where a file belongs; move that folder away",
    errno.EEXIST: "a file stands where a folder is needed; move that file away",
}


def write_error(e: OSError) -> UserError | None:
    """The one-line error for an OSError of a write (no space, read-only, permission, not a folder), else None."""
    where = e.filename or "an output"
    if e.errno in NO_SPACE:
        return no_space_error(where, e.strerror or str(e))
    if e.errno in WRITE_ERRORS:
        return UserError(f"{where}: cannot write ({e.strerror}); {WRITE_ERRORS[e.errno]}; the previous outputs "
                         "are intact")
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
