"""``python -m bench --real``: run the parts asked for, and one table of their figures, each next
to its floor with the difference and the target."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from bench.procs import Fleet
from bench.real import READY_PLUS_S, STOP_PLUS_MS, Real, prepared, ready_and_stop
from bench.report import Spread, render
from bench.switch import FETCH_X, OUTAGE_PLUS_S, run_switch

HEADER = ("figure", "p50", "p90", "p99", "floor", "floor p50", "now - floor", "target", "")


def _verdict(passed: bool) -> str:
    return "pass" if passed else "MISS"


def _row(label: str, s: Spread, *rest: str) -> list[str]:
    cells = [label, *(f"{v:.1f} ms" for v in (s.p50, s.p90, s.p99))]
    return cells + [*rest, "", "", "", "", ""][:5]


def _value(label: str, value: str, *rest: str) -> list[str]:
    return [label, value, "", "", *[*rest, "", "", "", "", ""][:5]]


def _ready_rows(raw: dict[str, Any], figures: dict[str, Any]) -> list[list[str]]:
    ready, ready_floor = Spread.of(raw["ready"]), Spread.of(raw["ready_floor"])
    stop, stop_floor = Spread.of(raw["stop"]), Spread.of(raw["stop_floor"])
    rotation = Spread.of(raw["rotation"])
    ready_plus = round(ready.p50 - ready_floor.p50, 1)
    stop_plus = round(stop.p50 - stop_floor.p50, 1)
    ready_passed, stop_passed = ready_plus <= READY_PLUS_S * 1e3, stop_plus <= STOP_PLUS_MS
    figures["ready"] = {"spread": ready, "plus_ms": ready_plus, "passed": ready_passed}
    figures["ready_floor"] = {"spread": ready_floor}
    figures["rotation"] = {"spread": rotation}
    figures["stop"] = {"spread": stop, "plus_ms": stop_plus, "passed": stop_passed}
    figures["stop_floor"] = {"spread": stop_floor}
    return [
        ["vllmd over the real CPU vLLM: ready and stop"],
        _row(
            "ready: Set Model -> health success",
            ready,
            "vllm serve",
            f"{ready_floor.p50:.1f} ms",
            f"{ready_plus / 1e3:+.2f} s",
            f"<= floor + {READY_PLUS_S} s",
            _verdict(ready_passed),
        ),
        _row("key rotation (guard): deleted -> new key accepted", rotation),
        _row(
            "stop: SIGTERM -> vllmd exited, group empty",
            stop,
            "vLLM's own exit",
            f"{stop_floor.p50:.1f} ms",
            f"{stop_plus:+.1f} ms",
            f"<= floor + {STOP_PLUS_MS:.0f} ms",
            _verdict(stop_passed),
        ),
        ["floor, the same run"],
        _row("vllm serve (same argv and env) -> /health 200", ready_floor),
        _row("SIGTERM to vllm serve -> it exited", stop_floor),
    ]


def _switch_rows(raw: dict[str, Any], figures: dict[str, Any]) -> list[list[str]]:
    s, put = raw["switch"], raw["throughput"]

    def mid(key: str) -> float | None:
        return round(statistics.median(s[key]), 2) if s[key] else None

    def secs(key: str) -> str:
        value = mid(key)
        return "none" if value is None else f"{value:.2f} s"

    outage, cached = mid("uncached_outage_s") or 0.0, mid("cached_outage_to_new_s") or 0.0
    plus = round(outage - cached, 2)
    vllmd_mbps, plain_mbps = statistics.median(put["vllmd"]), statistics.median(put["plain"])
    x = round(vllmd_mbps / plain_mbps, 2) if plain_mbps else float("inf")
    figures["switch"] = {**s, "outage_plus_s": plus, "passed": plus <= OUTAGE_PLUS_S}
    figures["throughput"] = {**put, "x": x, "passed": x >= FETCH_X}
    n = len(s["uncached_outage_s"])
    each = ", ".join(f"{v:.1f}" for v in s["uncached_outage_s"])
    rss = f"{mid('rss_before_mb') or 0:.1f} / {max(s['rss_fetching_max_mb'], default=0):.1f} MB"
    new_mb = raw["sizes"]["new"] / 1e6
    return [
        [f"switch to a model not cached (issue 19): {new_mb:.0f} MB, hub throttled; {n} round(s)"],
        _value(
            "outage: last answer of the old -> first of the new",
            f"{outage:.2f} s",
            "cached switch",
            f"{cached:.2f} s",
            f"{plus:+.2f} s",
            f"<= floor + {OUTAGE_PLUS_S:.0f} s",
            _verdict(plus <= OUTAGE_PLUS_S),
        ),
        _value("  each round (s)", each),
        _value("  round 0, vLLM's first load of the model (not counted)", secs("first_outage_s")),
        _value("  Set Model -> the new one's fetch complete", secs("download_s")),
        _value("  fetch complete -> the old one's last answer", secs("old_stopped_after_fetch_s")),
        _value("  Set Model -> the new model's first answer", secs("uncached_total_s")),
        _value("  daemon RSS: before / most while fetching", rss),
        _value("cached switch back to the old model: outage", secs("cached_outage_to_old_s")),
        _value(
            f"fetch throughput, {new_mb:.0f} MB unthrottled (MB/s)",
            f"{vllmd_mbps:.1f} MB/s",
            "snapshot_download",
            f"{plain_mbps:.1f} MB/s",
            f"{x:.2f}x",
            f">= {FETCH_X}x",
            _verdict(x >= FETCH_X),
        ),
        _value(
            "  of which the worker's exec -> its plan line",
            f"{statistics.median(put['vllmd_plan_s']):.2f} s" if put.get("vllmd_plan_s") else "",
        ),
    ]


def summarize_real(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"figures", "table"}`` from the parts' raw samples (ms, s, MB/s)."""
    figures: dict[str, Any] = {}
    rows: list[list[str]] = []
    if "ready" in raw:
        rows += _ready_rows(raw, figures)
    if "switch" in raw:
        rows += _switch_rows(raw, figures)
    return {"figures": figures, "table": render(HEADER, rows, left={0, 4, 7})}


def run_real(
    workdir: Path, rounds: int, log: Callable[[str], None], parts: Collection[str]
) -> dict[str, Any]:
    """The ``--real`` parts asked for; raw samples."""
    env = prepared(log)
    raw: dict[str, Any] = {"vllm": str(env.vllm)}
    with Fleet(workdir) as fleet:
        real = Real(fleet, env, log)
        try:
            if "ready" in parts:
                raw.update(ready_and_stop(real, rounds))
            if "switch" in parts:
                raw.update(run_switch(real, rounds))
        finally:
            real.kill_leftovers()
    return raw


def main_real(out: Path, rounds: int, log: Callable[[str], None], parts: Collection[str]) -> int:
    """``python -m bench --real``: run, print the table, write ``real.json`` and ``real.txt``."""
    workdir = Path(tempfile.mkdtemp(prefix="vllmd-bench-real-"))
    try:
        raw = run_real(workdir, rounds, log, parts)
    finally:
        for log_file in workdir.glob("*/daemon.log"):  # what vLLM said, for a second look
            (out / "logs").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(log_file, out / "logs" / f"{log_file.parent.name}.log")
        shutil.rmtree(workdir, ignore_errors=True)
    result = summarize_real(raw)
    print(result["table"])
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "command": f"python -m bench --real --rounds {rounds} --only {','.join(parts)}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg_after": os.getloadavg(),
        "raw": raw,
        "figures": result["figures"],
        "table": result["table"],
    }
    (out / "real.json").write_text(json.dumps(document, indent=2, default=_plain) + "\n")
    (out / "real.txt").write_text(result["table"] + "\n")
    log(f"wrote {out / 'real.json'}")
    return 0


def _plain(value: object) -> object:
    """JSON for the dataclasses in the figures."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
