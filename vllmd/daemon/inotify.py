"""Linux inotify through ctypes: a file descriptor the event loop waits on, nothing more.

Why not only watchfiles: its Rust loop wakes every ``step`` milliseconds to look at what it
collected, so reaction time and idle cost pull against each other (step 10 ms: ~20 ms latency
but 0.3 CPU-s a minute idle; step 50 ms: 0.11 CPU-s but ~100 ms, two steps, before a change is
seen). An inotify descriptor in the event loop costs nothing until the kernel has an event and
delivers it in microseconds. watchfiles stays the fallback where inotify is unavailable.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

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

    def add_folder(self, path: str) -> int:
        """Watch the folder ``path`` (not recursively); return the watch descriptor."""
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), FOLDER_EVENTS | IN_ONLYDIR)
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

    def close(self) -> None:
        """Release the descriptor and every watch on it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
