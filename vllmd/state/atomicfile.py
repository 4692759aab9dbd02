"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The recipe is the classic one: write a temporary file in the same folder, ``fsync`` it, ``rename``
it over the target, then ``fsync`` the folder so the rename itself survives a crash. It is the one
copy of the recipe: ``vllmd run`` writes its first files with it before anything else is imported
(:mod:`vllmd.early`), so this module imports only ``os`` and ``time`` (both built in).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing's own would import typing: milliseconds of vllmd run's first ones
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    StrPath = str | os.PathLike[str]


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # already gone: nothing is left behind either way (contextlib costs an import)
        return


def _write_temp(path: str, data: bytes, mode: int, durable: bool) -> str:
    """Write ``data`` to a fresh temporary file beside ``path`` and return its name."""
    folder, name = os.path.split(path)
    fd = -1
    for attempt in range(100):
        tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}-{attempt}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
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
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(
    path: StrPath,
    data: bytes,
    mode: int = 0o644,
    *,
    durable: bool = True,
    still: Callable[[], bool] | None = None,
) -> bool:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync folder); return
    whether it did.

    ``durable=False`` leaves out both fsyncs: readers still see the old file or the new one, but
    a crash may leave either. Only for a file rewritten durably moments later. ``still`` is asked
    last, with the new content on disk beside the target: when it says False (the file changed
    since the caller read it, say), nothing is replaced and this returns False.
    """
    target = os.fspath(path)
    tmp = _write_temp(target, data, mode, durable)
    try:
        if still is not None and not still():
            _unlink_quietly(tmp)
            return False
        os.replace(tmp, target)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        _fsync_dir(os.path.dirname(target) or ".")
    return True


def create_atomic(path: StrPath, data: bytes, mode: int = 0o644) -> bool:
    """Create ``path`` with ``data`` only if it does not exist yet; return whether we created it.

    ``link`` fails when the target exists, so two writers racing to create the same file (the
    daemon and an action, say) never overwrite each other: the loser keeps the winner's file.
    """
    target = os.fspath(path)
    tmp = _write_temp(target, data, mode, durable=True)
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    finally:
        _unlink_quietly(tmp)
    _fsync_dir(os.path.dirname(target) or ".")
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
