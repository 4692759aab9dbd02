"""Read a small state file that others may replace with anything: bounded, non-blocking, typed.

``store.json``, ``credentials.json`` and ``health.json`` live on volumes that people and other
programs write. A plain ``open().read()`` of such a path can freeze or exhaust the daemon: a FIFO
blocks the opener until a writer comes (on the event loop, that is the whole daemon: no key
regeneration, no SIGTERM), a symlink to ``/dev/zero`` reads forever, and a symlink loop or a
permission error raises where nobody expects it. :func:`read_small_file` refuses everything that
is not a regular file *before* opening it, opens without blocking and without taking a terminal,
checks the type again on the open descriptor (the path may have been swapped in between), and
reads at most a cap. Every refusal is an :class:`UnreadableFile` that says what the path is and
what to do.

A regular file of a few KiB on a local volume reads in microseconds, so callers on the event loop
call this directly: the opens that block for ever (FIFOs, devices) never happen. ``vllmd health``
and ``vllmd run``'s first milliseconds read through it too, so it imports ``os``, ``errno`` and
``stat`` only. (The API key guard, which runs alone in vLLM's process, has its own small reader
with the same cap rule.)
"""

from __future__ import annotations

import errno
import os
import stat

from vllmd.core.errors import VllmdError

TYPE_CHECKING = False  # typing's own costs `vllmd health` what it saves
if TYPE_CHECKING:
    StrPath = str | os.PathLike[str]

__all__ = ["UnreadableFile", "read_at_most", "read_small_file"]

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnreadableFile(VllmdError):
    """Raised when a state file exists (or a symlink names it) but cannot be read as one."""

    reason: str
    """What the path is instead of a readable file, without the path: ``a FIFO (named pipe)``."""

    def __init__(self, path: StrPath, reason: str, hint: str = "") -> None:
        super().__init__(f"{path}: {reason}.", hint or _HINT)
        self.reason = reason


_HINT = "Replace it with a regular file (or remove it)."


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    return "not a regular file"


def _oserror(path: StrPath, exc: OSError) -> UnreadableFile:
    """The refusal for an ``OSError`` met while looking at or reading ``path``."""
    if exc.errno == errno.ELOOP:
        return UnreadableFile(path, "a loop of symbolic links", "Point the link at a real file.")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return UnreadableFile(
            path,
            "permission denied",
            "Give the file to the user vllmd runs as, or make it readable (chmod 0644).",
        )
    if exc.errno == errno.ENOTDIR:
        return UnreadableFile(path, "a folder on its path is a file", "Fix the folders.")
    return UnreadableFile(path, f"cannot be read ({exc.strerror or exc})")


def _dangling(path: StrPath) -> UnreadableFile | None:
    """The refusal for a symlink at ``path`` whose target does not exist, else None."""
    try:
        target = os.readlink(path)
    except OSError:
        return None  # no link there: the file is simply absent
    return UnreadableFile(
        path,
        f"a symbolic link to {target!r}, which does not exist",
        "Point the link at a real file, or remove it.",
    )


def read_at_most(fd: int, limit: int) -> bytes:
    """What ``fd`` holds, up to ``limit + 1`` bytes: more than ``limit`` means "too large"."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_small_file(path: StrPath, max_bytes: int) -> bytes:
    """The content of the regular file ``path``, at most ``max_bytes`` long.

    Raises:
        FileNotFoundError: nothing is at ``path`` (a dangling symlink is not nothing).
        UnreadableFile: ``path`` is a folder, FIFO, device or socket, a dangling symlink or a
            loop of them, unreadable, or larger than ``max_bytes``.
    """
    try:
        info = os.stat(path)  # follows links: the type of what an open would reach
    except FileNotFoundError as exc:
        raise _dangling(path) or exc from None
    except OSError as exc:
        raise _oserror(path, exc) from exc
    kind = _kind(info.st_mode)
    if kind is not None:
        raise UnreadableFile(path, kind)
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise _dangling(path) or exc from None
    except OSError as exc:
        raise _oserror(path, exc) from exc
    try:
        kind = _kind(os.fstat(fd).st_mode)  # swapped for something else since the stat?
        if kind is not None:
            raise UnreadableFile(path, kind)
        data = read_at_most(fd, max_bytes)
    except OSError as exc:
        raise _oserror(path, exc) from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnreadableFile(
            path,
            f"larger than {max_bytes:,} bytes, too large to be this file",
            "Replace it with a file of the expected shape.",
        )
    return data
