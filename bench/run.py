"""One benchmark run: the floor, then vllmd, then the idle window; the raw samples.

The spawn floor, next to reconfigure, is sampled once between every two of vllmd's reconfigure
samples, so that a slow moment of the machine (a neighbour's test run) lands in both: in a full
run with the floor taken up front, one such moment made vllmd's p99 7x the floor's while its
median was 1.7x. The health command is taken in turn with a bare interpreter for the same reason.
The idle window comes last and measures the idle daemons over the same seconds.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import figures, floor
from bench.figures import BurstTrial, ColdStop, HealthCommand, Idle, Reconfigure
from bench.procs import Fleet


@dataclass(frozen=True)
class Config:
    """How many samples and how long. ``quick`` shrinks everything for the smoke test."""

    samples: int = 50
    """Reconfigure, key regeneration, the health command and the spawn floor."""
    few: int = 20
    """Readiness, stop and cold start, which cost a daemon or a load each."""
    idle_s: float = 60.0
    burst_trials: int = 3
    burst_writes: int = 50
    burst_window_s: float = 1.0
    burst_settle_s: float = 1.5
    listen_delay_s: float = 0.5
    settle_s: float = 2.5
    """Before the idle window: past the first probes after ready (one every 2 s)."""
    quick: bool = False

    @classmethod
    def make(cls, *, quick: bool, samples: int | None, idle_s: float | None) -> Config:
        if quick:
            n = samples or 3
            return cls(n, n, idle_s or 2.0, 1, 50, 1.0, 1.0, 0.2, 0.5, quick=True)
        return cls(samples or 50, samples or 20, idle_s or 60.0)


@dataclass
class Raw:
    """Every sample of one run (ms unless named otherwise)."""

    config: Config
    machine: dict[str, str | int | None]
    spawn: list[float] = field(default_factory=list)
    interpreter: list[float] = field(default_factory=list)
    cold: ColdStop = field(default_factory=ColdStop)
    key: list[float] = field(default_factory=list)
    first_key: list[float] = field(default_factory=list)
    readiness: list[float] = field(default_factory=list)
    burst: list[BurstTrial] = field(default_factory=list)
    reconfigure: Reconfigure = field(default_factory=Reconfigure)
    health: HealthCommand = field(default_factory=HealthCommand)
    idle: dict[str, Idle] = field(default_factory=dict)
    """``no_model`` and ``running``."""
    load_avg: tuple[float, ...] = ()
    """The 1, 5 and 15-minute load average at the end: how busy the machine was."""
    duration_s: float = 0.0


def machine() -> dict[str, str | int | None]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.startswith("model name"):  # the first CPU's is enough
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def run(config: Config, log: Callable[[str], None]) -> Raw:
    """Measure everything once; see :mod:`bench.summary` for the figures."""
    began = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="vllmd-bench-"))
    raw = Raw(config, machine())
    try:
        with Fleet(workdir) as fleet:
            log("floor: the interpreter (spawn: between reconfigure samples)")
            spawn = floor.SpawnFloor(fleet)
            raw.spawn = spawn.samples
            raw.interpreter = floor.interpreter_floor(config.few)
            log("vllmd: cold start and stop")
            raw.cold = figures.cold_start_and_stop(fleet, config.few)
            log("vllmd: key regeneration")
            raw.key = figures.key_regeneration(fleet, config.samples)
            log("vllmd: first key regeneration, right after start")
            raw.first_key = figures.first_key_regeneration(fleet, config.few)
            log("vllmd: readiness")
            raw.readiness = figures.readiness(fleet, config.few, config.listen_delay_s)
            log("vllmd: burst")
            raw.burst = figures.burst(
                fleet,
                config.burst_trials,
                config.burst_writes,
                config.burst_window_s,
                config.burst_settle_s,
            )
            log("vllmd: reconfigure")
            empty = fleet.daemon(fleet.volumes("idle"))
            busy = fleet.volumes("reconfigure")
            raw.reconfigure, running = figures.reconfigure(
                fleet, busy, config.samples, spawn.sample
            )
            last = busy.records.starts()[-1]["t_wall"]
            busy.wait_health("success", after_wall=last, timeout_s=15)
            log("vllmd: the health command")
            raw.health = figures.health_command(busy.run, config.samples)
            log(f"idle: {config.idle_s:.0f} s, both daemons at once")
            empty.volumes.wait_health("failure")
            time.sleep(config.settle_s)  # past the first probes after ready
            raw.idle = figures.idle({"no_model": empty.pid, "running": running.pid}, config.idle_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw.load_avg = tuple(round(x, 2) for x in os.getloadavg())
    raw.duration_s = round(time.monotonic() - began, 1)
    return raw
