"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The recipe is the classic one: write a temporary file in the same folder, ``fsync`` it, ``rename``
it over the target, then ``fsync`` the folder so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to a fresh temporary file beside ``path`` and return its name."""
    fd = -1
    for attempt in range(100):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{attempt}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - a hundred stale temporaries of our own pid
        raise FileExistsError(f"could not create a temporary file beside {path}")
    try:
        os.fchmod(fd, mode)  # the umask must not narrow what dependents may read
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync folder)."""
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def create_atomic(path: Path, data: bytes, mode: int = 0o644) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet; return whether we created it.

    ``link`` fails when the target exists, so two writers racing to create the same file (the
    daemon and an action, say) never overwrite each other: the loser keeps the winner's file.
    """
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    _fsync_dir(path.parent)
    return True


def aside_path(path: Path) -> Path:
    """A free name to move a bad ``path`` aside to: ``NAME.invalid-<UTC timestamp>[-N]``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidate = path.with_name(f"{path.name}.invalid-{stamp}")
    n = 1
    while os.path.lexists(candidate):  # a dangling symlink is taken too
        n += 1
        candidate = path.with_name(f"{path.name}.invalid-{stamp}-{n}")
    return candidate
