"""The daemon's own stdout and stderr, written without ever blocking the event loop.

When nobody reads the daemon's output (a stuck log collector), a pipe fills after 64 KiB and a
blocking write waits for ever: on the event loop that is the whole daemon, no key regeneration,
no SIGTERM (issue 11). An :class:`OutStream` puts its descriptor in non-blocking mode, writes what
the pipe takes, keeps the rest in a bounded buffer that :meth:`OutStream.run` flushes when the
pipe is writable again, and drops whole writes (lines) that do not fit, counting them. The loss
is never silent: ``on_dropped`` hears of the first drop at once, and of the total once the reader
has caught up.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

__all__ = ["BUFFER_LIMIT", "OutStream"]

BUFFER_LIMIT = 1 << 20
"""Bytes that may wait for a slow reader; beyond them, new writes are dropped (and counted)."""


class OutStream:
    """A file descriptor that never blocks its writers.

    Args:
        fd: The descriptor (1 or 2); put in non-blocking mode until :meth:`close`.
        limit: How many bytes may wait for the reader.
        on_dropped: Told ``(writes, bytes, caught_up)``: at the first drop of an overflow
            (``caught_up`` false), and with the totals once the reader has caught up again.
    """

    def __init__(
        self,
        fd: int,
        *,
        limit: int = BUFFER_LIMIT,
        on_dropped: Callable[[int, int, bool], None] | None = None,
    ) -> None:
        self.fd = fd
        self._limit = limit
        self._on_dropped = on_dropped
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._dropped_writes = 0
        self._dropped_bytes = 0
        self._was_blocking = True
        with contextlib.suppress(OSError):
            self._was_blocking = os.get_blocking(fd)
            os.set_blocking(fd, False)
        self._wakeup: anyio.Event | None = None  # made in run(): it needs the event loop
        self._loop_thread: int | None = None

    @property
    def pending(self) -> int:
        """Bytes waiting for the reader."""
        return len(self._pending)

    @property
    def dropped(self) -> tuple[int, int]:
        """Writes and bytes dropped since the last report."""
        return self._dropped_writes, self._dropped_bytes

    def write(self, data: bytes) -> None:
        """Write ``data`` now, or keep it for later, or drop it whole; never block, never raise."""
        if not data:
            return
        with self._lock:
            first_drop = False
            if self._pending:
                first_drop = self._keep(data)
            else:
                self._pending += data
                self._flush_locked()
        if first_drop and self._on_dropped is not None:
            # Outside the lock: the report may be written to this very stream (and dropped).
            self._on_dropped(1, len(data), False)
        if (
            self._pending
            and self._wakeup is not None
            and threading.get_ident() == self._loop_thread
        ):
            self._wakeup.set()

    def _keep(self, data: bytes) -> bool:
        """Keep ``data`` for later, or drop it; return whether it is the first drop since the
        last report."""
        if len(self._pending) + len(data) <= self._limit:
            self._pending += data
            return False
        self._dropped_writes += 1
        self._dropped_bytes += len(data)
        return self._dropped_writes == 1

    def _flush_locked(self) -> None:
        """Write as much of the pending bytes as the descriptor takes without blocking."""
        while self._pending:
            try:
                written = os.write(self.fd, self._pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # Closed, broken pipe, full disk: nobody will read these bytes.
                self._dropped_writes += 1
                self._dropped_bytes += len(self._pending)
                self._pending.clear()
                return
            del self._pending[:written]

    def _report(self) -> None:
        if self._pending or not self._dropped_writes:
            return
        writes, size = self._dropped_writes, self._dropped_bytes
        self._dropped_writes = self._dropped_bytes = 0
        if self._on_dropped is not None:
            self._on_dropped(writes, size, True)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Flush what waits whenever the descriptor is writable again, until cancelled."""
        self._loop_thread = threading.get_ident()
        self._wakeup = anyio.Event()
        task_status.started()
        while True:
            if self._pending:
                try:
                    await anyio.wait_writable(self.fd)
                except OSError:
                    # A descriptor the event loop cannot poll (a regular file) never fills.
                    await anyio.sleep(0.05)
            else:
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
            with self._lock:
                self._flush_locked()
            self._report()

    def close(self, timeout_s: float = 1.0) -> None:
        """Flush what waits for at most ``timeout_s``, then restore the descriptor's mode."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [self.fd], [], left)
                self._flush_locked()
        with contextlib.suppress(OSError):
            os.set_blocking(self.fd, self._was_blocking)
