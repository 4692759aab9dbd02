"""The floor: the least possible work for the same events, measured in the same run.

- **spawn**: ``subprocess.Popen`` of the stand-in, exactly as vllmd spawns it, to the start time
  the stand-in records;
- **awatch**: a few lines of watchfiles' ``awatch`` (defaults, but for ``step``) that react to the
  same atomic ``store.json`` write by spawning the stand-in: the time it notices, and the start;
- **inotify**: raw inotify delivery (ctypes, a reader blocked in ``poll``) of the same rename;
- **stop**: SIGTERM straight to a listening stand-in until it has exited; and until it has the
  signal (**signal**: delivery, the floor of vllmd relaying a stop);
- **probe**: one ``GET /health`` over a fresh connection to a listening stand-in;
- **interpreter**: the exec of a bare ``python -c`` to its first statement (cold start's floor);
- **anyio idle**: a bare interpreter with anyio imported, asleep in ``anyio.run`` (the floor of the
  daemon's idle memory).

The awatch and inotify references run as children (:mod:`bench.reference`), so that they pay
for their own wake-ups and can be measured idle next to the daemon.
"""

from __future__ import annotations

import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.files import BenchError, Records, wait_until, write_json_atomic
from bench.procs import (
    EXIT_AT_ONCE,
    Fleet,
    child_env,
    free_port,
    ms,
    reap,
    spawn,
    standin_argv,
    wait_exit,
)

POLL_SAME_SECOND_S = 1.05
"""Between two writes that a polling watcher must tell apart (mtime in whole seconds)."""


class SpawnFloor:
    """Popen of the stand-in → the start time it records; ms, one :meth:`sample` at a time.

    Sampled between vllmd's reconfigure samples, so that both see the same moments of the
    machine (a neighbour's test run slows both alike; see README).
    """

    def __init__(self, fleet: Fleet) -> None:
        folder = fleet.workdir / "floor-spawn"
        folder.mkdir()
        self.records = Records(folder / "record.jsonl")
        self.samples: list[float] = []

    def sample(self) -> None:
        argv = standin_argv(self.records.path, len(self.samples), 1, *EXIT_AT_ONCE)
        t0 = time.monotonic()
        proc = spawn(argv)
        reap(proc)
        start = next(r for r in self.records.starts() if r["pid"] == proc.pid)
        self.samples.append(ms(start["t_mono"] - t0))


class Lines:
    """JSON lines from a child's stdout, read under a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def next(self, timeout_s: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise BenchError(f"no line from a reference child within {timeout_s} s")
            chunk = os.read(self.fd, 65_536)
            if not chunk:
                raise BenchError("a reference child exited")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return dict(json.loads(line))

    def drain(self, quiet_s: float) -> None:
        """Discard lines until none came for ``quiet_s``."""
        while True:
            try:
                self.next(quiet_s)
            except BenchError:
                return


def _reference(fleet: Fleet, kind: str, folder: Path, *args: str) -> tuple[Any, Lines]:
    argv = [sys.executable, "-m", "bench.reference", kind, str(folder), *args]
    proc = fleet.popen(argv, stdout=subprocess.PIPE)
    lines = Lines(proc)
    lines.next()  # {"armed": ...}
    return proc, lines


def inotify_floor(fleet: Fleet, n: int) -> tuple[list[float], int]:
    """The rename → a reader blocked on inotify has the event; ms. Also returns the reader's pid."""
    folder = fleet.workdir / "floor-inotify"
    folder.mkdir()
    proc, lines = _reference(fleet, "inotify", folder)
    out = []
    for seq in range(n):
        t0 = write_json_atomic(folder / "store.json", {"serveArgs": [str(seq)]})
        out.append(ms(lines.next()["t_event"] - t0))
        time.sleep(0.02)
    return out, proc.pid


class _Awatch:
    """One awatch reference child, its folder and its stand-ins' records."""

    def __init__(self, fleet: Fleet, step_ms: int, polling: bool) -> None:
        kind = "awatch-polling" if polling else "awatch"
        folder = fleet.workdir / f"floor-{kind}-{step_ms}"
        (folder / "data").mkdir(parents=True)
        self.step_ms, self.polling = step_ms, polling
        self.store = folder / "data" / "store.json"
        self.records = Records(folder / "record.jsonl")
        self.proc, self.lines = _reference(
            fleet, kind, folder / "data", str(step_ms), str(self.records.path)
        )
        self.last_write = -math.inf
        self.notice: list[float] = []
        self.spawn: list[float] = []

    def arm(self) -> None:
        """awatch arms its watch only once iterated: a write that it reports proves it armed."""
        deadline = time.monotonic() + 15
        while True:
            self.last_write = write_json_atomic(self.store, {"serveArgs": ["warm-up"]})
            try:
                self.lines.next(2.0)
                break
            except BenchError:
                if time.monotonic() > deadline:
                    raise

    def sample(self, seq: int) -> None:
        # notify's poller compares mtimes in whole seconds: a write in the same second as the
        # last one goes unseen (measured, watchfiles 1.x), so polling waits a second apart.
        gap = POLL_SAME_SECOND_S if self.polling else 0.1 + self.step_ms * 2 / 1000
        time.sleep(max(0.0, self.last_write + gap - time.monotonic()))
        t0 = self.last_write = write_json_atomic(self.store, {"serveArgs": [str(seq)]})
        event = self.lines.next()
        start = wait_until(
            lambda: next((s for s in self.records.starts() if s["pid"] == event["pid"]), None),
            10.0,
            "the awatch floor's stand-in",
        )
        self.notice.append(ms(event["t_event"] - t0))
        self.spawn.append(ms(start["t_mono"] - t0))


def awatch_floor(fleet: Fleet, steps: Sequence[int], n: int, n_polling: int) -> dict[str, Any]:
    """Per step: the rename → awatch yields (notice) → its stand-in records its start; ms.

    ``{"awatch": {step: ...}, "awatch_polling": {step: ...}}``: with inotify (``n`` samples)
    and with watchfiles' polling (``n_polling``). The references run side by side and are
    sampled in turn; each child's pid is returned too, for the idle window.
    """
    refs = [_Awatch(fleet, step, polling) for polling in (False, True) for step in steps]
    for ref in refs:
        ref.arm()
    time.sleep(0.3)
    for ref in refs:
        ref.lines.drain(0.01)  # the report of an earlier warm-up write, if it came late
    for count, polling in ((n, False), (n_polling, True)):
        for seq in range(count):
            for ref in refs:
                if ref.polling == polling:
                    ref.sample(seq)
    out: dict[str, Any] = {"awatch": {}, "awatch_polling": {}}
    for r in refs:
        kind = "awatch_polling" if r.polling else "awatch"
        out[kind][r.step_ms] = {"notice": r.notice, "spawn": r.spawn, "pid": r.proc.pid}
    return out


def stop_and_probe_floor(fleet: Fleet, n: int) -> dict[str, list[float]]:
    """SIGTERM → a listening stand-in has the signal, → has exited; one GET /health; ms."""
    folder = fleet.workdir / "floor-stop"
    folder.mkdir()
    records = Records(folder / "record.jsonl")
    stop, probe, delivered = [], [], []
    for seq in range(n):
        port = free_port()
        proc = spawn(standin_argv(records.path, seq, port))

        def listening(pid: int = proc.pid) -> dict[str, Any] | None:
            return records.event(pid, "listening")

        try:
            wait_until(listening, 10.0, "listening")
            probe.append(ms(_get_health(port)))
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            t1 = wait_exit(proc.pid, 10.0)
            if t1 is None:
                raise BenchError("the stand-in did not exit on SIGTERM")
            stop.append(ms(t1 - t0))
            term = wait_until(lambda pid=proc.pid: records.event(pid, "sigterm"), 1.0, "sigterm")
            delivered.append(ms(term["t_mono"] - t0))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            reap(proc)
    return {"stop": stop, "probe": probe, "signal": delivered}


INTERPRETER_PROGRAM = "import os, time; os.write(1, repr(time.monotonic()).encode())"
"""A bare interpreter's first statement: it says when it ran (site imported, as for vllmd)."""
ANYIO_IDLE_PROGRAM = "import anyio; anyio.run(anyio.sleep, 1800)"
"""The least a daemon on anyio can be: the interpreter, anyio imported, its event loop asleep."""


def interpreter_floor(n: int) -> list[float]:
    """The exec of ``python -c`` → its first statement runs; ms (``vllmd run`` starts so too)."""
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", INTERPRETER_PROGRAM],
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=True,
        )
        out.append(ms(float(done.stdout) - t0))
    return out


def anyio_idle(fleet: Fleet) -> int:
    """Start the anyio idle reference (for the idle window); return its pid."""
    proc = fleet.popen([sys.executable, "-c", ANYIO_IDLE_PROGRAM], stdout=subprocess.DEVNULL)
    return proc.pid


def _get_health(port: int) -> float:
    """Seconds for one ``GET /health`` on a fresh connection, answered 200."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        head = s.recv(4096)
    took = time.monotonic() - t0
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"the stand-in answered {head[:40]!r}")
    return took
