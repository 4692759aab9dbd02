"""``RUN_DIR/health.json``: the daemon writes it on change (``vllmd health`` reads it:
:mod:`vllmd.daemon.healthcheck`).

The file (CONTRACT.md §3) is ``{"result", "message", "since", "pid", "task", "detail",
"instance"}``, written atomically when the result, the message, the task or the detail changed,
and again whenever it is missing from disk (deleted, or a write the disk refused: retried every
:data:`RETRY_S`); ``since`` is the wall-clock time the *result* last changed.

``instance`` names the daemon run that wrote it: boot id, pid and the process start time. In a
container vllmd is always pid 1 and the run folder survives a restart, so a pid alone would let
the previous run's "success" read as this run's; ``vllmd health`` trusts the file only when a
running vllmd matches all three.

The reading side (the exit codes, :func:`read_health`, :func:`health_command`) lives in
:mod:`vllmd.daemon.healthcheck`, which ``vllmd health`` imports alone; it is named here too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vllmd.core.masking import masker
from vllmd.daemon.healthcheck import (
    EXIT_NO_DAEMON,
    EXIT_SUCCESS,
    EXIT_UNHEALTHY,
    health_command,
    health_text,
    is_live_vllmd,
    is_running,
    read_health,
)
from vllmd.process.proc import PROC, boot_id, start_time
from vllmd.state.atomicfile import write_atomic

if TYPE_CHECKING:
    from vllmd.core.health import Verdict

    StrPath = str | os.PathLike[str]

__all__ = [
    "EXIT_NO_DAEMON",
    "EXIT_SUCCESS",
    "EXIT_UNHEALTHY",
    "HealthPublisher",
    "Instance",
    "health_command",
    "health_text",
    "is_live_vllmd",
    "read_health",
]

RETRY_S = 0.5
"""How soon to publish again after the disk refused a write."""
CHECK_S = 5.0
"""How soon to publish again otherwise: a deleted file is back on disk within this time."""

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Instance:
    """One daemon run: the boot it ran in, its pid, and its start time (clock ticks since boot).

    A pid is reused across restarts (always 1 in a container); the triple is not.
    """

    boot_id: str
    pid: int
    started: int

    @classmethod
    def of(cls, pid: int, proc_root: StrPath = PROC) -> Instance:
        """The running process ``pid``; what cannot be read is recorded as unknown (``""`` and
        ``-1``), which no running process matches."""
        started = start_time(pid, proc_root)
        return cls(boot_id(proc_root) or "", pid, -1 if started is None else started)

    def is_running(self, proc_root: StrPath = PROC) -> bool:
        """Whether the process that wrote this is still the one running under its pid."""
        return is_running(self.boot_id, self.pid, self.started, proc_root)


class HealthPublisher:
    """Writes the daemon's health to ``path`` when it changes, and whenever it is not on disk.

    Args:
        path: ``RUN_DIR/health.json``.
        pid: the daemon's pid, recorded in the file.
        wall_clock: the source of ``since`` (unix time), a parameter for tests.
        instance: the run's identity; by default read from ``/proc`` for ``pid``.
    """

    def __init__(
        self,
        path: Path,
        pid: int,
        wall_clock: Callable[[], float] = time.time,
        *,
        instance: Instance | None = None,
    ) -> None:
        self.path = path
        self.pid = pid
        self.instance = instance if instance is not None else Instance.of(pid)
        self._wall_clock = wall_clock
        self._written: str | None = None  # what the last successful write said, canonically
        self._file: tuple[int, ...] | None = None  # the file as we wrote it (see _identity)
        self._result: str | None = None
        self._since: float | None = None
        self._last_error: str | None = None

    @property
    def next_check_s(self) -> float:
        """How long the caller may wait before calling :meth:`publish` again, even with the
        same verdict: :data:`RETRY_S` while the disk refuses the write, else :data:`CHECK_S`."""
        return RETRY_S if self._last_error is not None else CHECK_S

    @staticmethod
    def _identity(found: os.stat_result) -> tuple[int, ...]:
        # The inode tells a replaced file; size and mtime tell one overwritten in place.
        return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)

    def _on_disk(self) -> bool:
        try:
            return self._identity(os.stat(self.path)) == self._file
        except OSError:
            return False

    def publish(self, verdict: Verdict) -> bool:
        """Write ``verdict`` if it differs from what the file holds, or if the file we wrote is
        no longer there; return whether it wrote.

        A failed write (the run folder removed, a full disk) is logged once per distinct error
        and retried on the next call.
        """
        if verdict.result != self._result or self._since is None:
            self._result = verdict.result
            self._since = round(self._wall_clock(), 3)
        state = json.dumps(
            [verdict.result, verdict.message, verdict.task, verdict.detail], sort_keys=True
        )
        if state == self._written and self._on_disk():
            return False
        document = {
            "result": verdict.result,
            "message": verdict.message,
            "since": self._since,
            "pid": self.pid,
            "task": verdict.task,
            "detail": verdict.detail,
            "instance": asdict(self.instance),
        }
        data = masker.mask(json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()
        try:
            self._write(data)
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            if error != self._last_error:
                log.warning("cannot write %s: %s", self.path, error)
                self._last_error = error
            return False
        if self._last_error is not None:
            log.info("wrote %s again", self.path)
        self._last_error = None
        self._written = state
        return True

    def _write(self, data: bytes) -> None:
        try:
            write_atomic(self.path, data, mode=0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # the run folder was removed
            write_atomic(self.path, data, mode=0o644)
        self._file = self._identity(os.stat(self.path))
