"""The ``--real`` figures as one table: each next to its floor, with the difference and target."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.real import READY_PLUS_S, STOP_PLUS_MS, WARM_X, run_real
from bench.report import latency_figure, latency_row, render, stats, value_row


def summarize_real(raw: dict[str, Any]) -> dict[str, Any]:
    """``{"figures", "table"}`` from :func:`bench.real.run_real`'s samples."""
    ready_floor, stop_floor = stats(raw["ready_floor"]), stats(raw["stop_floor"])
    ready = latency_figure(
        raw["ready"], "vllm serve", ready_floor, f"p50 <= floor + {READY_PLUS_S} s", None
    )
    ready["plus_ms"] = round(ready["p50"] - ready_floor["p50"], 1)
    ready["passed"] = ready["plus_ms"] <= READY_PLUS_S * 1000
    stop = latency_figure(
        raw["stop"], "vLLM's own exit", stop_floor, f"p50 <= floor + {STOP_PLUS_MS:.0f} ms", None
    )
    stop["plus_ms"] = round(stop["p50"] - stop_floor["p50"], 1)
    stop["passed"] = stop["plus_ms"] <= STOP_PLUS_MS
    rotation = latency_figure(raw["rotation"], "", None, "", None)
    warm_figures: dict[str, Any] = {}
    warm_rows: list[list[str]] = []
    for label, warm in raw.get("warm_restart", {}).items():
        cold_s, warm_s = stats(warm["cold"]), stats(warm["warm"])
        warm_x = round(warm_s["p50"] / cold_s["p50"], 2) if cold_s["p50"] else float("inf")
        warm_figures[label] = {
            "cold": cold_s,
            "warm": warm_s,
            "ratio": warm_x,
            "target": f"<= {WARM_X}x",
            "passed": warm_x <= WARM_X,
            "cache_mb": warm["cache_mb"],
            "log": warm["log"],
        }
        warm_rows.append([f"warm restart, {label} (no --enforce-eager): exec -> ready"])
        warm_rows.append(latency_row("empty compile cache, fresh home and /tmp", cold_s))
        warm_row = latency_row("DATA/cache kept, fresh home and /tmp", warm_s)
        warm_row[-2:] = [
            f"second <= {WARM_X}x first: {warm_x:.2f}x",
            "pass" if warm_x <= WARM_X else "MISS",
        ]
        warm_rows.append(warm_row)
        for sizes in warm["cache_mb"]:
            text = ", ".join(f"{name} {mb:.1f} MB" for name, mb in sizes.items()) or "empty"
            warm_rows.append(value_row("  DATA/cache after the first start", text))
        for seen in warm["log"]:
            if seen["kind"] == "warm":
                said = "loaded its AOT artifact" if seen["loaded_aot"] else "no AOT load"
                again = "compiled again" if seen["compiled_again"] else "did not compile again"
                warm_rows.append(value_row("  vLLM, second start", f"{said}; {again}"))
    figures = {
        "ready": ready,
        "ready_floor": ready_floor,
        "rotation": rotation,
        "stop": stop,
        "stop_floor": stop_floor,
        "warm_restart": warm_figures,
    }
    rows: list[list[str]] = [["vllmd over the real CPU vLLM (python -m bench --real)"]]
    rows.append(latency_row("ready: Set Model -> health success", ready))
    rows.append(value_row("  minus the floor (p50)", f"{ready['plus_ms'] / 1000:+.2f} s"))
    rows.append(latency_row("key rotation (guard): deleted -> new key accepted", rotation))
    rows.append(latency_row("stop: SIGTERM -> vllmd exited, group empty", stop))
    rows.append(value_row("  minus the floor (p50)", f"{stop['plus_ms']:+.1f} ms"))
    rows += warm_rows
    rows.append(["floor, the same run"])
    rows.append(latency_row("vllm serve (same argv and env) -> /health 200", ready_floor))
    rows.append(latency_row("SIGTERM to vllm serve -> it exited", stop_floor))
    return {"figures": figures, "table": render(rows)}


def main_real(out: Path, rounds: int, log: Callable[[str], None], *, warm: bool = True) -> int:
    """``python -m bench --real``: run, print the table, write ``real.json`` and ``real.txt``."""
    workdir = Path(tempfile.mkdtemp(prefix="vllmd-bench-real-"))
    try:
        raw = run_real(workdir, rounds, log, warm=warm)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = summarize_real(raw)
    print(result["table"])
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "command": f"python -m bench --real --rounds {rounds}" + ("" if warm else " --no-warm"),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_avg_after": os.getloadavg(),
        "raw": raw,
        "figures": result["figures"],
        "table": result["table"],
    }
    (out / "real.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "real.txt").write_text(result["table"] + "\n")
    log(f"wrote {out / 'real.json'}")
    return 0
