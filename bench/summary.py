"""The issue's figures from one run's raw samples: each with its floor, ratio, target, verdict."""

from __future__ import annotations

from typing import Any

from bench.report import latency_figure, latency_row, ratio, stats, value_row
from bench.run import DEFAULT_STEP_MS, FLOOR_OF, MODES

KEY_P50_MS = 60.0
FIRST_KEY_P99_MS = 100.0
READY_P50_MS = 10.0
READY_P99_MS = 30.0
STOP_BEYOND_P50_MS = 150.0
STOP_RELAY_P50_MS = 2.0
COLD_KEY_X_P50 = 2.0
IDLE_CPU_S_PER_MIN = 0.15
IDLE_RSS_MB = 30.0
BURST_MAX_STARTS = 2
RECONFIGURE_X_P50 = 2.0
RECONFIGURE_X_P99 = 2.5

LATENCIES = (
    "reconfigure",
    "key_regeneration",
    "first_key_regeneration",
    "readiness",
    "stop",
    "stop_relay",
    "stop_beyond_standin",
    "cold_start_key",
    "cold_start_spawn",
)
"""The figures that are latencies: samples in ms, each charted (``reconfigure`` once a step)."""
FIGURES = (*LATENCIES, "idle_no_model", "idle_running", "burst")
"""Every figure the issue asks for: the JSON has each of them under ``figures``."""


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"figures", "steps", "floor", "rows"}``: what is printed, charted and saved."""
    steps = raw["config"]["steps"]
    fl = raw["floor"]
    floor = {
        "spawn": stats(fl["spawn"]),
        "inotify": stats(fl["inotify"]),
        "stop": stats(fl["stop"]),
        "probe": stats(fl["probe"]),
        "signal": stats(fl["signal"]),
        "interpreter": stats(fl["interpreter"]),
    }
    for mode in MODES:
        for s in steps:
            aw = fl[FLOOR_OF[mode]][s]
            floor[f"{FLOOR_OF[mode]}_notice_{s}"] = stats(aw["notice"])
            floor[f"{FLOOR_OF[mode]}_spawn_{s}"] = stats(aw["spawn"])
            floor[f"{FLOOR_OF[mode]}_idle_{s}"] = raw["idle"][f"awatch-{mode}-{s}"]
    floor["inotify_idle"] = raw["idle"]["inotify"]
    floor["anyio_idle"] = raw["idle"]["anyio"]
    spawn = floor["spawn"]

    def reconfigure(mode: str, step: int) -> dict[str, Any]:
        parts = raw["reconfigure"][mode][step]
        f = latency_figure(
            parts["total"], "spawn", spawn, "p50 <= 2x, p99 <= 2.5x spawn floor", None
        )
        f["passed"] = (
            f["ratio_p50"] <= RECONFIGURE_X_P50 and f["p99"] <= RECONFIGURE_X_P99 * spawn["p99"]
        )
        f["step_ms"], f["watcher"] = step, mode
        f["awatch_spawn_p50"] = floor[f"{FLOOR_OF[mode]}_spawn_{step}"]["p50"]
        f["ratio_awatch_p50"] = ratio(f["p50"], f["awatch_spawn_p50"])
        f["breakdown"] = {k: stats(parts[k]) for k in ("notice", "stop", "spawn")}
        return f

    def idle(mode: str, kind: str, step: int) -> dict[str, Any]:
        value = dict(raw["idle"][f"vllmd-{mode}-{kind}-{step}"])
        value["step_ms"], value["watcher"] = step, mode
        value["awatch_cpu_s_per_min"] = floor[f"{FLOOR_OF[mode]}_idle_{step}"]["cpu_s_per_min"]
        value["anyio_rss_mb"] = floor["anyio_idle"]["rss_mb"]
        value["target"] = f"<= {IDLE_CPU_S_PER_MIN} CPU-s/min, <= {IDLE_RSS_MB:.0f} MB"
        value["passed"] = (
            value["cpu_s_per_min"] <= IDLE_CPU_S_PER_MIN and value["rss_mb"] <= IDLE_RSS_MB
        )
        return value

    cold = raw["cold"]
    d = DEFAULT_STEP_MS
    figs: dict[str, Any] = {
        "reconfigure": reconfigure("inotify", d),
        "key_regeneration": _absolute(raw["key"], "inotify", floor["inotify"], KEY_P50_MS),
        "first_key_regeneration": _within(raw["first_key"], floor["inotify"], FIRST_KEY_P99_MS),
        "readiness": _readiness(raw["readiness"], floor["probe"]),
        "stop": latency_figure(cold["stop"], "stand-in stop", floor["stop"], "", None),
        "stop_relay": _absolute(cold["relay"], "signal", floor["signal"], STOP_RELAY_P50_MS),
        "stop_beyond_standin": _absolute(cold["beyond"], "", None, STOP_BEYOND_P50_MS),
        "cold_start_key": _times_floor(cold["key"], "interpreter", floor["interpreter"]),
        "cold_start_spawn": latency_figure(cold["spawn"], "spawn", spawn, "", None),
        "idle_no_model": idle("inotify", "none", d),
        "idle_running": idle("inotify", "running", d),
        "burst": _burst(raw["burst"]),
    }
    figs["stop"]["group_empty_every_time"] = all(cold["empty"])
    by_step = {
        mode: {
            s: {
                "reconfigure": reconfigure(mode, s),
                "idle_no_model": idle(mode, "none", s),
                "idle_running": idle(mode, "running", s),
            }
            for s in steps
        }
        for mode in MODES
    }
    rows = _rows(figs, by_step, floor, steps)
    return {"figures": figs, "steps": by_step, "floor": floor, "rows": rows}


def _absolute(
    samples: list[float], floor_name: str, floor: dict[str, Any] | None, p50_ms: float
) -> dict[str, Any]:
    f = latency_figure(samples, floor_name, floor, f"p50 <= {p50_ms:.0f} ms", None)
    f["passed"] = f["p50"] <= p50_ms
    return f


def _within(samples: list[float], floor: dict[str, Any], p99_ms: float) -> dict[str, Any]:
    f = latency_figure(samples, "inotify", floor, f"p99 <= {p99_ms:.0f} ms", None)
    f["passed"] = f["p99"] <= p99_ms
    return f


def _readiness(samples: list[float], probe: dict[str, Any]) -> dict[str, Any]:
    target = f"p50 <= {READY_P50_MS:.0f} ms, p99 <= {READY_P99_MS:.0f} ms"
    f = latency_figure(samples, "probe", probe, target, None)
    f["passed"] = f["p50"] <= READY_P50_MS and f["p99"] <= READY_P99_MS
    return f


def _times_floor(samples: list[float], name: str, floor: dict[str, Any]) -> dict[str, Any]:
    f = latency_figure(samples, name, floor, f"p50 <= {COLD_KEY_X_P50:.0f}x {name} floor", None)
    f["passed"] = f["ratio_p50"] <= COLD_KEY_X_P50
    return f


def _burst(trials: list[dict[str, Any]]) -> dict[str, Any]:
    worst = max(t["starts"] for t in trials)
    every = all(t["last_runs"] for t in trials)
    return {
        "trials": trials,
        "max_starts": worst,
        "last_runs_every_time": every,
        "target": f"<= {BURST_MAX_STARTS} starts, last write runs",
        "passed": worst <= BURST_MAX_STARTS and every,
    }


def _idle_rows(label: str, f: dict[str, Any], fl: dict[str, Any], target: bool) -> list[list[str]]:
    cpu_x = ratio(f["cpu_s_per_min"], fl["cpu_s_per_min"])
    return [
        value_row(
            f"{label}: CPU",
            f"{f['cpu_s_per_min']:.3f} CPU-s/min",
            "awatch idle",
            f"{fl['cpu_s_per_min']:.3f}",
            f"{cpu_x:.2f}",
            f"<= {IDLE_CPU_S_PER_MIN} CPU-s/min" if target else "",
            f["cpu_s_per_min"] <= IDLE_CPU_S_PER_MIN if target else None,
        ),
        value_row(
            f"{label}: RSS",
            f"{f['rss_mb']:.1f} MB",
            "anyio idle",
            f"{f['anyio_rss_mb']:.1f} MB",
            f"{ratio(f['rss_mb'], f['anyio_rss_mb']):.2f}",
            f"<= {IDLE_RSS_MB:.0f} MB" if target else "",
            f["rss_mb"] <= IDLE_RSS_MB if target else None,
        ),
        value_row(
            f"{label}: wake-ups",
            f"{f['wakeups_per_s']:.1f} /s",
            "awatch idle",
            f"{fl['wakeups_per_s']:.1f} /s",
            f"{ratio(f['wakeups_per_s'], fl['wakeups_per_s']):.2f}",
        ),
    ]


def _step_rows(by: dict[str, Any], awatch_idle: dict[str, Any], s: int) -> list[list[str]]:
    f = by["reconfigure"]
    row = latency_row(f"reconfigure, step {s} ms", f)
    # The floor here is the few lines of watchfiles at the same step; the target is above.
    row[4:] = ["awatch+spawn", f"{f['awatch_spawn_p50']:.1f} ms", f"{f['ratio_awatch_p50']:.2f}"]
    row += ["", "", ""]
    rows = [row]
    for kind in ("no_model", "running"):
        i = by[f"idle_{kind}"]
        rows.append(
            value_row(
                f"idle {kind.replace('_', ' ')}, step {s} ms",
                f"{i['cpu_s_per_min']:.3f} CPU-s/min",
                "awatch idle",
                f"{awatch_idle['cpu_s_per_min']:.3f}",
                f"{ratio(i['cpu_s_per_min'], awatch_idle['cpu_s_per_min']):.2f}",
                f"{i['wakeups_per_s']:.0f} wake-ups/s, {i['rss_mb']:.0f} MB",
            )
        )
    return rows


def _rows(
    figs: dict[str, Any], by_step: dict[str, Any], floor: dict[str, Any], steps: list[int]
) -> list[list[str]]:
    d = DEFAULT_STEP_MS
    rec = figs["reconfigure"]
    burst = figs["burst"]
    trials = burst["trials"]
    rows: list[list[str]] = [[f"vllmd, defaults (inotify watcher; watch step {d} ms)"]]
    rows.append(latency_row("reconfigure: store.json rename -> vLLM started", rec))
    for part, text in (
        ("notice", "rename -> SIGTERM to the old vLLM"),
        ("stop", "SIGTERM -> old vLLM exited"),
        ("spawn", "old exited -> new vLLM started"),
    ):
        rows.append(latency_row(f"  of which {text}", rec["breakdown"][part]))
    rows.append(latency_row("key regeneration: deleted -> valid new key", figs["key_regeneration"]))
    rows.append(
        latency_row("first key regeneration, right after start", figs["first_key_regeneration"])
    )
    rows.append(latency_row("readiness: listening -> health success", figs["readiness"]))
    rows.append(latency_row("stop: SIGTERM -> vllmd exited, group empty", figs["stop"]))
    rows.append(latency_row("  of which until vLLM has its SIGTERM", figs["stop_relay"]))
    rows.append(latency_row("  of which after the stand-in exited", figs["stop_beyond_standin"]))
    rows.append(latency_row("cold start: exec -> key on disk", figs["cold_start_key"]))
    rows.append(latency_row("cold start: exec -> vLLM spawned", figs["cold_start_spawn"]))
    awatch_idle = floor[f"awatch_idle_{d}"]  # the "few lines of watchfiles" at vllmd's step
    rows += _idle_rows("idle, no model", figs["idle_no_model"], awatch_idle, True)
    rows += _idle_rows("idle, stand-in running", figs["idle_running"], awatch_idle, True)
    last = sum(t["last_runs"] for t in trials)
    rows.append(
        value_row(
            f"burst: 50 writes in 1 s, {len(trials)} trial(s)",
            f"starts {'/'.join(str(t['starts']) for t in trials)}; last runs {last}/{len(trials)}",
            target=burst["target"],
            passed=burst["passed"],
        )
    )
    for mode, heading in (
        (
            "inotify",
            "step trade-off (VLLMD_WATCH_STEP_MS), inotify watcher: floor awatch, same step",
        ),
        ("polling", "step trade-off, polling fallback (WATCHFILES_FORCE_POLLING=1): floor same"),
    ):
        rows.append([heading])
        for s in steps:
            rows += _step_rows(by_step[mode][s], floor[f"{FLOOR_OF[mode]}_idle_{s}"], s)
    rows.append(["floor, the same run (spawn: between the reconfigure samples)"])
    rows.append(latency_row("spawn: Popen -> stand-in started", floor["spawn"]))
    rows.append(latency_row("inotify: rename -> reader has the event", floor["inotify"]))
    for mode in MODES:
        name = FLOOR_OF[mode]
        label = "awatch polling" if mode == "polling" else "awatch"
        for s in steps:
            rows.append(latency_row(f"{label} {s}: rename -> yields", floor[f"{name}_notice_{s}"]))
            rows.append(
                latency_row(f"{label} {s}: -> stand-in started", floor[f"{name}_spawn_{s}"])
            )
    rows.append(latency_row("stand-in stop: SIGTERM -> exited", floor["stop"]))
    rows.append(latency_row("probe: GET /health, fresh connection", floor["probe"]))
    rows.append(latency_row("signal: SIGTERM -> stand-in has it", floor["signal"]))
    rows.append(latency_row("interpreter: exec -> first statement", floor["interpreter"]))
    for mode in MODES:
        for s in steps:
            fl = floor[f"{FLOOR_OF[mode]}_idle_{s}"]
            rows.append(
                value_row(
                    f"{'awatch polling' if mode == 'polling' else 'awatch'} {s} idle",
                    f"{fl['cpu_s_per_min']:.3f} CPU-s/min",
                    target=f"{fl['wakeups_per_s']:.0f} wake-ups/s, {fl['rss_mb']:.0f} MB",
                )
            )
    anyio_idle = floor["anyio_idle"]
    rows.append(
        value_row(
            "bare interpreter with anyio, idle",
            f"{anyio_idle['cpu_s_per_min']:.3f} CPU-s/min",
            target=f"{anyio_idle['wakeups_per_s']:.0f} wake-ups/s, {anyio_idle['rss_mb']:.1f} MB",
        )
    )
    ino = floor["inotify_idle"]
    rows.append(
        value_row(
            "inotify reader idle",
            f"{ino['cpu_s_per_min']:.3f} CPU-s/min",
            target=f"{ino['wakeups_per_s']:.0f} wake-ups/s, {ino['rss_mb']:.0f} MB",
        )
    )
    return rows
