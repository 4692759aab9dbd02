"""The figures from one run's samples, in the report's sections, and the table with today's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.baseline import Verdict
from bench.report import Figure, Spread, ratio, render, show
from bench.run import Raw

HEALTH_X = 2.0
"""``vllmd health`` at most 2x a bare interpreter's start (StartOS runs it every second until the
first success: 2,000 runs in a 35-minute load)."""
BURST_MAX_STARTS = 2

Sections = list[tuple[str, dict[str, Figure]]]


def latency(
    label: str,
    samples: Sequence[float],
    *,
    floor: str = "",
    floor_value: float | None = None,
    guarded: bool = True,
    target: str = "",
    passed: bool | None = None,
) -> Figure:
    """A latency figure: its p50 is what is compared."""
    spread = Spread.of(samples)
    return Figure(label, "ms", spread.p50, spread, floor, floor_value, guarded, target, passed)


def summarize(raw: Raw) -> Sections:
    """Every figure of the run, in the report's order and sections."""
    spawn, interp = Spread.of(raw.spawn), Spread.of(raw.interpreter)
    cold, rec, health = raw.cold, raw.reconfigure, raw.health
    python = Spread.of(health.python)
    health_x = ratio(Spread.of(health.vllmd).p50, python.p50)
    trials = raw.burst
    starts = max((t.starts for t in trials), default=0)
    every = all(t.last_runs for t in trials)
    reactions: dict[str, Figure] = {
        "reconfigure": latency(
            "reconfigure: store.json rename -> vLLM started",
            rec.total,
            floor="spawn",
            floor_value=spawn.p50,
        ),
        "reconfigure_notice": latency(
            "  of which rename -> SIGTERM to the old vLLM", rec.notice, guarded=False
        ),
        "reconfigure_stop": latency(
            "  of which SIGTERM -> old vLLM exited", rec.stop, guarded=False
        ),
        "reconfigure_spawn": latency(
            "  of which old exited -> new vLLM started", rec.spawn, guarded=False
        ),
        "key_regeneration": latency("key regeneration: deleted -> valid new key", raw.key),
        "first_key_regeneration": latency(
            "first key regeneration, right after start", raw.first_key
        ),
        "readiness": latency("readiness: listening -> health success", raw.readiness),
        "stop": latency("stop: SIGTERM -> vllmd exited, group empty", cold.stop),
        "stop_relay": latency("  of which until vLLM has its SIGTERM", cold.relay),
        "stop_beyond_standin": latency("  of which after the stand-in exited", cold.beyond),
        "cold_start_key": latency(
            "cold start: exec -> key on disk", cold.key, floor="interpreter", floor_value=interp.p50
        ),
        "cold_start_spawn": latency(
            "cold start: exec -> vLLM spawned", cold.spawn, floor="spawn", floor_value=spawn.p50
        ),
        "health_command": latency(
            "vllmd health: exec -> exit",
            health.vllmd,
            floor="python -c pass",
            floor_value=python.p50,
            target=f"<= {HEALTH_X:.0f}x python -c pass",
            passed=health_x <= HEALTH_X,
        ),
        "burst": Figure(
            f"burst: {raw.config.burst_writes} writes in {raw.config.burst_window_s:.0f} s, "
            f"{len(trials)} trial(s)",
            "starts",
            starts,
            guarded=False,
            target=f"<= {BURST_MAX_STARTS} starts, last write runs",
            passed=starts <= BURST_MAX_STARTS and every,
            text=f"starts {'/'.join(str(t.starts) for t in trials)}; "
            f"last runs {sum(t.last_runs for t in trials)}/{len(trials)}",
        ),
    }
    idle: dict[str, Figure] = {}
    for name, what in (("no_model", "no model"), ("running", "stand-in running")):
        i = raw.idle[name]
        idle[f"idle_{name}_cpu"] = Figure(f"idle, {what}: CPU", "CPU-s/min", i.cpu_s_per_min)
        idle[f"idle_{name}_rss"] = Figure(f"idle, {what}: RSS", "MB", i.rss_mb)
        idle[f"idle_{name}_wakeups"] = Figure(f"idle, {what}: wake-ups", "/s", i.wakeups_per_s)
    floors = {
        "floor_spawn": latency("spawn: Popen -> stand-in started", raw.spawn, guarded=False),
        "floor_interpreter": latency(
            "interpreter: exec -> first statement", raw.interpreter, guarded=False
        ),
        "floor_python": latency("python -c pass: exec -> exit", health.python, guarded=False),
        "floor_python_no_site": latency(
            "python -S -c pass: exec -> exit", health.python_no_site, guarded=False
        ),
    }
    return [
        ("vllmd with the stand-in as vLLM", reactions),
        (f"idle: the two daemons over the same {raw.config.idle_s:.0f} s", idle),
        ("floor, the same run (spawn: between the reconfigure samples)", floors),
    ]


def flatten(sections: Sections) -> dict[str, Figure]:
    """Every figure of every section by name."""
    return {name: f for _, figures in sections for name, f in figures.items()}


HEADER = (
    *("figure", "p50", "p90", "p99", "floor", "floor p50", "x floor"),
    *("today", "x today", "guard", "target", ""),
)


def table(sections: Sections, verdicts: Mapping[str, Verdict]) -> str:
    """The report: each figure, its floor, today's value and the guard's verdict."""
    rows: list[list[str]] = []
    for title, figures in sections:
        rows.append([title])
        for name, f in figures.items():
            s = f.spread
            cells = [f.label, f.text or show(f.value, f.unit)]
            cells += [show(s.p90, "ms"), show(s.p99, "ms")] if s else ["", ""]
            x = f.x_floor
            cells += [f.floor, show(f.floor_value, f.unit), "" if x is None else f"{x:.2f}"]
            v = verdicts.get(name)
            cells += [show(v.today, f.unit), f"{v.x:.2f}"] if v else ["", ""]
            cells.append("" if not f.guarded or v is None else "WORSE" if v.worse else "ok")
            cells += [f.target, "" if f.passed is None else "pass" if f.passed else "MISS"]
            rows.append(cells)
    return render(HEADER, rows, left={0, 4, 9, 10})
