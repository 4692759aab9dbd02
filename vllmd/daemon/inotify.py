"""Linux inotify through ctypes: a file descriptor the event loop waits on, nothing more.

Why not only watchfiles: its Rust loop wakes every ``step`` milliseconds to look at what it
collected, so reaction time and idle cost pull against each other (step 10 ms: ~20 ms latency
but 0.3 CPU-s a minute idle; step 50 ms: 0.11 CPU-s but ~100 ms, two steps, before a change is
seen). An inotify descriptor in the event loop costs nothing until the kernel has an event and
delivers it in microseconds. watchfiles stays the fallback where inotify is unavailable.

Standard library only; the benchmark uses this binding too, outside any event loop
(:meth:`Inotify.read_within`).
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

IN_MODIFY = 0x0000_0002
IN_ATTRIB = 0x0000_0004
IN_CLOSE_WRITE = 0x0000_0008
IN_MOVED_FROM = 0x0000_0040
IN_MOVED_TO = 0x0000_0080
IN_CREATE = 0x0000_0100
IN_DELETE = 0x0000_0200
IN_DELETE_SELF = 0x0000_0400
IN_MOVE_SELF = 0x0000_0800
IN_Q_OVERFLOW = 0x0000_4000
IN_IGNORED = 0x0000_8000
IN_ONLYDIR = 0x0100_0000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

FOLDER_EVENTS = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
"""Everything that can change a file in a folder, or the folder itself."""

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


@dataclass(frozen=True, slots=True)
class Event:
    """One inotify event: the watch it came from, what happened, and the entry's name."""

    wd: int
    mask: int
    name: str


class Inotify:
    """An inotify instance: add folder watches, read events without blocking."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        self.fd: int = fd

    def add_folder(self, path: str | os.PathLike[str]) -> int:
        """Watch the folder ``path`` (not recursively); return the watch descriptor."""
        return self.add_watch(path, FOLDER_EVENTS | IN_ONLYDIR)

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch ``path`` for the events in ``mask``; return the watch descriptor."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}", path)
        return int(wd)

    def read(self) -> Iterator[Event]:
        """The events that are waiting (none when nothing is)."""
        try:
            data = os.read(self.fd, 65_536)
        except BlockingIOError:
            return
        offset = 0
        while offset + _HEADER.size <= len(data):
            wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            name = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            yield Event(wd, mask, os.fsdecode(name))

    def read_within(self, timeout_s: float) -> list[Event]:
        """Block up to ``timeout_s`` for the first event, then return every waiting one.

        For callers outside an event loop; in one, wait until :attr:`fd` is readable instead.
        """
        poller = select.poll()  # not select.select: a descriptor may be above FD_SETSIZE
        poller.register(self.fd, select.POLLIN)
        return list(self.read()) if poller.poll(max(0, round(timeout_s * 1000))) else []

    def close(self) -> None:
        """Release the descriptor and every watch on it (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
