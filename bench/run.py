"""One benchmark run: the floor first, then vllmd, then the idle window; results as one dict.

The order keeps the floor "seconds earlier on the same machine". The spawn floor, the one the
reconfigure target is a ratio to, is sampled once a round between vllmd's reconfigure samples,
so that a slow moment of the machine (a neighbour's test run) lands in both alike: in a first
full run, with the floor taken up front, one such moment made vllmd's p99 7x the floor's while
its median was 1.7x. The idle window comes last and measures every idle process (vllmd with
and without a model at each step, and the references) over the same seconds.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import figures, floor
from bench.procs import Fleet, child_env
from vllmd.process.proc import PROC, read_bytes
from vllmd.settings import Settings

DEFAULT_STEP_MS = Settings().watch_step_ms


MODES = ("inotify", "polling")
"""vllmd's watcher: inotify in the event loop (the default), or watchfiles' polling fallback
(``WATCHFILES_FORCE_POLLING=1``), where the watch step still matters."""
FLOOR_OF = {"inotify": "awatch", "polling": "awatch_polling"}
PARTS = ("total", "notice", "stop", "spawn")


@dataclass(frozen=True)
class Config:
    """How many samples, how long, which steps. ``quick`` shrinks everything for the smoke test."""

    samples: int = 50
    """Reconfigure, key regeneration and the floor (the issue asks 50+)."""
    few: int = 20
    """Readiness, stop and cold start, which cost a daemon or a load each (20+)."""
    idle_s: float = 60.0
    steps: tuple[int, ...] = (10, 30, 50)
    burst_trials: int = 3
    burst_writes: int = 50
    burst_window_s: float = 1.0
    burst_settle_s: float = 1.5
    listen_delay_s: float = 0.5
    settle_s: float = 2.5
    """Before the idle window: past the first probes after ready (one every 2 s)."""
    quick: bool = False

    @classmethod
    def make(
        cls, *, quick: bool, samples: int | None, idle_s: float | None, steps: tuple[int, ...]
    ) -> Config:
        if DEFAULT_STEP_MS not in steps:
            steps = tuple(sorted({*steps, DEFAULT_STEP_MS}))
        if quick:
            n = samples or 3
            return cls(n, n, idle_s or 2.0, steps, 1, 50, 1.0, 1.0, 0.2, 0.5, quick=True)
        return cls(samples or 50, samples or 20, idle_s or 60.0, steps)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    cpuinfo = read_bytes(PROC / "cpuinfo") or b""  # the first CPU's lines are enough
    for line in cpuinfo.decode(errors="replace").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import watchfiles

    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "watchfiles": watchfiles.__version__,
        "standin_python3": shutil.which("python3", path=child_env()["PATH"]),
    }


def run(config: Config, log: Any = print) -> dict[str, Any]:
    """Measure everything; return the raw results (see :mod:`bench.summary` for the figures)."""
    began = time.monotonic()
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="vllmd-bench-"))
    raw: dict[str, Any] = {"config": asdict(config), "machine": machine()}
    try:
        with Fleet(workdir) as fleet:
            log("floor: inotify, awatch, stop, probe (spawn: between reconfigure samples)")
            spawn = floor.SpawnFloor(fleet)
            fl: dict[str, Any] = {"spawn": spawn.samples}
            fl["inotify"], inotify_pid = floor.inotify_floor(fleet, config.samples)
            fl.update(floor.awatch_floor(fleet, config.steps, config.samples, config.few))
            fl.update(floor.stop_and_probe_floor(fleet, config.few))
            fl["interpreter"] = floor.interpreter_floor(config.few)
            raw["floor"] = fl

            log("vllmd: cold start and stop")
            raw["cold"] = figures.cold_start_and_stop(fleet, config.few)
            log("vllmd: key regeneration")
            raw["key"] = figures.key_regeneration(fleet, config.samples)
            log("vllmd: first key regeneration, right after start")
            raw["first_key"] = figures.first_key_regeneration(fleet, config.few)
            log("vllmd: readiness")
            raw["readiness"] = figures.readiness(fleet, config.few, config.listen_delay_s)["ready"]
            log("vllmd: burst")
            raw["burst"] = figures.burst(
                fleet,
                config.burst_trials,
                config.burst_writes,
                config.burst_window_s,
                config.burst_settle_s,
            )

            empty, runs = {}, {}
            pids = {"inotify": inotify_pid, "anyio": floor.anyio_idle(fleet)}
            for mode in MODES:
                polling = mode == "polling"
                log(f"vllmd: reconfigure and idle daemons, {mode}, steps {config.steps}")
                for s in config.steps:
                    v = fleet.volumes(f"idle-{mode}-{s}")
                    empty[mode, s] = fleet.daemon(v, step_ms=s, polling=polling)
                n = config.few if polling else config.samples
                between = None if polling else spawn.sample
                rounds = figures.reconfigure(
                    fleet, config.steps, n, polling=polling, between=between
                )
                for s, r in rounds.items():
                    runs[mode, s] = r
                    pids[f"awatch-{mode}-{s}"] = fl[FLOOR_OF[mode]][s].pop("pid")
            raw["reconfigure"] = {
                mode: {s: {k: runs[mode, s][k] for k in PARTS} for s in config.steps}
                for mode in MODES
            }

            log(f"idle: {config.idle_s:.0f} s, every process at once")
            for daemon in empty.values():
                daemon.volumes.wait_health("failure")
            for r in runs.values():
                r["volumes"].wait_health("success", after_wall=r["prev"]["t_wall"])
            time.sleep(config.settle_s)  # past the first probes after ready
            pids |= {f"vllmd-{m}-none-{s}": d.pid for (m, s), d in empty.items()}
            pids |= {f"vllmd-{m}-running-{s}": r["daemon"].pid for (m, s), r in runs.items()}
            raw["idle"] = figures.idle(pids, config.idle_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    raw["load_avg"] = {"before": load_before, "after": os.getloadavg()}
    raw["duration_s"] = round(time.monotonic() - began, 1)
    return raw
