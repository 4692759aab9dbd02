"""Files the benchmark writes and watches: atomic writes, the stand-in's records, the volumes.

Every wait is a condition checked under a deadline, woken by inotify on the folders involved (so
the benchmark itself stays quiet while it waits, on a 2-core machine that matters), with a short
poll as a safety net.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from vllmd.core.errors import VllmdError
from vllmd.daemon.inotify import Inotify

KEY_RE = re.compile(r"^[A-Za-z0-9]{22}$")
SAFETY_POLL_S = 0.02

T = TypeVar("T")


class BenchError(VllmdError):
    """Raised when something the benchmark waits for does not happen within its deadline."""


def wait_until(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str,
    watch: Inotify | None = None,
) -> T:
    """Check ``condition`` until truthy, waking on ``watch``'s events; fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"timed out after {timeout_s} s waiting for {what}")
        if watch is not None:
            watch.read_within(min(left, SAFETY_POLL_S))
        else:
            time.sleep(min(left, 0.005))


def write_json_atomic(path: Path, value: Any) -> float:
    """Write ``value`` to ``path`` like StartOS (temp file, rename); return the rename's time.

    Not :func:`vllmd.state.atomicfile.write_atomic`: the benchmark times the rename itself, and
    writes as StartOS does (no fsync), so that the figures are the daemon's, not the disk's.
    """
    tmp = path.with_name(f".{path.name}.bench-tmp")
    tmp.write_text(json.dumps(value, indent=2))
    t = time.monotonic()
    os.replace(tmp, path)
    return t


def valid_key(path: Path) -> str | None:
    """The API key in ``path`` when the file holds a valid one, else None."""
    try:
        key = json.loads(path.read_bytes())["apiKey"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return key if isinstance(key, str) and KEY_RE.match(key) else None


class Records:
    """The stand-in's record file, read incrementally (it grows by a few KB per start)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.all: list[dict[str, Any]] = []
        self._offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        """Read what was appended since the last call; return every record so far."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.all
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        self.all.extend(json.loads(line) for line in lines if line.strip())
        return self.all

    def starts(self) -> list[dict[str, Any]]:
        """One record per stand-in process started."""
        return [r for r in self.poll() if "argv" in r]

    def event(self, pid: int, name: str) -> dict[str, Any] | None:
        """The record of ``name`` (listening, sigterm, exit) for process ``pid``, if any."""
        for r in self.poll():
            if r.get("pid") == pid and r.get("event") == name:
                return r
        return None


def seq_of(start: dict[str, Any]) -> int | None:
    """The ``--bench-seq`` value a stand-in was started with."""
    argv = start["argv"]
    return int(argv[argv.index("--bench-seq") + 1]) if "--bench-seq" in argv else None


class Volumes:
    """The three folders of one daemon, a record file, and an inotify watch on all of them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data, self.public, self.run = root / "data", root / "public", root / "run"
        for folder in (self.data, self.public, self.run):
            folder.mkdir(parents=True, exist_ok=True)
        self.store = self.data / "store.json"
        self.credentials = self.public / "credentials.json"
        self.health = self.run / "health.json"
        # Not in ``root``: vllmd watches the volumes' parent, and a record written there would
        # wake it, which is the benchmark's doing, not the daemon's.
        (root / "bench").mkdir()
        self.records = Records(root / "bench" / "record.jsonl")
        self.watch = Inotify()
        for folder in (root / "bench", self.data, self.public, self.run):
            self.watch.add_folder(folder)

    def standin_args(self, seq: int) -> list[str]:
        """``serveArgs`` for the stand-in, recording here, marked with ``seq``."""
        return ["bench/model", "--fake-record", str(self.records.path), "--bench-seq", str(seq)]

    def set_model(self, seq: int, *fake: str) -> float:
        """Select the stand-in, marked with ``seq``; return the time of the rename."""
        args = [*self.standin_args(seq), *fake]
        return write_json_atomic(self.store, {"serveArgs": args})

    def health_json(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.health.read_bytes())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def wait(self, condition: Callable[[], T | None], what: str, timeout_s: float = 10.0) -> T:
        return wait_until(condition, timeout_s, what, self.watch)

    def wait_start(self, seq: int, timeout_s: float = 10.0) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            return next((s for s in self.records.starts() if seq_of(s) == seq), None)

        return self.wait(found, f"the stand-in #{seq} to start", timeout_s)

    def wait_event(self, pid: int, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
        return self.wait(lambda: self.records.event(pid, name), f"{name} of pid {pid}", timeout_s)

    def wait_health(self, result: str, after_wall: float = 0.0, timeout_s: float = 10.0) -> float:
        """Wait for health ``result`` that changed after ``after_wall``; return when we saw it."""

        def seen() -> float | None:
            h = self.health_json()
            if h and h.get("result") == result and float(h.get("since", 0)) >= after_wall:
                return time.monotonic()
            return None

        return self.wait(seen, f"health {result!r}", timeout_s)
