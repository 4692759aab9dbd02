"""Raw inotify through ctypes: the delivery floor, and the benchmark's own event-driven waits.

Standard library only (no ``inotify_simple``): ``inotify_init1``, ``inotify_add_watch`` and a
``read`` of the fd, which is readable as soon as the kernel has queued an event.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
from pathlib import Path
from types import TracebackType

IN_MODIFY = 0x0000_0002
IN_CLOSE_WRITE = 0x0000_0008
IN_MOVED_FROM = 0x0000_0040
IN_MOVED_TO = 0x0000_0080
IN_CREATE = 0x0000_0100
IN_DELETE = 0x0000_0200
CHANGES = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
"""Every event that can mean "a file in this folder is not what it was"."""

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_libc = ctypes.CDLL(None, use_errno=True)


class Inotify:
    """One inotify instance: add folders, then :meth:`read` what happened in them."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_init1: {os.strerror(errno)}")
        self.fd: int = fd
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def add_watch(self, path: Path | str, mask: int = CHANGES) -> int:
        """Watch the folder (or file) ``path`` for ``mask``; return the watch descriptor."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"inotify_add_watch {path}: {os.strerror(errno)}")
        return int(wd)

    def read(self, timeout_s: float) -> list[tuple[int, int, str]]:
        """Events ``(wd, mask, name)`` queued now, waiting up to ``timeout_s`` for the first."""
        if not self._poll.poll(max(0, int(timeout_s * 1000))):
            return []
        try:
            data = os.read(self.fd, 65_536)
        except BlockingIOError:
            return []
        events = []
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _cookie, size = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            name = data[offset : offset + size].rstrip(b"\0").decode(errors="replace")
            offset += size
            events.append((wd, mask, name))
        return events

    def close(self) -> None:
        """Release the fd (idempotent)."""
        if self.fd >= 0:
            self._poll.unregister(self.fd)
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
