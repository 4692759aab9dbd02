"""The processes the benchmark drives: the real ``vllmd run``, the stand-in, and their cleanup.

Every process started here belongs to a :class:`Fleet`, which kills it, its process group and
every stand-in it left behind, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.files import BenchError, Volumes, wait_until
from vllmd.core.exits import describe_exit
from vllmd.process.proc import group_members, stat, status, threads
from vllmd.process.proc import is_alive as pid_alive

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "tests" / "standin" / "vllm"
CLK_TCK = os.sysconf("SC_CLK_TCK")
EXIT_AT_ONCE = ("--fake-crash-after", "0", "--fake-exit-code", "0")
"""The stand-in records its start, then exits 0 at once."""


def ms(seconds: float) -> float:
    """Seconds as milliseconds, to the microsecond."""
    return round(seconds * 1000, 3)


def standin_argv(record: Path, seq: int, port: int, *fake: str) -> list[str]:
    """The stand-in's argv, shaped like vllmd's launch."""
    argv = [str(STANDIN), "serve", "bench/model", "--fake-record", str(record)]
    argv += ["--bench-seq", str(seq), *fake, "--no-enable-log-requests", "--host", "127.0.0.1"]
    return [*argv, "--port", str(port), "--download-dir", str(record.parent), "--api-key", "k" * 22]


def spawn(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start the stand-in the way vllmd's supervisor does."""
    return subprocess.Popen(
        list(argv),
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for ``proc`` (killing its group after 5 s) and close its pipes."""
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child: ours, the project alone on ``PYTHONPATH``, our Python first.

    The stand-in starts with ``#!/usr/bin/env python3``. Where ``python3`` on ``PATH`` is a pyenv
    shim (a bash script) that costs 150-250 ms per exec and would drown what is measured, so the
    folder of the interpreter running the benchmark comes first: the stand-in, for the floor and
    for vllmd alike, runs on the real interpreter.
    """
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PYTHONPATH": str(ROOT), "PATH": path, **extra}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_exit(pid: int, timeout_s: float) -> float | None:
    """Wait until ``pid`` (our child) has exited; return when we saw it, None at the deadline."""
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if poller.poll(int(timeout_s * 1000)):
            return time.monotonic()
        return None
    finally:
        os.close(fd)


class Fleet:
    """Owns every process and folder of one benchmark run; :meth:`close` leaves nothing behind."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._volumes: list[Volumes] = []
        self._count = 0

    def volumes(self, name: str) -> Volumes:
        v = Volumes(self.workdir / name)
        self._volumes.append(v)
        return v

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """Start a child in its own session (its group is killed at cleanup)."""
        kwargs.setdefault("env", child_env())
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(list(argv), start_new_session=True, cwd=ROOT, **kwargs)
        self._procs.append(proc)
        return proc

    def daemon(self, volumes: Volumes) -> Daemon:
        """Start ``vllmd run`` on ``volumes`` with the stand-in as vLLM (not waiting for it)."""
        self._count += 1
        port = free_port()
        log = self.workdir / f"daemon{self._count}.log"
        argv = [sys.executable, "-m", "vllmd", "run", "--data", str(volumes.data)]
        argv += ["--public", str(volumes.public), "--run-dir", str(volumes.run)]
        argv += ["--vllm", str(STANDIN), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--no-ldconfig", "--no-fetch", "--stop-timeout", "5"]  # stand-in ids: no hub
        with log.open("wb") as out:
            t0 = time.monotonic()
            proc = self.popen(argv, stdout=out, stderr=subprocess.STDOUT)
        return Daemon(proc, volumes, port, log, t0)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """SIGTERM ``proc``, wait, then SIGKILL its group; reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def close(self) -> None:
        """Stop every child, then kill whatever a stand-in left behind; close the watches."""
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                self.stop(proc, timeout_s=5.0)
        for v in self._volumes:
            for record in v.records.poll():
                pids = [record.get("pid"), record.get("grandchild_pid")]
                pids += group_members(record["pgid"]) if record.get("pgid") else []
                for pid in pids:
                    if pid and pid_alive(pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
            v.watch.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Daemon:
    """One ``vllmd run`` subprocess."""

    def __init__(
        self, proc: subprocess.Popen[bytes], volumes: Volumes, port: int, log: Path, t0: float
    ) -> None:
        self.proc, self.volumes, self.port, self.log, self.t0 = proc, volumes, port, log, t0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_up(self, timeout_s: float = 15.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"vllmd {describe_exit(self.proc.returncode)}: see {self.log}")
            return b"vllmd is up" in self.log.read_bytes()

        wait_until(up, timeout_s, "vllmd is up", self.volumes.watch)


@dataclass(frozen=True)
class Usage:
    """What ``/proc`` says a process has used so far."""

    cpu_s: float
    """utime + stime, all its threads (not its children)."""
    rss_mb: float
    """``VmRSS`` in MB (10^6 B)."""
    voluntary: int
    """Voluntary context switches summed over its live threads: its wake-ups."""


def usage(pid: int) -> Usage:
    """CPU seconds, RSS and wake-ups of ``pid`` so far."""
    fields, whole = stat(pid), status(pid)
    if fields is None or whole is None:
        raise BenchError(f"pid {pid} exited before its usage was read")
    voluntary = 0
    for thread in threads(pid):
        one = status(pid, thread=thread) or {}  # a thread that ended counts no more
        voluntary += int(one.get("voluntary_ctxt_switches", 0))
    return Usage(
        cpu_s=(int(fields[11]) + int(fields[12])) / CLK_TCK,  # utime, stime: fields 14 and 15
        rss_mb=int(whole["VmRSS"].split()[0]) * 1024 / 1e6,  # kB are KiB
        voluntary=voluntary,
    )
