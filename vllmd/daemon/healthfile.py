"""``RUN_DIR/health.json``: the daemon writes it on change, ``vllmd health`` reads it.

The file (CONTRACT.md §3) is ``{"result", "message", "since", "pid", "task", "detail",
"instance"}``, written atomically when the result, the message, the task or the detail changed,
and again whenever it is missing from disk (deleted, or a write the disk refused: retried every
:data:`RETRY_S`); ``since`` is the wall-clock time the *result* last changed.

``instance`` names the daemon run that wrote it: boot id, pid and the process start time. In a
container vllmd is always pid 1 and the run folder survives a restart, so a pid alone would let
the previous run's "success" read as this run's; ``vllmd health`` trusts the file only when a
running vllmd matches all three.

This module is imported by ``vllmd health``, a container HEALTHCHECK run every few seconds: it
must stay light, the standard library and vllmd's own small modules only (no anyio, watchfiles or
msgspec).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vllmd.core.masking import masker
from vllmd.process.proc import PROC, boot_id, cmdline, start_time
from vllmd.state.atomicfile import write_atomic
from vllmd.state.readfile import UnreadableFile, read_small_file

if TYPE_CHECKING:
    from vllmd.core.health import Verdict
    from vllmd.settings import Settings

__all__ = [
    "EXIT_NO_DAEMON",
    "EXIT_SUCCESS",
    "EXIT_UNHEALTHY",
    "HealthPublisher",
    "Instance",
    "health_command",
    "is_live_vllmd",
    "read_health",
]

EXIT_SUCCESS = 0
EXIT_UNHEALTHY = 1
EXIT_NO_DAEMON = 2

RETRY_S = 0.5
"""How soon to publish again after the disk refused a write."""
CHECK_S = 5.0
"""How soon to publish again otherwise: a deleted file is back on disk within this time."""

log = logging.getLogger(__name__)

MAX_HEALTH_BYTES = 1 << 20
"""A health file larger than this is not one (the daemon writes about a KiB)."""


@dataclass(frozen=True, slots=True)
class Instance:
    """One daemon run: the boot it ran in, its pid, and its start time (clock ticks since boot).

    A pid is reused across restarts (always 1 in a container); the triple is not.
    """

    boot_id: str
    pid: int
    started: int

    @classmethod
    def of(cls, pid: int, proc_root: Path = PROC) -> Instance:
        """The running process ``pid``; what cannot be read is recorded as unknown (``""`` and
        ``-1``), which no running process matches."""
        started = start_time(pid, proc_root)
        return cls(boot_id(proc_root) or "", pid, -1 if started is None else started)

    def is_running(self, proc_root: Path = PROC) -> bool:
        """Whether the process that wrote this is still the one running under its pid."""
        return (
            bool(self.boot_id)
            and self.started >= 0
            and boot_id(proc_root) == self.boot_id
            and start_time(self.pid, proc_root) == self.started
            and is_live_vllmd(self.pid, proc_root)
        )


def _instance_in(document: dict[str, object]) -> Instance | None:
    """The ``instance`` the file names, or ``None`` when it has none of the right shape."""
    raw = document.get("instance")
    if not isinstance(raw, dict):
        return None
    boot, pid, started = raw.get("boot_id"), raw.get("pid"), raw.get("started")
    if not isinstance(boot, str) or not isinstance(pid, int) or not isinstance(started, int):
        return None
    if isinstance(pid, bool) or isinstance(started, bool):  # JSON true is not a number
        return None
    return Instance(boot, pid, started)


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


def read_health(path: Path) -> dict[str, object] | None:
    """The health document at ``path``, or ``None`` when there is none or it is not one.

    Read without blocking and with a size cap (a FIFO or ``/dev/zero`` in its place must not
    hang a HEALTHCHECK); JSON nested deeper than Python's stack is "not one" too.
    """
    try:
        document = json.loads(read_small_file(path, MAX_HEALTH_BYTES))
    except (OSError, UnreadableFile, ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def is_live_vllmd(pid: int, proc_root: Path = PROC) -> bool:
    """Whether ``pid`` is a running vllmd daemon (its command line names ``vllmd``).

    A zombie has an empty command line and does not count; neither does a ``vllmd health``
    process (one that reused a dead daemon's pid), nor this process itself.
    """
    if pid <= 0 or (pid == os.getpid() and proc_root == PROC):
        return False
    argv = cmdline(pid, proc_root) or []
    for position, arg in enumerate(argv):
        if arg == "vllmd" or os.path.basename(arg) == "vllmd":
            rest = [a for a in argv[position + 1 :] if not a.startswith("-")]
            return not rest or rest[0] != "health"
    return False


def health_text(document: dict[str, object]) -> str:
    """``vllmd health --text``: ``result: message``, then ``download: …`` while a fetch shows
    (``detail.fetch.message``: the old model may serve, with the new one's files coming)."""
    lines = [f"{document.get('result')}: {document.get('message')}"]
    detail = document.get("detail")
    fetch = detail.get("fetch") if isinstance(detail, dict) else None
    if isinstance(fetch, dict) and isinstance(fetch.get("message"), str):
        lines.append(f"download: {fetch['message']}")
    return "\n".join(lines)


def health_command(
    args: argparse.Namespace,
    settings: Settings,
    *,
    proc_root: Path = PROC,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``vllmd health``: print the health; exit 0 on success, 1 otherwise, 2 unless the run
    that wrote the file is running.

    With ``args.text`` set (when the command line offers ``--text``), prints
    ``RESULT: message`` instead of the JSON.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    path = settings.health_path
    document = read_health(path)
    if document is None:
        if path.exists():
            print(f"vllmd health: {path} does not hold a health report.", file=err)
        else:
            print(f"vllmd health: no health report at {path}; is the daemon running?", file=err)
        return EXIT_NO_DAEMON
    instance = _instance_in(document)
    if instance is None:
        print(
            f"vllmd health: {path} names no daemon run (no instance identity); the report is "
            "stale or was not written by this vllmd.",
            file=err,
        )
        return EXIT_NO_DAEMON
    if not instance.is_running(proc_root):
        print(
            f"vllmd health: the daemon that wrote {path} (pid {instance.pid}, started at tick "
            f"{instance.started} of boot {instance.boot_id[:8] or 'unknown'}) is not running; "
            "the report is stale.",
            file=err,
        )
        return EXIT_NO_DAEMON
    if getattr(args, "text", False):
        print(health_text(document), file=out)
    else:
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    return EXIT_SUCCESS if document.get("result") == "success" else EXIT_UNHEALTHY
