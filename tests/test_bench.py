"""The benchmark (issue 5) still runs end to end and reports every figure; timings are not tested.

``python -m bench --quick`` with two samples a figure and a one-second idle window takes about
20 s. The machines are noisy and the suite runs beside other work, so nothing here compares a
time with anything: only that each figure, floor and step was measured and written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import MODES
from bench.summary import FIGURES

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 2
STEPS = ("10", "30", "50")
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


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--samples", str(SAMPLES), "--idle-s", "1", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return json.loads((out / "results.json").read_text()), done.stdout.decode()


@pytest.mark.timeout(180)
def test_quick_benchmark_reports_every_figure(report: tuple[dict, str]) -> None:
    document, _ = report
    figures = document["figures"]
    assert set(FIGURES) <= set(figures)
    for name in LATENCIES:
        figure = figures[name]
        assert figure["n"] == SAMPLES == len(figure["samples_ms"]), name
        assert {"p50", "p90", "p99", "target", "passed"} <= set(figure), name
    for name in (
        "reconfigure",
        "key_regeneration",
        "first_key_regeneration",
        "readiness",
        "stop_relay",
        "cold_start_key",
    ):
        assert {"floor", "floor_p50", "ratio_p50", "ratio_p99"} <= set(figures[name]), name
    assert set(figures["reconfigure"]["breakdown"]) == {"notice", "stop", "spawn"}
    for name in ("idle_no_model", "idle_running"):
        assert {"cpu_s_per_min", "rss_mb", "anyio_rss_mb", "wakeups_per_s", "passed"} <= set(
            figures[name]
        )
    burst = figures["burst"]
    assert len(burst["trials"]) == 1
    assert {"max_starts", "last_runs_every_time", "passed"} <= set(burst)


@pytest.mark.timeout(180)
def test_quick_benchmark_measures_the_floor_and_every_step(report: tuple[dict, str]) -> None:
    document, _ = report
    floor = document["floor"]
    for name in ("spawn", "inotify", "stop", "probe", "signal", "interpreter"):
        assert floor[name]["n"] == SAMPLES, name
    assert floor["anyio_idle"]["rss_mb"] > 0
    for step in STEPS:
        for kind in ("awatch", "awatch_polling"):
            assert floor[f"{kind}_notice_{step}"]["n"] == SAMPLES
            assert floor[f"{kind}_spawn_{step}"]["n"] == SAMPLES
            assert "cpu_s_per_min" in floor[f"{kind}_idle_{step}"]
    assert set(document["steps"]) == set(MODES)
    for mode in MODES:
        assert set(document["steps"][mode]) == set(STEPS)
        for step in STEPS:
            by_step = document["steps"][mode][step]
            assert by_step["reconfigure"]["n"] == SAMPLES
            assert "cpu_s_per_min" in by_step["idle_no_model"]
            assert "cpu_s_per_min" in by_step["idle_running"]
    assert {"nproc", "cpu", "kernel", "python"} <= set(document["machine"])


@pytest.mark.timeout(180)
def test_quick_benchmark_prints_one_table(report: tuple[dict, str]) -> None:
    document, stdout = report
    assert stdout.strip() == document["table"].strip()
    for row in ("reconfigure:", "key regeneration:", "readiness:", "stop:", "cold start:"):
        assert row in stdout
    assert "idle, no model: CPU" in stdout and "burst:" in stdout


def test_real_report_puts_each_figure_next_to_its_floor() -> None:
    # ``python -m bench --real`` takes many minutes of the real CPU vLLM: its report is checked
    # here on made-up samples, so that a long run never ends in a broken table.
    from bench.real_report import summarize_real

    pair = {
        "cold": [300_000.0],
        "warm": [120_000.0],
        "cache_mb": [{"inductor": 0.0, "vllm": 6.3}],
        "log": [
            {"kind": "cold", "compiled_again": False, "loaded_aot": False},
            {"kind": "warm", "compiled_again": False, "loaded_aot": True},
        ],
    }
    raw = {
        "ready_floor": [30_000.0, 31_000.0],
        "ready": [30_100.0, 31_200.0],
        "stop_floor": [900.0, 950.0],
        "stop": [920.0, 990.0],
        "rotation": [5.0, 6.0],
        "warm_restart": {"vLLM's defaults": pair},
    }
    result = summarize_real(raw)
    figures = result["figures"]
    assert figures["ready"]["plus_ms"] == 150.0 and figures["ready"]["passed"]
    assert figures["stop"]["plus_ms"] == 30.0 and figures["stop"]["passed"]
    assert figures["warm_restart"]["vLLM's defaults"]["ratio"] == 0.4
    for row in ("ready:", "key rotation", "stop:", "DATA/cache kept", "loaded its AOT artifact"):
        assert row in result["table"]
