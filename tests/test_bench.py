"""The benchmark runs end to end, reports every figure, and flags one worse than today's.

``python -m bench --quick`` with two samples a figure and a one-second idle window takes about
20 s. The machines are noisy and the suite runs beside other work, so the smoke run compares no
time of its own with anything: it checks that every figure was measured, compared with the
committed baseline and written, and that a figure made to look worse than today's is flagged.
The guard's rule itself is checked on made-up figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import baseline
from bench.baseline import Today, compare, limit, missing
from bench.report import Figure

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 2


def _figure(value: float, unit: str = "ms", *, guarded: bool = True) -> Figure:
    return Figure("made up", unit, value, guarded=guarded)


def test_a_figure_more_than_one_and_a_half_times_todays_is_worse() -> None:
    # Given today's reconfigure at 40 ms
    today = {"reconfigure": Today(40.0, "ms")}
    # When it reads 59 ms, then 61 ms
    # Then the first is within the guard and the second is worse
    assert not compare({"reconfigure": _figure(59.0)}, today)["reconfigure"].worse
    verdict = compare({"reconfigure": _figure(61.0)}, today)["reconfigure"]
    assert verdict.worse and verdict.x == 1.52 and verdict.today == 40.0


def test_below_its_grain_a_figure_is_noise_not_a_regression() -> None:
    # Given figures today far below their unit's grain (0.2 ms; no CPU at all while idle)
    today = {"relay": Today(0.2, "ms"), "cpu": Today(0.0, "CPU-s/min")}
    # When they read a few times more, but within 1.5x the grain
    now = {"relay": _figure(1.4), "cpu": _figure(0.07, "CPU-s/min")}
    verdicts = compare(now, today)
    # Then neither is worse; past 1.5x the grain they are
    assert not verdicts["relay"].worse and not verdicts["cpu"].worse
    assert limit(today["relay"]) == 1.5
    assert compare({"relay": _figure(1.6)}, today)["relay"].worse


def test_parts_and_floors_are_shown_next_to_today_but_never_flagged() -> None:
    # Given a floor that doubled since today (the machine got slower)
    today = {"floor_spawn": Today(20.0, "ms")}
    # When it is compared
    verdict = compare({"floor_spawn": _figure(40.0, guarded=False)}, today)["floor_spawn"]
    # Then today's value and the ratio are there, and no regression is claimed
    assert verdict.today == 20.0 and verdict.x == 2.0 and not verdict.worse


def test_a_guarded_figure_the_baseline_lacks_is_named() -> None:
    # Given a new guarded figure and a new floor, and a baseline with neither
    figures = {"new": _figure(3.0), "floor_new": _figure(3.0, guarded=False), "old": _figure(1.0)}
    today = {"old": Today(1.0, "ms")}
    # Then the guarded one is named (save a baseline), the floor is not
    assert missing(figures, today) == ["new"]
    assert set(compare(figures, today)) == {"old"}


def test_the_committed_baseline_has_every_guarded_figure() -> None:
    # Given the baseline in the repository
    today, about = baseline.load()
    # Then it says where it was measured and has a value for every figure the run guards
    assert {"measured", "command", "commit", "machine"} <= set(about)
    assert set(GUARDED) <= set(today), sorted(set(GUARDED) - set(today))


GUARDED = (
    "reconfigure",
    "key_regeneration",
    "first_key_regeneration",
    "readiness",
    "stop",
    "stop_relay",
    "stop_beyond_standin",
    "cold_start_key",
    "cold_start_spawn",
    "health_command",
    "idle_no_model_cpu",
    "idle_no_model_rss",
    "idle_no_model_wakeups",
    "idle_running_cpu",
    "idle_running_rss",
    "idle_running_wakeups",
)
LATENCIES = GUARDED[:10]
FLOORS = ("floor_spawn", "floor_interpreter", "floor_python", "floor_python_no_site")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, int]:
    # The committed baseline, but with reconfigure today at 0.01 ms: any real run is worse.
    out = tmp_path_factory.mktemp("bench")
    document = json.loads(baseline.PATH.read_text())
    document["figures"]["reconfigure"]["value"] = 0.01
    fake = out / "baseline.json"
    fake.write_text(json.dumps(document))
    argv = ["--quick", "--samples", str(SAMPLES), "--idle-s", "1", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv, "--baseline", str(fake)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    results = json.loads((out / "results.json").read_text())
    return results, done.stdout.decode(), done.returncode


@pytest.mark.timeout(180)
def test_quick_benchmark_measures_every_figure_and_its_floor(
    report: tuple[dict[str, Any], str, int],
) -> None:
    document, _, _ = report
    figures = document["figures"]
    for name in LATENCIES + FLOORS:
        spread = figures[name]["spread"]
        assert spread["n"] == SAMPLES == len(spread["samples_ms"]), name
        assert figures[name]["value"] == spread["p50"] > 0, name
    for name in GUARDED[10:]:
        assert figures[name]["value"] >= 0 and figures[name]["guarded"], name
    assert figures["idle_running_rss"]["value"] > 0
    assert figures["health_command"]["floor"] == "python -c pass"
    assert figures["health_command"]["passed"] in (True, False)
    burst = document["raw"]["burst"]
    assert len(burst) == 1 and figures["burst"]["passed"] in (True, False)
    assert {"nproc", "cpu", "kernel", "python"} <= set(document["raw"]["machine"])


@pytest.mark.timeout(180)
def test_quick_benchmark_compares_every_figure_with_today_and_flags_the_worse(
    report: tuple[dict[str, Any], str, int],
) -> None:
    document, stdout, returncode = report
    # Every guarded figure and floor is next to today's
    assert set(GUARDED + FLOORS) <= set(document["today"])
    # The reconfigure made to look 1000s of times worse is flagged, in the JSON and the output
    assert "reconfigure" in document["worse"]
    assert document["today"]["reconfigure"]["worse"]
    assert "WORSE: reconfigure: store.json rename -> vLLM started" in stdout
    # A quick run reports it but does not fail on it (its samples are too few to judge)
    assert returncode == 0


@pytest.mark.timeout(180)
def test_quick_benchmark_prints_one_table(report: tuple[dict[str, Any], str, int]) -> None:
    document, stdout, _ = report
    assert stdout.startswith(document["table"])
    for row in ("reconfigure:", "key regeneration:", "readiness:", "stop:", "cold start:"):
        assert row in stdout
    assert "vllmd health: exec -> exit" in stdout and "python -S -c pass" in stdout
    assert "idle, no model: CPU" in stdout and "burst:" in stdout


def test_real_report_puts_each_figure_next_to_its_floor() -> None:
    # ``python -m bench --real`` takes many minutes of the real CPU vLLM: its report is checked
    # here on made-up samples, so that a long run never ends in a broken table.
    from bench.real_report import summarize_real

    raw = {
        "ready_floor": [30_000.0, 31_000.0],
        "ready": [30_100.0, 31_200.0],
        "stop_floor": [900.0, 950.0],
        "stop": [920.0, 990.0],
        "rotation": [5.0, 6.0],
    }
    result = summarize_real(raw)
    figures = result["figures"]
    assert figures["ready"]["plus_ms"] == 150.0 and figures["ready"]["passed"]
    assert figures["stop"]["plus_ms"] == 30.0 and figures["stop"]["passed"]
    for row in ("ready:", "key rotation", "stop:", "+0.15 s", "+30.0 ms"):
        assert row in result["table"]


def test_real_report_puts_the_switch_outage_next_to_a_cached_switch() -> None:
    # The issue-19 part of ``--real`` (minutes of downloads and loads), on made-up figures:
    # a switch whose median outage is 1.5 s over a cached switch's passes, 2.5 s over misses.
    from bench.real_report import summarize_real

    def raw(outage_s: float) -> dict[str, Any]:
        switch = {
            "uncached_outage_s": [outage_s, outage_s + 1.0],
            "uncached_total_s": [95.0, 97.0],
            "download_s": [61.2, 61.4],
            "old_stopped_after_fetch_s": [0.3, 0.5],
            "rss_before_mb": [30.1, 30.1],
            "rss_fetching_max_mb": [30.4, 30.2],
            "cached_outage_to_old_s": [20.0, 21.0, 22.0, 23.0],
            "cached_outage_to_new_s": [29.5, 31.5],
            "first_outage_s": [44.0],
        }
        throughput = {"bytes": 542_000_000, "vllmd": [95.0, 97.0], "plain": [100.0, 104.0]}
        sizes = {"old": 91_000_000, "new": 542_000_000}
        return {"switch": switch, "throughput": throughput, "sizes": sizes}

    result = summarize_real(raw(31.5))
    figures = result["figures"]
    assert figures["switch"]["outage_plus_s"] == 1.5 and figures["switch"]["passed"]
    assert figures["throughput"]["x"] == 0.94 and figures["throughput"]["passed"]
    for row in ("+1.50 s", "61.30 s", "0.40 s", "44.00 s", "30.1 / 30.4 MB", "0.94x"):
        assert row in result["table"]
    assert not summarize_real(raw(32.5))["figures"]["switch"]["passed"]
