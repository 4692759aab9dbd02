"""The vllmd figures: the real ``vllmd run`` as a subprocess, the stand-in as vLLM.

Latencies are taken between two points on CLOCK_MONOTONIC, which every process on the machine
shares: the benchmark's own (just before a rename, a delete, an exec or a signal; or when an
inotify wake-up shows the result on disk) and the stand-in's records (start, listening, exit).
"""

from __future__ import annotations

import compileall
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.files import BenchError, Volumes, seq_of, valid_key
from bench.procs import ROOT, Daemon, Fleet, child_env, ms, usage, wait_exit
from vllmd.core.decide import COOLDOWN_S as DAEMON_COOLDOWN_S
from vllmd.core.exits import describe_exit
from vllmd.process.proc import group_members
from vllmd.process.proc import is_alive as pid_alive

COOLDOWN_S = DAEMON_COOLDOWN_S + 0.1
"""Space between a start and the next write: vllmd acts on a change at once only when it has not
started vLLM within its cool-down (after that it waits for the files to be quiet, ~50 ms, so a
burst coalesces). Reconfigure latency measures the "at once" path."""


@dataclass
class ColdStop:
    """Per fresh daemon: exec → key on disk, → stand-in started; SIGTERM → exited, and parts."""

    key: list[float] = field(default_factory=list)
    spawn: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)
    relay: list[float] = field(default_factory=list)
    """SIGTERM to vllmd → the stand-in has its SIGTERM."""
    beyond: list[float] = field(default_factory=list)
    """The stand-in exited → vllmd exited."""
    group_left: int = 0
    """Stops after which a process of vLLM's group was still there (vllmd promises none)."""


def cold_start_and_stop(fleet: Fleet, n: int) -> ColdStop:
    """Fresh volumes each time: exec → key on disk, → stand-in started; then SIGTERM → exited."""
    out = ColdStop()
    for i in range(n):
        v = fleet.volumes(f"cold-{i}")
        v.set_model(0)
        daemon = fleet.daemon(v)

        def key_seen(path: Path = v.credentials) -> float | None:
            return time.monotonic() if valid_key(path) else None

        t_key = v.wait(key_seen, "a key")
        start = v.wait_start(0, timeout_s=15)
        out.key.append(ms(t_key - daemon.t0))
        out.spawn.append(ms(start["t_mono"] - daemon.t0))
        v.wait_health("success")
        time.sleep(0.1)
        t0 = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        t1 = wait_exit(daemon.pid, 15.0)
        if t1 is None:
            raise BenchError(f"vllmd did not exit within 15 s of SIGTERM: see {daemon.log}")
        out.group_left += bool(group_members(start["pgid"]))
        daemon.proc.wait(5)
        exit_record = v.wait_event(start["pid"], "exit", timeout_s=1)
        term_record = v.wait_event(start["pid"], "sigterm", timeout_s=1)
        out.stop.append(ms(t1 - t0))
        out.relay.append(ms(term_record["t_mono"] - t0))
        out.beyond.append(ms(t1 - exit_record["t_mono"]))
    return out


def key_regeneration(fleet: Fleet, n: int) -> list[float]:
    """No model; ``credentials.json`` deleted → a valid new key is on disk (inotify wake-up)."""
    v = fleet.volumes("key")
    daemon = fleet.daemon(v)
    daemon.wait_up()
    v.wait_health("failure")
    out = []
    for _ in range(n):
        time.sleep(0.3)  # the daemon's reaction to its own write of the key is over
        old = valid_key(v.credentials)
        v.watch.read_within(0)  # drain
        t0 = time.monotonic()
        os.unlink(v.credentials)

        def renewed(old: str | None = old) -> float | None:
            key = valid_key(v.credentials)
            return time.monotonic() if key and key != old else None

        out.append(ms(v.wait(renewed, "a new key") - t0))
    return out


def first_key_regeneration(fleet: Fleet, n: int) -> list[float]:
    """Fresh volumes, no model: the key the daemon wrote at start is deleted as soon as it is on
    disk → a valid new key is on disk; ms. The daemon may still be importing and arming its
    watcher then: the promise to write the key again within 100 ms at its hardest."""
    out = []
    for i in range(n):
        v = fleet.volumes(f"first-key-{i}")
        daemon = fleet.daemon(v)

        def written(path: Path = v.credentials) -> str | None:
            return valid_key(path)

        first = v.wait(written, "the first key")
        t0 = time.monotonic()
        os.unlink(v.credentials)

        def renewed(old: str = first, path: Path = v.credentials) -> float | None:
            key = valid_key(path)
            return time.monotonic() if key and key != old else None

        out.append(ms(v.wait(renewed, "a new key") - t0))
        fleet.stop(daemon.proc)
    return out


def readiness(fleet: Fleet, n: int, listen_delay_s: float) -> list[float]:
    """The stand-in's ``listening`` record → ``health.json`` says success (inotify wake-up).

    The stand-in listens after ``listen_delay_s`` plus a random part of as much again: a fixed
    delay would keep the same phase against vllmd's periodic probe in every sample (0.5 s
    against a 0.25 s probe measured ~240 ms each time, the worst phase), where a real load
    time falls anywhere in the probe's period.
    """
    v = fleet.volumes("ready")
    jitter = random.Random(5)

    def delay() -> tuple[str, str]:
        return ("--fake-listen-delay", f"{listen_delay_s * (1 + jitter.random()):.3f}")

    v.set_model(0, *delay())
    daemon = fleet.daemon(v)
    start = v.wait_start(0, timeout_s=15)
    v.wait_health("success", after_wall=start["t_wall"])
    out = []
    for seq in range(1, n + 1):
        v.set_model(seq, *delay())
        start = v.wait_start(seq)
        listening = v.wait_event(start["pid"], "listening")
        seen = v.wait_health("success", after_wall=start["t_wall"])
        out.append(ms(seen - listening["t_mono"]))
    alive(daemon)
    return out


@dataclass(frozen=True)
class BurstTrial:
    """``writes`` atomic writes of ``store.json`` in a second: what vllmd started."""

    starts: int
    last_runs: bool
    """The last write's stand-in is the one running at the end."""


def burst(
    fleet: Fleet, trials: int, writes: int, window_s: float, settle_s: float
) -> list[BurstTrial]:
    """``writes`` atomic writes spread over ``window_s`` → how many starts; does the last run?"""
    v = fleet.volumes("burst")
    v.set_model(0)
    daemon = fleet.daemon(v)
    v.wait_start(0, timeout_s=15)
    seq = 0
    results = []
    for _ in range(trials):
        after_cooldown(v)
        t_begin = time.monotonic()
        for j in range(writes):
            time.sleep(max(0.0, t_begin + j * window_s / writes - time.monotonic()))
            seq += 1
            v.set_model(seq)
        t_last = time.monotonic()

        def settled(t_last: float = t_last) -> bool:
            newest = max([float(s["t_mono"]) for s in v.records.starts()] + [t_last])
            return time.monotonic() - newest >= settle_s

        v.wait(settled, "the burst to settle", timeout_s=settle_s + 10)
        starts = [s for s in v.records.starts() if s["t_mono"] >= t_begin]
        last = starts[-1] if starts else None
        last_runs = bool(last and seq_of(last) == seq and pid_alive(last["pid"]))
        results.append(BurstTrial(len(starts), last_runs))
    alive(daemon)
    return results


@dataclass
class Reconfigure:
    """Rename of ``store.json`` → the new stand-in's start, and its three parts; ms."""

    total: list[float] = field(default_factory=list)
    notice: list[float] = field(default_factory=list)
    """The rename → SIGTERM to the old stand-in."""
    stop: list[float] = field(default_factory=list)
    """That SIGTERM → the old one exited."""
    spawn: list[float] = field(default_factory=list)
    """The old one exited → the new one started."""


def reconfigure(
    fleet: Fleet, v: Volumes, n: int, between: Callable[[], None]
) -> tuple[Reconfigure, Daemon]:
    """A daemon serving the stand-in on ``v``; ``n`` atomic writes of a new model, each a
    cool-down after the last start; ``between`` runs after each sample (a floor sample, so that
    a slow moment of the machine lands in both). The daemon is left running (for the idle
    window and the health command)."""
    v.set_model(0)
    daemon = fleet.daemon(v)
    prev = v.wait_start(0, timeout_s=15)
    out = Reconfigure()
    for seq in range(1, n + 1):
        after_cooldown(v)
        t0 = v.set_model(seq)
        start = v.wait_start(seq)
        term = v.wait_event(prev["pid"], "sigterm", timeout_s=1)
        gone = v.wait_event(prev["pid"], "exit", timeout_s=1)
        out.total.append(ms(start["t_mono"] - t0))
        out.notice.append(ms(term["t_mono"] - t0))
        out.stop.append(ms(gone["t_mono"] - term["t_mono"]))
        out.spawn.append(ms(start["t_mono"] - gone["t_mono"]))
        prev = start
        between()
    alive(daemon)
    return out, daemon


@dataclass
class HealthCommand:
    """Wall time of one run, exec → exit; ms, the three commands taken in turn."""

    vllmd: list[float] = field(default_factory=list)
    python: list[float] = field(default_factory=list)
    """``python -c pass``: a bare interpreter's start, ``site`` imported as for ``vllmd``."""
    python_no_site: list[float] = field(default_factory=list)
    """``python -S -c pass``: without ``site``."""


def health_command(run_dir: Path, n: int) -> HealthCommand:
    """``vllmd health`` (the command StartOS runs about once a second until the first success)
    against a daemon's run folder, next to a bare interpreter's start, in turn so that a slow
    moment of the machine lands on all three alike.

    The package's bytecode is compiled first, as ``pip install`` does in the images: a checkout
    run with ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module at every run and
    measure the compiler, not the command."""
    compileall.compile_dir(ROOT / "vllmd", quiet=1)
    env = child_env(VLLMD_RUN_DIR=str(run_dir))
    vllmd = shutil.which("vllmd", path=env["PATH"])
    if vllmd is None:
        raise BenchError("no `vllmd` command next to this Python: install the project (pip -e .)")
    commands = {
        "vllmd": [vllmd, "health"],
        "python": [sys.executable, "-c", "pass"],
        "python_no_site": [sys.executable, "-S", "-c", "pass"],
    }
    out = HealthCommand()
    names = list(commands)
    for i in range(n):
        for name in names[i % 3 :] + names[: i % 3]:  # each goes first in turn
            t0 = time.monotonic()
            done = subprocess.run(commands[name], env=env, capture_output=True, check=False)
            took = ms(time.monotonic() - t0)
            if done.returncode != 0:
                said = (done.stdout + done.stderr).decode(errors="replace")[-300:]
                raise BenchError(f"{' '.join(commands[name])} exited {done.returncode}: {said}")
            getattr(out, name).append(took)
    return out


def after_cooldown(v: Volumes) -> None:
    """Sleep until the daemon on ``v`` would act on a write at once (see :data:`COOLDOWN_S`)."""
    last = max(s["t_mono"] for s in v.records.starts())
    time.sleep(max(0.0, last + COOLDOWN_S - time.monotonic()))


def alive(daemon: Daemon) -> None:
    """Fail when ``daemon`` has exited."""
    if daemon.proc.poll() is not None:
        raise BenchError(f"vllmd {describe_exit(daemon.proc.returncode)}: see {daemon.log}")


@dataclass(frozen=True)
class Idle:
    """One process over the idle window."""

    cpu_s_per_min: float
    rss_mb: float
    wakeups_per_s: float


def idle(pids: dict[str, int], window_s: float) -> dict[str, Idle]:
    """CPU, RSS and wake-ups of each process over the same ``window_s`` of doing nothing."""
    before = {name: usage(pid) for name, pid in pids.items()}
    t0 = time.monotonic()
    time.sleep(window_s)
    elapsed = time.monotonic() - t0
    out = {}
    for name, pid in pids.items():
        after, first = usage(pid), before[name]
        out[name] = Idle(
            cpu_s_per_min=round((after.cpu_s - first.cpu_s) * 60 / elapsed, 4),
            rss_mb=round(after.rss_mb, 2),
            wakeups_per_s=round((after.voluntary - first.voluntary) / elapsed, 2),
        )
    return out
