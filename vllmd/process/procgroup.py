"""Reaping: who is ours to reap, and the one place that calls ``waitpid``.

A PID 1, or a child subreaper, inherits every orphan and must reap it, but must not steal the exit
status of a child someone else waits for. Who is left in vLLM's process group is read from
``/proc`` by :func:`vllmd.process.proc.group_members`.
"""

from __future__ import annotations

import ctypes
import logging
import os

import anyio

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Ask the kernel to reparent orphaned descendants to us (no-op as PID 1); True if done."""
    if os.getpid() == 1:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


class Reaper:
    """The one place that calls ``waitpid``: keeps the exit statuses of the children we watch.

    With ``reap_orphans`` it also reaps every other child (as PID 1 or a subreaper must); the
    statuses of watched pids are kept for :meth:`wait`, so nobody's status is stolen.
    """

    def __init__(self, *, reap_orphans: bool) -> None:
        self._reap_orphans = reap_orphans
        self._events: dict[int, anyio.Event] = {}
        self._statuses: dict[int, int] = {}
        self._any_exit = anyio.Event()

    def watch(self, pid: int) -> None:
        """Keep the exit status of ``pid`` for :meth:`wait`."""
        self._events[pid] = anyio.Event()

    def reap(self) -> None:
        """Collect every exited child that is ours to collect, without blocking."""
        if self._reap_orphans:
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                self._record(pid, status)
        else:
            for pid in list(self._events):
                if pid in self._statuses:
                    continue
                try:
                    done, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if done:
                    self._record(done, status)
        self._any_exit.set()
        self._any_exit = anyio.Event()

    def _record(self, pid: int, status: int) -> None:
        event = self._events.get(pid)
        if event is None:
            log.debug("reaped orphan pid %d", pid)
            return
        self._statuses[pid] = os.waitstatus_to_exitcode(status)
        event.set()

    async def any_exit(self) -> None:
        """Return when some child exits next (an event to re-check a process group on)."""
        await self._any_exit.wait()

    async def wait(self, pid: int) -> int:
        """Wait for ``pid`` (watched) to exit and return its exit code (-N for signal N)."""
        event = self._events[pid]
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        try:
            while not event.is_set():
                if fd >= 0:
                    await anyio.wait_readable(fd)
                    self.reap()
                    if not event.is_set():
                        # Readable means exited; another reaper may still be collecting it.
                        with anyio.move_on_after(0.05):
                            await event.wait()
                else:
                    with anyio.move_on_after(0.1):
                        await event.wait()
                    self.reap()
        finally:
            if fd >= 0:
                os.close(fd)
        del self._events[pid]
        return self._statuses.pop(pid)
