"""``RUN_DIR/health.json``: the daemon writes it on change, ``vllmd health`` reads it.

The file (CONTRACT.md §3) is ``{"result", "message", "since", "pid", "task", "detail"}``, written
atomically and only when the result, the message, the task or the detail changed; ``since`` is
the wall-clock time the *result* last changed. ``pid`` is the daemon's, so that a file left by a
daemon that died never reads as healthy.

This module is imported by ``vllmd health``, a container HEALTHCHECK run every few seconds: it
must stay light (no anyio, no aiohttp, no msgspec).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from vllmd.core.masking import masker
from vllmd.state.atomicfile import write_atomic

if TYPE_CHECKING:
    from vllmd.core.health import Verdict
    from vllmd.settings import Settings

__all__ = [
    "EXIT_NO_DAEMON",
    "EXIT_SUCCESS",
    "EXIT_UNHEALTHY",
    "HealthPublisher",
    "health_command",
    "is_live_vllmd",
    "read_health",
]

EXIT_SUCCESS = 0
EXIT_UNHEALTHY = 1
EXIT_NO_DAEMON = 2

log = logging.getLogger(__name__)


class HealthPublisher:
    """Writes the daemon's health to ``path`` when it changes.

    Args:
        path: ``RUN_DIR/health.json``.
        pid: the daemon's pid, recorded in the file.
        wall_clock: the source of ``since`` (unix time), a parameter for tests.
    """

    def __init__(self, path: Path, pid: int, wall_clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.pid = pid
        self._wall_clock = wall_clock
        self._written: str | None = None  # what the last successful write said, canonically
        self._result: str | None = None
        self._since: float | None = None
        self._last_error: str | None = None

    def publish(self, verdict: Verdict) -> bool:
        """Write ``verdict`` if it differs from what the file holds; return whether it wrote.

        A failed write (the run folder removed, a full disk) is logged once per distinct error
        and retried on the next call.
        """
        if verdict.result != self._result or self._since is None:
            self._result = verdict.result
            self._since = round(self._wall_clock(), 3)
        state = json.dumps(
            [verdict.result, verdict.message, verdict.task, verdict.detail], sort_keys=True
        )
        if state == self._written:
            return False
        document = {
            "result": verdict.result,
            "message": verdict.message,
            "since": self._since,
            "pid": self.pid,
            "task": verdict.task,
            "detail": verdict.detail,
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
        self._last_error = None
        self._written = state
        return True

    def _write(self, data: bytes) -> None:
        try:
            write_atomic(self.path, data, mode=0o644)
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # the run folder was removed
            write_atomic(self.path, data, mode=0o644)


def read_health(path: Path) -> dict[str, object] | None:
    """The health document at ``path``, or ``None`` when there is none or it is not one."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def is_live_vllmd(pid: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether ``pid`` is a running vllmd daemon (its command line names ``vllmd``).

    A zombie has an empty command line and does not count; neither does a ``vllmd health``
    process (one that reused a dead daemon's pid), nor this process itself.
    """
    if pid <= 0 or (pid == os.getpid() and proc_root == Path("/proc")):
        return False
    try:
        raw = (proc_root / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    argv = [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    for position, arg in enumerate(argv):
        if arg == "vllmd" or os.path.basename(arg) == "vllmd":
            rest = [a for a in argv[position + 1 :] if not a.startswith("-")]
            return not rest or rest[0] != "health"
    return False


def health_command(
    args: argparse.Namespace,
    settings: Settings,
    *,
    proc_root: Path = Path("/proc"),
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """``vllmd health``: print the health; exit 0 on success, 1 otherwise, 2 with no daemon.

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
    pid = document.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or not is_live_vllmd(pid, proc_root):
        print(
            f"vllmd health: the daemon that wrote {path} (pid {pid}) is not running; "
            "the report is stale.",
            file=err,
        )
        return EXIT_NO_DAEMON
    if getattr(args, "text", False):
        print(f"{document.get('result')}: {document.get('message')}", file=out)
    else:
        print(json.dumps(document, indent=2, ensure_ascii=False), file=out)
    return EXIT_SUCCESS if document.get("result") == "success" else EXIT_UNHEALTHY
